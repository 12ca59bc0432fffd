"""The offline suite: built from POOL/holdout/eval.parquet, run end to end by `datacurate eval`."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest

from test_eval_helpers import make_tiny_run, write_eval_parquet

ROOT = Path(__file__).resolve().parents[1]


def test_offline_evalsets_layout_and_rebuild(tmp_path):
    import webdataset as wds
    import yaml

    from eval.offline import build_offline_evalsets
    from eval.tasks import find_user_tasks

    pool = tmp_path / "pool"
    write_eval_parquet(pool)
    root = build_offline_evalsets(pool)
    tasks = find_user_tasks(root)
    assert set(tasks) == {"emoji_group", "emoji_subgroup", "emoji_concept", "emoji_name"}
    g = root / "emoji_group"
    assert (g / "classnames.txt").read_text().splitlines() == ["angular & shapes", "round & shapes"]
    assert (g / "test" / "nshards.txt").read_text().strip() == "1"
    assert yaml.safe_load((g / "task.yaml").read_text())["random_score"] == 0.5
    assert (root / "emoji_subgroup" / "classnames.txt").read_text().splitlines() == [
        "shape circle", "shape square", "shape triangle"]
    recs = list(wds.WebDataset(str(root / "emoji_name" / "test" / "0.tar"), shardshuffle=False).decode("pil"))
    assert len(recs) == 12
    assert recs[0]["txt"].splitlines() == ["a red circle on a clear background", "red circle"]
    img = recs[0]["png"]
    assert img.mode == "RGB" and img.getpixel((0, 0)) == (255, 255, 255)   # transparency -> white
    cls = list(wds.WebDataset(str(g / "test" / "0.tar"), shardshuffle=False))
    assert [int(r["cls"]) for r in cls][:3] == [1, 0, 0]                    # circle round, square/triangle angular
    # unchanged parquet: nothing rewritten; changed parquet: rebuilt
    mtime = (g / "test" / "0.tar").stat().st_mtime_ns
    build_offline_evalsets(pool)
    assert (g / "test" / "0.tar").stat().st_mtime_ns == mtime
    import pyarrow.parquet as pq
    t = pq.read_table(pool / "holdout" / "eval.parquet").slice(0, 6)
    pq.write_table(t, pool / "holdout" / "eval.parquet")
    build_offline_evalsets(pool)
    assert len(list(wds.WebDataset(str(g / "test" / "0.tar"), shardshuffle=False))) == 6


def test_two_chains_that_need_the_eval_sets_at_once_build_them_once(tmp_path):
    """Side-by-side chains (datacurate run --jobs 2) both find the suite stale after a change:
    the second waits for the first's build instead of tripping over its temporary folders."""
    import threading

    import eval.offline as O

    pool = tmp_path / "pool"
    write_eval_parquet(pool)
    writes, errors = [], []
    real = O._write_task

    def slow_write(dst, *a, **k):                 # widen the window the race needs
        writes.append(dst.name)
        threading.Event().wait(0.05)
        return real(dst, *a, **k)

    O._write_task = slow_write
    try:
        def build():
            try:
                O.build_offline_evalsets(pool)
            except Exception as e:                # noqa: BLE001 - the test reports what a thread raised
                errors.append(e)
        threads = [threading.Thread(target=build) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        O._write_task = real
    assert errors == []
    assert sorted(writes) == sorted(O.OFFLINE_TASKS)          # each task written once, by one of them
    assert not list((pool / "evalsets").glob(".*.tmp"))


def test_offline_task_with_one_class_is_reported_missing_with_reason(tmp_path):
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from eval.data import missing_reason
    from eval.offline import build_offline_evalsets
    from eval.tasks import find_user_tasks

    pool = tmp_path / "pool"
    write_eval_parquet(pool)
    t = pq.read_table(pool / "holdout" / "eval.parquet")
    pq.write_table(t.filter(pc.equal(t["group"], "angular-shapes")), pool / "holdout" / "eval.parquet")
    tasks = find_user_tasks(build_offline_evalsets(pool))
    assert "only one group ('angular-shapes')" in missing_reason(tasks["emoji_group"])
    assert missing_reason(tasks["emoji_subgroup"]) is None and missing_reason(tasks["emoji_name"]) is None


def test_load_run_model_loads_the_checkpoint_weights(tmp_path):
    import torch

    from datacurate.clip import sha256_file
    from eval.model import load_run_model

    run = make_tiny_run(tmp_path / "run", seed=3)
    saved = torch.load(run / "checkpoints" / "epoch_latest.pt", weights_only=True)["state_dict"]
    lm = load_run_model(run, device="cpu")
    got = lm.model.state_dict()
    assert all(torch.equal(got[k], saved[k]) for k in saved)
    assert lm.checkpoint_sha256 == sha256_file(run / "checkpoints" / "epoch_latest.pt")
    assert lm.preprocess.transforms[0].size in (64, [64], (64, 64))   # the model's own eval transform


def test_offline_missing_parquet_is_a_clear_error(tmp_path):
    from datacurate.errors import UserError
    from eval import evaluate_run

    run = make_tiny_run(tmp_path / "run")
    with pytest.raises(UserError, match="holdout/eval.parquet: missing"):
        evaluate_run(run, suite="offline", pool=tmp_path / "nopool")


def _cli(*args, cwd):
    env = dict(os.environ, DATACURATE_NO_PROGRESS="1", HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "datacurate", "eval", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def test_cli_offline_suite_end_to_end_random_tiny_model(tmp_path):
    pool = tmp_path / "pool"
    write_eval_parquet(pool)
    run = make_tiny_run(tmp_path / "run")
    r = _cli("--run", str(run), "--suite", "offline", "--pool", str(pool), cwd=ROOT)
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in (run / "eval_results.jsonl").read_text().splitlines()]
    assert [x["key"] for x in lines] == ["emoji_subgroup", "emoji_concept", "emoji_name"]   # not emoji_group
    for x in lines:
        assert set(x) == {"key", "dataset", "metrics"}
        assert 0.0 <= x["metrics"]["main_metric"] <= 1.0
        se = x["metrics"]["main_metric_se"]                      # every offline main metric has per-item outcomes
        assert isinstance(se, float) and 0.0 <= se < 0.5
    scores = json.loads((run / "scores.json").read_text())
    assert scores["tasks_se"] == {x["dataset"]: x["metrics"]["main_metric_se"] for x in lines}
    assert set(scores["aggregates_se"]) == set(scores["aggregates"])
    assert all(isinstance(v, float) for v in scores["aggregates_se"].values())
    assert scores["suite"] == "offline" and scores["complete"]
    assert set(scores["aggregates"]) == {"Classification", "Retrieval", "Average"}
    # every offline task scores by the rank percentile of the right answer: chance 0.5 whatever the classes
    assert scores["chance"] == {"Emoji subgroup": 0.5, "Emoji concept": 0.5, "Emoji caption retrieval": 0.5}
    assert scores["aggregates"]["Average"] == pytest.approx(sum(scores["tasks"].values()) / 3)
    assert all(x["metrics"]["main_metric"] == x["metrics"]["mean_rank_percentile"] for x in lines)
    assert "chance" in r.stdout and "Emoji subgroup" in r.stdout
    # the leaderboard recomputes the same aggregates from the results file
    from leaderboard import validate as V
    suite = V.suite_tasks("offline")
    per = V.parse_results((run / "eval_results.jsonl").read_text(), suite)
    V.check_scores(scores, V.compute_aggregates(suite, per))
    # second run: nothing evaluated again
    r2 = _cli("--run", str(run), "--suite", "offline", "--pool", str(pool), "--json", cwd=ROOT)
    assert r2.returncode == 0, r2.stderr
    assert "3 already done for this checkpoint, 0 to evaluate" in r2.stderr
    assert json.loads(r2.stdout)["tasks"] == scores["tasks"]
    # the group task is built beside the suite and scored when named, in its own scores file
    main_before = (run / "scores.json").read_bytes()
    r3 = _cli("--run", str(run), "--suite", "emoji_group", "--pool", str(pool), cwd=ROOT)
    assert r3.returncode == 0, r3.stderr
    assert json.loads((run / "scores.emoji_group.json").read_text())["tasks"].keys() == {"Emoji group"}
    assert (run / "scores.json").read_bytes() == main_before


def test_cli_list_and_errors(tmp_path):
    pool = tmp_path / "pool"
    write_eval_parquet(pool)
    from eval.offline import build_offline_evalsets
    build_offline_evalsets(pool)
    r = _cli("--list", "--pool", str(pool), "--data-root", str(tmp_path / "data"), cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert "ImageNet 1k" in r.stdout and "emoji_group" in r.stdout
    rows = [ln for ln in r.stdout.splitlines() if ln.startswith("emoji_group ")]
    assert rows and rows[0].rstrip().endswith("present")
    assert [ln for ln in r.stdout.splitlines() if ln.startswith("cifar10 ")][0].rstrip().endswith("missing")
    assert "add --pool POOL" not in r.stdout
    r = _cli("--list", "--data-root", str(tmp_path / "data"), cwd=ROOT)   # without --pool: say the suite exists
    assert r.returncode == 0 and "emoji_group" not in r.stdout
    assert "offline suite (the CPU scales' main suite" in r.stdout and "Emoji caption retrieval" in r.stdout
    assert "scored only by name: Emoji group" in r.stdout
    assert "add --pool POOL" in r.stdout
    r = _cli("--run", str(tmp_path / "norun"), cwd=ROOT)
    assert r.returncode == 2 and "norun" in r.stderr


def test_group_and_subgroup_tasks_carry_member_names_from_the_taxonomy_without_eval_names(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from eval.offline import build_offline_evalsets

    pool = tmp_path / "pool"
    write_eval_parquet(pool)
    # the shapes' taxonomy: seen (pool/trusted) members, and the eval items themselves
    tax = {"name": ["red circle", "dot", "ring", "box", "wedge", "grey wedge"],
           "group": ["round-shapes", "round-shapes", "round-shapes", "angular-shapes", "angular-shapes", "angular-shapes"],
           "subgroup": ["shape-circle", "shape-circle", "shape-circle", "shape-square", "shape-triangle",
                        "shape-triangle"],
           "split": ["eval", "pool", "trusted", "pool", "pool", "trusted"]}
    pq.write_table(pa.table(tax), pool / "holdout" / "taxonomy.parquet")
    root = build_offline_evalsets(pool)
    group = json.loads((root / "emoji_group" / "subclasses.json").read_text())["subclasses"]
    assert group == [["box", "grey wedge", "wedge"], ["dot", "ring"]]     # angular, round; no eval name
    sub = json.loads((root / "emoji_subgroup" / "subclasses.json").read_text())["subclasses"]
    assert sub == [["dot", "ring"], ["box"], ["grey wedge", "wedge"]]
    assert not (root / "emoji_concept" / "subclasses.json").exists()
    # a changed taxonomy rebuilds the tasks
    tax["split"][1] = "eval"
    pq.write_table(pa.table(tax), pool / "holdout" / "taxonomy.parquet")
    build_offline_evalsets(pool)
    assert json.loads((root / "emoji_subgroup" / "subclasses.json").read_text())["subclasses"][0] == ["ring"]


def test_a_run_scored_on_an_older_suite_is_scored_again(tmp_path):
    """`datacurate run` re-scores a run when the offline suite it was scored on has changed."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from datacurate.run import _scored_on_current_suite
    from eval.offline import suite_fingerprint

    pool, run = tmp_path / "pool", tmp_path / "run"
    write_eval_parquet(pool)
    run.mkdir()
    assert not _scored_on_current_suite(run, pool)                       # never scored
    (run / "scores.json").write_text(json.dumps({"offline_fingerprint": suite_fingerprint(pool)}))
    assert _scored_on_current_suite(run, pool)
    pq.write_table(pa.table({"name": ["dot"], "group": ["round-shapes"], "subgroup": ["shape-circle"],
                             "split": ["pool"]}), pool / "holdout" / "taxonomy.parquet")
    assert not _scored_on_current_suite(run, pool)                       # the taxonomy changed
    (run / "scores.json").write_text(json.dumps({"offline_fingerprint": suite_fingerprint(pool)}))
    with mock.patch("eval.offline.OFFLINE_TASK_KEYS", ("emoji_group", "emoji_subgroup")):
        assert not _scored_on_current_suite(run, pool)                   # the suite averages other tasks
    assert _scored_on_current_suite(run, pool)
    (run / "scores.json").write_text(json.dumps({"suite": "offline"}))   # scored before fingerprints
    assert not _scored_on_current_suite(run, pool)


def _toy_task(root: Path) -> Path:
    from test_eval_helpers import png_with_index, write_wds_task

    return write_wds_task(root / "toy_cls", [(png_with_index(i), i % 2) for i in range(6)],
                          {"name": "Toy classes", "type": "zeroshot_classification"},
                          classnames=["zero", "one"], templates=["a photo of a {c}."])


def test_another_suite_is_scored_beside_the_offline_scores_never_over_them(tmp_path):
    """`eval --suite my_task` on a tiny-scale run: scores.json stays the offline suite's (what
    `datacurate run`, the report and the leaderboard read), the task's aggregates go to
    scores.<suite>.json, and eval_results.jsonl holds both suites' lines."""
    from datacurate.run import _scored_on_current_suite
    from eval import evaluate_run
    from eval.model import load_run_model
    from eval.results import read_results, read_scores
    from leaderboard.submit import build_bundle, check_bundle

    pool, root = tmp_path / "pool", tmp_path / "data"
    write_eval_parquet(pool)
    _toy_task(root)
    run = make_tiny_run(tmp_path / "run")
    lm = load_run_model(run, device="cpu")
    quiet = lambda m: None
    offline = evaluate_run(run, suite="offline", pool=pool, model=lm, log=quiet)
    mine = evaluate_run(run, suite="toy_cls", data_root=root, model=lm, log=quiet)
    assert json.loads((run / "scores.json").read_text()) == offline and offline["suite"] == "offline"
    assert json.loads((run / "scores.toy_cls.json").read_text()) == mine and mine["suite"] == "toy_cls"
    assert read_scores(run, "offline") == offline and read_scores(run, "toy_cls") == mine
    assert _scored_on_current_suite(run, pool)                   # `datacurate run` finds its eval done
    keys = list(read_results(run / "eval_results.jsonl"))
    assert keys == ["emoji_subgroup", "emoji_concept", "emoji_name", "toy_cls"]
    again = evaluate_run(run, suite="offline", pool=pool, model=lm, log=quiet)
    assert again["tasks"] == offline["tasks"] and "toy_cls" in read_results(run / "eval_results.jsonl")
    # the leaderboard bundle carries the offline suite's lines and scores, and passes its checks
    checked = check_bundle(build_bundle(run, None, "micro", "byod", "m", dataset_size=100))[1]
    assert checked.manifest["suite"] == "offline"
    assert checked.aggregates["Average"] == pytest.approx(offline["aggregates"]["Average"], abs=1e-9)


def test_on_an_upstream_scale_scores_json_is_datacomp38s_and_offline_goes_beside_it(tmp_path):
    from eval import evaluate_run
    from eval.model import load_run_model
    from leaderboard.submit import build_bundle, check_bundle

    pool = tmp_path / "pool"
    write_eval_parquet(pool)
    run = make_tiny_run(tmp_path / "run")
    lm = load_run_model(run, device="cpu")
    info = json.loads((run / "info.json").read_text())
    (run / "info.json").write_text(json.dumps({**info, "scale": "small"}))
    offline = evaluate_run(run, suite="offline", pool=pool, model=lm, log=lambda m: None)
    assert not (run / "scores.json").exists()
    assert json.loads((run / "scores.offline.json").read_text()) == offline
    checked = check_bundle(build_bundle(run, None, "small", "byod", "m", suite="offline", dataset_size=100))[1]
    assert checked.aggregates["Average"] == pytest.approx(offline["aggregates"]["Average"], abs=1e-9)


def test_suite_scores_file_names_are_safe():
    import re

    from eval.results import suite_scores_name

    assert suite_scores_name("toy_cls") == "scores.toy_cls.json"
    assert suite_scores_name("cifar10,toy_cls") == "scores.cifar10,toy_cls.json"
    odd = [suite_scores_name(s) for s in ("vtab/caltech101,ImageNet 1k", "vtab_caltech101,ImageNet_1k",
                                          "../up", ",".join(f"task{i}" for i in range(40)))]
    assert all(re.fullmatch(r"scores\.[A-Za-z0-9._,-]{1,80}\.json", n) and "/" not in n for n in odd)
    assert len(set(odd)) == len(odd)
