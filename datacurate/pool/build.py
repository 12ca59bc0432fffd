"""`datacurate pool build`: the offline pool, from real registry data, with planted web defects.

Writes POOL/ exactly as docs/formats.md says: manifest.json, urls.parquet, www/,
ground_truth.parquet, holdout/{eval,trusted}.parquet. The same scale and seed give the
same files byte for byte. The pool is built in a temporary sibling folder and renamed
into place at the end, so POOL/ is either absent, complete, or the previous pool.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import shutil
import sys
import time
from pathlib import Path

from ..atomic import replace_dir
from ..errors import UserError
from ..layout import PoolLayout

BUILDER_VERSION = "3"
URL_BASE = "http://offline.datacurate/"


class PoolExistsError(UserError):
    """The output folder holds something else than the pool asked for."""


# ----------------------------------------------------------------------------- web paths

_JPEG_EXT = ((".jpg", 0.72), (".jpeg", 0.12), (".JPG", 0.11), ("", 0.05))
_PNG_EXT = ((".png", 0.93), (".PNG", 0.02), ("", 0.05))


def _ext(rng: random.Random, fmt: str) -> str:
    table = _PNG_EXT if fmt == "PNG" else _JPEG_EXT
    x, acc = rng.random(), 0.0
    for e, w in table:
        acc += w
        if x < acc:
            return e
    return table[0][0]


def web_path(rng: random.Random, label: str, token: str, fmt: str) -> str:
    """A path that looks like a real site's; ``token`` makes it unique."""
    from .sources import slug

    e = _ext(rng, fmt)
    s = slug(label)
    y, m = rng.randint(2012, 2025), rng.randint(1, 12)
    pattern = rng.randrange(7)
    if pattern == 0:
        return f"wp-content/uploads/{y}/{m:02d}/{s}-{token[:6]}{e}"
    if pattern == 1:
        return f"images/{token[:2]}/{token[2:4]}/{token}{e}"
    if pattern == 2:
        return f"static/media/{s}.{token[:8]}{e}"
    if pattern == 3:
        return f"cdn/img/{y}{m:02d}/IMG_{int(token[:6], 16) % 10000:04d}_{token[6:10]}{e}"
    if pattern == 4:
        return f"uploads/thumbs/{s}_{token[:8]}{e}"
    if pattern == 5:
        return f"assets/emoji/{token[:12]}{e}"
    return f"forum/attachments/{y}/{token[:10]}/{s}{e}"


def _broken_path(rng: random.Random, label: str, token: str, fmt: str) -> str:
    return "removed/" + web_path(rng, label, token, fmt) if rng.random() < 0.3 else web_path(rng, label, token, fmt)


# ----------------------------------------------------------------------------- helpers

def _manifest_matches(m: dict, scale: str, seed: int) -> bool:
    return (m.get("scale"), m.get("seed"), m.get("builder_version")) == (scale, seed, BUILDER_VERSION)


def _check_out(out: Path, scale: str, seed: int, force: bool) -> dict | None:
    """The existing manifest when the same pool is already built; error on anything else."""
    man = PoolLayout.at(out).manifest_path
    if man.exists():
        try:
            m = json.loads(man.read_text())
        except (OSError, ValueError) as e:
            m = {"error": str(e)}
        if _manifest_matches(m, scale, seed):
            return m
        if not force:
            raise PoolExistsError(
                f"{out}: holds another pool (scale={m.get('scale')}, seed={m.get('seed')}, builder "
                f"{m.get('builder_version')}), not scale={scale}, seed={seed}, builder {BUILDER_VERSION}; "
                "choose another --out or pass --force to replace it")
    elif out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise PoolExistsError(f"{out}: exists and is not an empty folder nor a pool (no manifest.json); "
                              "choose another --out or pass --force to replace it")
    return None


def _clear_stale(out: Path) -> None:
    """Remove temporary build folders of `out` left by builds that died."""
    for p in out.parent.glob(f".{out.name}.building-*"):
        try:
            pid = int(p.name.rsplit("-", 1)[1])
            os.kill(pid, 0)
        except (ValueError, ProcessLookupError):
            shutil.rmtree(p, ignore_errors=True)
        except PermissionError:
            pass


