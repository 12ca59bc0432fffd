"""Leaderboard load: uploads/s and page latency with 1,000 submissions, real server on loopback.

Starts `datacurate leaderboard serve` on a fresh SQLite file, registers a `tiny` pool,
uploads N distinct filtering-track bundles (38 upstream tasks, a uid subset each) from
C concurrent clients, then times the ranked page, the JSON list and a details page.
Reference measured in the same run: /healthz (the cheapest request the server answers),
so the ratios say what validation, storage and rendering cost on top of HTTP itself.

Also: the server's peak memory above idle while it refuses a 1 MiB gzip bomb (a uid file that
inflates to 1 GiB; goal <= 64 MiB), and, with ``--verify K``, the verification throughput: K
micro entries with their checkpoints (random-init TinyCLIP models, scored honestly first) queued
and verified by one worker (``leaderboard verify``) on the offline suite of ``--pool`` (default: a
9-image fixture pool; give ``runs/tiny/pool`` for the tiny board's 764 eval images).

    .venv/bin/python scripts/bench/leaderboard_load.py [--n 1000] [--clients 8] [--requests 200]
    .venv/bin/python scripts/bench/leaderboard_load.py --n 1000 --verify 4 --pool runs/tiny/pool
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
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def rss_mib(pid: int) -> float:
    """Resident memory of a process now (MiB), from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_during(pid: int, action) -> tuple[float, object]:
    """(peak resident MiB of ``pid`` sampled every millisecond while ``action()`` runs, its result)."""
    import threading

    peak, stop = [rss_mib(pid)], threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], rss_mib(pid))
            time.sleep(0.001)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        result = action()
    finally:
        stop.set()
        t.join()
    return peak[0], result


def gzip_bomb_bundle(good: bytes, inflated: int = 1 << 30) -> bytes:
    """A valid filtering bundle whose uid file is gzip of ``inflated`` zero bytes (about 1 MiB on the wire)."""
    import gzip
    import zipfile

    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=9, mtime=0) as g:
        block = bytes(64 << 20)
        for _ in range(inflated // len(block)):
            g.write(block)
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(good)) as src, zipfile.ZipFile(out, "w") as dst:
        for name in src.namelist():
            data = buf.getvalue() if name == "subset.npy.gz" else src.read(name)
            dst.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data,
                         compress_type=zipfile.ZIP_STORED if name == "subset.npy.gz" else zipfile.ZIP_DEFLATED)
    return out.getvalue()


def verification_rate(url: str, db: Path, token: str, k: int, pool: Path | None, tmp: Path, env: dict) -> dict:
    """K micro entries (random-init models, honest offline scores) uploaded with their checkpoints, then
    verified by one worker: entries per minute, and the verdicts."""
    import httpx

    from datacurate.layout import RunLayout
    from eval import evaluate_run
    from leaderboard.submit import build_bundle, upload, upload_checkpoint
    from test_eval_helpers import make_tiny_run, write_eval_parquet

    if pool is None:
        pool = tmp / "fixture_pool"
        write_eval_parquet(pool)
    for i in range(k):
        run = make_tiny_run(tmp / f"verify_{i}", seed=100 + i)
        evaluate_run(run, suite="offline", pool=pool, device="cpu", log=lambda *a: None)
        res = upload(build_bundle(run, None, "micro", "byod", f"verify {i}", "", None, 1000), url, token)
        upload_checkpoint(RunLayout(run).checkpoint, url, res["id"], token)
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "datacurate", "leaderboard", "verify", "--db", str(db),
                          "--pool", f"micro={pool}", "--once"], env=env, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - t
    rows = httpx.get(url + "/api/submissions", params={"scale": "micro"}, timeout=60).json()
    verdicts = sorted(r["verification"] for r in rows)
    return {"entries": k, "seconds": seconds, "per_minute": 60 * k / seconds, "verdicts": verdicts,
            "pool": str(pool), "worker_rc": out.returncode}


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
                    "suite": suite.name, "dataset_size": size, "checkpoint_sha256": __import__("hashlib").sha256(b"bench-%d" % i).hexdigest()}
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
    ap.add_argument("--verify", type=int, default=0, metavar="K", help="also time the verification of K entries")
    ap.add_argument("--pool", type=Path, default=None, help="with --verify: the pool whose offline suite verifies")
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
                    r = c.post(url + "/api/submissions", content=data, headers=headers)
                    statuses.append(r.status_code)
                    if r.status_code != 201:
                        print(f"upload refused: HTTP {r.status_code}: {r.text[:300]}", file=sys.stderr)

        t = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as ex:
            list(ex.map(client, range(args.clients)))
        up_s = time.perf_counter() - t
        stored = int(httpx.get(url + "/api/submissions", params={"scale": "tiny"}, timeout=120).headers["x-total-count"])
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
        # a 1 MiB gzip bomb: the server's peak memory above idle while it refuses it
        bomb = gzip_bomb_bundle(extra[0])
        idle = rss_mib(proc.pid)
        peak, answer = peak_during(proc.pid, lambda: httpx.post(url + "/api/submissions", content=bomb,
                                                                headers=headers, timeout=120))
        bomb_result = {"bytes": len(bomb), "status": answer.status_code, "idle_mib": idle, "peak_mib": peak}
        verify = verification_rate(url, db, token, args.verify, args.pool, tmp, env) if args.verify else None
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
    print(f"ranked page size with {args.n} entries: {page_bytes / 1e3:.0f} kB (first page of "
          f"{min(args.n, 100)} rows)")
    print(f"gzip bomb ({bomb_result['bytes'] / 2**20:.2f} MiB upload, 1 GiB inflated): HTTP {bomb_result['status']}, "
          f"server peak {bomb_result['peak_mib'] - bomb_result['idle_mib']:+.1f} MiB above idle "
          f"({bomb_result['idle_mib']:.0f} -> {bomb_result['peak_mib']:.0f} MiB; goal <= 64)")
    if verify:
        print(f"verification: {verify['entries']} entries in {verify['seconds']:.1f} s = {verify['per_minute']:.1f} "
              f"entries/min by one worker on {os.cpu_count()} cores (pool {verify['pool']}); verdicts "
              f"{verify['verdicts']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
