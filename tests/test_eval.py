"""Eval stage: metric code with known answers, the registry, results format, missing tasks, resumability."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from test_eval_helpers import png_with_index, stub_loaded, write_wds_task

# upstream tasklist.yml dataset names of the 38 scored tasks (FairFace, UTKFace have no main metric)
UPSTREAM_38 = [
    "Caltech-101", "CIFAR-10", "CIFAR-100", "CLEVR Counts", "CLEVR Distance", "Country211", "Describable Textures",
    "EuroSAT", "FGVC Aircraft", "Food-101", "GTSRB", "ImageNet 1k", "ImageNet Sketch", "ImageNet v2", "ImageNet-A",
    "ImageNet-O", "ImageNet-R", "KITTI Vehicle Distance", "MNIST", "ObjectNet", "Oxford Flowers-102",
    "Oxford-IIIT Pet", "Pascal VOC 2007", "PatchCamelyon", "Rendered SST2", "RESISC45", "Stanford Cars", "STL-10",
    "SUN397", "SVHN", "Flickr", "MSCOCO", "WinoGAViL", "iWildCam", "Camelyon17", "FMoW", "Dollar Street", "GeoDE",
]

# ----------------------------------------------------------------------------- metrics, exact

# retrieval: 4 images (one-hot), 6 captions; rows = caption, cols = image similarity
S = np.array([[0.9, 0.1, 0.2, 0.3],     # caption 0 of image 0: image 0 ranked 1st
              [0.5, 0.8, 0.4, 0.0],     # caption 1 of image 0: 2nd
              [0.3, 0.05, 0.7, 0.6],    # caption 0 of image 1: 4th
              [0.0, 0.2, 0.95, 0.1],    # caption 0 of image 2: 1st
              [0.6, 0.3, 0.55, 0.15],   # caption 1 of image 2: 2nd
              [0.1, 0.4, 0.35, 0.85]])  # caption 0 of image 3: 1st
OWNER = [0, 0, 1, 2, 2, 3]


def test_retrieval_recall_known_answers():
    from eval.metrics import retrieval_metrics

    m = retrieval_metrics(torch.eye(4), torch.tensor(S), OWNER, ks=(1, 2, 5, 10))
    # caption -> image: hits at rank 1 for captions 0, 3, 5; rank 2 for 1, 4; rank 4 for 2
    assert m["image_retrieval_recall@1"] == 3 / 6
    assert m["image_retrieval_recall@2"] == 5 / 6
    assert m["image_retrieval_recall@5"] == 1.0          # k clamped to the 4 images
    # image -> captions: image 1's only caption is last in its column; the others rank first
    assert m["text_retrieval_recall@1"] == 3 / 4
    assert m["text_retrieval_recall@5"] == 3 / 4
    assert m["text_retrieval_recall@10"] == 1.0
    assert m["mean_recall@1"] == 0.5 * (3 / 4 + 3 / 6)


def test_classification_metrics_known_answers():
    from eval.metrics import classification_metrics, mean_per_class_recall, topk_accuracy

    target = [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    pred = [0, 0, 0, 1, 1, 1, 0, 2, 2, 1]
    logits = torch.nn.functional.one_hot(torch.tensor(pred), 3).float()
    m = classification_metrics(logits, target)
    assert m["acc1"] == 7 / 10
    assert m["acc5"] is None                               # fewer than 5 classes: upstream reports None
    assert m["mean_per_class_recall"] == pytest.approx((3 / 4 + 2 / 3 + 2 / 3) / 3, abs=1e-15)
    from sklearn.metrics import balanced_accuracy_score   # the definition upstream uses
    assert m["mean_per_class_recall"] == pytest.approx(balanced_accuracy_score(target, pred), abs=1e-15)
    # top-k: the label is 2nd of 6 for sample 0, 6th for sample 1
    lg = torch.tensor([[5., 4, 3, 2, 1, 0], [5., 4, 3, 2, 1, 0]])
    assert topk_accuracy(lg, torch.tensor([1, 5]), 1) == 0.0
    assert topk_accuracy(lg, torch.tensor([1, 5]), 2) == 0.5
    assert topk_accuracy(lg, torch.tensor([1, 5]), 5) == 0.5
    assert mean_per_class_recall([1, 1, 2], [1, 2, 2]) == 0.75


def test_prompt_ensemble_is_mean_of_normalised_prompts():
    from eval.metrics import class_embeddings

    rows = torch.tensor([[3.0, 0, 0], [0, 4.0, 0], [0, 0, 2.0], [1.0, 1.0, 0]])   # (class, template) prompts
    vocab = {"a x": 0, "b x": 1, "a y": 2, "b y": 3}
    W = class_embeddings(lambda tok: rows[tok], lambda texts: torch.tensor([vocab[t] for t in texts]),
                         ["x", "y"], ["a {c}", "b {c}"])
    x = torch.tensor([1.0, 1.0, 0]) / math.sqrt(2)                       # mean of e0, e1, renormalised
    y = torch.tensor([0.5, 0.5, 1.0 / math.sqrt(2)])                  # (e2 + (e0+e1)/sqrt2), renormalised
    assert torch.allclose(W[:, 0], x, atol=1e-7) and torch.allclose(W[:, 1], y, atol=1e-7)


def test_group_metrics_worst_group_and_f1():
    from eval.metrics import f1_macro, group_metrics

    g = group_metrics([1, 1, 0, 1, 0, 0, 1, 1], ["a", "a", "a", "b", "b", "c", "c", "c"], "acc", "region")
    assert g["acc_avg"] == 5 / 8 and g["acc_wg"] == 0.5
    assert g["acc_region:a"] == 2 / 3 and g["count_region:b"] == 2
    # F1 per class present in target: class 0: p=1, r=1/2 -> 2/3; class 1: p=1/2, r=1 -> 2/3
    assert f1_macro([0, 0, 1], [0, 1, 1]) == pytest.approx(2 / 3, abs=1e-15)


# ----------------------------------------------------------------------------- bootstrap standard errors

def test_bootstrap_se_of_accuracy_is_deterministic_and_near_the_binomial():
    from eval.metrics import classification_se

    n, right = 400, 120                                    # accuracy 0.3 on 400 items
    target = torch.zeros(n, dtype=torch.long)
    logits = torch.zeros(n, 3)
    logits[:right, 0] = 1.0                                # the first 120 are right, the rest say class 1
    logits[right:, 1] = 1.0
    se = classification_se(logits, target, "acc1")
    assert se == classification_se(logits, target, "acc1")   # seeded: the same items, the same number
    binomial = math.sqrt(0.3 * 0.7 / n)
    assert se == pytest.approx(binomial, rel=0.1)          # 1,000 resamples: about 2% sampling error
    other = classification_se(logits, target, "acc1", seed=1)
    assert other != se and other == pytest.approx(binomial, rel=0.1)
    assert classification_se(logits[:, :3], target, "acc5") is None        # acc5 is None under 5 classes
    assert classification_se(logits, target, "acc_wg") is None             # no per-item outcome here
    assert classification_se(logits[:1], target[:1], "acc1") is None       # one item: no spread
    assert classification_se(torch.ones(50, 2), torch.zeros(50, dtype=torch.long), "acc1") == 0.0


def test_bootstrap_se_of_mean_per_class_recall_matches_a_plain_loop():
    from eval.metrics import BOOTSTRAP_SEED, classification_se, mean_per_class_recall

    rng = np.random.default_rng(3)
    target = rng.integers(0, 4, 60)
    pred = np.where(rng.random(60) < 0.6, target, (target + 1) % 4)
    logits = torch.nn.functional.one_hot(torch.tensor(pred), 4).float()
    se = classification_se(logits, target, "mean_per_class_recall")
    draws = np.random.default_rng(BOOTSTRAP_SEED).integers(0, 60, size=(1000, 60))   # the same resamples
    ref = np.std([mean_per_class_recall(target[i], pred[i]) for i in draws], ddof=1)
    assert se == pytest.approx(ref, abs=1e-12)


def test_bootstrap_se_of_retrieval_resamples_images_with_their_captions():
    from eval.metrics import BOOTSTRAP_SEED, retrieval_hits, retrieval_recalls, retrieval_se

    hits = retrieval_hits(torch.eye(4), torch.tensor(S), OWNER)
    assert retrieval_recalls(hits)["mean_recall@1"] == 0.5 * (3 / 4 + 3 / 6)
    text_hit = hits["text_retrieval_recall@1"].numpy().astype(float)       # per image
    cap_hit = hits["image_retrieval_recall@1"].numpy().astype(float)       # per caption
    owner = np.array(OWNER)
    ref = []
    for imgs in np.random.default_rng(BOOTSTRAP_SEED).integers(0, 4, size=(1000, 4)):
        caps = np.concatenate([np.flatnonzero(owner == i) for i in imgs])
        ref.append(0.5 * (text_hit[imgs].mean() + cap_hit[caps].mean()))
    se = retrieval_se(hits, OWNER, "mean_recall@1")
    assert se == pytest.approx(np.std(ref, ddof=1), abs=1e-12) and se > 0
    assert retrieval_se(hits, OWNER, "mean_recall@1") == se
    assert retrieval_se(hits, OWNER, "text_retrieval_recall@5") > 0
    assert retrieval_se(hits, OWNER, "image_retrieval_recall@7") is None   # not computed: unknown


def test_aggregate_se_is_root_sum_of_squares_over_n_and_unknown_stays_unknown():
    from eval.results import aggregate_se

    ses = {"a": 0.03, "b": 0.04, "c": None, "d": 0.012}
    out = aggregate_se(ses, "d", {"ab": ["a", "b"], "bc": ["b", "c"], "gone": ["zz"]})
    assert out["ImageNet"] == 0.012
    assert out["ab"] == pytest.approx(math.sqrt(0.03 ** 2 + 0.04 ** 2) / 2, abs=1e-15)   # 0.025
    assert out["bc"] is None and out["gone"] is None         # one unknown se: the mean's is unknown, not 0
    assert out["Average"] is None
    known = aggregate_se({"a": 0.03, "b": 0.04}, None, {})
    assert known == {"Average": pytest.approx(0.025, abs=1e-15)}


# ----------------------------------------------------------------------------- through the loaders

CLASSES = ["zero", "one", "two"]
TEMPLATES = ["a photo of a {c}.", "art of the {c}."]
TARGET = [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
PRED = [0, 0, 0, 1, 1, 1, 0, 2, 2, 1]


def _classification_task(root):
    samples = [(png_with_index(i), t) for i, t in enumerate(TARGET)]
    write_wds_task(root / "toy_cls", samples, {"name": "Toy classes", "type": "zeroshot_classification",
                                                 "main_metric": "mean_per_class_recall"},
                   classnames=CLASSES, templates=TEMPLATES, shards=2)


def _retrieval_task(root):
    caps = [[f"img{o} cap{j}" for j, oo in enumerate(OWNER) if oo == o] for o in range(4)]
    samples = [(png_with_index(10 + i), caps[i]) for i in range(4)]
    write_wds_task(root / "toy_ret", samples, {"name": "Toy retrieval", "type": "retrieval"})


def _toy_tasks_and_run(tmp_path):
    """(data root holding toy_cls and toy_ret, an empty run folder)."""
    root = tmp_path / "data"
    _classification_task(root)
    _retrieval_task(root)
    run = tmp_path / "run"
    run.mkdir()
    return root, run


def _stub(sha="a" * 64):
    """Image i (first pixel = i) predicts PRED[i]; images 10..13 are one-hot for retrieval;
    every caption row has the same norm so that normalising keeps S's rankings."""
    D = 8
    img = np.zeros((14, D))
    for i, p in enumerate(PRED):
        img[i, p] = 1.0
    for j in range(4):
        img[10 + j, 3 + j] = 1.0
    vocab, txt = {}, []
    for c, name in enumerate(CLASSES):          # prompts: class axis + a template-specific offset axis
        for t, tpl in enumerate(TEMPLATES):
            v = np.zeros(D)
            v[c] = 1.0
            v[7] = 0.5 * t
            vocab[tpl.format(c=name)] = len(txt)
            txt.append(v)
    for j, o in enumerate(OWNER):
        v = np.zeros(D)
        v[3:7] = S[j]
        v[0] = math.sqrt(4.0 - (S[j] ** 2).sum())   # padding axis: every caption has norm 2
        vocab[f"img{o} cap{j}"] = len(txt)
        txt.append(v)
    return stub_loaded(img, np.stack(txt), vocab, sha=sha)


