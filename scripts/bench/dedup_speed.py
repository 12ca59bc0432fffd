"""Speed and peak memory of the faiss building blocks (filters/faiss_ops.py) on generated embeddings.

Generates N x D float16 L2-normalised embeddings (default 1,000,000 x 128) with planted
near-duplicates (2% of rows are noisy copies of earlier rows), then times, each in its own
child process so that its peak RSS is its own:

  reference      one streaming pass float16 -> float32 + row norms (the cost of touching the data)
  kmeans         fit on a sample (256 x k rows), assign every row in batches (k clusters)
  near_dup       near_duplicates(threshold 0.95): IVF cells joined with BLAS above 20k rows
  semdedup       semantic_dedup within the k-means clusters (eps 0.05)
  decontam       nearest_eval against 10,000 eval rows (flat, exact)

and prints rows/s, the ratio to the reference, peak RSS, and the recall of the planted
duplicates for the two dedup steps. The machine's CPU may be shared: the load average
at start and end is printed with the figures.

    .venv/bin/python scripts/bench/dedup_speed.py              # 1M rows
    .venv/bin/python scripts/bench/dedup_speed.py --rows 100000 --quick
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

OPS = ("reference", "kmeans", "near_dup", "semdedup", "decontam")


def make_data(rows: int, dim: int, seed: int = 0, dup_frac: float = 0.02):
    """(x float16 (rows, dim) normalised, dup_of: int64 array, -1 where not planted)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    x = np.empty((rows, dim), dtype=np.float16)
    for s in range(0, rows, 100_000):
        b = rng.standard_normal((min(100_000, rows - s), dim), dtype=np.float32)
        b /= np.linalg.norm(b, axis=1, keepdims=True)
        x[s : s + len(b)] = b
    n_dup = int(rows * dup_frac)
    dst = np.sort(rng.choice(np.arange(rows // 2, rows), n_dup, replace=False))
    src = rng.integers(0, rows // 2, n_dup)
    noisy = x[src].astype(np.float32) + 0.01 * rng.standard_normal((n_dup, dim), dtype=np.float32)
    x[dst] = noisy / np.linalg.norm(noisy, axis=1, keepdims=True)
    dup_of = np.full(rows, -1, dtype=np.int64)
    dup_of[dst] = src
    return x, dup_of


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(op: str, rows: int, dim: int, k: int) -> dict:
    import numpy as np

    from filters import faiss_ops as F

    x, dup_of = make_data(rows, dim)
    base = peak_mb()
    out: dict = {"op": op}
    t0 = time.perf_counter()
    if op == "reference":
        acc = 0.0
        for _, b in F.iter_batches(x):
            acc += float(np.linalg.norm(b, axis=1).sum())
    elif op == "kmeans":
        _, assign = F.kmeans(x, k, niter=20, seed=0)
        out["clusters_used"] = int(len(np.unique(assign)))
    elif op == "near_dup":
        rep = F.near_duplicates(x, threshold=0.95)
        planted = dup_of >= 0
        out["recall"] = float((rep[planted] != np.flatnonzero(planted)).mean())
        out["false_drops"] = int(((rep != np.arange(rows)) & ~planted).sum())
    elif op == "semdedup":
        _, assign = F.kmeans(x, k, niter=20, seed=0)
        t0 = time.perf_counter()  # time the dedup only
        keep = F.semantic_dedup(x, assign, eps=0.05)
        planted = dup_of >= 0
        out["recall"] = float((~keep[planted]).mean())
        out["false_drops"] = int((~keep & ~planted).sum())
    elif op == "decontam":
        ev = x[np.random.default_rng(1).choice(rows, 10_000, replace=False)]
        sim = F.max_similarity(x, ev)
        out["exact_hits"] = int((sim > 0.999).sum())
    out["seconds"] = time.perf_counter() - t0
    out["rows_per_s"] = rows / out["seconds"]
    out["data_mb"] = x.nbytes / 2**20
    out["peak_rss_mb"] = peak_mb()
    out["rss_before_op_mb"] = base
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--clusters", type=int, default=1000, help="k for k-means / SemDeDup")
    ap.add_argument("--quick", action="store_true", help="100k rows, 100 clusters")
    ap.add_argument("--ops", default=",".join(OPS))
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.quick:
        args.rows, args.clusters = min(args.rows, 100_000), min(args.clusters, 100)
    if args.child:
        print(json.dumps(child(args.child, args.rows, args.dim, args.clusters)))
        return 0

    from datacurate.env import child_env

    load0 = os.getloadavg()
    results = []
    for op in args.ops.split(","):
        cmd = [sys.executable, __file__, "--child", op, "--rows", str(args.rows),
               "--dim", str(args.dim), "--clusters", str(args.clusters)]
        print(f"running {op} ...", file=sys.stderr, flush=True)
        r = subprocess.run(cmd, capture_output=True, text=True, env=child_env(), cwd=ROOT)
        if r.returncode != 0:
            print(r.stderr, file=sys.stderr)
            return r.returncode
        results.append(json.loads(r.stdout.strip().splitlines()[-1]))
    load1 = os.getloadavg()
    import faiss

    from filters.faiss_ops import use_gpu

    ref = next((r["rows_per_s"] for r in results if r["op"] == "reference"), None)
    print(f"\n{args.rows} x {args.dim} float16 embeddings, k={args.clusters}, faiss {faiss.__version__} "
          f"on {'GPU' if use_gpu() else 'CPU'}, {os.cpu_count()} cores, "
          f"load average {load0[0]:.1f} at start / {load1[0]:.1f} at end (CPU shared when > cores)")
    print(f"{'op':10s} {'seconds':>8s} {'rows/s':>11s} {'x ref':>8s} {'peak MB':>8s} {'data MB':>8s}  extra")
    for r in results:
        extra = {k: v for k, v in r.items() if k in ("recall", "false_drops", "clusters_used", "exact_hits")}
        ratio = f"{r['rows_per_s'] / ref:8.4f}" if ref else "       -"
        print(f"{r['op']:10s} {r['seconds']:8.1f} {r['rows_per_s']:11.0f} {ratio} "
              f"{r['peak_rss_mb']:8.0f} {r['data_mb']:8.0f}  {extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
