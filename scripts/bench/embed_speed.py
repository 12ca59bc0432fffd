"""How fast `datacurate embed` is, against the model's own forward speed measured in the same run.

Builds a hand-made pool (shapes on random backgrounds in webdataset shards), then reports
samples/s for: (reference) the model's encode_image+encode_text on ready tensors; the full
local pipeline (tar read, JPEG decode, preprocess, encode, npz + parquet write); and the
Spark job on local[2]. Ratios to the reference show the pipeline's overhead.

    .venv/bin/python scripts/bench/embed_speed.py [--shards 4 --per-shard 500 --batch-size 256] [--quick]
    .venv/bin/python scripts/bench/embed_speed.py --model ViT-B-32 --no-spark     # upstream's model
    .venv/bin/python scripts/bench/embed_speed.py --pool runs/base/pool --shards 4  # a real pool's images
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


def copy_shards(src: Path, dst: Path, shards: int) -> tuple[Path, int]:
    """The first ``shards`` shards (tar + metadata parquet) of an existing pool, and their row count."""
    import pyarrow.parquet as pq

    from datacurate.layout import PoolLayout

    have, want = PoolLayout.at(src), PoolLayout.at(dst)
    ids = have.shard_ids()[:shards]
    if not ids:
        raise SystemExit(f"embed_speed: {have.describe()} has no shards; give a pool folder")
    for s in ids:
        for path in (want.parquet(s), want.tar(s)):
            path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(have.parquet(s), want.parquet(s))
        shutil.copy(have.tar(s), want.tar(s))
    return dst, sum(pq.ParquetFile(want.parquet(s)).metadata.num_rows for s in ids)


def prepare_only(pool, preprocess, batch_size: int) -> int:
    """Everything `embed` does before the model, over every shard, on one thread: the input side's CPU."""
    import pyarrow.parquet as pq

    from datacurate.embed import prepare_batch, split_preprocess
    from datacurate.images import read_tar_images
    from datacurate.layout import PoolLayout

    lay, split, done = PoolLayout.at(pool), split_preprocess(preprocess), 0
    for s in lay.shard_ids():
        keys = [str(k) for k in pq.read_table(lay.parquet(s), columns=["key"]).column("key").to_pylist()]
        blobs = read_tar_images(lay.tar(s), keys, s)
        items = [(k, blobs[k]) for k in keys]
        for start in range(0, len(keys), batch_size):
            prepare_batch(items[start:start + batch_size], preprocess, split, s)
        done += len(keys)
    return done


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--per-shard", type=int, default=500)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--no-spark", action="store_true")
    ap.add_argument("--model", default="TinyCLIP-ViT-64",
                    help="open_clip architecture, random weights (default the offline filtering network's; "
                         "ViT-B-32 is upstream's embedding model, nothing is downloaded)")
    ap.add_argument("--pool", type=Path, default=None,
                    help="time on the first --shards shards of this pool (e.g. runs/base/pool, whose images are "
                         "about 240 px) instead of a hand-made one (72 px)")
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
        if args.pool:
            pool, n = copy_shards(args.pool, tmp / "pool", args.shards)
        else:
            pool = make_pool(tmp / "pool", shards=args.shards, per_shard=args.per_shard)
            n = args.shards * args.per_shard
        net = make_random_net(tmp / "net", model=args.model)
        model, _, tok = get_model(parse_model(str(net)), "cpu")
        size = model.visual.image_size[0]
        pix, txt = torch.randn(args.batch_size, 3, size, size), tok(["a red circle"] * args.batch_size)
        t0, c0 = time.time(), time.process_time()
        done = 0
        with torch.inference_mode():
            while done < n:
                model.encode_image(pix), model.encode_text(txt)
                done += args.batch_size
        ref = done / (time.time() - t0)
        cpu = {"forward": (time.process_time() - c0) / done}
        rows = [("model forward only (reference)", ref, (time.process_time() - c0) / (time.time() - t0))]

        t0, c0 = time.time(), time.process_time()
        prepared = prepare_only(pool, get_model(parse_model(str(net)), "cpu")[1], args.batch_size)
        cpu["prepare"] = (time.process_time() - c0) / prepared
        rows.append(("tar read + decode + preprocess only", prepared / (time.time() - t0),
                     cpu["prepare"] * prepared / (time.time() - t0)))

        local = shutil.copytree(pool, tmp / "local")
        t0, c0 = time.time(), time.process_time()
        embed_pool(local, str(net), device="cpu", batch_size=args.batch_size, holdout=False)
        cpu["embed"] = (time.process_time() - c0) / n
        rows.append(("embed, local process", n / (time.time() - t0), (time.process_time() - c0) / (time.time() - t0)))

        if not args.no_spark:
            from datacurate.spark import get_spark

            spark = get_spark("local[2]", app_name="embed-speed")
            dist = shutil.copytree(pool, tmp / "spark")
            t0 = time.time()
            embed_pool(dist, str(net), device="cpu", batch_size=args.batch_size, spark=spark, holdout=False)
            rows.append(("embed, Spark local[2] (incl. worker model load)", n / (time.time() - t0), float("nan")))
            again = shutil.copytree(pool, tmp / "spark2")   # Python workers are reused: the model is loaded
            t0 = time.time()
            embed_pool(again, str(net), device="cpu", batch_size=args.batch_size, spark=spark, holdout=False)
            rows.append(("embed, Spark local[2], again (workers warm)", n / (time.time() - t0), float("nan")))
            spark.stop()

        print(f"\n{args.model} (random weights), {n} samples from {args.pool or 'a hand-made pool'} in {args.shards} shards, batch {args.batch_size}, "
              f"{torch.get_num_threads()} torch threads, load average {os.getloadavg()[0]:.1f} "
              f"on {os.cpu_count()} cores")
        print(f"{'path':50s} {'samples/s':>10s} {'x reference':>12s} {'cores busy':>11s}")
        for name, rate, busy in rows:
            print(f"{name:50s} {rate:10.1f} {rate / ref:12.3f} {busy:11.2f}")
        ceiling = cpu["forward"] / (cpu["forward"] + cpu["prepare"])
        print(f"\nCPU per sample: forward {cpu['forward'] * 1e3:.2f} ms, tar read + decode + preprocess "
              f"{cpu['prepare'] * 1e3:.2f} ms, embed {cpu['embed'] * 1e3:.2f} ms (its sum "
              f"{(cpu['forward'] + cpu['prepare']) * 1e3:.2f}).\nWhen the forward pass already keeps every core "
              f"busy, decoding can only take cores from it: the most embed can reach here is forward / (forward + "
              f"prepare) = {ceiling:.3f} x reference.")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