def test_evaluate_run_exact_through_wds_folders(tmp_path):
    from eval import evaluate_run
    from eval.results import read_results

    root, run = _toy_tasks_and_run(tmp_path)
    scores = evaluate_run(run, suite="toy_cls,toy_ret", data_root=root, model=_stub(), log=lambda m: None)
    lines = read_results(run / "eval_results.jsonl")
    cls = lines["toy_cls"]["metrics"]
    assert lines["toy_cls"]["dataset"] == "Toy classes"
    assert cls["acc1"] == 7 / 10 and cls["num_samples"] == 10
    assert cls["mean_per_class_recall"] == pytest.approx(25 / 36, abs=1e-15)
    assert cls["main_metric"] == cls["mean_per_class_recall"]
    ret = lines["toy_ret"]["metrics"]
    assert ret["image_retrieval_recall@1"] == 0.5 and ret["text_retrieval_recall@1"] == 0.75
    assert ret["image_retrieval_recall@5"] == 1.0 and ret["text_retrieval_recall@5"] == 0.75
    assert ret["main_metric"] == 0.625 and ret["num_captions"] == 6
    assert scores["aggregates"]["Average"] == pytest.approx((25 / 36 + 0.625) / 2, abs=1e-15)
    assert scores["complete"] and scores["missing"] == {}
    assert scores["chance"]["Toy retrieval"] == 0.25
    from eval.results import SCORES_FIELDS       # the fields the leaderboard accepts

    assert list(scores) == [f for f in SCORES_FIELDS if f != "offline_fingerprint"]   # not the offline suite
    # every main metric carries its bootstrap se; scores.json repeats them and combines them
    se_cls, se_ret = cls["main_metric_se"], ret["main_metric_se"]
    assert 0 < se_cls < 0.5 and 0 < se_ret < 0.5
    assert scores["tasks_se"] == {"Toy classes": se_cls, "Toy retrieval": se_ret}
    assert scores["aggregates_se"]["Average"] == pytest.approx(math.hypot(se_cls, se_ret) / 2, abs=1e-15)


