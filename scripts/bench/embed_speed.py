"""How fast `datacurate embed` is, against the model's own forward speed measured in the same run.

Builds a hand-made pool (shapes on random backgrounds in webdataset shards), then reports
samples/s for: (reference) the model's encode_image+encode_text on ready tensors; the full
local pipeline (tar read, JPEG decode, preprocess, encode, npz + parquet write); and the
Spark job on local[2]. Ratios to the reference show the pipeline's overhead.

    .venv/bin/python scripts/bench/embed_speed.py [--shards 4 --per-shard 500 --batch-size 256] [--quick]
    .venv/bin/python scripts/bench/embed_speed.py --model ViT-B-32 --no-spark     # upstream's model
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--per-shard", type=int, default=500)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--no-spark", action="store_true")
    ap.add_argument("--model", default="TinyCLIP-ViT-64",
                    help="open_clip architecture, random weights (default the offline filtering network's; "
                         "ViT-B-32 is upstream's embedding model, nothing is downloaded)")
    ap.add_argument("--quick", action="store_true", help="2 shards x 100 samples, batch 64")
    args = ap.parse_args()
    if args.quick:
        args.shards, args.per_shard, args.batch_size = 2, 100, 64

    import torch

    from datacurate.env import apply_offline_env
    from embed_pool_maker import make_pool, make_random_net
    from datacurate.embed import embed_pool, get_model
    from datacurate.clip import pick_threads
    from datacurate.clip import parse_model

    apply_offline_env()
    torch.set_num_threads(pick_threads())  # the same thread count for the reference and for embed
    tmp = Path(tempfile.mkdtemp(prefix="embed_speed_"))
    try:
        pool = make_pool(tmp / "pool", shards=args.shards, per_shard=args.per_shard)
        net = make_random_net(tmp / "net", model=args.model)
        n = args.shards * args.per_shard
        model, _, tok = get_model(parse_model(str(net)), "cpu")
        size = model.visual.image_size[0]
        pix, txt = torch.randn(args.batch_size, 3, size, size), tok(["a red circle"] * args.batch_size)
        t0 = time.time()
        done = 0
        with torch.inference_mode():
            while done < n:
                model.encode_image(pix), model.encode_text(txt)
                done += args.batch_size
        ref = done / (time.time() - t0)
        rows = [("model forward only (reference)", ref)]

        local = shutil.copytree(pool, tmp / "local")
        t0 = time.time()
        embed_pool(local, str(net), device="cpu", batch_size=args.batch_size, holdout=False)
        rows.append(("embed, local process", n / (time.time() - t0)))

        if not args.no_spark:
            from datacurate.spark import get_spark

            spark = get_spark("local[2]", app_name="embed-speed")
            dist = shutil.copytree(pool, tmp / "spark")
            t0 = time.time()
            embed_pool(dist, str(net), device="cpu", batch_size=args.batch_size, spark=spark, holdout=False)
            rows.append(("embed, Spark local[2] (incl. worker model load)", n / (time.time() - t0)))
            spark.stop()

        print(f"\n{args.model} (random weights), {n} samples in {args.shards} shards, batch {args.batch_size}, "
              f"{torch.get_num_threads()} torch threads, load average {os.getloadavg()[0]:.1f} "
              f"on {os.cpu_count()} cores")
        print(f"{'path':50s} {'samples/s':>10s} {'x reference':>12s}")
        for name, rate in rows:
            print(f"{name:50s} {rate:10.1f} {rate / ref:12.3f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
