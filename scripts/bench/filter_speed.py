"""Filter throughput and peak memory on a generated pool, locally and on Spark local[2].

Generates POOL/metadata/NNNNN.parquet (upstream's columns + clip_fnet_similarity_score)
and row-aligned NNNNN.npz (fnet_img, fnet_txt float16, L2-normalised) with --rows rows
(default 1,000,000), then runs each filter as a one-step recipe through
`filters.filter_pool`, each in a fresh child process so that its peak RSS
(ru_maxrss) is its own. The reference is `no_filter` in the same run (reading the uids
only): every line also shows the time as a multiple of that reference.

Aim (issue 3): 1 M rows through basic and clip_score in < 60 s, peak memory < 2 GB.

    .venv/bin/python scripts/bench/filter_speed.py                 # 1 M rows, local + spark
    .venv/bin/python scripts/bench/filter_speed.py --rows 100000 --quick
    .venv/bin/python scripts/bench/filter_speed.py --filters basic,clip_score --runners local
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from datacurate.layout import PoolLayout, shard_name  # noqa: E402  (after the path insert)

RECIPES = {
    "no_filter": "steps:\n  - {filter: no_filter}\n",
    "basic": "steps:\n  - {filter: basic}\n",
    "clip_score": "steps:\n  - {filter: clip_score, model: fnet, top_fraction: 0.3}\n",
    "image_based": "steps:\n  - {filter: image_based, model: fnet, target: eval, clusters: 100, sample: 200000}\n",
    "exact_dedup": "steps:\n  - {filter: exact_dedup}\n",
    "near_dedup": "steps:\n  - {filter: near_dedup, model: fnet, threshold: 0.95}\n",
    "semantic_dedup": "steps:\n  - {filter: semantic_dedup, model: fnet, clusters: 100, eps: 0.05}\n",
}
WORDS = ("a photo of the red blue green small large dog cat bird car tree house flower person man woman "
         "beach mountain city street table chair old new happy sunset river boat on in at with near").split()
FOREIGN = ["une photo d'un chien sur la plage", "ein Foto von einem Hund am Strand", "una foto de un perro en la playa"]


def generate(pool: Path, rows: int, shard_rows: int, dim: int, seed: int = 0) -> None:
    """A pool of ``rows`` rows: captions of 1-12 words (5 % foreign), sizes 20..800 px, 2 % exact
    duplicates (sha256), 2 % near duplicates (embeddings), scores and embeddings correlated."""
    import hashlib

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from datacurate.uids import make_uid

    lay = PoolLayout.at(pool)
    rng = np.random.default_rng(seed)
    lay.metadata.mkdir(parents=True, exist_ok=True)
    lay.holdout.mkdir(parents=True, exist_ok=True)
    centres = rng.normal(size=(64, dim)).astype(np.float32)
    words = np.asarray(WORDS)
    for s, start in enumerate(range(0, rows, shard_rows)):
        n = min(shard_rows, rows - start)
        lens = rng.integers(1, 13, n)
        picks = rng.integers(0, len(words), (n, 12))
        texts = [" ".join(words[picks[i, :lens[i]]]) for i in range(n)]
        for i in np.flatnonzero(rng.random(n) < 0.05):
            texts[i] = FOREIGN[i % len(FOREIGN)]
        sha = [hashlib.sha256(f"{start + i}".encode()).hexdigest() for i in range(n)]
        for i in np.flatnonzero(rng.random(n) < 0.02):
            sha[i] = sha[max(0, i - 1)]
        img = centres[rng.integers(0, 64, n)] + rng.normal(scale=1.0, size=(n, dim)).astype(np.float32)
        near = np.flatnonzero(rng.random(n) < 0.02)
        img[near] = img[np.maximum(near - 1, 0)] + 0.01 * rng.normal(size=(len(near), dim)).astype(np.float32)
        img /= np.linalg.norm(img, axis=1, keepdims=True)
        txt = img + rng.normal(scale=0.8, size=(n, dim)).astype(np.float32)
        txt /= np.linalg.norm(txt, axis=1, keepdims=True)
        score = np.einsum("ij,ij->i", img, txt).astype(np.float32)
        uids = [make_uid("bench", start + i) for i in range(n)]
        table = pa.table({
            "uid": uids, "url": [f"http://offline.datacurate/{u}.jpg" for u in uids], "text": texts,
            "original_width": rng.integers(20, 800, n), "original_height": rng.integers(20, 800, n),
            "sha256": sha, "key": [f"{s:05d}{i:04d}" for i in range(n)],
            "clip_fnet_similarity_score": pa.array(score, pa.float32()),
        })
        pq.write_table(table, lay.parquet(shard_name(s)))
        np.savez(lay.npz(shard_name(s)), fnet_img=img.astype(np.float16), fnet_txt=txt.astype(np.float16))
    ev = centres[:8] / np.linalg.norm(centres[:8], axis=1, keepdims=True)
    np.savez(lay.holdout_npz("eval", "fnet"), img=ev.astype(np.float16), txt=ev.astype(np.float16),
             item_id=np.asarray([f"e{i}" for i in range(8)]))


def _hwm_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _spark_peak_mb(spark) -> float:
    """Peak RSS of the Spark JVM plus the sum of its Python workers' peaks (Linux /proc)."""
    proc = getattr(spark.sparkContext._gateway, "proc", None)
    if proc is None:
        return 0.0
    parents = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                parents[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    tree, frontier = set(), {proc.pid}
    while frontier:
        tree |= frontier
        frontier = {p for p, pp in parents.items() if pp in frontier and p not in tree}
    return sum(_hwm_mb(p) for p in tree)


def one(pool: str, name: str, runner: str, out: str) -> None:
    """Child process: run one recipe, print a JSON line with its time and this process's peak RSS."""
    from datacurate.env import apply_offline_env

    apply_offline_env()
    from filters.recipe import parse_recipe
    from filters.runner_local import filter_pool

    spark = None
    if runner == "spark":
        from datacurate.spark import get_spark

        spark = get_spark("local[2]", app_name="filter-speed")
        spark.range(1).count()  # start-up is not the filter's time
    recipe = parse_recipe(RECIPES[name], f"<{name}>")
    t0 = time.time()
    rec = filter_pool(pool, recipe, out, runner=runner, spark=spark, progress=False)
    dt = time.time() - t0
    self_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kids_rss = 0.0
    if spark is not None:
        kids_rss = _spark_peak_mb(spark)
        spark.stop()
    print(json.dumps({"filter": name, "runner": runner, "seconds": dt, "kept": rec["kept"],
                      "rows": rec["pool_rows"], "peak_mb": self_rss, "child_peak_mb": kids_rss}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--shard-rows", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=64, help="embedding dimension (the tiny CLIP's is 64..128)")
    ap.add_argument("--filters", default="no_filter,basic,clip_score,image_based,exact_dedup,near_dedup,semantic_dedup")
    ap.add_argument("--runners", default="local,spark")
    ap.add_argument("--quick", action="store_true", help="100k rows, basic + clip_score + exact_dedup only")
    ap.add_argument("--pool", help="reuse (or keep) the generated pool here")
    ap.add_argument("--one", nargs=3, metavar=("POOL", "FILTER", "RUNNER"), help=argparse.SUPPRESS)
    ap.add_argument("--timeout", type=int, default=900, help="seconds per filter run")
    ap.add_argument("--generate", nargs=4, metavar=("POOL", "ROWS", "SHARD_ROWS", "DIM"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.generate:
        generate(Path(args.generate[0]), *(int(x) for x in args.generate[1:]))
        return 0
    if args.one:
        one(args.one[0], args.one[1], args.one[2], tempfile.mktemp(suffix=".npy"))
        return 0
    if args.quick:
        args.rows = min(args.rows, 100_000)
        args.filters = "no_filter,basic,clip_score,exact_dedup"
    names = [f for f in args.filters.split(",") if f]
    if "no_filter" not in names:
        names.insert(0, "no_filter")  # the reference
    tmp = tempfile.TemporaryDirectory(prefix="filter-speed-")
    pool = Path(args.pool) if args.pool else Path(tmp.name) / "pool"
    if not PoolLayout.at(pool).metadata.is_dir():
        # in a child: Linux children inherit the parent's peak RSS, which would then hide theirs
        t0 = time.time()
        subprocess.run([sys.executable, __file__, "--generate", str(pool), str(args.rows), str(args.shard_rows),
                        str(args.dim)], check=True)
        print(f"generated {args.rows} rows in {time.time() - t0:.1f}s at {pool}", file=sys.stderr)
    print(f"cpu cores: {os.cpu_count()}, load average at start: {os.getloadavg()[0]:.2f} "
          "(other processes share these cores: figures are upper bounds on the time)")
    print(f"{'filter':<15} {'runner':<6} {'rows':>9} {'kept':>9} {'seconds':>8} {'rows/s':>10} "
          f"{'x ref':>6} {'peak MB':>8} {'child MB':>8}")
    ref: dict[str, float] = {}
    for runner in args.runners.split(","):
        for name in names:
            cmd = [sys.executable, __file__, "--one", str(pool), name, runner]
            try:
                p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
            except subprocess.TimeoutExpired:
                print(f"{name:<15} {runner:<6} timed out after {args.timeout}s")
                continue
            line = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
            if p.returncode or not line:
                print(f"{name:<15} {runner:<6} failed: {p.stderr.strip().splitlines()[-1:]}")
                continue
            r = json.loads(line[-1])
            if name == "no_filter":
                ref[runner] = r["seconds"]
            ratio = r["seconds"] / ref[runner] if ref.get(runner) else float("nan")
            print(f"{name:<15} {runner:<6} {r['rows']:>9} {r['kept']:>9} {r['seconds']:>8.1f} "
                  f"{r['rows'] / r['seconds']:>10.0f} {ratio:>6.1f} {r['peak_mb']:>8.0f} {r['child_peak_mb']:>8.0f}",
                  flush=True)
    print(f"load average at end: {os.getloadavg()[0]:.2f}; peak MB = the driver process's max RSS; "
          "child MB = the Spark JVM's peak plus its Python workers' peaks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
