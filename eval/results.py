"""RUN/eval_results.jsonl (upstream's format) and RUN/scores.json (upstream's aggregates).

eval_results.jsonl: one JSON object per task, as upstream ``evaluate.py`` writes it:
``{"key": task key, "dataset": dataset name, "metrics": {..., "main_metric": float | null}}``.
As upstream's file (one per output folder, a line appended per task evaluated) it holds every
task evaluated for the run's current checkpoint, whatever suite asked for it; lines of an
older checkpoint are dropped. Every result is kept in ``RUN/eval_state.json`` with the
checkpoint's sha256 and the task data's fingerprint (``{"tasks": {key: {"sha256", "data",
"line"}}, "files": {path: {"stat", "sha256"}}}``): that is what makes evaluation resumable.
scores.json: ``{"suite", "checkpoint_sha256", "aggregates": {"ImageNet", "<group>", ...,
"Average"}, "tasks": {dataset: main metric}, "chance": {...}, "missing": {key: reason},
"complete": bool, "tasks_se": {dataset: bootstrap se | null}, "aggregates_se": {...}}`` for the run's main suite (:func:`main_suite`: what ``datacurate run``,
the report and the leaderboard read); another suite's go beside it in
``scores.<suite>.json`` (:func:`suite_scores_name`), never replacing it. Aggregates as
upstream ``aggregate_scores.py`` (group means, Average over every scored task), computed
over the tasks present: a missing task is excluded and named in "missing", never counted as zero.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import warnings
from pathlib import Path
from typing import Optional

from datacurate.atomic import write_text_atomic
from datacurate.errors import UserError
from datacurate.layout import RunLayout

# the fields of scores.json (eval.runner writes them): the leaderboard refuses any other
SCORES_FIELDS = ("suite", "checkpoint_sha256", "aggregates", "aggregates_se", "tasks", "tasks_se", "main_metric",
                 "chance", "missing", "complete", "eval_seconds", "offline_fingerprint")


def _clean(v):
    """JSON-safe numbers: NaN -> None, numpy scalars -> Python."""
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def result_line(key: str, dataset: str, metrics: dict) -> dict:
    return {"key": key, "dataset": dataset, "metrics": {k: _clean(v) for k, v in metrics.items()}}


def parse_lines(text: str, source: str, error: type = UserError, loads=None) -> list[tuple[int, dict]]:
    """eval_results.jsonl's text -> [(line number, row)], every row of upstream's shape
    ``{"key": str, "dataset": str, "metrics": {..., "main_metric": ...}}``; the one parser of the
    format (eval reads runs with it, the leaderboard bundles); ``error`` is the exception raised.
    ``loads(line, where)``: a stricter JSON reader (the leaderboard's bounded one) instead of json.loads."""
    rows = []
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line) if loads is None else loads(line, f"{source}: line {i}")
        except json.JSONDecodeError as e:
            raise error(f"{source}: line {i}: not JSON ({e.msg})") from None
        if not isinstance(row, dict) or not isinstance(row.get("key"), str) \
                or not isinstance(row.get("dataset"), str) or not isinstance(row.get("metrics"), dict) \
                or "main_metric" not in row["metrics"]:
            raise error(f"{source}: line {i}: expected upstream fields "
                        "{'key': str, 'dataset': str, 'metrics': {..., 'main_metric': ...}}")
        rows.append((i, row))
    return rows


def read_results(path: str | os.PathLike) -> dict[str, dict]:
    """eval_results.jsonl -> {key: line}; a later line for the same key wins (as upstream appends)."""
    path = Path(path)
    if not path.is_file():
        return {}
    return {row["key"]: row for _, row in parse_lines(path.read_text(encoding="utf-8"), str(path))}


def write_results(path: str | os.PathLike, lines: dict[str, dict]) -> None:
    """All lines, one per task, written under a temporary name and renamed (never half-written)."""
    text = "".join(json.dumps(row) + "\n" for row in lines.values())
    write_text_atomic(path, text)


