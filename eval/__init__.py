"""Zero-shot evaluation: upstream DataComp's 38 tasks and the offline suite (see docs/eval.md).

Public API (heavy imports happen inside the functions):
  evaluate_run(run, suite="offline", pool=None, data_root=None, device="auto") -> scores dict
  build_offline_evalsets(pool) -> POOL/evalsets
  tasks.leaderboard_suite(suite) -> {"tasks", "groups", "imagenet", "unscored"}
"""
from __future__ import annotations


def evaluate_run(run, suite: str = "offline", pool=None, data_root=None, device: str = "auto", **kw) -> dict:
    """Evaluate RUN on a suite, write RUN/eval_results.jsonl and the suite's scores (RUN/scores.json
    for the run's main suite, else RUN/scores.<suite>.json), return the scores."""
    from .runner import evaluate_run as _evaluate_run

    return _evaluate_run(run, suite=suite, pool=pool, data_root=data_root, device=device, **kw)


def build_offline_evalsets(pool, force: bool = False):
    """Write the offline tasks under POOL/evalsets from POOL/holdout/eval.parquet."""
    from .offline import build_offline_evalsets as _build

    return _build(pool, force=force)


def scores_table(scores: dict) -> str:
    """The scores as a text table, chance level beside each task."""
    from .report import scores_table as _table

    return _table(scores)


__all__ = ["evaluate_run", "build_offline_evalsets", "scores_table"]