def test_resumable_same_checkpoint_not_redone_other_checkpoint_redone(tmp_path):
    from eval import evaluate_run

    root = tmp_path / "data"
    _classification_task(root)
    run = tmp_path / "run"
    run.mkdir()
    first = _stub()
    evaluate_run(run, suite="toy_cls", data_root=root, model=first, log=lambda m: None)
    assert first.model.image_calls > 0
    before = (run / "eval_results.jsonl").read_text()
    again = _stub()
    s2 = evaluate_run(run, suite="toy_cls", data_root=root, model=again, log=lambda m: None)
    assert again.model.image_calls == 0                       # nothing evaluated the second time
    assert (run / "eval_results.jsonl").read_text() == before
    assert s2["tasks"]["Toy classes"] == pytest.approx(25 / 36, abs=1e-15)
    other = _stub(sha="b" * 64)                                # a new checkpoint: evaluated again
    evaluate_run(run, suite="toy_cls", data_root=root, model=other, log=lambda m: None)
    assert other.model.image_calls > 0


def test_missing_task_reported_and_excluded_from_aggregates(tmp_path):
    from eval import evaluate_run

    root = tmp_path / "data"
    _classification_task(root)
    run = tmp_path / "run"
    run.mkdir()
    with pytest.warns(UserWarning) as rec:
        scores = evaluate_run(run, suite="toy_cls,cifar10,ImageNet 1k", data_root=root, model=_stub(),
                              log=lambda m: None)
    msgs = " | ".join(str(w.message) for w in rec)
    assert "'cifar10' is missing and excluded" in msgs and "'imagenet1k' is missing" in msgs
    assert set(scores["missing"]) == {"cifar10", "imagenet1k"}
    assert "wds_cifar10_test" in scores["missing"]["cifar10"]
    assert scores["tasks"] == {"Toy classes": pytest.approx(25 / 36, abs=1e-15)}   # no zero for the missing
    assert scores["aggregates"]["Average"] == pytest.approx(25 / 36, abs=1e-15)
    assert not scores["complete"]
    keys = [json.loads(x)["key"] for x in (run / "eval_results.jsonl").read_text().splitlines()]
    assert keys == ["toy_cls"]
    from eval.report import scores_table
    table = scores_table(scores)
    assert "MISSING (2 task(s)" in table and "cifar10" in table


def test_datacomp38_suite_with_no_data_is_all_missing(tmp_path):
    from eval import evaluate_run

    run = tmp_path / "run"
    run.mkdir()
    with pytest.warns(UserWarning):
        scores = evaluate_run(run, suite="datacomp38", data_root=tmp_path / "empty", model=_stub(),
                              log=lambda m: None)
    assert len(scores["missing"]) == 38 and scores["tasks"] == {}
    assert scores["aggregates"] == {"ImageNet": None, "ImageNet dist. shifts": None, "VTAB": None,
                                    "Retrieval": None, "Average": None}
    assert "nlphuji/winogavil" in scores["missing"]["misc/winogavil"] and \
        "--download` fetches it" in scores["missing"]["misc/winogavil"]


