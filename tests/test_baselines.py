"""The baseline study's statistics and writer, on hand-made numbers and a fake run folder (no training)."""
from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bl():
    spec = importlib.util.spec_from_file_location("bench_baselines", ROOT / "scripts" / "bench" / "baselines.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _runs(table: dict[str, list[float | None]]) -> dict:
    """{recipe: [value per seed]} -> read_study's shape (None: a missing run)."""
    return {r: {s: {"value": v, "tasks": {"t": v}} for s, v in enumerate(vals) if v is not None}
            for r, vals in table.items()}


def test_study_recipes_are_built_in_and_load(bl):
    from filters.recipe import builtin_recipes, load_recipe

    assert set(bl.STUDY) <= set(builtin_recipes())
    for r in bl.STUDY:
        assert load_recipe(r).steps
    fr = {n: load_recipe(n).steps[0].top_fraction for n in bl.STUDY if bl.SWEEP.match(n)}
    assert fr == {"clip_score_top10": 0.1, "clip_score_top20": 0.2, "clip_score_top30": 0.3,
                  "clip_score_top40": 0.4, "clip_score_top50": 0.5}
    steps = [s.label for s in load_recipe("decontaminate_phash_dedup_clip").steps]
    assert steps == ["decontaminate_phash", "exact_dedup", "phash_dedup", "clip_score"]


def test_stages_are_subsets_first_then_seed_major(bl, tmp_path):
    from datacurate.layout import BenchLayout

    names = [s.name for s in bl.study_stages(BenchLayout(tmp_path), ["a", "b"], "micro", 2)]
    assert names == ["pool build", "pool download", "filter-net", "embed",
                     "filter [a]", "reshard [a]", "filter [b]", "reshard [b]",
                     "train [a]", "eval [a]", "train [b]", "eval [b]",
                     "train [a seed 1]", "eval [a seed 1]", "train [b seed 1]", "eval [b seed 1]"]


def test_recipe_variant_changes_only_training_fields(bl, tmp_path):
    from datacurate.layout import BenchLayout
    from datacurate.scales import get_scale
    from training.launch import recipe_for

    tiny = get_scale("tiny")
    v = bl.recipe_variant("tiny", ["learning_rate=5e-4", "batch_size=256"])
    assert (v.learning_rate, v.batch_size, v.pool_size, v.warmup) == (5e-4, 256, tiny.pool_size, tiny.warmup)
    assert type(v.batch_size) is int and recipe_for(v) != recipe_for(tiny)   # a run of tiny is not one of v
    assert bl.recipe_variant("tiny", []) == tiny
    shared = bl.recipe_variant("tiny", ["data_order=sample_times"])
    assert shared.data_order == "sample_times" and recipe_for(shared).as_dict()["data_order"] == "sample_times"
    shallower = bl.recipe_variant("tiny", ["model=TinyCLIP-ViT-64"])      # tiny's model until 2026-12-05
    assert shallower.model == "TinyCLIP-ViT-64" and recipe_for(shallower).model != recipe_for(tiny).model
    conv = bl.recipe_variant("tiny", ["model=TinyCLIP-RN-64"])
    assert conv.model == "TinyCLIP-RN-64" and recipe_for(conv).model != recipe_for(tiny).model
    for bad in (["pool_size=10"], ["learning_rate"], ["warmup=many"], ["data_order=shuffled"], ["model=ViT-X"]):
        with pytest.raises(SystemExit, match="--set"):
            bl.recipe_variant("tiny", bad)
    src = tmp_path / "src"
    for name in ("pool", "fnet", "subsets", "data"):
        (src / name).mkdir(parents=True)
    (src / "embed.json").write_text("{}")
    lay = BenchLayout(tmp_path / "variant")
    assert sorted(bl.share_inputs(lay, src)) == ["data", "embed.json", "fnet", "pool", "subsets"]
    assert (lay.pool).resolve() == (src / "pool").resolve() and bl.share_inputs(lay, src) == []
    names = [s.name for s in bl.study_stages(lay, ["a"], v, 1)]
    assert names[-2:] == ["train [a]", "eval [a]"]
    (src / "data").rmdir()
    with pytest.raises(SystemExit, match="no data there"):
        bl.share_inputs(BenchLayout(tmp_path / "other"), src)


def test_mean_std_is_the_sample_std_with_a_t_interval(bl):
    m = bl.mean_std([1.0, 2.0, 3.0, 4.0])
    assert m["mean"] == 2.5
    assert m["std"] == pytest.approx(math.sqrt(5 / 3))           # ddof=1: sum of squares 5 over 3
    assert m["sem"] == pytest.approx(math.sqrt(5 / 3) / 2)
    half = 3.182446305284263 * m["sem"]                          # t(0.975, 3)
    assert m["ci95"] == pytest.approx([2.5 - half, 2.5 + half])
    one = bl.mean_std([0.7])
    assert one["mean"] == 0.7 and one["std"] is None and one["ci95"] is None


def test_gap_in_the_larger_sample_std(bl):
    rows = bl.recipe_rows(_runs({"no_filter": [0.10, 0.12, 0.14], "random_30": [0.10, 0.10, 0.10],
                                 "good": [0.30, 0.31, 0.32], "bad": [0.0, 0.01, 0.02]}), [0, 1, 2], "Average")
    g = bl.best_gaps(rows, "Average")
    assert g["best"] == "good"                              # not a reference, however high
    # good: mean 0.31, std 0.01; no_filter: mean 0.12, std 0.02; random: std 0
    assert g["gaps"]["no_filter"]["diff"] == pytest.approx(0.19)
    assert g["gaps"]["no_filter"]["in_std"] == pytest.approx(0.19 / 0.02)
    assert g["gaps"]["no_filter"]["strong"] is True
    assert g["gaps"]["random_30"]["in_std"] == pytest.approx(0.21 / 0.01)
    d, k = bl.gap((0.2, 0.05), (0.1, 0.04))
    assert d == pytest.approx(0.1) and k == pytest.approx(2.0)
    assert bl.gap((0.2, None), (0.1, None)) == (pytest.approx(0.1), None)


def test_weak_gap_is_not_called_strong(bl):
    rows = bl.recipe_rows(_runs({"no_filter": [0.1, 0.2], "f": [0.2, 0.3]}), [0, 1], "Average")
    g = bl.best_gaps(rows, "Average")["gaps"]["no_filter"]
    assert g["in_std"] == pytest.approx(0.1 / math.sqrt(0.005)) and g["strong"] is False


def test_split_half_tau_identical_and_reversed(bl):
    same = _runs({"a": [1, 2, 1, 2], "b": [3, 4, 3, 4], "c": [5, 6, 5, 6], "d": [0, 0, 0, 0]})
    t = bl.split_half_tau(same, [0, 1, 2, 3])
    assert t["first"] == [0, 1] and t["second"] == [2, 3] and t["tau"] == pytest.approx(1.0)
    rev = _runs({"a": [1, 1, 4, 4], "b": [2, 2, 3, 3], "c": [3, 3, 2, 2], "d": [4, 4, 1, 1]})
    assert bl.split_half_tau(rev, [0, 1, 2, 3])["tau"] == pytest.approx(-1.0)


def test_split_half_tau_over_every_split(bl):
    """d swaps from top to bottom between seeds {0,1} and {2,3} (tau 0 there: 3 of 6 pairs discordant)
    but ties a in the other two splits (tau 1): the mean over the 3 splits is 2/3."""
    runs = _runs({"a": [0, 0, 0, 0], "b": [1, 1, 1, 1], "c": [2, 2, 2, 2], "d": [3, 3, -3, -3]})
    t = bl.split_half_tau(runs, [0, 1, 2, 3])
    assert t["tau"] == pytest.approx(0.0)
    al = t["all_splits"]
    assert al["splits"] == 3 and al["mean"] == pytest.approx(2 / 3)
    assert al["min"] == pytest.approx(0.0) and al["max"] == pytest.approx(1.0)


def test_split_half_tau_odd_seeds_drop_the_middle(bl):
    # the middle seed (1) would reverse the ranking if it were counted in either half
    runs = _runs({"a": [1, 100, 1], "b": [2, -100, 2], "c": [3, 0, 3]})
    t = bl.split_half_tau(runs, [0, 1, 2])
    assert t["first"] == [0] and t["second"] == [2] and t["tau"] == pytest.approx(1.0)
    # every seed counts in the mean over splits: 0 vs 2 agree (1), 0 vs 1 and 1 vs 2 disagree (-1/3 each)
    al = t["all_splits"]
    assert al["splits"] == 3 and al["mean"] == pytest.approx((1 - 1 / 3 - 1 / 3) / 3)
    one = bl.split_half_tau(runs, [0])
    assert one["tau"] is None and "at least 2" in one["message"]


def test_held_out_best_is_picked_on_one_half_and_measured_on_the_other(bl):
    """A recipe lucky on seeds 0-1 is picked there, then measured on 2-3 where another one leads."""
    v = lambda *xs: {i: {"value": x} for i, x in enumerate(xs)}  # noqa: E731
    runs = {"no_filter": v(0.10, 0.11, 0.10, 0.11), "random_30": v(0.09, 0.10, 0.09, 0.10),
            "lucky": v(0.30, 0.31, 0.12, 0.13), "steady": v(0.20, 0.21, 0.20, 0.21)}
    h = bl.held_out_best(runs, [0, 1, 2, 3])
    assert h["best"] == "lucky" and h["first"] == [0, 1] and h["second"] == [2, 3]
    assert h["rank_on_second"] == 2 and h["candidates"] == 2
    assert h["gaps"]["no_filter"]["diff"] == pytest.approx(0.02)       # not the 0.20 the same seeds claim
    assert h["gaps"]["no_filter"]["in_std"] == pytest.approx(0.02 / np.std([0.12, 0.13], ddof=1))
    one = bl.held_out_best(runs, [0, 1, 2])                             # 3 seeds: 0 against 2, no std
    assert one["best"] == "lucky" and one["gaps"]["random_30"]["in_std"] is None
    assert bl.held_out_best(runs, [0])["best"] is None


def test_missing_seed_is_reported_not_averaged_as_zero(bl, tmp_path):
    runs = _runs({"no_filter": [0.1, 0.2, 0.3], "f": [0.4, 0.5, None], "never": [None, None, None]})
    seeds, absent = bl.common_seeds(runs)
    assert seeds == [0, 1] and absent == ["never"]
    rows = {r["recipe"]: r for r in bl.recipe_rows(runs, seeds, "Average")}
    assert set(rows) == {"no_filter", "f"}
    assert rows["f"]["Average"] == pytest.approx(0.45)           # not (0.4 + 0.5 + 0) / 3
    assert rows["no_filter"]["Average"] == pytest.approx(0.15)   # paired: seed 2 left out for all
    lines = bl.missing_lines([("f", 2, "no scores.json"), ("never", 0, "no scores.json"),
                              ("never", 1, "no scores.json")], absent)
    assert "  f: seed 2 (no scores.json)" in lines
    assert any(x.startswith("  never: seeds 0, 1") and "left out" in x for x in lines)


def test_cross_scale_rho(bl):
    here = [{"recipe": r, "Average": v} for r, v in [("a", 0.1), ("b", 0.2), ("c", 0.3), ("d", 0.4)]]
    other = {"rows": [{"recipe": r, "Average": v} for r, v in [("a", 1), ("b", 2), ("c", 4), ("x", 9)]],
             "summary": {"scale": "micro", "metric": "Average"}}
    c = bl.cross_scale_rho(here, "Average", other, "runs/micro")
    assert c["common"] == 3 and c["rho"] == pytest.approx(1.0) and c["scale"] == "micro"
    flipped = {"rows": [{"recipe": r, "Average": -v} for r, v in [("a", 1), ("b", 2), ("c", 4), ("d", 5)]]}
    assert bl.cross_scale_rho(here, "Average", flipped, "x")["rho"] == pytest.approx(-1.0)
    one = bl.cross_scale_rho(here, "Average", {"rows": [{"recipe": "a", "Average": 1.0}]}, "runs/one")
    assert one["rho"] is None and one["common"] == 1 and "1 recipe(s) in common" in one["message"]
    none = bl.cross_scale_rho(here, "Average", None, "runs/none")
    assert none["rho"] is None and "no baselines.json" in none["message"]


def _fake_folder(tmp_path: Path, values: dict[str, list[float | None]], sizes: dict[str, int]):
    from datacurate.layout import BenchLayout
    from datacurate.uids import make_uid, write_subset

    lay = BenchLayout(tmp_path / "study")
    lay.pool.mkdir(parents=True)
    (lay.out / "subsets").mkdir()
    (lay.pool / "download_summary.json").write_text(json.dumps({"succeeded": 1000}))
    for r, n in sizes.items():
        write_subset(lay.subset(r), [make_uid(r, i) for i in range(n)])
    for r, vals in values.items():
        for s, v in enumerate(vals):
            if v is None:
                continue
            run = lay.run(r, s)
            run.mkdir(parents=True)
            tasks = {"group": 2 * v, "concept": v / 2}
            (run / "scores.json").write_text(json.dumps(
                {"suite": "offline", "aggregates": {"Average": v}, "tasks": tasks, "complete": True,
                 "offline_fingerprint": "fp"}))
            # eval_results.jsonl may hold another suite's tasks: the study must not read it
            (run / "eval_results.jsonl").write_text(json.dumps(
                {"key": "other", "dataset": "other_suite_task", "metrics": {"main_metric": 0.99}}) + "\n")
    return lay


def test_read_run_refuses_incomplete_and_stale_scores(bl, tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    assert bl.read_run(run, "Average") == (None, "no scores.json")
    (run / "scores.json").write_text(json.dumps({"aggregates": {"Average": 0.2}, "complete": False,
                                                 "missing": {"concept": "failed"}}))
    assert bl.read_run(run, "Average")[1] == "scores.json incomplete: concept"
    (run / "scores.json").write_text(json.dumps({"aggregates": {"Average": 0.2}, "tasks": {"t": 0.2},
                                                 "offline_fingerprint": "old"}))
    assert "another version" in bl.read_run(run, "Average", fingerprint="new")[1]
    assert bl.read_run(run, "Average", fingerprint="old") == ({"value": 0.2, "tasks": {"t": 0.2}}, None)


def test_study_table_and_json_from_a_fake_run_folder(bl, tmp_path):
    values = {"no_filter": [0.10, 0.12, 0.11, 0.13], "random_30": [0.09, 0.10, 0.11, 0.10],
              "clip_score_top10": [0.14, 0.15, 0.14, 0.16], "clip_score_top30": [0.20, 0.21, 0.22, 0.21],
              "clip_score_top50": [0.17, 0.16, 0.18, 0.17], "dedup_clip": [0.19, 0.20, 0.21, None]}
    sizes = {"no_filter": 1000, "random_30": 300, "clip_score_top10": 100, "clip_score_top30": 300,
             "clip_score_top50": 500, "dedup_clip": 290}
    lay = _fake_folder(tmp_path, values, sizes)
    other = tmp_path / "other"
    other.mkdir()
    (other / "baselines.json").write_text(json.dumps(
        {"rows": [{"recipe": r, "Average": v} for r, v in
                  [("no_filter", 0.3), ("random_30", 0.2), ("clip_score_top30", 0.5), ("clip_score_top10", 0.4)]],
         "summary": {"scale": "micro", "metric": "Average"}}))
    study = bl.build_study(lay, list(values), 4, "Average", "tiny", [other], fingerprint="fp")
    s = study["summary"]
    assert s["seeds"] == [0, 1, 2] and s["missing"] == [{"recipe": "dedup_clip", "seed": 3, "why": "no scores.json"}]
    rows = {r["recipe"]: r for r in study["rows"]}
    assert rows["clip_score_top30"]["Average"] == pytest.approx(0.21)
    assert rows["clip_score_top30"]["Average_std"] == pytest.approx(np.std([0.20, 0.21, 0.22], ddof=1))
    assert rows["clip_score_top30"]["tasks"]["group"][0] == pytest.approx(0.42)
    assert "other_suite_task" not in rows["no_filter"]["tasks"]
    assert rows["random_30"]["size"] == 300 and rows["random_30"]["fraction"] == pytest.approx(0.3)
    assert s["best"]["best"] == "clip_score_top30"
    assert s["split_half_tau"]["first"] == [0] and s["split_half_tau"]["second"] == [2]
    assert s["cross_scale"][0]["common"] == 4 and s["cross_scale"][0]["rho"] == pytest.approx(1.0)

    header, body = bl.table(study["rows"], "Average")
    assert header[:6] == ["recipe", "size", "of pool", "seeds", "Average (mean ± sample std)", "95% CI"]
    assert header[6:] == ["concept", "group"]
    top30 = next(b for b in body if b[0] == "clip_score_top30")
    assert top30[1:5] == ["300", "30.0%", "3", "0.2100 ± 0.0100"]

    section = bl.write_study(lay, study)
    saved = json.loads((lay.out / "baselines.json").read_text())
    assert saved["summary"]["scale"] == "tiny" and saved["summary"]["metric"] == "Average"
    assert [r["recipe"] for r in saved["rows"]] == list(values)
    assert (lay.out / "report" / "baselines.png").stat().st_size > 1000
    assert (lay.out / "report" / "clip_fraction_sweep.png").stat().st_size > 1000
    assert "Baseline study (tiny, 3 seeds" in section and "dedup_clip: seed 3 (no scores.json)" in section
    # the written study is what another scale's --compare reads
    assert bl.load_study(lay.out)["rows"][0]["recipe"] == "no_filter"


def test_sweep_points_order_by_fraction(bl):
    rows = [{"recipe": "clip_score_top50", "Average": 0.1, "Average_std": 0.01},
            {"recipe": "clip_score_top10", "Average": 0.2, "Average_std": None},
            {"recipe": "dedup_clip", "Average": 0.3, "Average_std": 0.01}]
    assert bl.sweep_points(rows, "Average") == [(0.1, 0.2, None, "clip_score_top10"),
                                                (0.5, 0.1, 0.01, "clip_score_top50")]


def test_weight_averages_are_read_from_their_own_run_folders(bl, tmp_path):
    """Each average's scores come from RUN/averages/emaD, not from the run's own; a missing one is named."""
    from datacurate.layout import RunLayout

    values = {"no_filter": [0.10, 0.12, 0.11], "random_30": [0.09, 0.10, 0.11], "clip_score_top30": [0.20, 0.22, 0.21]}
    lay = _fake_folder(tmp_path, values, {"no_filter": 1000, "random_30": 300, "clip_score_top30": 300})
    averaged = {"no_filter": [0.10, 0.11, 0.10], "random_30": [0.10, 0.10, 0.10], "clip_score_top30": [0.30, 0.31, None]}
    for r, vals in averaged.items():
        for s, v in enumerate(vals):
            if v is not None:
                var = RunLayout(lay.run(r, s)).averaged("ema0.9")
                var.root.mkdir(parents=True)
                var.scores.write_text(json.dumps({"aggregates": {"Average": v}, "tasks": {}, "complete": True,
                                                  "offline_fingerprint": "fp"}))
    study = bl.build_study(lay, list(values), 3, "Average", "tiny", fingerprint="fp")
    av = bl.averages_summary(lay, list(values), 3, [0.9], "Average", "fp")["ema0.9"]
    assert av["seeds"] == [0, 1] and av["missing"] == [{"recipe": "clip_score_top30", "seed": 2, "why": "no scores.json"}]
    assert av["means"]["clip_score_top30"][0] == pytest.approx(0.305) and av["best"]["best"] == "clip_score_top30"
    study["summary"]["averages"] = {"ema0.9": av}
    lines = bl.averages_lines(study["summary"])
    assert f"pooled per-run std {study['summary']['pooled_std']:.4f}" in lines[0]
    assert lines[1].startswith("  ema0.9: 2 seeds") and "1 runs not scored" in lines[1]


def test_split_half_tau_by_median_ignores_one_outlying_run(bl):
    """One run far under its recipe (c, seed 0) reverses b and c by the mean of seeds {0,1,2};
    by the median both halves rank a < b < c."""
    import numpy as np

    runs = _runs({"a": [1, 1, 1, 1, 1, 1], "b": [2, 2, 2, 2, 2, 2], "c": [-9, 3, 3, 3, 3, 3]})
    assert bl.split_half_tau(runs, list(range(6)))["tau"] < 1
    t = bl.split_half_tau(runs, list(range(6)), center=np.median)
    assert t["tau"] == pytest.approx(1.0) and t["all_splits"]["mean"] == pytest.approx(1.0)


def test_the_verdict_gives_the_share_of_halvings_at_the_tau_goal(bl):
    """d swaps from top to bottom between seeds {0,1} and {2,3}: 1 of the 3 halvings has tau 0, 2 have tau 1."""
    runs = _runs({"a": [0, 0, 0, 0], "b": [1, 1, 1, 1], "c": [2, 2, 2, 2], "d": [3, 3, -3, -3]})
    t = bl.split_half_tau(runs, [0, 1, 2, 3])
    assert t["all_splits"]["at_goal"] == pytest.approx(2 / 3)
    summary = {"seeds": [0, 1, 2, 3], "seeds_requested": 4, "best": {"gaps": {}}, "held_out_best": {},
               "split_half_tau": t, "cross_scale": []}
    text = "\n".join(bl.verdict_lines(summary, "Average"))
    assert "over all 3 ways to draw two halves of 2 from the seeds: mean +0.667" in text
    assert "67% at 0.8 or above" in text
    del t["all_splits"]["at_goal"]              # a study written before the share was kept
    assert "at 0.8" not in "\n".join(bl.verdict_lines(summary, "Average"))


def test_convolutional_variant_differs_from_the_recipe_only_in_its_image_tower():
    """TinyCLIP-RN-64 (the study of docs/studies/tiny-rn) swaps the ViT of tiny's recipe as it was then
    (TinyCLIP-ViT-64, 3 layers) for OpenCLIP's ModifiedResNet: same image size, text tower and embedding
    width, so the study compares image towers alone."""
    import json

    import torch

    from datacurate.clip import MODEL_CONFIG_DIR, load_clip

    vit, rn = (json.loads((MODEL_CONFIG_DIR / f"{n}.json").read_text()) for n in ("TinyCLIP-ViT-64", "TinyCLIP-RN-64"))
    assert rn["text_cfg"] == vit["text_cfg"] and rn["embed_dim"] == vit["embed_dim"]
    model, _, _ = load_clip("TinyCLIP-RN-64")          # the one loader eval and embedding use
    assert type(model.visual).__name__ == "ModifiedResNet" and model.visual.image_size == 64
    with torch.no_grad():
        emb = model.encode_image(torch.zeros(2, 3, 64, 64))
    assert emb.shape == (2, vit["embed_dim"])