def _render_all(specs, workers: int, progress: bool):
    from tqdm import tqdm

    from .defects import render

    bar = dict(total=len(specs), desc="pool build: render", unit="img", disable=not progress, file=sys.stderr)
    if workers <= 1:
        for s in tqdm(specs, **bar):
            yield render(s)
        return
    import multiprocessing as mp

    with mp.get_context("fork").Pool(workers) as p:
        yield from tqdm(p.imap(render, specs, chunksize=32), **bar)


def _holdout_table(concepts, seed: int):
    import pyarrow as pa

    from .compose import STYLE_OF, caption

    cols = {k: [] for k in ("item_id", "image", "text", "name", "group", "subgroup", "source")}
    for c in concepts:
        for r in sorted((r for r in c.renditions if r.base), key=lambda r: r.source):
            with open(r.path, "rb") as f:
                data = f.read()
            rng = random.Random(f"datacurate-holdout/{seed}/{r.item_id}")
            ctx = {"label": r.label, "tags": r.tags, "group": c.group, "subgroup": c.subgroup,
                   "style": STYLE_OF[r.source]}
            for k, v in (("item_id", r.item_id), ("image", data), ("text", caption(rng, ctx, False)),
                         ("name", r.label), ("group", c.group), ("subgroup", c.subgroup), ("source", r.source)):
                cols[k].append(v)
    schema = pa.schema([("item_id", pa.string()), ("image", pa.binary()), ("text", pa.string()),
                        ("name", pa.string()), ("group", pa.string()), ("subgroup", pa.string()),
                        ("source", pa.string())])
    return pa.table(cols, schema=schema)


def taxonomy_table(splits):
    """Every concept's name with its group, subgroup and split: the emoji taxonomy as the builder split it.

    The offline evaluation scores a group or subgroup by its member emoji's names as well as its
    own (CHiLS); it takes the members from here, never from the ``eval`` split.
    """
    import pyarrow as pa

    cols = {k: [] for k in ("name", "group", "subgroup", "split")}
    for which in ("pool", "trusted", "eval"):
        for c in splits[which]:
            for name in sorted({r.label for r in c.renditions if r.base}):
                for k, v in (("name", name), ("group", c.group), ("subgroup", c.subgroup), ("split", which)):
                    cols[k].append(v)
    return pa.table(cols, schema=pa.schema([(k, pa.string()) for k in cols]))


def _write_parquet(table, path: Path) -> None:
    import pyarrow.parquet as pq

    pq.write_table(table, path, compression="zstd")


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return str(n)


# ----------------------------------------------------------------------------- the build

