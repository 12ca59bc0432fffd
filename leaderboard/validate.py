"""Checks a submission must pass; the server and the `submit` client run this same code.

A submission is trusted only as far as it can be recomputed: every task of its suite
present with a main metric in [0, 1], the aggregates recomputed from those per-task
numbers (upstream ``aggregate_scores.py``) and compared with what ``scores.json`` claims,
the scale known, and for the filtering track the uid file well-formed (upstream dtype,
sorted, unique), no larger than the scale's pool and, when the pool is known, inside it.
Standard errors are optional (``tasks_se``, ``aggregates_se`` in scores.json): when given,
their shape is checked and the aggregates' recomputed from the tasks'.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np

from datacurate.errors import UserError

TRACKS = ("filtering", "byod")
AGGREGATE_TOLERANCE = 1e-6
MAX_NAME = 200
MAX_DESCRIPTION = 5_000
MAX_DATASET_SIZE = 10 ** 13      # above any scale's samples; fits a 64-bit column
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


class SubmissionError(UserError):
    """A submission is refused; ``status`` is the HTTP status the server answers with."""

    status = 422


class SubmissionTooLarge(SubmissionError):
    status = 413


class DuplicateEntry(SubmissionError):
    """Another team's entry already has this uid set and these results (or this checkpoint)."""

    status = 409


@dataclass(frozen=True)
class Suite:
    """What a suite scores: task key -> dataset name, aggregate groups, the ImageNet task."""

    name: str
    tasks: dict[str, str]
    groups: dict[str, list[str]]
    imagenet: str | None = None          # dataset name reported as the "ImageNet" aggregate
    unscored: dict[str, str] = field(default_factory=dict)  # listed, main_metric None
    metrics: dict[str, str] = field(default_factory=dict)   # task key -> the main metric a line must carry

    def aggregate_names(self) -> list[str]:
        return (["ImageNet"] if self.imagenet else []) + list(self.groups) + ["Average"]


def suite_tasks(suite: str) -> Suite:
    """The task list of ``suite`` from the project's one task registry, ``eval.tasks``."""
    from eval import tasks as registry

    try:
        spec = registry.leaderboard_suite(suite)
    except (KeyError, ValueError) as e:
        raise SubmissionError(f"suite: unknown suite {suite!r} ({e})") from None
    return Suite(name=suite, tasks=dict(spec["tasks"]), groups={k: list(v) for k, v in spec["groups"].items()},
                 imagenet=spec.get("imagenet"), unscored=dict(spec.get("unscored", {})),
                 metrics=dict(spec.get("metrics", {})))


def known_scale(scale: object):
    from datacurate.scales import get_scale

    if not isinstance(scale, str):
        raise SubmissionError(f"manifest.json: field 'scale' must be a string, found {scale!r}")
    try:
        return get_scale(scale)
    except ValueError as e:
        raise SubmissionError(f"manifest.json: field 'scale': {e}") from None


