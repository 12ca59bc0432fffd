"""scripts/bench/task_weights.py: aggregates of a study's task scores, and a run scored without one of
the four tasks refused by name."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts" / "bench"))

import task_weights as W  # noqa: E402


def _study(noisy: str, recipes: int = 8, seeds: int = 6, seed: int = 0) -> dict:
    """Every task carries the same recipe signal; ``noisy`` adds a large per-run noise of its own."""
    rng = np.random.default_rng(seed)
    runs = {}
    for r in range(recipes):
        runs[f"r{r}"] = {}
        for s in range(seeds):
            shared = rng.normal(0, 0.002)
            tasks = {t: 0.6 + 0.01 * r + shared + rng.normal(0, 0.03 if t == noisy else 0.001) for t in W.TASKS}
            runs[f"r{r}"][s] = {"value": 0.0, "tasks": tasks}
    return runs


def test_weigh_is_the_weighted_mean_of_the_named_tasks():
    runs = _study(W.GROUP)
    got = W.weigh(runs, {W.RETRIEVAL: 3, W.CONCEPT: 1})["r2"][4]["value"]
    t = runs["r2"][4]["tasks"]
    assert got == pytest.approx((3 * t[W.RETRIEVAL] + t[W.CONCEPT]) / 4)


def test_leaving_out_a_noisy_task_shows_as_less_noise_and_a_surer_ranking():
    runs, seeds = _study(W.GROUP), list(range(6))
    four = W.measure(W.weigh(runs, W.AGGREGATES["all four, equal (the suite's Average until 2026-12-05)"]), seeds)
    three = W.measure(W.weigh(runs, W.AGGREGATES["without the group task (the suite's since)"]), seeds)
    assert three["pooled_std"] < 0.5 * four["pooled_std"]
    assert three["ratio"] > 2 * four["ratio"]
    assert three["tau_all_splits"] > four["tau_all_splits"]
    # the noisy task is not always the group task: the same rule would not favour dropping it
    other = _study(W.RETRIEVAL)
    assert W.measure(W.weigh(other, W.AGGREGATES["without the group task (the suite's since)"]), seeds)["ratio"] < \
        W.measure(W.weigh(other, {W.CONCEPT: 1, W.GROUP: 1, W.SUBGROUP: 1}), seeds)["ratio"]


def test_a_run_scored_without_one_of_the_four_tasks_is_refused_naming_its_scores_file(tmp_path):
    from datacurate.layout import RunLayout

    three = {W.RETRIEVAL: 0.61, W.CONCEPT: 0.57, W.SUBGROUP: 0.64}
    W.require_tasks(tmp_path / "run", {**three, W.GROUP: 0.58})
    with pytest.raises(SystemExit) as e:
        W.require_tasks(tmp_path / "run", three)
    msg = str(e.value)
    assert msg.startswith("task_weights.py: error: ") and f"{RunLayout(tmp_path / 'run').scores}:tasks" in msg
    assert "no Emoji group" in msg and "--suite emoji_group" in msg


def test_the_group_task_is_read_from_its_own_scores_file_when_the_suite_left_it(tmp_path):
    import json

    run = tmp_path / "run"
    run.mkdir()
    three = {W.RETRIEVAL: 0.61, W.CONCEPT: 0.57, W.SUBGROUP: 0.64}
    assert W.with_group_task(run, three) == three                              # not scored on it: left for require_tasks
    (run / "scores.emoji_group.json").write_text(json.dumps({"suite": "emoji_group", "tasks": {W.GROUP: 0.58}}))
    assert W.with_group_task(run, three) == {**three, W.GROUP: 0.58}
    assert W.with_group_task(run, {**three, W.GROUP: 0.5})[W.GROUP] == 0.5     # scores.json's own wins


def test_a_study_with_no_complete_seed_is_one_error_line(tmp_path):
    with pytest.raises(SystemExit) as e:
        W.main(["--out", str(tmp_path / "study"), "--seeds", "2"])
    msg = str(e.value)
    assert msg.startswith(f"task_weights.py: error: {tmp_path / 'study'}: no seed has a scored run for every recipe")
    assert "26 of 26 missing" in msg and "baselines.py --out" in msg
    assert not (tmp_path / "study").exists()                      # nothing written


def test_four_task_scores_reads_the_group_file_or_stops_in_the_callers_name(tmp_path):
    import json

    run = tmp_path / "run"
    run.mkdir()
    three = {W.RETRIEVAL: 0.61, W.CONCEPT: 0.57, W.SUBGROUP: 0.64}
    with pytest.raises(SystemExit) as e:
        W.four_task_scores(run, three, "eval_candidates.py")
    assert str(e.value).startswith("eval_candidates.py: error: ") and "no Emoji group" in str(e.value)
    (run / "scores.emoji_group.json").write_text(json.dumps({"suite": "emoji_group", "tasks": {W.GROUP: 0.58}}))
    assert W.four_task_scores(run, three) == {**three, W.GROUP: 0.58}