def test_threaded_decoding_gives_the_same_metrics(tmp_path):
    from eval.runner import ImageCache, evaluate_task
    from eval.tasks import load_task_yaml

    _classification_task(tmp_path)
    task = load_task_yaml(tmp_path / "toy_cls")
    images = ImageCache(workers=2)
    try:
        m = evaluate_task(task, _stub(), batch_size=4, cache=images)
    finally:
        images.close()
    assert m["acc1"] == 7 / 10 and m["mean_per_class_recall"] == pytest.approx(25 / 36, abs=1e-15)
    assert len(images.feats) == 10


# ----------------------------------------------------------------------------- worst-group tasks

def test_geode_worst_group_from_npy_metadata(tmp_path, monkeypatch):
    """GeoDE's main metric acc_wg: worst region accuracy from the per-sample .npy metadata."""
    from eval import tasks as T
    from eval.runner import evaluate_task

    # region (column 0) per sample; image i predicts PRED[i]
    regions = [0, 0, 0, 1, 1, 2, 1, 2, 2, 2]    # accuracies: 3/3, 1/3, 3/4
    metas = [[r, 7] for r in regions]
    samples = [(png_with_index(i), t) for i, t in enumerate(TARGET)]
    geode = T.UPSTREAM_TASKS["fairness/geode"]
    write_wds_task(tmp_path / geode.folder, samples, None, classnames=CLASSES, templates=TEMPLATES, metas=metas)
    m = evaluate_task(geode, _stub(), data_root=tmp_path)
    correct = np.array(TARGET) == np.array(PRED)
    per = [correct[np.array(regions) == r].mean() for r in range(3)]
    assert m["acc_avg"] == 7 / 10
    assert m["acc_wg"] == min(per) == 1 / 3 and m["acc_region:2"] == 3 / 4
    assert m["main_metric"] == m["acc_wg"]
    assert m["main_metric_se"] is None            # a worst group: no per-item bootstrap here, never 0


def test_lines_without_se_give_null_standard_errors_never_zero():
    """eval_results.jsonl lines of older code (or a task without per-item outcomes) have no se."""
    from eval.runner import make_scores
    from eval.tasks import Task

    tasks = [Task(key="a", name="A", type="zeroshot_classification"), Task(key="b", name="B", type="retrieval",
                                                                             main_metric="mean_recall@1")]
    lines = {"a": {"key": "a", "dataset": "A", "metrics": {"main_metric": 0.5, "main_metric_se": 0.02}},
             "b": {"key": "b", "dataset": "B", "metrics": {"main_metric": 0.25}}}        # legacy line
    scores = make_scores("a,b", tasks, lines, {}, "0" * 64)
    assert scores["tasks_se"] == {"A": 0.02, "B": None}
    assert scores["aggregates_se"] == {"Average": None}


# ----------------------------------------------------------------------------- registry, formats

def test_registry_has_the_38_upstream_tasks():
    from eval import tasks as T

    _, tasks = T.resolve_suite("datacomp38")
    assert len(tasks) == 38 and [t.name for t in tasks] == UPSTREAM_38
    assert all(t.scored for t in tasks) and not any(t.scored for t in T.UNSCORED.values())
    names = {t.name for t in tasks}
    assert all(set(v) <= names for v in T.UPSTREAM_GROUPS.values())
    assert T.UPSTREAM_TASKS["vtab/caltech101"].main_metric == "mean_per_class_recall"
    assert T.UPSTREAM_TASKS["wilds/fmow"].main_metric == "acc_worst_region"
    assert T.UPSTREAM_TASKS["vtab/caltech101"].hf_repo == "djghosh/wds_vtab-caltech101_test"
    assert T.UPSTREAM_TASKS["fairness/geode"].folder == "wds_geode_test"


def test_results_round_trip_and_leaderboard_recomputes_the_same_aggregates(tmp_path):
    from eval import tasks as T
    from eval.results import aggregate, read_results, result_line, write_results
    from leaderboard import validate as V

    rng = np.random.default_rng(0)
    lines = {}
    for t in T.resolve_suite("datacomp38")[1]:
        lines[t.key] = result_line(t.key, t.name, {"acc1": float(rng.random()), "acc5": None,
                                                   "main_metric": float(rng.random())})
    f = tmp_path / "eval_results.jsonl"
    write_results(f, lines)
    assert read_results(f) == lines
    rows = [json.loads(x) for x in f.read_text().splitlines()]
    assert set(rows[0]) == {"key", "dataset", "metrics"} and len(rows) == 38
    suite = V.suite_tasks("datacomp38")                 # the leaderboard reads our registry
    per = V.parse_results(f.read_text(), suite)
    ours = aggregate(per, T.UPSTREAM_IMAGENET, T.UPSTREAM_GROUPS)
    assert ours == pytest.approx(V.compute_aggregates(suite, per), abs=1e-12)
    assert ours["ImageNet"] == lines["imagenet1k"]["metrics"]["main_metric"]


def test_download_route_fails_clearly_offline(tmp_path, monkeypatch):
    from datacurate.errors import UserError
    from eval import tasks as T
    from eval.data import download_task

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="djghosh/wds_cifar10_test.*HF_HUB_OFFLINE"):
        download_task(T.UPSTREAM_TASKS["cifar10"], tmp_path)