def parse_results(text: str, suite: Suite, source: str = "eval_results.jsonl") -> dict[str, float]:
    """Upstream eval_results.jsonl lines -> {dataset name: main metric}, all suite tasks present."""
    from eval.results import parse_lines

    from .bundle import load_json

    by_key: dict[str, float] = {}
    for i, row in parse_lines(text, source, SubmissionError, loads=load_json):
        key, value = row["key"], row["metrics"].get("main_metric")
        if key not in suite.tasks:
            if key in suite.unscored and value is None:
                continue
            raise SubmissionError(f"{source}: line {i}: task {key!r} is not in suite {suite.name!r}; scored on "
                                  "another suite or an older version of it: score the run again "
                                  "(datacurate eval --run RUN) and resubmit")
        if key in by_key:
            raise SubmissionError(f"{source}: line {i}: task {key!r} appears twice")
        if row.get("dataset") not in (None, suite.tasks[key]):
            raise SubmissionError(f"{source}: line {i}: task {key!r} is named {row.get('dataset')!r}, "
                                  f"expected {suite.tasks[key]!r}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or not 0.0 <= value <= 1.0:
            raise SubmissionError(f"{source}: line {i}: task {key!r}: main_metric {value!r} is not a number in [0, 1]")
        want = suite.metrics.get(key)
        if want is not None and row["metrics"].get(want) != value:
            raise SubmissionError(f"{source}: line {i}: task {key!r}: main_metric is not its {want} "
                                  f"({row['metrics'].get(want)!r}): scored by an older {suite.name} suite; "
                                  "score the run again (datacurate eval --run RUN --redo) and resubmit")
        by_key[key] = float(value)
    missing = [k for k in suite.tasks if k not in by_key]
    if missing:
        more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
        raise SubmissionError(f"{source}: {len(missing)} task(s) of suite {suite.name!r} missing: "
                              f"{', '.join(missing[:5])}{more}")
    return {suite.tasks[k]: v for k, v in by_key.items()}


def compute_aggregates(suite: Suite, results: dict[str, float]) -> dict[str, float]:
    """Upstream aggregate_scores.py (ImageNet, group means, Average over every scored task), computed
    by the function eval writes scores.json with (``eval.results.aggregate``): one rule, one place."""
    from eval.results import aggregate

    return aggregate(results, suite.imagenet, suite.groups)


def _unknown_fields(obj: dict, known, source: str, what: str) -> None:
    extra = sorted(str(k) for k in obj if k not in known)
    if extra:
        raise SubmissionError(f"{source}: unknown field(s) {', '.join(map(repr, extra[:5]))}; {what} holds only "
                              f"{', '.join(known)}")


def check_scores(claimed: object, computed: dict[str, float], source: str = "scores.json",
                 results: dict[str, float] | None = None) -> None:
    """Refuse a scores.json whose aggregates differ from the recomputed ones, that holds fields or
    aggregates eval does not write, or whose per-task scores are not eval_results.jsonl's."""
    from eval.results import SCORES_FIELDS

    if isinstance(claimed, dict) and isinstance(claimed.get("aggregates"), dict):
        _unknown_fields(claimed, SCORES_FIELDS, source, "scores.json (written by `datacurate eval`)")
        tasks = claimed.get("tasks")
        if tasks is not None and results is not None:
            if not isinstance(tasks, dict):
                raise SubmissionError(f"{source}: field 'tasks' must be an object {{dataset: score}}")
            for name, got in tasks.items():
                want = results.get(name)
                if want is None:
                    raise SubmissionError(f"{source}: field 'tasks': {name!r} has no line in eval_results.jsonl")
                if isinstance(got, bool) or not isinstance(got, (int, float)) or abs(float(got) - want) > AGGREGATE_TOLERANCE:
                    raise SubmissionError(f"{source}: field 'tasks': {name!r} is {got!r} but eval_results.jsonl "
                                          f"gives {want:.6f}")
        claimed = claimed["aggregates"]
        source = f"{source}: field 'aggregates'"
    if not isinstance(claimed, dict):
        raise SubmissionError(f"{source}: expected a JSON object of aggregate scores")
    extra = sorted(str(k) for k in claimed if k not in computed)
    if extra:
        raise SubmissionError(f"{source}: unknown aggregate(s) {', '.join(map(repr, extra[:5]))}; this suite's are "
                              f"{', '.join(computed)}")
    for name, value in computed.items():
        got = claimed.get(name)
        if got is None:
            raise SubmissionError(f"{source}: aggregate {name!r} missing (expected {value:.6f})")
        if isinstance(got, bool) or not isinstance(got, (int, float)) or not abs(float(got) - value) <= AGGREGATE_TOLERANCE:
            raise SubmissionError(f"{source}: aggregate {name!r} is {got!r} but the per-task results give "
                                  f"{value:.6f}")


def compute_aggregates_se(suite: Suite, tasks_se: dict[str, float | None]) -> dict[str, float | None]:
    """The standard errors of :func:`compute_aggregates`' numbers (``eval.results.aggregate_se``)."""
    from eval.results import aggregate_se

    return aggregate_se(tasks_se, suite.imagenet, suite.groups)


def _se_map(value: object, expected: list[str], field: str, what: str, source: str) -> dict[str, float | None]:
    """{name: number >= 0 or null} with exactly the expected names."""
    if not isinstance(value, dict):
        raise SubmissionError(f"{source}: field {field!r} must be an object {{{what}: number >= 0 or null}}, "
                              f"found {type(value).__name__}")
    unknown = [k for k in value if k not in expected]
    if unknown:
        raise SubmissionError(f"{source}: field {field!r}: unknown {what}(s) {', '.join(map(repr, unknown[:5]))}")
    lacking = [k for k in expected if k not in value]
    if lacking:
        raise SubmissionError(f"{source}: field {field!r}: {what}(s) missing: {', '.join(map(repr, lacking[:5]))}")
    for k, v in value.items():
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
                              or v < 0):
            raise SubmissionError(f"{source}: field {field!r}: {what} {k!r}: {v!r} is not a number >= 0 or null")
    return {k: None if value[k] is None else float(value[k]) for k in expected}


