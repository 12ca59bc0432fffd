"""scripts/bench/tau_projection.py: a study's signal and noise, and the split-half tau they project."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts" / "bench"))

import tau_projection as P  # noqa: E402


def _study(folder: Path, truth, noise: float, seeds: int, seed_effect: float = 0.0, rng_seed: int = 0) -> Path:
    """A baselines.json whose recipe r scores truth[r] + a per-seed shift + normal noise."""
    rng = np.random.default_rng(rng_seed)
    shift = rng.normal(0.0, seed_effect, seeds)
    rows = [{"recipe": f"r{i:02d}", "seeds": {str(s): float(m + shift[s] + rng.normal(0.0, noise)) for s in range(seeds)}}
            for i, m in enumerate(truth)]
    folder.mkdir(parents=True)
    (folder / "baselines.json").write_text(json.dumps({"rows": rows, "summary": {}}))
    return folder


def test_the_noise_leaves_out_what_a_seed_does_to_every_recipe(tmp_path):
    from rank_statistic import study_runs

    truth = np.linspace(0.5, 0.62, 13)
    runs, seeds = study_runs(_study(tmp_path / "s", truth, noise=0.01, seeds=60, seed_effect=0.05))
    _, means, noise = P.signal_and_noise(runs, seeds)
    assert noise == pytest.approx(0.01, rel=0.1)          # the 0.05 seed shift would dominate a plain std
    assert list(np.argsort(means)) == list(range(13))
    assert np.std(means, ddof=1) == pytest.approx(np.std(truth, ddof=1), rel=0.05)


def test_the_spread_loses_what_the_seed_noise_adds_to_it(tmp_path):
    from rank_statistic import study_runs

    # every recipe the same: the observed means scatter by noise / sqrt(seeds) and nothing else
    runs, seeds = study_runs(_study(tmp_path / "s", [0.6] * 13, noise=0.01, seeds=4))
    _, means, noise = P.signal_and_noise(runs, seeds)
    raw = np.std([np.mean([runs[r][s]["value"] for s in seeds]) for r in runs], ddof=1)
    assert raw > 0.003                                    # the means do scatter
    assert np.std(means, ddof=1) == pytest.approx(np.sqrt(max(raw ** 2 - noise ** 2 / 4, 0)), abs=1e-9)
    assert np.std(means, ddof=1) < raw * 0.7


def test_vectorised_tau_is_kendalls():
    from scipy import stats

    means = np.linspace(0, 1, 9)
    t = P.projected_tau(means, 0.3, 1, draws=5, seed=3)
    rng = np.random.default_rng(3)                    # the same draws, in the order projected_tau makes them
    a = means + rng.normal(0.0, 0.3, (5, 9))
    b = means + rng.normal(0.0, 0.3, (5, 9))
    assert t == pytest.approx([stats.kendalltau(x, y).statistic for x, y in zip(a, b)])


def test_projection_matches_every_real_split_of_a_study(tmp_path):
    """The model behind the projection is the data's own when runs are truth + normal noise: its
    2-against-2 tau equals the mean over every disjoint pair of 2-seed halves of a 10-seed study."""
    from baselines import all_splits_tau
    from rank_statistic import study_runs

    truth = np.linspace(0.55, 0.67, 13)
    runs, seeds = study_runs(_study(tmp_path / "s", truth, noise=0.012, seeds=10, seed_effect=0.01, rng_seed=1))
    real = all_splits_tau(runs, sorted(runs), seeds, half=2)["mean"]
    _, means, noise = P.signal_and_noise(runs, seeds)
    projected = P.projected_tau(means, noise, 2).mean()
    assert projected == pytest.approx(real, abs=0.05)
    assert P.projected_tau(means, noise, 3).mean() > projected        # more seeds a side agree better
    assert P.projected_tau(means, 0.0, 1).mean() == pytest.approx(1.0)


def test_factor_needed_grows_as_the_signal_shrinks():
    truth = np.linspace(0.0, 0.03, 13)
    strong = P.factor_needed(truth, 0.002, 3, None)
    weak = P.factor_needed(truth, 0.008, 3, None)
    most = P.factor_needed(truth, 0.008, 3, 0.9)
    assert strong == 1.0 and weak is not None and weak > 1.0 and most > weak
    assert P.factor_needed(truth, 1.0, 3, None) is None           # beyond the grid


def test_cli_prints_a_row_per_study_and_refuses_a_study_too_small(tmp_path, capsys):
    study = _study(tmp_path / "s", np.linspace(0.5, 0.6, 5), noise=0.01, seeds=4)
    assert P.main([str(study)]) == 0
    out = capsys.readouterr().out
    assert str(study) in out and "3 v 3" in out
    tiny = _study(tmp_path / "t", [0.5, 0.6], noise=0.01, seeds=4)
    with pytest.raises(SystemExit, match=r"t/baselines.json: needs at least 3 recipes"):
        P.main([str(tiny)])
    with pytest.raises(SystemExit, match=r"^tau_projection.py: error: .*nothing/baselines.json: missing or not JSON"):
        P.main([str(tmp_path / "nothing")])


def test_plot_draws_every_study_against_the_goal(tmp_path, capsys, monkeypatch):
    from datacurate.report import plots

    drawn = {}
    real = plots.tau_projections

    def spy(studies, goal, path):
        drawn.update(studies=studies, goal=goal)
        return real(studies, goal, path)

    monkeypatch.setattr(plots, "tau_projections", spy)
    a = _study(tmp_path / "sharp", np.linspace(0.5, 0.7, 8), noise=0.005, seeds=6)
    b = _study(tmp_path / "blunt", np.linspace(0.5, 0.52, 8), noise=0.02, seeds=6, rng_seed=1)
    png = tmp_path / "fig" / "tau.png"
    assert P.main([str(a), str(b), "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"plot: {png}" in capsys.readouterr().out
    assert [name for name, _ in drawn["studies"]] == ["sharp", "blunt"] and drawn["goal"] == 0.8
    (sharp3, sharp_share), (blunt3, _) = drawn["studies"][0][1][3], drawn["studies"][1][1][3]
    assert sharp3 > 0.9 > 0.5 > blunt3 and sharp_share > 0.9
    assert drawn["studies"][1][1][6][0] > blunt3          # more seeds a side agree better