def build_pool(out, scale: "Scale | str" = "micro", seed: int = 0, force: bool = False, workers: int = 1,
               cache=None, progress: bool = True, quiet: bool = False) -> dict:
    """Build POOL/ for an offline ``scale`` (micro | tiny | base) and ``seed``; returns the manifest.

    Does nothing when ``out`` already holds this pool; refuses another pool unless ``force``.
    """
    import pyarrow as pa

    from ..scales import Scale, as_scale, offline_scales
    from ..uids import make_uid
    from .defects import DEFAULT_RATES, DEFECTS, plan_counts, render_duplicate
    from .plan import SPLIT_FRACTIONS, plan_samples, split_concepts
    from .sources import SKIMAGE_SOURCE, load_catalog

    say = (lambda *a: None) if quiet else (lambda *a: print(*a, file=sys.stderr))
    name = scale.name if isinstance(scale, Scale) else scale
    if name not in offline_scales():
        raise UserError(f"pool build makes the offline pool for scales {', '.join(offline_scales())}, not {name!r}; "
                        "larger scales download a real crawl's url+text parquet with `datacurate pool download`")
    sc = as_scale(scale)
    scale = sc.name
    seed = int(seed)
    out = Path(out).absolute()
    done = _check_out(out, scale, seed, force)
    if done is not None:
        say(f"pool build: {out} already holds the {scale} pool for seed {seed} (builder {BUILDER_VERSION}); "
            "nothing to do")
        return done
    t0 = time.time()
    out.parent.mkdir(parents=True, exist_ok=True)
    _clear_stale(out)

    catalog = load_catalog(cache)
    splits = split_concepts(catalog.concepts, seed, sc.pool_concepts)
    n = sc.pool_size
    counts = plan_counts(n, DEFAULT_RATES)
    specs = plan_samples(splits, catalog.translations, counts, seed)

    tmp = out.parent / f".{out.name}.building-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    staged = PoolLayout.at(tmp)
    staged.www.mkdir(parents=True)
    staged.holdout.mkdir()
    try:
        uids = [make_uid("datacurate-pool", BUILDER_VERSION, scale, seed, s.index) for s in specs]
        urls: list = [None] * len(specs)
        results: list = [None] * len(specs)
        keep = {s.dup_of for s in specs if s.dup_of is not None}
        originals = [s for s in specs if s.dup_of is None]

        def place(s, r) -> None:
            rng = s.rng("url")
            token = uids[s.index]
            if s.defect == "broken_url":
                rel = _broken_path(rng, s.label, token, r.fmt)
            else:
                rel = web_path(rng, s.label, token, r.fmt)
                dst = staged.www / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                dst.write_bytes(r.data)
            urls[s.index] = URL_BASE + rel
            # only the originals of duplicates keep their bytes in memory
            results[s.index] = r if s.index in keep else dataclasses.replace(r, data=None, ctx={})

        for s, r in zip(originals, _render_all(originals, workers, progress)):
            place(s, r)
        for s in specs:
            if s.dup_of is not None:
                place(s, render_duplicate(s, results[s.dup_of]))

        for s in specs:   # a dead link must 404: neither a file nor a folder (listing) under www/
            if s.defect == "broken_url" and (staged.www / urls[s.index][len(URL_BASE):]).exists():
                raise RuntimeError(f"internal: broken url {urls[s.index]} points at something that exists")
        order = list(range(len(specs)))
        random.Random(f"datacurate-order/{seed}").shuffle(order)
        gt_cols = {k: [] for k in ("uid", "defect", "item_id", "dup_of", "lang", "clean_text", "group",
                                   "subgroup", "source", "planted_as")}
        url_cols = {"uid": [], "url": [], "text": []}
        for i in order:
            s, r = specs[i], results[i]
            url_cols["uid"].append(uids[i])
            url_cols["url"].append(urls[i])
            url_cols["text"].append(r.text)
            for k, v in (("uid", uids[i]), ("defect", s.defect), ("item_id", s.item_id),
                         ("dup_of", uids[s.dup_of] if s.dup_of is not None else None), ("lang", r.lang),
                         ("clean_text", r.clean_text), ("group", s.group), ("subgroup", s.subgroup),
                         ("source", s.source), ("planted_as", r.planted_as)):
                gt_cols[k].append(v)
        _write_parquet(pa.table(url_cols, schema=pa.schema([(k, pa.string()) for k in url_cols])),
                       staged.urls)
        _write_parquet(pa.table(gt_cols, schema=pa.schema([(k, pa.string()) for k in gt_cols])),
                       staged.ground_truth)
        held = {}
        for which in ("eval", "trusted"):
            t = _holdout_table(splits[which], seed)
            _write_parquet(t, staged.holdout_parquet(which))
            held[which] = t.num_rows
        _write_parquet(taxonomy_table(splits), staged.holdout_parquet("taxonomy"))

        import skimage

        photos = dict(SKIMAGE_SOURCE, version=skimage.__version__)
        n_pool_renditions = sum(len(c.renditions) for c in splits["pool"])
        manifest = {
            "format": "datacurate-pool",
            "builder_version": BUILDER_VERSION,
            "scale": scale,
            "seed": seed,
            "pool_size": len(specs),
            "url_base": URL_BASE,
            "sources": catalog.sources + [photos],
            "locales": catalog.locales,
            "splits": {
                "pool": {"concepts": len(splits["pool"]), "renditions": n_pool_renditions, "samples": len(specs)},
                "trusted": {"concepts": len(splits["trusted"]), "items": held["trusted"]},
                "eval": {"concepts": len(splits["eval"]), "items": held["eval"]},
                "fractions": SPLIT_FRACTIONS,
            },
            "counts": {d: counts.get(d, 0) for d in DEFECTS},
            "defect_rates": {d: DEFAULT_RATES.get(d, 0.0) for d in DEFECTS if d != "none"},
            "groups": sorted({c.group for c in catalog.concepts}),
            "files": {"urls": "urls.parquet", "www": "www/", "ground_truth": "ground_truth.parquet",
                      "eval": "holdout/eval.parquet", "trusted": "holdout/trusted.parquet"},
        }
        staged.manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if not quiet:
        print_summary(out, manifest, time.time() - t0)
    return manifest