def check_se(scores: object, suite: Suite, results: dict[str, float], aggregates: dict[str, float],
             source: str = "scores.json") -> tuple[dict | None, dict | None]:
    """Optional standard errors: ``tasks_se`` {dataset: se | null} for every scored task, and
    ``aggregates_se`` {aggregate: se | null}, which must equal the one recomputed from them.
    Returns (tasks_se, recomputed aggregates_se), or (None, None) for a submission without."""
    if not isinstance(scores, dict) or (scores.get("tasks_se") is None and scores.get("aggregates_se") is None):
        return None, None
    if scores.get("tasks_se") is None:
        raise SubmissionError(f"{source}: field 'aggregates_se' is given without 'tasks_se', the per-task "
                              "standard errors it is recomputed from")
    tasks_se = _se_map(scores["tasks_se"], list(results), "tasks_se", "task", source)
    agg_se = compute_aggregates_se(suite, tasks_se)
    if scores.get("aggregates_se") is not None:
        claimed = _se_map(scores["aggregates_se"], list(aggregates), "aggregates_se", "aggregate", source)
        for name, want in agg_se.items():
            got = claimed[name]
            if (got is None) != (want is None) or (want is not None and abs(got - want) > AGGREGATE_TOLERANCE):
                raise SubmissionError(f"{source}: field 'aggregates_se': {name!r} is {got!r} but the per-task "
                                      f"standard errors give {'null' if want is None else f'{want:.6f}'}")
    return tasks_se, agg_se


def check_uids(uids: np.ndarray, scale, pool: np.ndarray | None = None, source: str = "subset.npy") -> None:
    """Upstream dtype, sorted, unique, within the pool size and (if known) inside the pool."""
    from datacurate.uids import validate_pairs, UidFileError

    try:
        validate_pairs(uids, source)
    except UidFileError as e:
        raise SubmissionError(str(e)) from None
    if len(uids) == 0:
        raise SubmissionError(f"{source}: the subset is empty")
    if len(uids) > scale.pool_size:
        raise SubmissionTooLarge(f"{source}: {len(uids):,} uids, more than the {scale.name!r} pool's "
                                 f"{scale.pool_size:,} samples")
    if pool is not None:
        outside = int((~in_sorted_pool(uids, pool)).sum())
        if outside:
            raise SubmissionError(f"{source}: {outside:,} of {len(uids):,} uids are not in "
                                  f"the registered {scale.name!r} pool")


def in_sorted_pool(uids: np.ndarray, pool: np.ndarray) -> np.ndarray:
    """Membership of each uid in a sorted (f0, f1) pool, by binary search on the high half.

    10x faster than ``np.intersect1d`` on structured arrays, which sorts them again.
    """
    pf0, pf1 = pool["f0"], pool["f1"]
    lo = np.searchsorted(pf0, uids["f0"], side="left")
    hi = np.searchsorted(pf0, uids["f0"], side="right")
    found = np.zeros(len(uids), dtype=bool)
    one = hi - lo == 1
    found[one] = pf1[lo[one]] == uids["f1"][one]
    for i in np.flatnonzero(hi - lo > 1):  # high halves shared by several pool uids: rare
        found[i] = bool(np.any(pf1[lo[i]:hi[i]] == uids["f1"][i]))
    return found


def visible(text: str) -> bool:
    """Whether ``text`` shows anything: not only spaces, controls, format characters (zero-width space,
    joiners, direction marks), combining marks or unassigned code points."""
    import unicodedata

    return any(unicodedata.category(c)[0] not in ("Z", "C", "M") for c in text)


MANIFEST_FIELDS = ("name", "description", "scale", "track", "suite", "dataset_size", "checkpoint_sha256")


