"""`pool build`: layout per docs/formats.md, determinism, split hygiene, and every planted defect.

Uses the session's `micro` pool (tests/conftest.py) built from the real npm packages in
the cache; only the determinism and refusal tests build again (a few seconds each).
"""
from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from datacurate.pool.build import BUILDER_VERSION, URL_BASE, PoolExistsError, build_pool
from datacurate.pool.compose import COLOURS
from datacurate.pool.defects import BOILERPLATE, DEFAULT_RATES, DEFECTS
from datacurate.scales import get_scale
from datacurate.uids import is_uid

GT_COLUMNS = ["uid", "defect", "item_id", "dup_of", "lang", "clean_text", "group", "subgroup", "source", "planted_as"]
HOLDOUT_COLUMNS = ["item_id", "image", "text", "name", "group", "subgroup", "source"]


@pytest.fixture(scope="module")
def pool(micro_pool_built) -> Path:
    return micro_pool_built


@pytest.fixture(scope="module")
def rows(pool):
    """urls.parquet joined with ground_truth.parquet, one dict per sample, plus the file bytes."""
    urls = pq.read_table(pool / "urls.parquet").to_pylist()
    gt = pq.read_table(pool / "ground_truth.parquet").to_pylist()
    assert [u["uid"] for u in urls] == [g["uid"] for g in gt], "ground truth rows follow urls.parquet"
    out = []
    for u, g in zip(urls, gt):
        r = {**g, **u}
        r["path"] = pool / "www" / u["url"][len(URL_BASE):]
        r["data"] = r["path"].read_bytes() if r["path"].exists() else None
        out.append(r)
    return out


@pytest.fixture(scope="module")
def catalog():
    from datacurate.pool.sources import load_catalog

    return load_catalog()


@pytest.fixture(scope="module")
def labels(catalog):
    return {r.item_id: r for c in catalog.concepts for r in c.renditions}


def _decode(data: bytes):
    from PIL import Image

    im = Image.open(io.BytesIO(data))
    im.load()
    return im