def print_summary(out: Path, m: dict, seconds: float | None = None) -> None:
    sp = m["splits"]
    lines = [f"pool build: {out}  (scale {m['scale']}, seed {m['seed']}, builder {m['builder_version']})",
             f"  splits   pool {sp['pool']['samples']} samples from {sp['pool']['concepts']} concepts; "
             f"trusted {sp['trusted']['items']} items ({sp['trusted']['concepts']} concepts); "
             f"eval {sp['eval']['items']} items ({sp['eval']['concepts']} concepts)",
             "  defects  " + ", ".join(f"{d} {c}" for d, c in m["counts"].items()),
             f"  size     {_human(_du(out))}" + (f"   time {seconds:.1f} s" if seconds is not None else "")]
    print("\n".join(lines), file=sys.stderr)


# ----------------------------------------------------------------------------- CLI

EPILOG = """\
examples:
  datacurate pool build --scale micro --out runs/micro/pool
  datacurate pool build --scale tiny --out runs/tiny/pool --seed 1 --workers 2
  DATACURATE_CACHE=/data/cache datacurate pool build --scale tiny --out pool

The images and captions are real: emoji art (Noto Emoji, Twemoji) and CLDR annotations
from the npm packages emoji-datasource-google, emoji-datasource-twitter and
emojibase-data, fetched once into $DATACURATE_CACHE (default ~/.cache/datacurate; it
can be pre-filled with the .tgz files under npm/), plus scikit-image's photographs as
backgrounds. Writes POOL/manifest.json, urls.parquet, www/, ground_truth.parquet and
holdout/{eval,trusted}.parquet (docs/formats.md). The same scale and seed give the same
files byte for byte; an existing identical pool is left alone."""


def add_parser(sub) -> None:
    p = sub.add_parser("build", help="build the offline pool (real registry data + planted web defects)",
                       description="Build the offline pool: real emoji images and CLDR captions composed into "
                                   "web-like images, with swapped captions, boilerplate, foreign captions, "
                                   "duplicates, tiny/extreme images, broken urls, undecodable files and "
                                   "planted eval images at known rates (ground truth kept apart).",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    from ..scales import offline_scales

    p.add_argument("--scale", required=True, choices=offline_scales(), help="pool size from the scale table")
    p.add_argument("--out", required=True, type=Path, help="the POOL folder to create")
    p.add_argument("--seed", type=int, default=0, help="seed of the split, the composition and the defects")
    p.add_argument("--workers", type=int, default=1, help="processes rendering images (same result for any value)")
    p.add_argument("--force", action="store_true", help="replace an existing different pool at --out")
    p.add_argument("--cache", type=Path, default=None,
                   help="source package cache (default $DATACURATE_CACHE or ~/.cache/datacurate)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run, out_folder="pool folder")


def _run(args) -> int:
    build_pool(args.out, scale=args.scale, seed=args.seed, force=args.force, workers=args.workers,
               cache=args.cache, progress=not args.no_progress)
    return 0
