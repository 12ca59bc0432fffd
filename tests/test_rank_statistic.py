"""scripts/bench/rank_statistic.py: the split-half tau of finished studies, each half ranked by the
mean and by the median of its seeds, read from baselines.json alone."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts" / "bench"))

import rank_statistic as R  # noqa: E402


def _write(folder: Path, seeds: dict[str, list[float]]) -> Path:
    folder.mkdir(parents=True)
    rows = [{"recipe": r, "seeds": {str(i): v for i, v in enumerate(vs)}} for r, vs in seeds.items()]
    (folder / "baselines.json").write_text(json.dumps({"rows": rows, "summary": {}}))
    return folder


def test_an_outlying_run_costs_the_mean_and_not_the_median(tmp_path, capsys):
    study = _write(tmp_path / "s", {"a": [1, 1, 1, 1, 1, 1], "b": [2, 2, 2, 2, 2, 2], "c": [3, 3, 3, 3, 3, -9]})
    runs, seeds = R.study_runs(study)
    assert seeds == list(range(6))
    c = R.compare(runs, seeds)
    assert c["mean"]["tau"] < 1 and c["median"]["tau"] == pytest.approx(1.0)
    assert c["median"]["all"] == pytest.approx(1.0) and c["mean"]["all"] < 1
    assert R.main([str(study)]) == 0
    assert "+1.000" in capsys.readouterr().out


def test_a_study_without_per_seed_scores_is_one_error_line(tmp_path):
    folder = tmp_path / "old"
    folder.mkdir()
    (folder / "baselines.json").write_text(json.dumps([{"recipe": "a", "Average": 0.5}]))
    with pytest.raises(SystemExit, match=r"baselines.json:rows:a:seeds: no per-seed scores"):
        R.study_runs(folder)
    with pytest.raises(SystemExit, match=r"missing or not JSON"):
        R.study_runs(tmp_path / "nothing")


def test_smaller_halves_draw_every_disjoint_pair_and_count_those_at_the_goal(tmp_path, capsys):
    # d ranks first on seeds 0-1 and last on seeds 2-3: one seed against one agrees (tau 1) when both
    # seeds lie on the same side (0 vs 1, 2 vs 3) and not otherwise (4 of the 6 pairs: tau 0)
    study = _write(tmp_path / "s", {"a": [0, 0, 0, 0], "b": [1, 1, 1, 1], "c": [2, 2, 2, 2], "d": [3, 3, -3, -3]})
    runs, seeds = R.study_runs(study)
    c = R.compare(runs, seeds, half=1)
    assert c["mean"]["tau"] is None
    assert c["mean"]["all"] == pytest.approx(2 / 6) and c["mean"]["at_goal"] == pytest.approx(2 / 6)
    with pytest.raises(SystemExit, match=r"--half 3: .* has 4 complete seeds; give 1 to 2"):
        R.main([str(study), "--half", "3"])
    assert R.main([str(study), "--half", "1"]) == 0
    assert "33%" in capsys.readouterr().out