def _tree_hashes(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------- layout

def test_layout_and_columns_match_formats(pool):
    for rel in ("manifest.json", "urls.parquet", "ground_truth.parquet", "holdout/eval.parquet",
                "holdout/trusted.parquet", "www"):
        assert (pool / rel).exists(), rel
    m = json.loads((pool / "manifest.json").read_text())
    assert (m["scale"], m["seed"], m["builder_version"], m["url_base"]) == ("micro", 0, BUILDER_VERSION, URL_BASE)
    assert {"google", "twitter", "cldr", "photos"} <= {s["name"] for s in m["sources"]}
    for s in m["sources"]:
        assert {"name", "package", "version", "licence", "homepage"} <= set(s) and s["licence"] and s["version"]
    assert set(m["counts"]) == set(DEFECTS) and set(m["defect_rates"]) == set(DEFECTS) - {"none"}
    assert sum(m["counts"].values()) == get_scale("micro").pool_size == m["pool_size"]
    assert {"pool", "trusted", "eval"} <= set(m["splits"])

    urls = pq.read_table(pool / "urls.parquet")
    assert urls.column_names == ["uid", "url", "text"] and all(str(t) == "string" for t in urls.schema.types)
    gt = pq.read_table(pool / "ground_truth.parquet")
    assert gt.column_names == GT_COLUMNS
    assert gt.num_rows == urls.num_rows == m["pool_size"]
    found = {d: 0 for d in DEFECTS}
    for d in gt.column("defect").to_pylist():
        found[d] += 1                                   # KeyError on a defect name outside formats.md
    assert found == m["counts"]
    for which in ("eval", "trusted"):
        t = pq.read_table(pool / "holdout" / f"{which}.parquet")
        assert t.column_names == HOLDOUT_COLUMNS and str(t.schema.field("image").type) == "binary"
        assert t.num_rows == m["splits"][which]["items"] > 0
        first = t.slice(0, 1).to_pylist()[0]
        im = _decode(first["image"])
        assert im.format == "PNG" and first["name"] and first["source"] in ("google", "twitter")
        assert len(set(t.column("item_id").to_pylist())) == t.num_rows
    tax = pq.read_table(pool / "holdout" / "taxonomy.parquet")
    assert tax.column_names == ["name", "group", "subgroup", "split"]
    split_of = {}
    for name, split in zip(tax.column("name").to_pylist(), tax.column("split").to_pylist()):
        split_of.setdefault(split, set()).add(name)
    assert set(split_of) == {"pool", "trusted", "eval"}
    assert split_of["eval"] == set(pq.read_table(pool / "holdout" / "eval.parquet").column("name").to_pylist())
    assert split_of["trusted"] == set(pq.read_table(pool / "holdout" / "trusted.parquet").column("name").to_pylist())


def test_uids_unique_valid_and_urls_under_base(rows):
    uids = [r["uid"] for r in rows]
    assert all(is_uid(u) for u in uids) and len(set(uids)) == len(uids)
    urls = [r["url"] for r in rows]
    assert len(set(urls)) == len(urls) and all(u.startswith(URL_BASE) for u in urls)
    assert all(r["text"] for r in rows)
    # defects are spread over the row order (so over img2dataset's shards), not in blocks
    half = len(rows) // 2
    for d in ("swapped_caption", "exact_duplicate"):
        first = sum(r["defect"] == d for r in rows[:half])
        assert 0 < first < sum(r["defect"] == d for r in rows)


def test_same_seed_same_bytes_other_seed_differs(pool, tmp_path):
    again = tmp_path / "again"
    build_pool(again, scale="micro", seed=0, workers=2, progress=False, quiet=True)
    assert _tree_hashes(again) == _tree_hashes(pool)
    other = tmp_path / "seed1"
    build_pool(other, scale="micro", seed=1, progress=False, quiet=True)
    a = pq.read_table(pool / "urls.parquet").column("uid").to_pylist()
    b = pq.read_table(other / "urls.parquet").column("uid").to_pylist()
    assert not set(a) & set(b)
    e0 = set(pq.read_table(pool / "holdout/eval.parquet").column("item_id").to_pylist())
    e1 = set(pq.read_table(other / "holdout/eval.parquet").column("item_id").to_pylist())
    assert e0 != e1


# ----------------------------------------------------------------------------- split hygiene

def test_no_holdout_image_in_pool_except_planted_overlap(pool, rows):
    held = {}
    concepts = {}
    for which in ("eval", "trusted"):
        for r in pq.read_table(pool / "holdout" / f"{which}.parquet").to_pylist():
            held[hashlib.sha256(r["image"]).hexdigest()] = (which, r["item_id"])
            held[hashlib.sha256(np.asarray(_decode(r["image"]).convert("RGBA")).tobytes()).hexdigest()] = \
                (which, r["item_id"])
            concepts.setdefault(which, set()).add(r["item_id"].split(":")[0])
    assert not concepts["eval"] & concepts["trusted"]
    overlap_hits = 0
    for r in rows:
        if r["data"] is None:
            continue
        keys = [hashlib.sha256(r["data"]).hexdigest()]
        try:
            keys.append(hashlib.sha256(np.asarray(_decode(r["data"]).convert("RGBA")).tobytes()).hexdigest())
        except Exception:
            pass
        hits = [held[k] for k in keys if k in held]
        if r["defect"] == "eval_overlap":
            overlap_hits += bool(hits)
            assert all(h == ("eval", r["item_id"]) for h in hits), (r["item_id"], hits)
            assert r["planted_as"] in ("file", "flattened", "scene"), r["planted_as"]
            assert (keys[0] in held) == (r["planted_as"] == "file"), (r["url"], r["planted_as"])  # the file, byte for byte
        else:
            assert r["planted_as"] is None
            assert not hits, f"{r['url']}: holdout image {hits} in the pool but not marked eval_overlap"
            concept = r["item_id"].split(":")[0]
            assert concept not in concepts["eval"] and concept not in concepts["trusted"], r
    assert overlap_hits >= 1, "some planted eval images are the held-out file itself"
    eval_ids = set(pq.read_table(pool / "holdout/eval.parquet").column("item_id").to_pylist())
    assert all(r["item_id"] in eval_ids for r in rows if r["defect"] == "eval_overlap")


def test_eval_has_every_group(pool, rows):
    t = pq.read_table(pool / "holdout/eval.parquet").to_pylist()
    per_group: dict = {}
    for r in t:
        per_group[r["group"]] = per_group.get(r["group"], 0) + 1
    assert len(per_group) == 9 and "component" not in per_group
    assert min(per_group.values()) >= 20
    assert {r["group"] for r in rows} <= set(per_group)


# ----------------------------------------------------------------------------- defects

def test_defect_rates(pool, rows):
    n = len(rows)
    counts = {d: sum(r["defect"] == d for r in rows) for d in DEFECTS}
    for d, rate in DEFAULT_RATES.items():
        assert counts[d] >= 4 and abs(counts[d] / n - rate) <= 0.005 + 4 / n, (d, counts[d])
    assert counts["none"] / n > 0.4


def test_clean_captions_are_true(rows, labels):
    checked_colour = 0
    for r in rows:
        if r["defect"] not in ("none", "exact_duplicate", "near_duplicate", "tiny_image", "extreme_aspect",
                               "eval_overlap"):
            continue
        assert r["text"] == r["clean_text"] and r["lang"] == "en"
        rend = labels[r["item_id"]]
        assert rend.label.lower() in r["text"].lower(), (r["text"], rend.label)
        assert rend.source == r["source"]
        if r["defect"] == "none" and (" on a " in r["text"] and r["text"].endswith(" background")
                                      and "noisy" not in r["text"] and "gradient" not in r["text"]):
            colour = r["text"].rsplit(" on a ", 1)[1][:-len(" background")]
            px = np.asarray(_decode(r["data"]).convert("RGB"), np.float32)
            corners = [px[0, 0], px[0, -1], px[-1, 0], px[-1, -1]]
            dist = min(np.abs(c - np.array(COLOURS[colour])).max() for c in corners)
            assert dist < 30, (r["url"], r["text"], corners)
            checked_colour += 1
    assert checked_colour >= 10


def test_breadcrumb_captions_name_the_true_subgroup(rows):
    """Some captions carry an emoji site's category path; it names the item's own group and subgroup
    (the words the emoji_subgroup task's class names use)."""
    from datacurate.taxonomy import group_title, subgroup_title

    clean = [r for r in rows if r["defect"] == "none"]
    crumbs = [r for r in clean if " / " in r["text"] or " | " in r["text"] or r["text"].endswith(" emoji")
              and subgroup_title(r["subgroup"]) in r["text"]]
    assert 0.05 * len(clean) <= len(crumbs) <= 0.3 * len(clean), (len(crumbs), len(clean))
    for r in crumbs:
        assert subgroup_title(r["subgroup"]) in r["text"], (r["text"], r["subgroup"])
        if " / " in r["text"] or " | " in r["text"]:
            assert group_title(r["group"]) in r["text"], (r["text"], r["group"])


def test_caption_defects_labelled(rows, labels, catalog):
    boiler_words = {b.split("{")[0].lower() for b in BOILERPLATE}
    for r in rows:
        rend = labels.get(r["item_id"])
        d = r["defect"]
        if d == "swapped_caption":
            assert r["text"] != r["clean_text"] and r["lang"] == "en"
            assert rend.label.lower() not in r["text"].lower() and rend.label.lower() in r["clean_text"].lower()
        elif d == "boilerplate":
            assert r["lang"] == "und" and rend.label.lower() not in r["text"].lower()
            assert any(r["text"].lower().startswith(w) for w in boiler_words), r["text"]
        elif d == "foreign_language":
            tr = catalog.translations.get(rend.hexcode, {})
            base = catalog.translations.get(labels[f"{rend.concept}:{rend.source}"].hexcode, {})
            real = {tr.get(r["lang"], ("",))[0], base.get(r["lang"], ("",))[0]} - {""}
            assert r["lang"] in catalog.locales and any(r["text"].startswith(x) for x in real), (r["text"], real)
            assert r["text"] != r["clean_text"]


def test_image_defects_labelled(rows):
    import cv2

    by_uid = {r["uid"]: r for r in rows}
    for r in rows:
        d = r["defect"]
        if d == "broken_url":
            assert r["data"] is None and not r["path"].exists()
            continue
        assert r["data"] is not None, f"{r['url']} must exist under www/"
        if d == "undecodable":
            with pytest.raises(Exception):
                _decode(r["data"])
            assert cv2.imdecode(np.frombuffer(r["data"], np.uint8), cv2.IMREAD_UNCHANGED) is None
            continue
        im = _decode(r["data"])
        w, h = im.size
        if d == "tiny_image":
            assert max(w, h) <= 16
        else:
            assert min(w, h) > 16, r["url"]
        if d == "extreme_aspect":
            assert max(w, h) / min(w, h) > 5
        elif d != "tiny_image":
            assert max(w, h) / min(w, h) <= 2, r["url"]
        if d in ("exact_duplicate", "near_duplicate"):
            orig = by_uid[r["dup_of"]]
            assert orig["defect"] == "none" and orig["url"] != r["url"] and orig["item_id"] == r["item_id"]
            if d == "exact_duplicate":
                assert r["data"] == orig["data"]
            else:
                assert r["data"] != orig["data"]
                assert np.abs(_thumb(im) - _thumb(_decode(orig["data"]))).mean() < 20, r["url"]
        else:
            assert r["dup_of"] is None
    # a near duplicate looks more like its original than like (almost) any other clean image
    clean = [r for r in rows if r["defect"] == "none"]
    thumbs = np.stack([_thumb(_decode(r["data"]), 16) for r in clean])
    index = {r["uid"]: i for i, r in enumerate(clean)}
    near = [r for r in rows if r["defect"] == "near_duplicate"]
    nearest = 0
    for r in near:
        dist = np.abs(thumbs - _thumb(_decode(r["data"]), 16)[None]).mean(axis=(1, 2))
        nearest += int(np.argmin(dist)) == index[r["dup_of"]]
    assert nearest >= 0.85 * len(near)


def _thumb(im, side: int = 8):
    from PIL import Image

    return np.asarray(im.convert("L").resize((side, side), Image.BILINEAR), np.float32)


# ----------------------------------------------------------------------------- CLI, refusal, fetch errors

def test_cli_help():
    p = subprocess.run([sys.executable, "-m", "datacurate", "pool", "build", "--help"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "--scale" in p.stdout and "--seed" in p.stdout and "examples:" in p.stdout


def test_existing_pool_kept_or_refused(pool, tmp_path, capsys):
    fake = tmp_path / "pool"
    fake.mkdir()
    shutil.copy(pool / "manifest.json", fake / "manifest.json")
    m = build_pool(fake, scale="micro", seed=0, progress=False)          # same pool: nothing to do
    assert m["seed"] == 0 and sorted(p.name for p in fake.iterdir()) == ["manifest.json"]
    assert "nothing to do" in capsys.readouterr().err
    with pytest.raises(PoolExistsError, match="seed=0"):
        build_pool(fake, scale="micro", seed=2, progress=False, quiet=True)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(PoolExistsError, match="not an empty folder"):
        build_pool(other, scale="micro", seed=0, progress=False, quiet=True)
    assert (other / "notes.txt").read_text() == "mine"
    with pytest.raises(Exception, match="micro, tiny, base"):
        build_pool(tmp_path / "x", scale="small", seed=0)


def test_fetch_failure_names_package_url_and_cache(tmp_path, monkeypatch):
    from datacurate.pool import sources

    monkeypatch.setattr(sources, "REGISTRY", "http://127.0.0.1:9")
    with pytest.raises(sources.SourceFetchError) as e:
        sources.fetch_package(sources.CLDR, cache=tmp_path)
    msg = str(e.value)
    assert "emojibase-data@17.0.0" in msg and "http://127.0.0.1:9/emojibase-data/-/emojibase-data-17.0.0.tgz" in msg
    assert str(tmp_path / "npm" / "emojibase-data-17.0.0.tgz") in msg and "pre-fill" in msg
    (tmp_path / "npm" / "emojibase-data-17.0.0.tgz").write_bytes(b"not the real tarball")
    with pytest.raises(sources.SourceFetchError, match="integrity"):
        sources.fetch_package(sources.CLDR, cache=tmp_path)


def test_catalog_joins_art_and_annotations(catalog):
    assert len(catalog.concepts) > 1800 and len(catalog.locales) >= 20
    assert "component" not in {c.group for c in catalog.concepts}
    for c in catalog.concepts:
        assert {r.source for r in c.renditions if r.base} == {"google", "twitter"}
        assert all(Path(r.path).is_file() for r in c.renditions[:1])
    wave = next(c for c in catalog.concepts if c.id == "1f44b")
    assert wave.label == "waving hand" and sum(not r.base for r in wave.renditions) == 10
    assert catalog.translations["1F44B"]["de"][0]
