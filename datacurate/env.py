"""The environment every process the project starts runs under: nothing tries the network, and
torch's OpenMP threads sleep while they wait."""
from __future__ import annotations

import os

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "NO_ALBUMENTATIONS_UPDATE": "1",
    "SPARK_LOCAL_IP": "127.0.0.1",
    "WANDB_MODE": "disabled",
    "PYSPARK_PYTHON": None,  # filled with sys.executable below
    # waiting OpenMP threads sleep instead of spinning, so a loader process or another job gets
    # the core: tiny training 0.60 -> 0.51 s a step (training.launch); scheduling only, the
    # same bytes. Read when torch loads: set before the first `import torch` (datacurate.cli.main)
    "OMP_WAIT_POLICY": "PASSIVE",
}


def apply_offline_env() -> None:
    """Set the offline variables unless the user set them already."""
    import sys

    for k, v in OFFLINE_ENV.items():
        os.environ.setdefault(k, v if v is not None else sys.executable)


def child_env(extra: dict | None = None) -> dict:
    """A copy of os.environ for subprocesses, with the offline variables set."""
    apply_offline_env()
    env = dict(os.environ)
    if extra:
        env.update(extra)
    return env


def cache_dir() -> "os.PathLike[str]":
    """Where fetched source packages live: $DATACURATE_CACHE or ~/.cache/datacurate."""
    from pathlib import Path

    d = Path(os.environ.get("DATACURATE_CACHE", Path.home() / ".cache" / "datacurate"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def sigterm_raises():
    """Turn SIGTERM (a scheduler's pre-emption) into SystemExit in the main thread, so the code
    that started trainers can stop them on the way out. Returns a function that puts the previous
    handler back (a no-op outside the main thread, where no handler can be set)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def _raise(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, _raise)
    return lambda: signal.signal(signal.SIGTERM, previous)
