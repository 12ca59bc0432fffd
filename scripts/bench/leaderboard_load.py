"""Leaderboard load: uploads/s and page latency with 1,000 submissions, real server on loopback.

Starts `datacurate leaderboard serve` on a fresh SQLite file, registers a `tiny` pool,
uploads N distinct filtering-track bundles (38 upstream tasks, a uid subset each) from
C concurrent clients, then times the ranked page, the JSON list and a details page.
Reference measured in the same run: /healthz (the cheapest request the server answers),
so the ratios say what validation, storage and rendering cost on top of HTTP itself.

    .venv/bin/python scripts/bench/leaderboard_load.py [--n 1000] [--clients 8] [--requests 200]
"""
from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def make_bundles(n: int, pool: np.ndarray, subset_size: int, seed: int = 0) -> list[bytes]:
    from leaderboard.bundle import write_bundle
    from leaderboard.validate import compute_aggregates, suite_tasks

    suite = suite_tasks("datacomp38")
    rng = np.random.default_rng(seed)
    out = []
    from tqdm import tqdm

    for i in tqdm(range(n), desc="bundles", unit="bundle"):
        base = rng.uniform(0.05, 0.7)
        results, lines = {}, []
        for key, name in suite.tasks.items():
            v = float(np.clip(base + rng.normal(0, 0.05), 0, 1))
            results[name] = v
            lines.append(json.dumps({"key": key, "dataset": name, "metrics": {"acc1": v, "main_metric": v}}))
        scores = {"suite": suite.name, **compute_aggregates(suite, results)}
        size = int(rng.integers(subset_size // 2, subset_size))
        sub = np.sort(rng.choice(pool, size=size, replace=False), order=["f0", "f1"])
        buf = io.BytesIO()
        np.save(buf, sub)
        manifest = {"name": f"method {i}", "description": "load test", "scale": "tiny", "track": "filtering",
                    "suite": suite.name, "dataset_size": size, "checkpoint_sha256": f"{i:064x}"}
        out.append(write_bundle(manifest, "\n".join(lines) + "\n", json.dumps(scores).encode(),
                                json.dumps({"scale": "tiny"}).encode(), buf.getvalue()))
    return out


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


def timed_gets(url: str, n: int) -> list[float]:
    import httpx

    times = []
    with httpx.Client(timeout=120) as c:
        c.get(url).raise_for_status()  # warm
        for _ in range(n):
            t = time.perf_counter()
            c.get(url).raise_for_status()
            times.append(time.perf_counter() - t)
    return times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000, help="submissions to upload (default 1000)")
    ap.add_argument("--clients", type=int, default=8, help="concurrent upload clients (default 8)")
    ap.add_argument("--requests", type=int, default=200, help="timed GETs per page (default 200)")
    ap.add_argument("--subset-size", type=int, default=4000, help="largest uid subset per bundle (default 4000)")
    args = ap.parse_args()

    import httpx

    from datacurate.env import child_env
    from datacurate.uids import hex_to_pairs, make_uid, sort_pairs, write_subset
    from leaderboard.db import create_team_token, open_db

    tmp = Path(tempfile.mkdtemp(prefix="lb-bench-"))
    db = tmp / "lb.sqlite"
    pool_hex = [make_uid("bench-pool", i) for i in range(20_000)]
    pool = np.unique(sort_pairs(hex_to_pairs(pool_hex)))
    write_subset(tmp / "pool.npy", pool)
    engine, Session = open_db(db)
    with Session() as s:
        token = create_team_token(s, "bench")
    engine.dispose()
    env = child_env({"PYTHONPATH": str(ROOT)})
    subprocess.run([sys.executable, "-m", "datacurate", "leaderboard", "pool", "--db", str(db), "--scale", "tiny",
                    "--uids", str(tmp / "pool.npy")], check=True, env=env, cwd=ROOT)
    bundles = make_bundles(args.n + 20, pool, args.subset_size)
    extra, bundles = bundles[args.n:], bundles[:args.n]
    sizes = [len(b) for b in bundles]
    with __import__("socket").socket() as sk:
        sk.bind(("127.0.0.1", 0))
        port = sk.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    log = open(tmp / "server.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "datacurate", "leaderboard", "serve", "--db", str(db),
                             "--port", str(port)], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    try:
        for _ in range(600):
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/zip"}

        # reference: the cheapest request, same concurrency
        def ping(k):
            with httpx.Client(timeout=60) as c:
                for _ in range(args.n // args.clients):
                    c.get(url + "/healthz").raise_for_status()

        t = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as ex:
            list(ex.map(ping, range(args.clients)))
        ping_rate = (args.n // args.clients * args.clients) / (time.perf_counter() - t)

        statuses = []

        def client(k):
            with httpx.Client(timeout=120) as c:
                for data in bundles[k::args.clients]:
                    statuses.append(c.post(url + "/api/submissions", content=data, headers=headers).status_code)

        t = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as ex:
            list(ex.map(client, range(args.clients)))
        up_s = time.perf_counter() - t
        stored = len(httpx.get(url + "/api/submissions", params={"scale": "tiny"}, timeout=120).json())
        assert statuses.count(201) == args.n == stored, (statuses.count(201), stored)
        rate = args.n / up_s

        first = httpx.get(url + "/api/submissions", params={"scale": "tiny"}, timeout=120).json()[0]["id"]
        pages = {"healthz (reference)": "/healthz", "ranked page (cached) /leaderboard/tiny/...": "/leaderboard/tiny/filtering",
                 "JSON list /api/submissions": "/api/submissions?scale=tiny&track=filtering",
                 "details page /submissions/ID": f"/submissions/{first}"}
        lat = {k: timed_gets(url + p, args.requests) for k, p in pages.items()}
        # the page right after a new submission (its cache is invalid): full query + render
        fresh = []
        with httpx.Client(timeout=120) as c:
            for data in extra:
                c.post(url + "/api/submissions", content=data, headers=headers).raise_for_status()
                t = time.perf_counter()
                c.get(url + "/leaderboard/tiny/filtering").raise_for_status()
                fresh.append(time.perf_counter() - t)
        lat["ranked page, first view after an upload"] = fresh
        ref = statistics.median(lat["healthz (reference)"])
        page_bytes = len(httpx.get(url + "/leaderboard/tiny/filtering", timeout=120).content)
    finally:
        proc.terminate()
        proc.wait(30)

    print(f"\nleaderboard load, {args.n} submissions, {args.clients} clients, SQLite {db.stat().st_size / 1e6:.1f} MB")
    print(f"bundles: median {statistics.median(sizes) / 1e3:.1f} kB (38 tasks + uid subset of "
          f"{args.subset_size // 2}-{args.subset_size} uids, checked against a 20,000-uid pool)")
    print(f"uploads: {rate:.1f} uploads/s ({up_s:.1f} s for {args.n}); reference /healthz {ping_rate:.0f} req/s "
          f"-> upload costs {ping_rate / rate:.1f}x a bare request")
    print(f"{'request':45s} {'median ms':>10s} {'p99 ms':>10s} {'x healthz':>10s}")
    for k, xs in lat.items():
        print(f"{k:45s} {statistics.median(xs) * 1e3:10.2f} {pct(xs, 99) * 1e3:10.2f} "
              f"{statistics.median(xs) / ref:10.1f}")
    print(f"ranked page size with {args.n} rows: {page_bytes / 1e3:.0f} kB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