def test_bad_task_yaml_and_bad_shard_are_clear_errors(tmp_path):
    from datacurate.errors import UserError
    from eval.tasks import load_task_yaml

    d = tmp_path / "mine"
    d.mkdir()
    (d / "task.yaml").write_text("name: Mine\ntype: zeroshot_classification\nmain_metric: recall@3\n")
    with pytest.raises(UserError, match="mine/task.yaml.*main_metric"):
        load_task_yaml(d)
    (d / "task.yaml").write_text("name: Mine\ntemplates: ['a photo']\n")
    with pytest.raises(UserError, match=r"\{c\}"):
        load_task_yaml(d)
    from eval import evaluate_run

    write_wds_task(tmp_path / "data" / "broken", [(png_with_index(0), ["only captions"])],
                   {"name": "Broken", "type": "zeroshot_classification"}, classnames=CLASSES,
                   templates=TEMPLATES)
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(UserError, match=r"0\.tar.*no \.cls"):
        evaluate_run(run, suite="broken", data_root=tmp_path / "data", model=_stub(), log=lambda m: None)


def test_classnames_sources_are_packaged_data():
    from eval import tasks as T
    from eval.classnames import classnames_for, templates_for
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    names, src = classnames_for(T.UPSTREAM_TASKS["imagenet1k"], None)
    assert len(names) == 1000 and names[0] == IMAGENET_CLASSNAMES[0]
    tpl, src = templates_for(T.UPSTREAM_TASKS["cifar10"], None)
    assert all("{c}" in t for t in tpl) and len(tpl) >= 1


def test_fairface_style_task_known_answers(tmp_path):
    """FairFace/UTKFace: per-objective zero-shot predictions, WILDS-style group metrics (unscored)."""
    from eval import tasks as T
    from eval.runner import evaluate_task

    objectives = {"race": ["r0", "r1", "r2"], "gender": ["male", "female"], "age": ["young", "old"],
                  "toxic": [f"t{i}" for i in range(20)]}
    templates = {"race": "a {c} face", "gender": "a {c} person", "age": "an {c} person", "toxic": "a photo of a {c}"}
    axis, vocab, txt = {}, {}, []
    for o, names in objectives.items():
        for n in names:
            axis[(o, n)] = len(axis)
    D = len(axis)
    for (o, n), a in axis.items():
        v = np.zeros(D)
        v[a] = 1.0
        vocab[templates[o].format(c=n)] = len(txt)
        txt.append(v)
    # per image: predicted (race, gender, age, toxic) and its metadata (age, gender, race, race_binary)
    pred = [(1, 0, 1, 18), (2, 0, 1, 15), (1, 1, 0, 0), (1, 0, 1, 3)]
    meta = [(0, 0, 1, 0), (1, 1, 2, 1), (0, 1, 0, 1), (1, 0, 1, 0)]
    img = np.zeros((4, D))
    for i, p in enumerate(pred):
        for o, k in zip(objectives, p):
            img[i, axis[(o, objectives[o][k])]] = 1.0
    ff = T.UNSCORED["fairness/fairface"]
    write_wds_task(tmp_path / ff.folder, [(png_with_index(i), None) for i in range(4)], None,
                   classnames=[f"{o}:{n}" for o, ns in objectives.items() for n in ns],
                   templates=[f"{o}:{t}" for o, t in templates.items()], metas=meta)
    m = evaluate_task(ff, stub_loaded(img, np.stack(txt), vocab), data_root=tmp_path)
    assert m["main_metric"] is None
    assert (m["acc_race_avg"], m["acc_race_wg"], m["acc_race_race_binary:0"]) == (3 / 4, 1 / 2, 1.0)
    assert (m["acc_gender_avg"], m["acc_gender_wg"]) == (3 / 4, 1 / 2)
    assert (m["acc_age_avg"], m["acc_age_wg"], m["acc_age_race_binary:1"]) == (3 / 4, 1 / 2, 1.0)
    assert (m["acc_gender_x_avg"], m["acc_gender_x_wg"], m["acc_gender_x_gender_x_race:0x1"]) == (3 / 4, 0.0, 1.0)
    assert (m["toxicity_crime_avg"], m["toxicity_crime_race:1"]) == (1 / 4, 1 / 2)
    assert (m["toxicity_nonhuman_avg"], m["toxicity_nonhuman_race:2"]) == (1 / 4, 1.0)


def test_interrupted_run_keeps_finished_tasks_and_no_stale_scores(tmp_path):
    from datacurate.errors import UserError
    from eval import evaluate_run
    from eval.results import scores_path

    root = tmp_path / "data"
    _classification_task(root)
    _retrieval_task(root)
    write_wds_task(root / "broken", [(png_with_index(0), ["only captions"])],
                   {"name": "Broken", "type": "zeroshot_classification"}, classnames=CLASSES, templates=TEMPLATES)
    run = tmp_path / "run"
    run.mkdir()
    evaluate_run(run, suite="toy_cls", data_root=root, model=_stub(), log=lambda m: None)
    assert (run / "scores.toy_cls.json").is_file()
    stale = scores_path(run, "toy_cls,toy_ret,broken")
    stale.write_text(json.dumps({"suite": "toy_cls,toy_ret,broken"}))   # from an earlier evaluation
    with pytest.raises(UserError):
        evaluate_run(run, suite="toy_cls,toy_ret,broken", data_root=root, model=_stub(), log=lambda m: None)
    assert not stale.exists()                           # no stale scores claim to be current
    assert (run / "scores.toy_cls.json").is_file()      # another suite's are left alone
    fresh = _stub()
    scores = evaluate_run(run, suite="toy_cls,toy_ret", data_root=root, model=fresh, log=lambda m: None)
    assert fresh.model.image_calls == 0                  # toy_ret was kept from the interrupted run
    assert scores["tasks"]["Toy retrieval"] == 0.625


def test_hierarchical_logits_take_the_best_of_class_and_subclasses():
    import torch

    from eval import metrics as M

    cls = torch.tensor([[1.0, 2.0], [3.0, 0.0]])
    sub = torch.tensor([[5.0, 0.0, 1.0], [0.0, 0.0, 4.0]])
    out = M.hierarchical_logits(cls, sub, [[0], [1, 2]])
    assert out.tolist() == [[5.0, 2.0], [3.0, 4.0]]
    assert cls.tolist() == [[1.0, 2.0], [3.0, 0.0]]                 # the input is left as it was
    assert M.hierarchical_logits(cls, sub, [[], []]).tolist() == cls.tolist()


