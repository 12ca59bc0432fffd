"""How well `decontaminate_local` finds the eval images planted in an offline pool, and what it costs.

Runs the detector (filters/image_match.py) on every pool row the builder planted as an
eval-set copy (ground_truth.parquet, defect ``eval_overlap``) and on a random sample of the
other rows, and prints recall (by how the copy was found), the false-positive rate on the
sample and the time per image. The full-pool figures come from ``filter_quality.py``
(``step:decontaminate_local``); this is the quick look, minutes instead of most of an hour.

    .venv/bin/python scripts/bench/decontam_quality.py --pool runs/tiny/pool --sample 1000
"""
from __future__ import annotations

import argparse
import io
import random
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq

from datacurate.layout import PoolLayout


def pool_images(pool: Path, uids: set[str]) -> dict[str, bytes]:
    """Image bytes of the given uids, read from the pool's shards (one pass over each tar)."""
    from datacurate.images import read_tar_images
    from filters.pool_reader import list_shards

    out, lay = {}, PoolLayout.find(pool)
    for shard in list_shards(lay):
        t = pq.read_table(lay.parquet(shard.name), columns=["uid", "key"]).to_pydict()
        keys = {k: u for k, u in zip(t["key"], t["uid"]) if u in uids}
        if keys:
            blobs = read_tar_images(lay.tar(shard.name), list(keys), shard.name)
            out.update({keys[k]: b for k, b in blobs.items()})
    return out


def main(argv=None) -> None:
    from PIL import Image
    from tqdm import tqdm

    from filters.builtin.targets import load_target_images
    from filters.image_match import EvalIndex

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pool", required=True, type=Path, help="an offline pool with ground_truth.parquet")
    ap.add_argument("--sample", type=int, default=1000, help="other rows checked for false positives")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--show", type=int, default=20, help="list this many flagged other rows (what they look like)")
    a = ap.parse_args(argv)

    truth = PoolLayout.at(a.pool).ground_truth
    if not truth.is_file():
        raise SystemExit(f"{truth}: no ground truth (only an offline pool built by `datacurate pool build` has one)")
    kinds = "planted_as" in pq.read_schema(truth).names  # builder >= this commit: how each copy was planted
    gt = pq.read_table(truth, columns=["uid", "defect", "item_id"] + (["planted_as"] if kinds else [])).to_pydict()
    item_of = dict(zip(gt["uid"], gt["item_id"]))
    planted = [u for u, d in zip(gt["uid"], gt["defect"]) if d == "eval_overlap"]
    others = [u for u, d in zip(gt["uid"], gt["defect"]) if d not in ("eval_overlap", "broken_url", "undecodable")]
    sample = random.Random(a.seed).sample(others, min(a.sample, len(others)))
    images = pool_images(a.pool, set(planted) | set(sample))
    t0 = time.perf_counter()
    index = EvalIndex(load_target_images(a.pool, "eval"))
    eval_ids = pq.read_table(PoolLayout.at(a.pool).holdout_parquet("eval"), columns=["item_id"]).column("item_id").to_pylist()
    print(f"eval index: {len(index.templates)} images, {len(index.desc)} descriptors, {time.perf_counter() - t0:.1f} s")

    flagged = []

    def run(uids, what):
        found, t = [], time.perf_counter()
        for u in tqdm(uids, desc=what, unit="img"):
            if u not in images:
                continue
            m = index.find(Image.open(io.BytesIO(images[u])))
            copy = index.is_copy(m)
            found.append(m.how if copy else None)
            if copy:
                flagged.append((what, u, m))
        return found, (time.perf_counter() - t) / max(1, len(found))

    hits, t_planted = run(planted, "planted copies")
    fps, t_other = run(sample, "other rows")
    n_hit = sum(h is not None for h in hits)
    n_fp = sum(f is not None for f in fps)
    print(f"planted eval copies: {n_hit}/{len(hits)} found (recall {n_hit / max(1, len(hits)):.3f}), "
          f"by {dict(Counter(h for h in hits if h))}; {1000 * t_planted:.0f} ms/image")
    if kinds:
        kind_of = dict(zip(gt["uid"], gt["planted_as"]))
        seen = [u for u in planted if u in images]
        for k in ("file", "flattened", "scene"):
            got = [h for u, h in zip(seen, hits) if kind_of[u] == k]
            print(f"  planted as {k}: {sum(h is not None for h in got)}/{len(got)}")
    print(f"other rows: {n_fp}/{len(fps)} flagged (false-positive rate {n_fp / max(1, len(fps)):.4f}), "
          f"by {dict(Counter(f for f in fps if f))}; {1000 * t_other:.0f} ms/image")
    shown = [(u, m) for what, u, m in flagged if what == "other rows"][:a.show]
    if shown:
        print(f"flagged other rows (pool item -> eval image it was taken for), first {len(shown)}:")
    for u, m in shown:
        print(f"  {u} {item_of[u]} -> {eval_ids[m.eval_index]}  [{m.how}, side {m.side} px, "
              f"error {m.mean_error:.1f}, local {m.local_error:.1f}]")


if __name__ == "__main__":
    main()
