"""scripts/bench/eval_noise.py: the split-half decomposition of seed noise into models and eval items."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts" / "bench"))

import eval_noise  # noqa: E402


def _simulated_study(model_std: float, items: int, recipes: int = 12, seeds: int = 6, seed: int = 0):
    """Each run: a model with true accuracy p (recipe mean + model_std noise), scored on the same items."""
    rng = np.random.default_rng(seed)
    keys = [i.to_bytes(4, "big") for i in range(items)]
    difficulty = rng.normal(0, 1, items)                         # shared across models: common items
    runs = {}
    for r in range(recipes):
        for s in range(seeds):
            p = 0.3 + 0.01 * r + rng.normal(0, model_std)
            # per-item probability around p, then a model-specific coin per item
            prob = np.clip(p + 0.1 * difficulty, 0, 1)
            correct = rng.random(items) < prob
            runs.setdefault(f"r{r}", []).append({"task": {"keys": keys, "correct": correct}})
    return keys, runs


@pytest.mark.parametrize("model_std", [0.0, 0.02])
def test_split_halves_find_the_models_own_spread(model_std):
    items = 2000
    keys, runs = _simulated_study(model_std, items)
    rng = np.random.default_rng(1)
    parts = []
    for _ in range(20):
        half = set(k for k, t in zip(keys, rng.random(items) < 0.5) if t)
        values = {r: [(eval_noise.average(x, keys, None), eval_noise.average(x, keys, half),
                       eval_noise.average(x, keys, set(keys) - half)) for x in xs] for r, xs in runs.items()}
        parts.append(eval_noise.decompose(values))
    got = eval_noise.parts_of(parts)
    binomial = 0.3 * 0.7 / items                                  # a model's coin flips over the items
    assert got["var_full"] == pytest.approx(model_std ** 2 + binomial, rel=0.3)
    assert got["cov_halves"] == pytest.approx(model_std ** 2, abs=0.3 * binomial)
    assert got["var_items"] == pytest.approx(binomial, rel=0.35)
    # ten times the items keeps the models' spread and divides the items' part by ten
    assert eval_noise.projected_std(got["var_model"], got["var_items"], 10) ** 2 == \
        pytest.approx(got["var_model"] + got["var_items"] / 10)


def test_retrieval_outcomes_score_both_directions():
    o = {"keys": [b"a", b"b"], "text_hit": np.array([True, False]),
         "caption_hits": np.array([1.0, 2.0]), "captions": np.array([1, 3])}
    assert eval_noise.task_score(o, np.array([True, True])) == pytest.approx(0.5 * (0.5 + 3 / 4))
    assert eval_noise.task_score(o, np.array([False, True])) == pytest.approx(0.5 * (0.0 + 2 / 3))