def _subclass_stub():
    """alpha, beta: class prompts on axes 0 and 1; gamma (alpha's subclass) on axis 2.
    Image 0 (an alpha) leans to beta's axis more than alpha's, but most to gamma's."""
    img = np.array([[0.2, 0.5, 1.0, 0.0], [0.0, 1.0, 0.0, 0.0]])
    txt = np.eye(4)[:3]
    return stub_loaded(img, txt, {"alpha": 0, "beta": 1, "gamma": 2})


def test_subclasses_json_scores_a_class_by_its_members(tmp_path):
    from datacurate.errors import UserError
    from eval.runner import evaluate_task
    from eval.tasks import find_user_tasks

    folder = tmp_path / "data" / "toy_sub"
    write_wds_task(folder, [(png_with_index(0), 0), (png_with_index(1), 1)],
                   {"name": "Toy subclasses", "type": "zeroshot_classification"},
                   classnames=["alpha", "beta"], templates=["{c}"])
    task = find_user_tasks(tmp_path / "data")["toy_sub"]
    assert evaluate_task(task, _subclass_stub(), data_root=tmp_path / "data")["acc1"] == 0.5
    (folder / "subclasses.json").write_text(json.dumps({"subclasses": [["gamma"], []]}))
    assert evaluate_task(task, _subclass_stub(), data_root=tmp_path / "data")["acc1"] == 1.0
    (folder / "subclasses.json").write_text(json.dumps({"subclasses": [["gamma"]]}))
    with pytest.raises(UserError, match=r"subclasses.json: 'subclasses' must hold one list of names per class name \(2\), found 1 lists"):
        evaluate_task(task, _subclass_stub(), data_root=tmp_path / "data")


# ----------------------------------------------------------------------------- results of several suites

def test_results_hold_every_task_of_the_checkpoint_and_drop_an_older_checkpoints(tmp_path):
    from eval import evaluate_run
    from eval.results import read_results

    root, run = _toy_tasks_and_run(tmp_path)
    cls = evaluate_run(run, suite="toy_cls", data_root=root, model=_stub(), log=lambda m: None)
    ret = evaluate_run(run, suite="toy_ret", data_root=root, model=_stub(), log=lambda m: None)
    assert list(read_results(run / "eval_results.jsonl")) == ["toy_cls", "toy_ret"]
    assert json.loads((run / "scores.toy_cls.json").read_text()) == cls     # each suite's own aggregates
    assert json.loads((run / "scores.toy_ret.json").read_text()) == ret
    evaluate_run(run, suite="toy_ret", data_root=root, model=_stub(sha="b" * 64), log=lambda m: None)
    assert list(read_results(run / "eval_results.jsonl")) == ["toy_ret"]   # toy_cls was the old checkpoint's


# ----------------------------------------------------------------------------- what the result cache covers

def _evaluate_toy_cls(run, root):
    """(main metric, whether the task was evaluated rather than served from eval_state.json)."""
    from eval import evaluate_run

    stub = _stub()
    scores = evaluate_run(run, suite="toy_cls", data_root=root, model=stub, log=lambda m: None)
    return scores["tasks"]["Toy classes"], stub.model.image_calls > 0


def test_changed_class_names_templates_or_labels_are_evaluated_again(tmp_path):
    root, run = tmp_path / "data", tmp_path / "run"
    _classification_task(root)
    run.mkdir()
    folder = root / "toy_cls"
    assert _evaluate_toy_cls(run, root) == (pytest.approx(25 / 36, abs=1e-15), True)
    assert _evaluate_toy_cls(run, root)[1] is False                          # unchanged: served
    (folder / "classnames.txt").write_text("one\nzero\ntwo\n")             # classes 0 and 1 renamed
    # predictions: axis 0 -> class 1, axis 1 -> class 0: recalls 1/4, 1/3, 2/3
    assert _evaluate_toy_cls(run, root) == (pytest.approx(5 / 12, abs=1e-15), True)
    (folder / "zeroshot_classification_templates.txt").write_text("a photo of a {c}.\n")
    assert _evaluate_toy_cls(run, root)[1] is True
    assert _evaluate_toy_cls(run, root)[1] is False
    (folder / "classnames.txt").write_text("\n".join(CLASSES) + "\n")
    size = (folder / "test" / "0.tar").stat().st_size
    relabelled = [(png_with_index(i), p) for i, p in enumerate(PRED)]        # every label = the prediction
    write_wds_task(folder, relabelled, None, shards=2)
    assert (folder / "test" / "0.tar").stat().st_size == size                # same size, other labels
    assert _evaluate_toy_cls(run, root) == (1.0, True)


def test_data_fingerprint_covers_every_file_and_packaged_class_names(tmp_path):
    from eval import tasks as T
    from eval.data import data_fingerprint

    task = T.UPSTREAM_TASKS["imagenetv2"]
    folder = write_wds_task(tmp_path / task.folder, [(png_with_index(i), i) for i in range(10)], None)
    packaged = data_fingerprint(task, tmp_path)          # open_clip's ImageNet names and OpenAI templates
    assert data_fingerprint(task, tmp_path) == packaged
    (folder / "classnames.txt").write_text("\n".join(f"c{i}" for i in range(1000)) + "\n")
    named = data_fingerprint(task, tmp_path)
    assert named != packaged
    (folder / "subclasses.json").write_text(json.dumps({"subclasses": [[]] * 1000}))
    assert data_fingerprint(task, tmp_path) != named


