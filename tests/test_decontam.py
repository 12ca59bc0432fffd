"""decontaminate_local: eval images are found when pasted into new scenes; other emoji on the same scenes are not."""
from __future__ import annotations

import io
import random
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datacurate.errors import UserError
from datacurate.pool import compose
from test_filters_helpers import flat_art, row, run, write_pool

N_EVAL, N_OTHER = 24, 12
BACKGROUNDS = ("solid", "gradient", "noise", "photo")


def _jpeg(img, quality: int = 75) -> bytes:
    return compose.encode(img, "JPEG", quality)  # the pool builder's own encoder


@pytest.fixture(scope="module")
def art(micro_pool_built, tmp_path_factory):
    """(eval rows, other rows, folder): some held-out eval emoji and some trusted-split emoji, as PNG files."""
    d = tmp_path_factory.mktemp("art")
    ev = pq.read_table(micro_pool_built / "holdout" / "eval.parquet", columns=["item_id", "image"]).to_pylist()
    tr = pq.read_table(micro_pool_built / "holdout" / "trusted.parquet", columns=["item_id", "image"]).to_pylist()
    ev, tr = random.Random(0).sample(ev, N_EVAL), random.Random(1).sample(tr, N_OTHER)
    for r in ev + tr:
        r["path"] = str(d / (r["item_id"].replace(":", "_") + ".png"))
        Path(r["path"]).write_bytes(r["image"])
    return ev, tr, d


@pytest.fixture(scope="module")
def index(art):
    from filters.image_match import EvalIndex

    return EvalIndex([r["image"] for r in art[0]])


def _scene(path: str, seed: int, bg: str):
    """The pool builder's own paste: random canvas, the art at 40-85% of the short side, random place."""
    from PIL import Image

    rng = random.Random(seed)
    w, h = compose.canvas_size(rng)
    img, _ = compose.compose(rng, path, w, h, bg_kind=bg)
    return Image.open(io.BytesIO(_jpeg(img, rng.choice((70, 80, 90)))))


def test_finds_copies_pasted_into_new_scenes(art, index):
    ev, _, _ = art
    found, wrong = [], []
    for i, r in enumerate(ev[:16]):
        m = index.find(_scene(r["path"], seed=i, bg=BACKGROUNDS[i % 4]))
        if index.is_copy(m):
            (found if m.eval_index == i else wrong).append(r["item_id"])
    assert not wrong
    assert len(found) == 16, found  # featureless art (a plain blue square) too: by its colour region


def test_other_emoji_on_the_same_scenes_are_kept(art, index):
    ev, other, _ = art
    flagged = []
    for i, r in enumerate(other):
        # same seed and background kind as an eval copy above: the very same background
        m = index.find(_scene(r["path"], seed=i, bg=BACKGROUNDS[i % 4]))
        if index.is_copy(m):
            flagged.append((r["item_id"], ev[m.eval_index]["item_id"], m))
    assert not flagged


def test_whole_copies_caught_by_the_phash_and_local_pair(art, index):
    """The recipe runs decontaminate_phash (whole-image copies) and decontaminate_local (pasted copies):
    the file itself and flattened, resized copies are caught by at least one, never as another image."""
    from PIL import Image

    from datacurate.images import to_rgb
    from filters.image_hash import HashIndex, hash_images, phash

    ev, _, _ = art
    hashes = HashIndex(hash_images([r["image"] for r in ev]))
    for i, r in enumerate(ev[16:], start=16):
        flat = to_rgb(Image.open(io.BytesIO(r["image"])))
        for img in (flat, flat.resize((150, 150), Image.BICUBIC)):
            copy = Image.open(io.BytesIO(_jpeg(img, 90)))
            m = index.find(copy)
            by_hash = bool(hashes.matches(np.array([phash(copy)], np.uint64), 6)[0])
            assert by_hash or index.is_copy(m), (r["item_id"], img.size, m)
            assert not index.is_copy(m) or m.eval_index == i


def test_images_too_small_or_blank_are_not_copies(index):
    from PIL import Image

    assert index.find(Image.new("RGB", (10, 10), (200, 30, 30))) is None
    assert not index.is_copy(index.find(Image.new("RGB", (200, 160), (250, 250, 250))))


def test_bad_eval_image_is_named():
    from filters.image_match import EvalIndex

    with pytest.raises(UserError, match="eval image 1"):
        EvalIndex([_jpeg(_noise()), b"<html>not an image</html>"])
    with pytest.raises(UserError, match="at least one"):
        EvalIndex([])


def _noise():
    from PIL import Image

    return Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))


