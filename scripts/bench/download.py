"""Benchmark: `pool download` on Spark vs img2dataset's own multiprocessing distributor.

Both download the same pool (fresh copies of its url list, served from the same
POOL/www on loopback) on the same machine in the same run; the figure is the
ratio of their img2dataset times, with Spark's start-up timed apart.
Aim: Spark within 1.3x of plain img2dataset once Spark has started.

    python scripts/bench/download.py                 # builds the tiny pool (20,000 samples)
    python scripts/bench/download.py --quick         # the micro pool (4,096 samples)
    python scripts/bench/download.py --pool runs/tiny/pool --processes 2
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def fresh_copy(src: Path, dst: Path) -> Path:
    """manifest + url list copied, www linked: a pool as `pool build` leaves it."""
    from datacurate.layout import PoolLayout

    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir(parents=True)
    a, b = PoolLayout.at(src), PoolLayout.at(dst)
    for f, g in ((a.manifest_path, b.manifest_path), (a.urls, b.urls)):
        shutil.copy2(f, g)
    if a.www.is_dir():
        os.symlink(a.www.resolve(), b.www)
    return dst


def main() -> int:
    from datacurate.scales import offline_scales

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pool", type=Path, default=None, help="a built (not necessarily downloaded) pool to copy")
    ap.add_argument("--scale", default="tiny", choices=offline_scales(), help="pool to build without --pool")
    ap.add_argument("--quick", action="store_true", help="the micro pool")
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    ap.add_argument("--master", default=None, help="Spark master (default local[N] with N = --processes)")
    ap.add_argument("--processes", type=int, default=os.cpu_count() or 2, help="processes / Spark cores")
    ap.add_argument("--threads", type=int, default=32, help="download threads per shard")
    ap.add_argument("--samples-per-shard", type=int, default=None)
    ap.add_argument("--spark-first", action="store_true", help="run the Spark job before the multiprocessing one")
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = ap.parse_args()

    from datacurate.env import apply_offline_env

    apply_offline_env()
    from datacurate.pool.download import download_pool
    from datacurate.spark import get_spark

    scale = "micro" if args.quick else args.scale
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-download-"))
    work.mkdir(parents=True, exist_ok=True)
    src = args.pool
    if src is None:
        from datacurate.pool.build import build_pool

        src = work / f"{scale}-built"
        t = time.time()
        build_pool(src, scale=scale, seed=0, quiet=True)
        print(f"built the {scale} pool in {time.time() - t:.1f}s")
    load0 = os.getloadavg()
    kw = dict(samples_per_shard=args.samples_per_shard, threads=args.threads, progress=False)

    def run_mp():
        t = time.time()
        s = download_pool(fresh_copy(src, work / "mp"), distributor="multiprocessing", processes=args.processes, **kw)
        return s, time.time() - t

    def run_spark():
        t = time.time()
        spark = get_spark(args.master or f"local[{args.processes}]", app_name="bench-download")
        spark.range(1).count()
        startup = time.time() - t
        t = time.time()
        s = download_pool(fresh_copy(src, work / "spark"), spark=spark, **kw)
        wall = time.time() - t
        spark.stop()
        return s, wall, startup

    try:
        if args.spark_first:
            sp, sp_wall, startup = run_spark()
            mp, mp_wall = run_mp()
        else:
            mp, mp_wall = run_mp()
            sp, sp_wall, startup = run_spark()
    finally:
        if not args.keep:
            for d in ("mp", "spark") if args.work is not None else ():
                shutil.rmtree(work / d, ignore_errors=True)
            if args.work is None:
                shutil.rmtree(work, ignore_errors=True)
    load1 = os.getloadavg()
    assert sp["succeeded"] == mp["succeeded"] and sp["tried"] == mp["tried"], "the two runs disagree"
    rows = [("img2dataset multiprocessing", mp, mp_wall), ("img2dataset on Spark", sp, sp_wall)]
    print(f"\npool: {src} ({mp['tried']:,} samples, {mp['shards']} shards of {mp['samples_per_shard']}, "
          f"{mp['succeeded']:,} succeed), {args.processes} processes / Spark cores, {args.threads} threads per shard")
    for name, s, wall in rows:
        print(f"  {name:28s} img2dataset {s['download_s']:7.1f}s  {s['tried'] / s['download_s']:8.1f} samples/s"
              f"   (job wall {wall:.1f}s incl. metadata)")
    ratio = sp["download_s"] / mp["download_s"]
    print(f"  order: {'Spark first' if args.spark_first else 'multiprocessing first'}")
    print(f"  Spark start-up (session + first job): {startup:.1f}s, not included above")
    print(f"  ratio Spark / multiprocessing: {ratio:.2f}x  (aim <= 1.3x)")
    print(f"  load average before {load0[0]:.1f}, after {load1[0]:.1f} on {os.cpu_count()} cores"
          + ("  -- the CPU was shared with other work: figures are noisy" if max(load0[0], load1[0]) > 1.5 else ""))
    print(json.dumps({"samples": mp["tried"], "mp_s": mp["download_s"], "spark_s": sp["download_s"],
                      "spark_startup_s": round(startup, 2), "ratio": round(ratio, 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
