"""scripts/bench/task_families.py: candidate task families built from the held-out items, and what
adding one does to the instrument (noise, spread of the recipe means, their ratio)."""
from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts" / "bench"))

import task_families  # noqa: E402

from test_eval_helpers import make_tiny_run, write_eval_parquet  # noqa: E402


def _images(task: Path) -> list:
    import webdataset as wds

    return [r["png"] for r in wds.WebDataset(str(task / "test" / "0.tar"), shardshuffle=False).decode("pil")]


def test_candidate_tasks_draw_the_same_items_another_way_with_the_concept_tasks_classes(tmp_path):
    from eval.tasks import find_user_tasks

    pool = tmp_path / "pool"
    write_eval_parquet(pool)
    rows = task_families.build_candidates(pool, tmp_path / "a")
    assert {r["source"] for r in rows} == {"google", "twitter"}
    found = find_user_tasks(tmp_path / "a")
    assert set(found) == set(task_families.CANDIDATES)
    names = sorted(str(r["name"]) for r in rows)
    for key in task_families.CANDIDATES:
        assert (tmp_path / "a" / key / "classnames.txt").read_text().splitlines() == names
        assert len(_images(tmp_path / "a" / key)) == len(rows)
    grey = np.asarray(_images(tmp_path / "a" / "emoji_concept_grey")[0].convert("RGB")).astype(int)
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()
    sketch = np.asarray(_images(tmp_path / "a" / "emoji_concept_sketch")[0].convert("L")).astype(int)
    assert (sketch[0] == 255).all() and (sketch[:, -1] == 255).all()        # no frame from the image's edge
    assert (sketch < 128).sum() > 10                                         # the shape's outline is there
    scene = [np.asarray(im.convert("RGB")) for im in _images(tmp_path / "a" / "emoji_concept_scene")]
    assert any((s[0, 0] != 255).any() for s in scene)                        # a background, not the white page
    task_families.build_candidates(pool, tmp_path / "b")                     # seeded per item: the same pictures
    again = [np.asarray(im.convert("RGB")) for im in _images(tmp_path / "b" / "emoji_concept_scene")]
    assert all(np.array_equal(x, y) for x, y in zip(scene, again))


def _study(extra, recipes: int = 8, seeds: int = 6, noise: float = 0.01, seed: int = 0) -> dict:
    """Runs with a 4-task suite Average (recipe signal + per-run noise) and one extra task per run."""
    rng = np.random.default_rng(seed)
    runs = {}
    for r in range(recipes):
        runs[f"r{r}"] = {}
        for s in range(seeds):
            runs[f"r{r}"][s] = {"value": 0.6 + 0.01 * r + rng.normal(0, noise), "tasks": dict.fromkeys("abcd", 0.0),
                                "extra": {"x": extra(r, rng)}}
    return runs


def test_a_task_at_chance_dilutes_noise_and_signal_alike_and_an_independent_one_sharpens_the_ranking():
    chance = _study(lambda r, rng: 0.5)
    seeds = list(range(6))
    base = task_families.instrument(task_families.with_task(chance, None), seeds)
    with_chance = task_families.instrument(task_families.with_task(chance, "x"), seeds)
    assert with_chance["pooled_std"] == pytest.approx(base["pooled_std"] * 4 / 5)
    assert with_chance["spread"] == pytest.approx(base["spread"] * 4 / 5)
    assert with_chance["ratio"] == pytest.approx(base["ratio"])
    # the same signal measured again with noise of its own: the mean of the two is sharper
    indep = _study(lambda r, rng: 0.6 + 0.01 * r + rng.normal(0, 0.01))
    base = task_families.instrument(task_families.with_task(indep, None), seeds)
    more = task_families.instrument(task_families.with_task(indep, "x"), seeds)
    assert more["ratio"] > base["ratio"] * 1.05
    assert -1 <= more["tau"] <= 1 and more["tau_all_splits"] is not None


def test_cross_style_retrieval_scores_each_emoji_against_its_other_drawing_and_is_kept(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pool = tmp_path / "pool"
    parquet = write_eval_parquet(pool)
    t = pq.read_table(parquet)
    other = t.set_column(t.schema.get_field_index("source"), "source",
                         pa.array(["twitter" if s == "google" else "google" for s in t.column("source").to_pylist()]))
    other = other.set_column(0, "item_id", pa.array([f"{i}-other" for i in t.column("item_id").to_pylist()]))
    pq.write_table(pa.concat_tables([t, other]), parquet)               # every emoji in both styles
    rows = task_families.build_candidates(pool, tmp_path / "tasks")
    run = make_tiny_run(tmp_path / "run")
    got = task_families.score_run(run, tmp_path / "tasks", rows)
    # the two drawings are the same pixels here: even a random image tower finds them first
    assert got[task_families.CROSS_STYLE] == pytest.approx(1.0)
    assert set(got) == {*task_families.CANDIDATES, task_families.CROSS_STYLE}
    assert all(0.0 <= v <= 1.0 for v in got.values())
    side = json.loads((run / "cross_style.json").read_text())
    assert side["score"] == got[task_families.CROSS_STYLE]
    (run / "cross_style.json").write_text(json.dumps({"score": 0.25}))    # kept: read, not computed again
    assert task_families.score_run(run, tmp_path / "tasks", rows)[task_families.CROSS_STYLE] == 0.25


def test_compose_takes_an_image_as_well_as_a_path(tmp_path):
    from datacurate.pool.compose import compose, load_rgba
    from test_eval_helpers import draw_shape

    path = tmp_path / "e.png"
    draw_shape("red", "circle").save(path)
    a, ctx_a = compose(random.Random(3), str(path), 120, 100)
    b, ctx_b = compose(random.Random(3), load_rgba(str(path)), 120, 100)
    assert ctx_a == ctx_b and np.array_equal(np.asarray(a), np.asarray(b))