def test_micro_pool_every_planted_eval_image_is_dropped(micro_pool_built, tmp_path):
    """The micro pool's planted eval_overlap rows (file itself, flattened+resized, pasted into a scene)
    among other pool rows, downloaded as img2dataset does (alpha on white, JPEG): all dropped."""
    from PIL import Image

    from datacurate.images import to_rgb
    from datacurate.pool.build import URL_BASE

    src = micro_pool_built
    gt = {r["uid"]: r for r in pq.read_table(src / "ground_truth.parquet").to_pylist()}
    urls = pq.read_table(src / "urls.parquet").to_pylist()
    planted = [u for u in urls if gt[u["uid"]]["defect"] == "eval_overlap"]
    clean = random.Random(0).sample([u for u in urls if gt[u["uid"]]["defect"] == "none"], 40)
    chosen = planted + clean
    assert len(planted) >= 4
    # held-out images: the planted ones and 40 others (the whole split would only make the test slow)
    ev = pq.read_table(src / "holdout" / "eval.parquet")
    ids = ev.column("item_id").to_pylist()
    want = {gt[u["uid"]]["item_id"] for u in planted} | set(random.Random(2).sample(ids, 40))
    pool = tmp_path / "pool"
    (pool / "holdout").mkdir(parents=True)
    pq.write_table(ev.take(pa.array([i for i, x in enumerate(ids) if x in want])), pool / "holdout" / "eval.parquet")
    rows = [row(i, text=u["text"]) for i, u in enumerate(chosen)]
    for r, u in zip(rows, chosen):
        r["uid"] = u["uid"]
    write_pool(pool, rows, per_shard=len(rows))
    (pool / "shards").mkdir()
    with tarfile.open(pool / "shards" / "00000.tar", "w") as tf:
        for r, u in zip(rows, chosen):
            data = _jpeg(to_rgb(Image.open(src / "www" / u["url"][len(URL_BASE):])), 95)
            info = tarfile.TarInfo(f"{r['key']}.jpg")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    got, _ = run(pool, "steps:\n  - {filter: decontaminate_local}\n", tmp_path)
    dropped = {r["uid"] for r in rows} - got
    scenes = {u["uid"] for u in planted if gt[u["uid"]]["planted_as"] == "scene"}
    assert scenes and scenes <= dropped
    assert len(dropped - {u["uid"] for u in planted}) <= 1
    # the recipe's pair (pHash for whole-image copies, local features for pasted ones) drops every one
    got, _ = run(pool, "steps:\n  - {filter: decontaminate_phash}\n  - {filter: decontaminate_local}\n", tmp_path,
                 name="both")
    dropped = {r["uid"] for r in rows} - got
    assert {u["uid"] for u in planted} <= dropped
    assert len(dropped - {u["uid"] for u in planted}) <= 1


def _paste(art, side: int, at: tuple[int, int], background) -> bytes:
    from PIL import Image

    scene = background.copy()
    a = art.resize((side, side), Image.BICUBIC)
    scene.paste(a, at, a)
    return _jpeg(scene, 75)


def _gravel(w: int = 220, h: int = 200):
    from PIL import Image

    g = np.random.default_rng(3).integers(60, 200, (h // 4, w // 4), dtype=np.uint8)
    g = np.asarray(Image.fromarray(g).resize((w, h), Image.NEAREST))
    return Image.fromarray(np.repeat(g[..., None], 3, axis=2))


def test_flat_art_on_a_texture_is_placed_by_its_colour_regions():
    """A plain bell on gravel: its orange region's outline says where the art sits; a plain
    orange shape of another outline on the same gravel is not a copy."""
    from PIL import Image

    from filters.image_match import EvalIndex

    def png(img):
        b = io.BytesIO()
        img.save(b, "PNG")
        return b.getvalue()

    orange = (250, 160, 40)
    evals = [flat_art("bell", orange), flat_art("drop", (220, 40, 70)), flat_art("square", (40, 90, 220))]
    index = EvalIndex([png(a) for a in evals])
    scene = Image.open(io.BytesIO(_paste(evals[0], 96, (70, 50), _gravel())))
    rgb = np.asarray(scene.convert("RGB"))
    m = index._regions(rgb)
    assert m is not None and m.how == "regions" and m.eval_index == 0
    # flat art pins its centre better than its size (a slightly smaller bell fits inside the pasted one)
    assert abs(m.side - 96) <= 8 and abs(m.x + m.side / 2 - 118) <= 3 and abs(m.y + m.side / 2 - 98) <= 3, m
    assert index.is_copy(m) and index.is_copy(index.find(scene))
    other = Image.open(io.BytesIO(_paste(flat_art("square", orange), 96, (70, 50), _gravel())))
    assert not index.is_copy(index.find(other))
    # the same copy, found end to end when the region stage is the only one that can place it
    from dataclasses import replace

    no_regions = EvalIndex([png(a) for a in evals], replace(index.params, regions=0))
    assert not no_regions.is_copy(no_regions.find(scene))  # SIFT alone misses it: the stage is what finds it


def test_a_look_alike_that_differs_in_one_spot_is_not_a_copy(art, index):
    """The same art with one small patch repainted (another clock hand, another keycap digit) is
    kept; the untouched art on the same scene is found."""
    from PIL import Image

    ev, _, _ = art
    bg = Image.new("RGB", (200, 180), (120, 170, 120))
    caught = 0
    for i, r in enumerate(ev[:8]):
        a = Image.open(io.BytesIO(r["image"])).convert("RGBA")
        m = index.find(Image.open(io.BytesIO(_paste(a, 120, (40, 30), bg))))
        if not (index.is_copy(m) and m.eval_index == i):
            continue
        caught += 1
        alpha = np.asarray(a)[..., 3]
        ys, xs = np.nonzero(alpha[20:44, 20:44] == 255)  # a spot inside the art
        y, x = 20 + int(np.median(ys)), 20 + int(np.median(xs))
        b = np.asarray(a).copy()
        spot = (slice(max(0, y - 5), y + 5), slice(max(0, x - 5), x + 5))
        b[spot + (slice(0, 3),)] = 255 - b[spot + (slice(0, 3),)]  # inverted colours on a 10 x 10 patch
        b[spot + (slice(3, 4),)] = 255
        m2 = index.find(Image.open(io.BytesIO(_paste(Image.fromarray(b), 120, (40, 30), bg))))
        assert not (index.is_copy(m2) and m2.eval_index == i), (r["item_id"], m2)
    assert caught >= 6
