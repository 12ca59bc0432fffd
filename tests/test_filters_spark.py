"""The Spark runner gives exactly the local runner's subset (row-local, top-fraction and global steps)."""
from __future__ import annotations

import numpy as np

from test_filters_helpers import flat_art, row, run, write_holdout_npz, write_pool, write_pixels

RECIPE = """
name: spark_vs_local
steps:
  - {filter: basic, min_side: 48}
  - {filter: exact_dedup}
  - {filter: near_dedup, model: fnet, threshold: 0.97}
  - union:
      - {filter: clip_score, model: fnet, top_fraction: 0.5}
      - {filter: image_based, model: fnet, target: eval, clusters: 4}
      - {filter: random, fraction: 0.1}
"""


def _rows(n: int = 90, dim: int = 16):
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(6, dim))
    rows = []
    for i in range(n):
        emb = centres[i % 6] + 0.3 * rng.normal(size=dim)
        text = ["a small red bird on a branch", "ok", "two dogs playing in the park",
                "un oiseau rouge sur une branche"][i % 4 if i % 9 else 0]
        rows.append(row(i, text=text, w=int(rng.integers(20, 300)), h=int(rng.integers(60, 300)),
                        score=float(rng.random()), emb=emb))
    for i in range(0, n, 11):  # exact copies (same bytes, so same size; a good caption)
        src = rows[(i + 4) % n]
        for r in (rows[i], src):
            r.update(text="a small red bird on a branch", original_width=200, original_height=200)
        rows[i]["sha256"] = src["sha256"]
    for i in range(3, n, 13):  # near copies
        rows[i]["emb"] = rows[(i + 1) % n]["emb"] + 1e-3
    return rows, centres


def test_spark_matches_local(tmp_path, spark):
    rows, centres = _rows()
    pool = write_pool(tmp_path / "pool", rows, per_shard=17, dim=16)
    write_holdout_npz(pool, "eval", centres[:2])
    local, rec_local = run(pool, RECIPE, tmp_path, "local", runner="local")
    on_spark, rec_spark = run(pool, RECIPE, tmp_path, "spark", runner="spark", spark=spark)
    assert rec_local["runner"] == "local" and rec_spark["runner"] == "spark"
    assert 0 < len(local) < len(rows)
    assert on_spark == local
    assert rec_spark["counts"] == rec_local["counts"]
    assert rec_spark["pool_fingerprint"] == rec_local["pool_fingerprint"]
    assert rec_spark["subset_fingerprint"] == rec_local["subset_fingerprint"]
    # every kind of step did something
    kept = {c["label"]: (c["rows_in"], c["kept"]) for c in rec_local["counts"]}
    for label in ("basic", "exact_dedup", "near_dedup", "clip_score", "image_based", "random"):
        rows_in, k = kept[label]
        assert k < rows_in, label


PIXEL_RECIPE = """
name: pixels_spark_vs_local
steps:
  - {filter: phash_dedup, model: fnet}
  - {filter: decontaminate_phash}
"""


def _scene(rng, size=120):
    from PIL import Image, ImageDraw

    im = Image.new("RGB", (size, size), tuple(int(c) for c in rng.integers(0, 255, 3)))
    d = ImageDraw.Draw(im)
    for _ in range(5):
        x, y = (int(v) for v in rng.integers(0, size - 30, 2))
        d.ellipse([x, y, x + 30, y + 24], fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
    return im


def test_spark_matches_local_on_pixel_filters(tmp_path, spark):
    """Pixel-reading global and row-local filters (pHash dedup with its pixel check, pHash
    decontamination) read each shard's tar on the executors and give the local subset."""
    rng = np.random.default_rng(5)
    pics = [_scene(rng) for _ in range(14)]
    evals = [_scene(rng) for _ in range(2)]
    w, h = pics[2].size
    pics += [pics[2].crop((6, 0, w, h - 4)).resize((100, 96)),   # near copies, across shards
             pics[7].resize((150, 150)),
             evals[0].resize((90, 90))]                             # a planted eval image
    embs = [rng.normal(size=8) for _ in pics]
    embs[14], embs[15] = embs[2] + 1e-3, embs[7] + 1e-3
    rows = [row(i, emb=e) for i, e in enumerate(embs)]
    pool = write_pool(tmp_path / "pool", rows, per_shard=5)
    write_pixels(pool, rows, pics, 5, {"e0": evals[0], "e1": evals[1]})
    local, rec_local = run(pool, PIXEL_RECIPE, tmp_path, "local", runner="local")
    on_spark, _ = run(pool, PIXEL_RECIPE, tmp_path, "spark", runner="spark", spark=spark)
    assert on_spark == local
    dropped = {i for i, r in enumerate(rows) if r["uid"] not in local}
    # one of each near-copy pair and the planted eval image go; nothing else
    assert len(dropped & {2, 14}) == 1 and len(dropped & {7, 15}) == 1 and 16 in dropped
    assert len(dropped) == 3, sorted(dropped)


def test_spark_matches_local_on_decontaminate_local(tmp_path, spark):
    """decontaminate_local's eval index (descriptors, templates, the region colour table) travels
    to the executors with the filter; Spark drops the same pasted copies as the local run."""
    from PIL import Image

    rng = np.random.default_rng(9)
    evals = [flat_art("bell", (250, 160, 40)), flat_art("drop", (220, 40, 70))]
    pics = [_scene(rng, 150) for _ in range(10)]
    for k, (i, side, at) in enumerate(((3, 80, (40, 30)), (8, 96, (20, 40)))):  # the eval art pasted into scenes
        a = evals[k].resize((side, side), Image.BICUBIC)
        pics[i].paste(a, at, a)
    rows = [row(i, emb=rng.normal(size=8)) for i in range(len(pics))]
    pool = write_pool(tmp_path / "pool", rows, per_shard=4)
    write_pixels(pool, rows, pics, 4, {"bell": evals[0], "drop": evals[1]})
    recipe = "steps:\n  - {filter: decontaminate_local}\n"
    local, _ = run(pool, recipe, tmp_path, "local", runner="local")
    on_spark, _ = run(pool, recipe, tmp_path, "spark", runner="spark", spark=spark)
    assert on_spark == local
    dropped = {i for i, r in enumerate(rows) if r["uid"] not in local}
    assert dropped == {3, 8}, sorted(dropped)