def read_state(run: Path) -> dict:
    try:
        state = json.loads(RunLayout(Path(run)).eval_state.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {"tasks": {}, "files": {}}
    except json.JSONDecodeError as e:
        raise UserError(f"{RunLayout(Path(run)).eval_state}: not valid JSON ({e})") from None
    if not isinstance(state, dict) or not isinstance(state.get("tasks"), dict):
        raise UserError(f"{RunLayout(Path(run)).eval_state}: expected {{'tasks': {{key: {{'sha256', 'line'}}}}}}")
    state["tasks"] = {k: v for k, v in state["tasks"].items() if isinstance(v, dict) and "line" in v}
    if not isinstance(state.get("files"), dict):
        state["files"] = {}
    return state


def write_state(run: Path, state: dict) -> None:
    write_text_atomic(RunLayout(Path(run)).eval_state, json.dumps(state, indent=1) + "\n")


def _json_object(path: Path) -> dict:
    try:
        got = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return got if isinstance(got, dict) else {}


def main_suite(run: str | os.PathLike) -> Optional[str]:
    """The suite RUN/scores.json describes: the run's scale decides (datacomp38 on upstream's
    scales, offline on the CPU ones); a run without a known scale keeps the suite scores.json holds."""
    from datacurate.scales import SCALES

    from .tasks import DATACOMP38, OFFLINE

    name = _json_object(RunLayout(Path(run)).info).get("scale")
    scale = SCALES.get(name) if isinstance(name, str) else None
    if scale is not None:
        return DATACOMP38 if scale.upstream else OFFLINE
    return _json_object(RunLayout(Path(run)).scores).get("suite")


def suite_scores_name(suite: str) -> str:
    """``scores.<suite>.json``, a safe file name: task keys hold '/' and spaces, lists grow long."""
    safe = re.sub(r"[^A-Za-z0-9._,-]+", "_", suite)
    if safe != suite or len(safe) > 80:
        safe = f"{safe[:60]}-{hashlib.sha256(suite.encode()).hexdigest()[:8]}"
    return f"scores.{safe}.json"


def scores_path(run: str | os.PathLike, suite: str) -> Path:
    """Where evaluating ``suite`` writes its aggregates: scores.json for the main suite (or, in a run
    with none yet, a named suite), else scores.<suite>.json beside it."""
    from .tasks import DATACOMP38, OFFLINE

    main = main_suite(run)
    if suite == main or (main is None and suite in (OFFLINE, DATACOMP38)):
        return RunLayout(Path(run)).scores
    return RunLayout(Path(run)).root / suite_scores_name(suite)


def scored_file(run: str | os.PathLike, suite: str) -> Path:
    """The file that holds a suite's aggregates: scores.json when it describes that suite, else
    scores.<suite>.json (which may not exist)."""
    main = RunLayout(Path(run)).scores
    return main if _json_object(main).get("suite") == suite else main.with_name(suite_scores_name(suite))


def read_scores(run: str | os.PathLike, suite: str) -> dict:
    """A suite's aggregates as evaluation wrote them ({} when it has not been scored)."""
    return _json_object(scored_file(run, suite))


def aggregate(results: dict[str, float], imagenet: Optional[str], groups: dict[str, list[str]]) -> dict:
    """Upstream aggregates over the tasks present (dataset name -> main metric).

    A group with a missing member is the mean of the members present (None if none is), and
    a warning names what is left out; ``Average`` is the mean of every scored task present.
    """
    import numpy as np

    out: dict[str, Optional[float]] = {}
    if imagenet:
        out["ImageNet"] = results.get(imagenet)
        if imagenet not in results:
            warnings.warn(f"aggregate 'ImageNet': task {imagenet!r} missing", stacklevel=2)
    for group, names in groups.items():
        present = [results[n] for n in names if n in results]
        lacking = [n for n in names if n not in results]
        if lacking:
            warnings.warn(f"aggregate {group!r}: excluded missing task(s) {', '.join(lacking)}", stacklevel=2)
        out[group] = float(np.mean(present)) if present else None
    out["Average"] = float(np.mean(list(results.values()))) if results else None
    return out


def mean_se(ses: list) -> Optional[float]:
    """Standard error of a mean of n task scores: sqrt(sum se_i^2) / n.

    The tasks are taken as independent, as tasks scored on separate items are. The offline
    suite's tasks share their 764 images (one model sees the same picture in each), so their
    errors are positively correlated and this understates the se of their mean somewhat: an
    approximation. None when any task's se is unknown (never counted as 0).
    """
    if not ses or any(s is None for s in ses):
        return None
    return math.sqrt(sum(s * s for s in ses)) / len(ses)


def aggregate_se(ses: dict[str, Optional[float]], imagenet: Optional[str], groups: dict[str, list[str]]) -> dict:
    """The standard errors of :func:`aggregate`'s numbers, over the same tasks (dataset name -> se,
    one entry per scored task present, None where unknown)."""
    out: dict[str, Optional[float]] = {}
    if imagenet:
        out["ImageNet"] = ses.get(imagenet)
    for group, names in groups.items():
        out[group] = mean_se([ses[n] for n in names if n in ses])
    out["Average"] = mean_se(list(ses.values()))
    return out