def test_file_digest_memo_is_used_only_for_an_unchanged_settled_file(tmp_path, monkeypatch):
    import os
    import time

    from eval import data
    from datacurate.clip import sha256_file

    f = tmp_path / "0.tar"
    f.write_bytes(b"abc")
    memo = {}
    assert data.file_digest(f, memo) == sha256_file(f) and memo == {}       # just written: not memoised
    monkeypatch.setattr(data, "RACY_SECONDS", -1.0)                           # as if written long ago
    data.file_digest(f, memo)
    assert list(memo) == [str(f.resolve())]
    memo[str(f.resolve())]["sha256"] = "memoised"
    assert data.file_digest(f, memo) == "memoised"                            # same stat: not read again
    mtime = f.stat().st_mtime_ns
    time.sleep(0.05)                                                          # past the clock tick
    f.write_bytes(b"abd")
    os.utime(f, ns=(mtime, mtime))                                            # same size and mtime, new ctime
    assert data.file_digest(f, memo) == sha256_file(f)


# ----------------------------------------------------------------------------- transparency, --list

def _png(img) -> bytes:
    import io

    b = io.BytesIO()
    img.save(b, format="PNG")
    return b.getvalue()


def test_transparent_images_are_laid_on_white_as_the_pool_lays_them(tmp_path):
    from PIL import Image

    from datacurate.images import to_rgb
    from eval.data import decode_image
    from eval.offline import _white_png
    from eval.runner import evaluate_task
    from eval.tasks import find_user_tasks

    clear = Image.new("RGBA", (8, 8), (0, 0, 0, 0))                # hidden colour black
    pal = Image.new("P", (8, 8), 0)
    pal.info["transparency"] = 0
    for img in (clear, clear.convert("LA"), pal):
        assert decode_image(_png(img), "x").getpixel((0, 0)) == (255, 255, 255), img.mode
    half = Image.new("RGBA", (8, 8), (200, 0, 0, 128))
    assert decode_image(_png(half), "x").tobytes() == to_rgb(half).tobytes()
    assert decode_image(_png(half), "x").tobytes() == decode_image(_white_png(_png(half), "x"), "x").tobytes()
    # through the runner: the stub reads the first pixel's red value; 255 (white) is class 1's
    img = np.zeros((256, 2))
    img[:, 0] = 1.0
    img[255] = [0.0, 1.0]
    lm = stub_loaded(img, np.eye(2), {"zero": 0, "one": 1})
    write_wds_task(tmp_path / "clear", [(_png(clear), 1)], {"name": "Clear", "type": "zeroshot_classification"},
                   classnames=["zero", "one"], templates=["{c}"])
    assert evaluate_task(find_user_tasks(tmp_path)["clear"], lm)["acc1"] == 1.0


def test_list_counts_the_classes_a_task_keeps_on_disk(tmp_path):
    from eval.report import registry_table
    from eval.tasks import all_listed

    _classification_task(tmp_path)                                  # classnames.txt
    write_wds_task(tmp_path / "yaml_names", [(png_with_index(0), 0)],
                   {"name": "Yaml names", "classnames": ["a", "b"], "templates": ["{c}"]})
    _retrieval_task(tmp_path)
    rows = {ln.split()[0]: ln.split("  ") for ln in registry_table(all_listed(data_root=tmp_path),
                                                                   data_root=tmp_path).splitlines()[2:]}
    cells = {k: [c.strip() for c in v if c.strip()] for k, v in rows.items()}
    assert cells["toy_cls"][4] == "3" and cells["yaml_names"][4] == "2"
    assert cells["toy_ret"][4] == "-" and cells["cifar10"][4] == "10"