def check_manifest(m: object) -> dict:
    if not isinstance(m, dict):
        raise SubmissionError("manifest.json: expected a JSON object")
    _unknown_fields(m, MANIFEST_FIELDS, "manifest.json", "a manifest (written by `datacurate submit`)")
    for f in ("name", "scale", "track", "suite", "checkpoint_sha256"):
        if not isinstance(m.get(f), str) or not visible(m[f]):
            raise SubmissionError(f"manifest.json: field {f!r} must be a non-empty string with a visible character")
    if len(m["name"]) > MAX_NAME:
        raise SubmissionError(f"manifest.json: field 'name' is longer than {MAX_NAME} characters")
    desc = m.get("description", "")
    if not isinstance(desc, str) or len(desc) > MAX_DESCRIPTION:
        raise SubmissionError(f"manifest.json: field 'description' must be a string of at most "
                              f"{MAX_DESCRIPTION} characters")
    if m["track"] not in TRACKS:
        raise SubmissionError(f"manifest.json: field 'track' is {m['track']!r}; expected one of {', '.join(TRACKS)}")
    if not SHA256_RE.match(m["checkpoint_sha256"]):
        raise SubmissionError("manifest.json: field 'checkpoint_sha256' must be 64 lowercase hex characters")
    size = m.get("dataset_size")
    if isinstance(size, bool) or not isinstance(size, int) or not 0 < size <= MAX_DATASET_SIZE:
        raise SubmissionError(f"manifest.json: field 'dataset_size' must be an integer in [1, {MAX_DATASET_SIZE:,}], found {size!r}")
    return m


EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"   # sha256 of no bytes


def check_info(info: object, m: dict) -> dict:
    """info.json (the training run's): the scale it was trained at is the board's, its checkpoint a hash
    of something; the server reads it itself rather than trusting the client's check."""
    if not isinstance(info, dict):
        raise SubmissionError("info.json: expected a JSON object (the training run's info.json)")
    from training.launch import INFO_FIELDS

    _unknown_fields(info, INFO_FIELDS, "info.json", "a training run's info.json (written by `datacurate train`)")
    scale = info.get("scale")
    if not isinstance(scale, str) or not scale:
        raise SubmissionError("info.json: field 'scale' must be a non-empty string (written by `datacurate train`)")
    if scale != m["scale"]:
        raise SubmissionError(f"info.json: the run was trained at scale {scale!r}; this entry is for the "
                              f"{m['scale']!r} board: submit it to the {scale!r} board")
    for f, kind in (("model", str), ("samples_seen", int)):
        v = info.get(f)
        if v is not None and (not isinstance(v, kind) or isinstance(v, bool)):
            raise SubmissionError(f"info.json: field {f!r} must be {'a string' if kind is str else 'an integer'}")
    if m["checkpoint_sha256"] in ("0" * 64, EMPTY_SHA256) or len(set(m["checkpoint_sha256"])) == 1:
        raise SubmissionError("manifest.json: field 'checkpoint_sha256' is the hash of nothing; give the "
                              "sha256 of the run's checkpoint file")
    return info


@dataclass
class Checked:
    """A submission that passed every check, with its recomputed numbers."""

    manifest: dict
    results: dict[str, float]        # dataset name -> main metric
    aggregates: dict[str, float]     # recomputed
    tasks_se: dict | None = None     # dataset name -> bootstrap se (None: not known); None: not given
    aggregates_se: dict | None = None  # recomputed from tasks_se


def validate_bundle(bundle, pool: np.ndarray | None = None) -> Checked:
    """Run every check on a read bundle (``leaderboard.bundle.Bundle``); raise SubmissionError."""
    m = check_manifest(bundle.manifest)
    scale = known_scale(m["scale"])
    check_info(bundle.info, m)
    suite = suite_tasks(m["suite"])
    results = parse_results(bundle.results_text, suite)
    aggregates = compute_aggregates(suite, results)
    check_scores(bundle.scores, aggregates, results=results)
    tasks_se, aggregates_se = check_se(bundle.scores, suite, results, aggregates)
    if m["track"] == "filtering":
        if bundle.uids is None:
            raise SubmissionError("bundle: the filtering track needs the uid file (subset.npy.gz)")
        check_uids(bundle.uids, scale, pool)
        if m["dataset_size"] != len(bundle.uids):
            raise SubmissionError(f"manifest.json: dataset_size {m['dataset_size']} differs from the "
                                  f"uid file's {len(bundle.uids)} uids")
    elif bundle.uids is not None:  # bring-your-own-data: well-formed, not bound to the pool
        from datacurate.uids import validate_pairs, UidFileError
        try:
            validate_pairs(bundle.uids, "subset.npy")
        except UidFileError as e:
            raise SubmissionError(str(e)) from None
    return Checked(manifest=m, results=results, aggregates=aggregates, tasks_se=tasks_se,
                   aggregates_se=aggregates_se)
