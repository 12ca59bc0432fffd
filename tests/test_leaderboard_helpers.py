"""Shared helpers for the leaderboard tests: run folders in upstream's format, a real server.

Results are generated per task key of the suite (upstream datacomp38 unless eval.tasks
says otherwise), written as upstream ``evaluate.py`` writes them; scores.json holds the
aggregates computed as upstream ``aggregate_scores.py`` does.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from datacurate.uids import make_uid, write_subset

ROOT = Path(__file__).resolve().parents[1]


def suite():
    from leaderboard.validate import suite_tasks

    return suite_tasks("datacomp38")


def pool_uids(n: int = 1000, seed: str = "pool") -> list[str]:
    return [make_uid(seed, i) for i in range(n)]


def make_run(root: Path, values: dict[str, float] | None = None, seed: int = 0, scale: str = "micro",
             base: float | None = None, se: float | None = None) -> Path:
    """RUN/ with eval_results.jsonl, scores.json, info.json and a checkpoint file; with ``se``, every
    task's bootstrap standard error is ``se`` (lines' main_metric_se, scores.json tasks_se and
    aggregates_se), as `datacurate eval` writes them."""
    from leaderboard.validate import compute_aggregates, compute_aggregates_se

    s = suite()
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.1, 0.6) if base is None else base
    run = root
    (run / "checkpoints").mkdir(parents=True, exist_ok=True)
    lines, results = [], {}
    for key, name in s.tasks.items():
        v = float(values[key]) if values and key in values else float(np.clip(base + rng.normal(0, 0.05), 0, 1))
        results[name] = v
        metrics = {"acc1": v, "main_metric": v, **({} if se is None else {"main_metric_se": se})}
        lines.append(json.dumps({"key": key, "dataset": name, "metrics": metrics}))
    for key, name in s.unscored.items():
        lines.append(json.dumps({"key": key, "dataset": name, "metrics": {"main_metric": None}}))
    (run / "eval_results.jsonl").write_text("\n".join(lines) + "\n")
    agg = compute_aggregates(s, results)
    extra = {} if se is None else {"tasks_se": {n: se for n in results},
                                   "aggregates_se": compute_aggregates_se(s, {n: se for n in results})}
    (run / "scores.json").write_text(json.dumps({"suite": s.name, "aggregates": agg, "tasks": results, **extra}))
    (run / "info.json").write_text(json.dumps({"scale": scale, "seed": seed}))
    (run / "checkpoints" / "epoch_latest.pt").write_bytes(b"checkpoint-%d" % seed)
    return run


def make_subset(path: Path, uids: list[str]) -> Path:
    write_subset(path, uids)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`datacurate leaderboard serve` in a subprocess on 127.0.0.1."""

    def __init__(self, db: Path | str, port: int | None = None, max_upload_mb: float = 1.0,
                 log: Path | None = None):
        """``db``: a SQLite file or a database URL (then ``log`` names the server's log file)."""
        self.db, self.port, self.max_upload_mb = db, port or free_port(), max_upload_mb
        self.proc: subprocess.Popen | None = None
        self.log = Path(log) if log else Path(db).with_suffix(".log")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> "Server":
        from datacurate.env import child_env

        env = child_env({"PYTHONPATH": str(ROOT)})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "datacurate", "leaderboard", "serve", "--db", str(self.db),
             "--port", str(self.port), "--max-upload-mb", str(self.max_upload_mb)],
            stdout=open(self.log, "ab"), stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        import httpx

        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError(f"server did not start in {timeout}s: {self.log.read_text()[-2000:]}")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


def new_token(db: Path, team: str) -> str:
    from leaderboard.db import create_team_token, open_db

    engine, Session = open_db(db)
    with Session() as s:
        tok = create_team_token(s, team)
    engine.dispose()
    return tok


def bundle_for(tmp: Path, tag: str, *, name: str | None = None, uids: list[str] | None = None,
               scale: str = "micro", seed: int = 0, base: float | None = None, **kw) -> bytes:
    from leaderboard.submit import build_bundle

    run = make_run(tmp / f"run_{tag}", seed=seed, scale=scale, base=base)
    sub = make_subset(tmp / f"subset_{tag}.npy", uids if uids is not None else pool_uids()[: 100 + seed])
    return build_bundle(run, sub, scale, "filtering", name or f"method {tag}", **kw)
