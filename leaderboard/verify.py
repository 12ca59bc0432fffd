"""The verification worker: re-run an entry's offline evaluation on its uploaded checkpoint.

A CPU-scale entry (micro, tiny, base) carries its checkpoint (``PUT /api/submissions/ID/checkpoint``,
sent by ``datacurate submit``); a worker beside the service claims it from the queue table
(``verifications``), evaluates the checkpoint with the offline suite of the pool the board was
configured with, and compares every task's main metric with the submitted one. Within
``tolerance`` everywhere: ``verified``; otherwise ``failed`` with the differing tasks. Also
failed: scores submitted for other offline eval data than the board's (their fingerprint), and
a checkpoint that does not load.

The worker runs out of the request path (``datacurate leaderboard verify``, or ``serve
--verify-workers N``), survives restarts (a claim that outlives its lease is queued again), and
never holds the only copy of anything: it reads the checkpoint from the database into a
temporary folder and writes back only the verdict.
"""
from __future__ import annotations

import json
import os
import socket
import tempfile
import time
from pathlib import Path

from datacurate.errors import UserError
from datacurate.layout import CHECKPOINT, RunLayout

# Per task, absolute: one eval item in 1,000. The same checkpoint on the same eval data gives the same
# scores on one machine (tests/test_train.py); another CPU may sum in another order and move an
# item across a decision boundary, not more.
TOLERANCE = 1e-3
MAX_ATTEMPTS = 3           # a job that crashed the worker this often is failed with the error


def compare_scores(submitted: dict, recomputed: dict, tolerance: float = TOLERANCE) -> dict:
    """Per task: submitted and recomputed main metric and whether they differ by more than ``tolerance``."""
    tasks = {}
    for key in sorted(set(submitted) | set(recomputed)):
        a, b = submitted.get(key), recomputed.get(key)
        differs = a is None or b is None or abs(float(a) - float(b)) > tolerance
        tasks[key] = {"submitted": a, "recomputed": b, "differs": differs}
    return tasks


def evaluate_checkpoint(checkpoint: bytes, info: dict, pool: Path) -> dict:
    """scores.json of the offline suite for a checkpoint given as bytes (a temporary run folder)."""
    from eval import evaluate_run

    with tempfile.TemporaryDirectory(prefix="verify_") as tmp:
        run = Path(tmp) / "run"
        lay = RunLayout(run)
        (run / CHECKPOINT).parent.mkdir(parents=True)
        (run / CHECKPOINT).write_bytes(checkpoint)
        lay.info.write_text(json.dumps({**info, "checkpoint": CHECKPOINT}))
        return evaluate_run(run, suite="offline", pool=pool, device="cpu", log=lambda *a, **k: None)


def verify_one(Session, submission_id: int, pools: dict[str, Path], tolerance: float = TOLERANCE) -> tuple[str, dict]:
    """(status, detail) of one entry: ``verified`` or ``failed``, with the per-task comparison."""
    from eval.offline import suite_fingerprint

    from . import store
    from .bundle import read_bundle
    from .db import Submission

    with Session() as s:
        row = s.get(Submission, submission_id)
        scale = row.scale
        bundle = read_bundle(store.bundle_bytes(s, submission_id))
        checkpoint = store.checkpoint_bytes(s, submission_id)
    pool = pools[scale]
    scores = bundle.scores if isinstance(bundle.scores, dict) else {}
    want_fp, board_fp = scores.get("offline_fingerprint"), suite_fingerprint(pool) or ""
    if want_fp != board_fp:
        return "failed", {"message": f"scores.json was computed on other offline eval data (offline_fingerprint "
                                     f"{str(want_fp)[:16]}) than this board's {scale} pool ({board_fp[:16]})",
                          "tolerance": tolerance}
    info = bundle.info if isinstance(bundle.info, dict) else {}
    try:
        got = evaluate_checkpoint(checkpoint, info, pool)
    except UserError as e:
        return "failed", {"message": f"the checkpoint could not be evaluated: {e}", "tolerance": tolerance}
    tasks = compare_scores(scores.get("tasks") or {}, got.get("tasks") or {}, tolerance)
    bad = [k for k, t in tasks.items() if t["differs"]]
    message = (f"every task within {tolerance} of the submitted score" if not bad else
               f"{len(bad)} of {len(tasks)} task(s) differ by more than {tolerance}: {', '.join(bad)}")
    return ("failed" if bad else "verified"), {"message": message, "tolerance": tolerance, "tasks": tasks}


def run_worker(db: str, pools: dict[str, Path], *, once: bool = False, poll_s: float = 5.0,
               tolerance: float = TOLERANCE, lease_s: float | None = None, log=print) -> int:
    """Claim and verify jobs until stopped (``once``: until the queue is empty); return how many were done."""
    from . import store
    from .db import open_db

    _, Session = open_db(db)
    worker = f"{socket.gethostname()}:{os.getpid()}"
    lease = store.VERIFY_LEASE_S if lease_s is None else lease_s
    done = 0
    while True:
        with Session() as s:
            sid = store.claim_verification(s, worker, pools, lease)
            attempts = s.get(store.Verification, sid).attempts if sid is not None else 0
        if sid is None:
            if once:
                return done
            time.sleep(poll_s)
            continue
        t0 = time.time()
        try:
            status, detail = verify_one(Session, sid, pools, tolerance)
        except Exception as e:      # a bug or a lost database: the job goes back, with why, until MAX_ATTEMPTS
            why = f"{type(e).__name__}: {e}"
            status = "failed" if attempts >= MAX_ATTEMPTS else "queued"
            detail = {"message": f"the worker stopped on this entry ({why}); attempt {attempts} of {MAX_ATTEMPTS}",
                      "tolerance": tolerance}
        detail["seconds"] = round(time.time() - t0, 1)
        with Session() as s:
            store.finish_verification(s, sid, status, detail)
        log(f"verify: submission {sid}: {status} ({detail['message']}) in {detail['seconds']} s")
        done += 1


def parse_pools(specs: list[str]) -> dict[str, Path]:
    """``SCALE=POOL`` arguments -> {scale: pool folder}; only CPU scales, pools with offline eval data."""
    from datacurate.scales import offline_scales

    pools: dict[str, Path] = {}
    for spec in specs:
        scale, sep, path = spec.partition("=")
        if not sep or not scale or not path:
            raise UserError(f"--pool {spec}: expected SCALE=POOL_FOLDER, e.g. tiny=runs/tiny/pool")
        if scale not in offline_scales():
            raise UserError(f"--pool {spec}: scale {scale} is not verified here (only {', '.join(offline_scales())})")
        from datacurate.layout import PoolLayout

        lay = PoolLayout.at(path)           # the eval data lives in the pool folder itself (holdout/)
        if not lay.holdout_parquet("eval").is_file():
            raise UserError(f"--pool {spec}: {lay.holdout_parquet('eval')} is missing: the offline eval data is "
                            "built from it (a pool made by `datacurate pool build`)")
        pools[scale] = lay.root
    if not pools:
        raise UserError("give at least one --pool SCALE=POOL_FOLDER (the pool each CPU board was built on)")
    return pools