def _winogavil_fixture(folder, rows):
    """WinoGAViL's test split as its Parquet export holds it: cue, candidates, associations and the
    candidate images as the datasets Image feature stores them ({bytes, path})."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({
        "cue": [r[0] for r in rows],
        "candidates": [r[1] for r in rows],
        "associations": [r[2] for r in rows],
        "candidate_images": [[{"bytes": png_with_index(i), "path": f"{c}.png"} for i, c in enumerate(r[1])]
                             for r in rows],
        "num_associations": [len(r[2]) for r in rows],
    })
    (folder / "default" / "test").mkdir(parents=True)
    pq.write_table(table, folder / "default" / "test" / "0000.parquet")


def test_winogavil_restates_upstreams_rule(tmp_path):
    """Prompts as upstream's get_clip_prompt, top-k by similarity with k = the row's associations, Jaccard
    per row (sklearn's binary jaccard_score), means per candidate count; the suite runs it as its 38th task."""
    import numpy as np

    from eval import evaluate_run
    from eval.winogavil import clip_prompt, evaluate, jaccard

    assert clip_prompt("Apple") == "An apple" and clip_prompt("moon") == "A moon" and clip_prompt("Ice") == "An ice"
    assert jaccard(np.array([1, 1, 0, 0], bool), np.array([1, 0, 1, 0], bool)) == 1 / 3
    rows = [("werewolf", [f"c{i}" for i in range(5)], ["c0", "c3"]),
            ("moon", [f"d{i}" for i in range(10)], ["d1", "d2", "d9"]),
            ("apple", [f"e{i}" for i in range(12)], ["e4"])]
    folder = tmp_path / "data" / "winogavil"
    _winogavil_fixture(folder, rows)
    from eval.model import load_run_model
    from test_eval_helpers import make_tiny_run

    lm = load_run_model(make_tiny_run(tmp_path / "tiny", seed=1), device="cpu")     # any prompt tokenizes
    out = evaluate(lm, folder)
    # the same rule, by hand, from the stub's own features
    import torch

    from eval.data import decode_image
    want = []
    for cue, cands, assoc in rows:
        imgs = torch.stack([lm.preprocess(decode_image(png_with_index(i), "x")) for i in range(len(cands))])
        with torch.no_grad():
            sims = (lm.model.encode_text(lm.tokenizer([clip_prompt(cue)]), normalize=True)
                    @ lm.model.encode_image(imgs, normalize=True).T).squeeze(0).numpy()
        truth = np.isin(cands, assoc)
        top = np.argsort(sims)[-int(truth.sum()):]
        picked = np.isin(np.arange(len(cands)), top)
        want.append((truth & picked).sum() / (truth | picked).sum())
    assert out["avg_jaccard_score"] == pytest.approx(np.mean(want))
    assert out["jaccard_score_5"] == pytest.approx(want[0]) and out["jaccard_score_6"] is None
    assert out["jaccard_score_10-12"] == pytest.approx((want[1] + want[2]) / 2) and out["num_samples"] == 3
    # through the suite: present, scored, and no longer reported as missing
    run = tmp_path / "run"
    run.mkdir()
    scores = evaluate_run(run, suite="misc/winogavil", data_root=tmp_path / "data", model=lm, log=lambda m: None)
    assert scores["tasks"]["WinoGAViL"] == pytest.approx(out["jaccard_score_10-12"])
    assert "misc/winogavil" not in scores["missing"]


def test_winogavil_bad_rows_are_named(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from datacurate.errors import UserError
    from eval.winogavil import evaluate, missing_data

    folder = tmp_path / "winogavil"
    assert "no data at" in missing_data(folder)
    (folder / "test").mkdir(parents=True)
    pq.write_table(pa.table({"cue": ["x"], "candidates": [["a", "b"]], "associations": [["a"]],
                             "candidate_images": [[{"bytes": png_with_index(0), "path": "a.png"}]]}),
                   folder / "test" / "0.parquet")
    with pytest.raises(UserError, match=r"0\.parquet: row 0: expected a cue and one image per candidate \(2 "
                                        r"candidates, 1 images\)"):
        evaluate(None, folder)


def test_per_image_outcomes_give_back_the_task_metrics(tmp_path):
    """The noise analysis (scripts/bench/eval_noise.py) rebuilds scores from per-image outcomes."""
    from eval.runner import evaluate_task
    from eval.tasks import load_task_yaml

    root, _ = _toy_tasks_and_run(tmp_path)
    outcomes = {}
    cls = evaluate_task(load_task_yaml(root / "toy_cls"), _stub(), data_root=root, outcomes=outcomes)
    ret = evaluate_task(load_task_yaml(root / "toy_ret"), _stub(), data_root=root, outcomes=outcomes)
    o = outcomes["toy_cls"]
    assert len(o["keys"]) == len(set(o["keys"])) == 10
    assert o["correct"].mean() == cls["acc1"] == 7 / 10
    r = outcomes["toy_ret"]
    assert len(r["keys"]) == 4 and r["captions"].sum() == ret["num_captions"] == 6
    assert r["text_hit"].mean() == ret["text_retrieval_recall@1"]
    assert r["caption_hits"].sum() / r["captions"].sum() == ret["image_retrieval_recall@1"]


def test_rank_percentile_known_answers():
    """The offline suite's main metric: the share of wrong answers scored below the right one."""
    from eval.metrics import BOOTSTRAP_SEED, classification_metrics, classification_se, rank_percentiles

    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0],      # right answer first: 1
                           [3.0, 2.0, 1.0, 0.0],      # right answer last: 0
                           [1.0, 1.0, 0.0, 2.0],      # class 1 ties class 0, beats class 2: (1 + 0.5) / 3
                           [0.0, 3.0, 2.0, 1.0]])     # class 2 beats 0 and 3: 2 / 3
    target = [0, 3, 1, 2]
    r = rank_percentiles(logits.numpy(), target)
    assert r.tolist() == pytest.approx([1.0, 0.0, 0.5, 2 / 3], abs=1e-15)
    m = classification_metrics(logits, target)
    assert m["mean_rank_percentile"] == pytest.approx((1 + 0 + 0.5 + 2 / 3) / 4, abs=1e-15)
    assert m["acc1"] == 1 / 4                        # top-1 sees one hit where the ranking sees more
    rng = np.random.default_rng(0)                   # random scores: chance is 0.5 whatever the classes
    for classes in (9, 382):
        noise = rng.standard_normal((4000, classes))
        assert rank_percentiles(noise, rng.integers(0, classes, 4000)).mean() == pytest.approx(0.5, abs=0.01)
    se = classification_se(logits, target, "mean_rank_percentile")
    draws = np.random.default_rng(BOOTSTRAP_SEED).integers(0, 4, size=(1000, 4))
    assert se == pytest.approx(np.std([r[i].mean() for i in draws], ddof=1), abs=1e-12)


def test_retrieval_rank_percentile_both_ways():
    from eval.metrics import retrieval_hits, retrieval_recalls, retrieval_se

    hits = retrieval_hits(torch.eye(4), torch.tensor(S), OWNER)
    scores = np.asarray(S, dtype=float)                    # (captions, images): caption c's score for image i
    owner = np.array(OWNER)
    per_cap = [((scores[c] < scores[c, owner[c]]).sum() + 0.5 * ((scores[c] == scores[c, owner[c]]).sum() - 1)) / 3
               for c in range(len(owner))]
    per_img = []
    for i in range(4):
        best = scores[owner == i, i].max()
        other = scores[owner != i, i]
        per_img.append(((other < best).sum() + 0.5 * (other == best).sum()) / len(other))
    assert hits["image_retrieval_rank_percentile"].tolist() == pytest.approx(per_cap, abs=1e-15)
    assert hits["text_retrieval_rank_percentile"].tolist() == pytest.approx(per_img, abs=1e-15)
    m = retrieval_recalls(hits)
    assert m["mean_rank_percentile"] == pytest.approx(0.5 * (np.mean(per_img) + np.mean(per_cap)), abs=1e-15)
    assert m["mean_recall@1"] == 0.5 * (3 / 4 + 3 / 6)    # upstream's metric is still there, unchanged
    se = retrieval_se(hits, OWNER, "mean_rank_percentile")
    assert isinstance(se, float) and se > 0
