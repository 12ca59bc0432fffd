"""The task registry: upstream DataComp's evaluation tasks, the offline suite, a user's own tasks.

Upstream facts (task key, dataset name, main metric, class count, random score, tags)
are carried over from https://github.com/mlfoundations/datacomp ``tasklist.yml``; the
aggregate groups from its ``aggregate_scores.py``; the data sources (Hugging Face
dataset repos and the local folder name ``wds_<key>_test``) from its
``download_evalsets.py`` and ``eval_utils/``. FairFace and UTKFace are listed upstream
without a main metric and count in no aggregate: they are kept in ``UNSCORED``.

A task found on disk (``<folder>/task.yaml`` beside data in clip_benchmark's webdataset
layout) is a :class:`Task` too: that is how the offline suite and a user's tasks run
through the same code as the 38 upstream ones (see docs/eval.md).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from datacurate.errors import UserError
from datacurate.layout import PoolLayout

# task types
CLASSIFICATION = "zeroshot_classification"
RETRIEVAL = "retrieval"
MULTI_OBJECTIVE = "multi_objective"  # FairFace/UTKFace: several attributes per face, no main metric
ASSOCIATION = "association"        # WinoGAViL: pick a cue's associated images among candidates (eval.winogavil)
UNSUPPORTED = "unsupported"        # listed upstream, no loader here (reported missing with the reason)
TYPES = (CLASSIFICATION, RETRIEVAL)

DATACOMP38 = "datacomp38"
OFFLINE = "offline"
TASK_YAML = "task.yaml"


@dataclass(frozen=True)
class Task:
    key: str                          # upstream task key, e.g. "vtab/caltech101"; results' "key"
    name: str                         # upstream dataset name, e.g. "Caltech-101"; results' "dataset"
    type: str                         # CLASSIFICATION | RETRIEVAL | UNSUPPORTED
    main_metric: Optional[str] = "acc1"
    folder: str = ""                  # folder under the data root (upstream: wds_<key>_test)
    hf_repo: Optional[str] = None     # Hugging Face dataset repo: the download route
    num_classes: Optional[int] = None
    random_score: Optional[float] = None
    tags: tuple = ()
    groups: tuple = ()                # worst-group metrics: (metric name, .npy column, field name)
    extra_metrics: tuple = ()         # e.g. ("f1_macro",)
    classnames: Optional[tuple] = None  # from task.yaml; else the data folder / packaged sources
    templates: Optional[tuple] = None
    path: Optional[str] = None        # set for tasks found on disk (task.yaml)
    note: str = ""                    # why unsupported, or how the source differs from upstream

    @property
    def scored(self) -> bool:
        return self.main_metric is not None


def _wds(key: str, name: str, num_classes: int, random_score: Optional[float], tags=(), main_metric="acc1",
         groups=(), extra_metrics=(), strip_prefix: bool = False) -> Task:
    folder_key = key.split("/", 1)[1] if strip_prefix else key
    folder = f"wds_{folder_key.replace('/', '-')}_test"   # download_evalsets.py naming
    return Task(key=key, name=name, type=CLASSIFICATION, main_metric=main_metric, folder=folder,
                hf_repo=f"djghosh/{folder}", num_classes=num_classes, random_score=random_score,
                tags=tuple(tags), groups=tuple(groups), extra_metrics=tuple(extra_metrics))


# tasklist.yml, in its order; main_metric defaults to acc1 upstream (evaluate.py)
_UPSTREAM: list[Task] = [
    _wds("vtab/caltech101", "Caltech-101", 102, 0.009804, ["vtab_natural"], "mean_per_class_recall"),
    _wds("cifar10", "CIFAR-10", 10, 0.100000),
    _wds("vtab/cifar100", "CIFAR-100", 100, 0.010000, ["vtab_natural"]),
    _wds("vtab/clevr_count_all", "CLEVR Counts", 8, 0.125061, ["vtab_structured"]),
    _wds("vtab/clevr_closest_object_distance", "CLEVR Distance", 6, 0.190520, ["vtab_structured"]),
    _wds("country211", "Country211", 211, 0.004739),
    _wds("vtab/dtd", "Describable Textures", 47, 0.021277, ["vtab_natural"]),
    _wds("vtab/eurosat", "EuroSAT", 10, 0.101483, ["vtab_specialized"]),
    _wds("fgvc_aircraft", "FGVC Aircraft", 100, 0.010000, (), "mean_per_class_recall"),
    _wds("food101", "Food-101", 101, 0.009901),
    _wds("gtsrb", "GTSRB", 43, 0.037604),
    _wds("imagenet1k", "ImageNet 1k", 1000, 0.001000, ["val_task"]),
    _wds("imagenet_sketch", "ImageNet Sketch", 1000, 0.001000),
    _wds("imagenetv2", "ImageNet v2", 1000, 0.001000),
    _wds("imagenet-a", "ImageNet-A", 200, 0.008056),
    _wds("imagenet-o", "ImageNet-O", 200, 0.006047),
    _wds("imagenet-r", "ImageNet-R", 200, 0.006163),
    _wds("vtab/kitti_closest_vehicle_distance", "KITTI Vehicle Distance", 4, 0.295289, ["vtab_structured"]),
    _wds("mnist", "MNIST", 10, 0.100350),
    _wds("objectnet", "ObjectNet", 113, 0.009481),
    _wds("vtab/flowers", "Oxford Flowers-102", 102, 0.009804, ["vtab_natural"], "mean_per_class_recall"),
    _wds("vtab/pets", "Oxford-IIIT Pet", 37, 0.027027, ["vtab_natural"], "mean_per_class_recall"),
    _wds("voc2007", "Pascal VOC 2007", 20, 0.154038),
    _wds("vtab/pcam", "PatchCamelyon", 2, 0.500000, ["vtab_specialized"]),
    _wds("renderedsst2", "Rendered SST2", 2, 0.500001),
    _wds("vtab/resisc45", "RESISC45", 45, 0.022342, ["vtab_specialized"]),
    _wds("cars", "Stanford Cars", 196, 0.005160),
    _wds("stl10", "STL-10", 10, 0.100000),
    _wds("sun397", "SUN397", 397, 0.004645, ["vtab_natural"]),
    _wds("vtab/svhn", "SVHN", 10, 0.117897, ["vtab_natural"]),
    # Retrieval. Upstream loads nlphuji/flickr30k (all 31,014 images) and
    # nlphuji/mscoco_2014_5k_test_image_text_retrieval with the `datasets` library; here the
    # local copy is read in clip_benchmark's webdataset layout (dataset_type.txt = retrieval),
    # whose published copies are clip-benchmark/wds_flickr30k (1k Karpathy test: a smaller
    # test set than upstream's) and clip-benchmark/wds_mscoco_captions (the same 5k test).
    Task("retrieval/flickr30k", "Flickr", RETRIEVAL, "mean_recall@1", folder="wds_flickr30k",
         hf_repo="clip-benchmark/wds_flickr30k", tags=("retrieval",),
         note="upstream: nlphuji/flickr30k (31k images); clip-benchmark's wds copy is the 1k test"),
    Task("retrieval/mscoco_2014_5k_test_image_text_retrieval", "MSCOCO", RETRIEVAL, "mean_recall@1",
         folder="wds_mscoco_captions", hf_repo="clip-benchmark/wds_mscoco_captions", tags=("retrieval",)),
    # WinoGAViL (eval_utils/wino_eval.py): upstream reads nlphuji/winogavil with the `datasets` library;
    # here its Parquet export (eval.winogavil), the same rows
    Task("misc/winogavil", "WinoGAViL", ASSOCIATION, "jaccard_score_10-12", folder="winogavil",
         hf_repo="nlphuji/winogavil", random_score=0.205000, tags=("retrieval",),
         note="the Parquet export of nlphuji/winogavil's test split (upstream loads the same rows with `datasets`)"),
    # WILDS (eval_utils/wilds_eval.py): metadata .npy columns per sample
    _wds("wilds/iwildcam", "iWildCam", 182, 0.143056, ["wilds"], "F1-macro_all", extra_metrics=("f1_macro",)),
    _wds("wilds/camelyon17", "Camelyon17", 2, 0.500000, ["wilds"], groups=(("acc", 1, "slide"),)),
    _wds("wilds/fmow", "FMoW", 62, 0.027193, ["wilds"], "acc_worst_region",
         groups=(("acc", 1, "year"), ("acc", 0, "region"))),
    # fairness (eval_utils/fairness_eval.py); folders drop the "fairness/" prefix upstream
    _wds("fairness/dollar_street", "Dollar Street", 58, None, ["fairness"], "acc_top5_wg",
         groups=(("acc_top5", 0, "income_ds"),), strip_prefix=True),
    _wds("fairness/geode", "GeoDE", 40, None, ["fairness"], "acc_wg", groups=(("acc", 0, "region"),),
         strip_prefix=True),
]

UPSTREAM_TASKS: dict[str, Task] = {t.key: t for t in _UPSTREAM}

# listed in tasklist.yml without a main metric (multi-objective face attribute tasks): never scored
UNSCORED: dict[str, Task] = {
    t.key: t for t in (
        Task("fairness/fairface", "FairFace", MULTI_OBJECTIVE, None, folder="wds_fairface_test",
             hf_repo="djghosh/wds_fairface_test", tags=("fairness",),
             note="multi-objective face attributes; listed upstream without a main metric"),
        Task("fairness/utkface", "UTKFace", MULTI_OBJECTIVE, None, folder="wds_utkface_test",
             hf_repo="djghosh/wds_utkface_test", tags=("fairness",),
             note="multi-objective face attributes; listed upstream without a main metric"),
    )
}

# aggregate_scores.py DATASET_GROUPS (+ 'ImageNet' = 'ImageNet 1k', 'Average' = all scored tasks)
UPSTREAM_GROUPS: dict[str, list[str]] = {
    "ImageNet dist. shifts": ["ImageNet Sketch", "ImageNet v2", "ImageNet-A", "ImageNet-O", "ImageNet-R",
                              "ObjectNet"],
    "VTAB": ["Caltech-101", "CIFAR-100", "CLEVR Counts", "CLEVR Distance", "Describable Textures", "EuroSAT",
             "KITTI Vehicle Distance", "Oxford Flowers-102", "Oxford-IIIT Pet", "PatchCamelyon", "RESISC45",
             "SVHN", "SUN397"],
    "Retrieval": ["Flickr", "MSCOCO", "WinoGAViL"],
}
UPSTREAM_IMAGENET = "ImageNet 1k"

# the offline suite: the tasks of POOL/evalsets (eval.offline writes them, a task.yaml each) that it
# scores and averages. emoji_group (9 classes, a coarsening of emoji_subgroup's 86) is built beside
# them and scored by name (`--suite emoji_group`), not in the suite: of the four tasks it had the
# lowest spread between recipes over seed noise in every study, and leaving it out of the Average
# is what, with the 4-layer tiny model, took the split-half tau to the goal (docs/eval.md).
OFFLINE_TASK_KEYS = ("emoji_subgroup", "emoji_concept", "emoji_name")


def default_data_root() -> Path:
    """``$DATACURATE_EVAL_DATA`` or ``~/.cache/datacurate/eval``."""
    return Path(os.environ.get("DATACURATE_EVAL_DATA", Path.home() / ".cache" / "datacurate" / "eval"))


def load_task_yaml(folder: str | os.PathLike) -> Task:
    """A task described by ``folder/task.yaml`` (the offline suite's and a user's own tasks)."""
    import yaml

    folder = Path(folder)
    f = folder / TASK_YAML
    try:
        spec = yaml.safe_load(f.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise UserError(f"{f}: missing (a task folder needs a task.yaml; see docs/eval.md)") from None
    except yaml.YAMLError as e:
        raise UserError(f"{f}: not valid YAML ({e})") from None
    if not isinstance(spec, dict):
        raise UserError(f"{f}: expected a mapping of fields (name, type, main_metric, ...)")
    known = {"key", "name", "type", "main_metric", "classnames", "templates", "random_score", "tags"}
    unknown = sorted(set(spec) - known)
    if unknown:
        raise UserError(f"{f}: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    ttype = spec.get("type", CLASSIFICATION)
    if ttype not in TYPES:
        raise UserError(f"{f}: field 'type' is {ttype!r}; expected one of {', '.join(TYPES)}")
    default_metric = "acc1" if ttype == CLASSIFICATION else "mean_recall@1"
    main_metric = spec.get("main_metric", default_metric)
    allowed = CLASSIFICATION_METRICS if ttype == CLASSIFICATION else RETRIEVAL_METRICS
    if main_metric not in allowed:
        raise UserError(f"{f}: field 'main_metric' is {main_metric!r}; for type {ttype} expected one of "
                        f"{', '.join(allowed)}")
    for fld in ("classnames", "templates"):
        v = spec.get(fld)
        if v is not None and (not isinstance(v, list) or not v or not all(isinstance(s, str) for s in v)):
            raise UserError(f"{f}: field {fld!r} must be a non-empty list of strings")
    templates = spec.get("templates")
    if templates and not all("{c}" in t for t in templates):
        raise UserError(f"{f}: field 'templates': every template needs the placeholder {{c}}")
    key = str(spec.get("key", folder.name))
    return Task(key=key, name=str(spec.get("name", key)), type=ttype, main_metric=main_metric,
                folder=folder.name, path=str(folder),
                classnames=tuple(spec["classnames"]) if spec.get("classnames") else None,
                templates=tuple(templates) if templates else None,
                random_score=spec.get("random_score"), tags=tuple(spec.get("tags", ())))


CLASSIFICATION_METRICS = ("acc1", "acc5", "mean_per_class_recall", "mean_rank_percentile")
RETRIEVAL_METRICS = ("mean_recall@1", "mean_rank_percentile", "image_retrieval_recall@1", "text_retrieval_recall@1",
                     "image_retrieval_recall@5", "text_retrieval_recall@5",
                     "image_retrieval_recall@10", "text_retrieval_recall@10")


def find_user_tasks(root: str | os.PathLike) -> dict[str, Task]:
    """Every ``root/<folder>/task.yaml`` as a task, by key."""
    root = Path(root)
    out: dict[str, Task] = {}
    if root.is_dir():
        for y in sorted(root.glob(f"*/{TASK_YAML}")):
            t = load_task_yaml(y.parent)
            out[t.key] = t
    return out


def task_dir(task: Task, data_root: str | os.PathLike | None) -> Path:
    """Where the task's data lives: its own folder (task.yaml tasks) or data_root/<folder>."""
    if task.path:
        return Path(task.path)
    return Path(data_root if data_root is not None else default_data_root()) / task.folder


def resolve_suite(suite: str, pool: str | os.PathLike | None = None,
                  data_root: str | os.PathLike | None = None) -> tuple[str, list[Task]]:
    """``datacomp38`` | ``offline`` | comma-separated task keys/names -> (suite name, tasks)."""
    if suite == DATACOMP38:
        return DATACOMP38, list(_UPSTREAM)
    if suite == OFFLINE:
        if pool is None:
            raise UserError("--suite offline needs --pool POOL (its held-out items make the tasks)")
        from .offline import ensure_offline_evalsets

        root = ensure_offline_evalsets(pool)
        found = find_user_tasks(root)
        return OFFLINE, [found[k] for k in OFFLINE_TASK_KEYS if k in found]
    pool_tasks = {}
    if pool is not None and PoolLayout.at(pool).evalsets.is_dir():
        pool_tasks = find_user_tasks(PoolLayout.at(pool).evalsets)
    user = find_user_tasks(data_root if data_root is not None else default_data_root())
    known = {**UPSTREAM_TASKS, **UNSCORED, **user, **pool_tasks}
    by_name = {t.name: t for t in known.values()}
    picked = []
    for item in (s.strip() for s in suite.split(",")):
        if not item:
            continue
        t = known.get(item) or by_name.get(item)
        if t is None:
            raise UserError(f"--suite: unknown task {item!r}; known suites: {DATACOMP38}, {OFFLINE}; "
                            f"tasks: see `datacurate eval --list`")
        picked.append(t)
    if not picked:
        raise UserError("--suite: no task named")
    return ",".join(t.key for t in picked), picked


def suite_groups(suite_name: str, tasks: list[Task]) -> tuple[Optional[str], dict[str, list[str]]]:
    """(ImageNet dataset name or None, aggregate groups) for a suite."""
    if suite_name == DATACOMP38:
        return UPSTREAM_IMAGENET, {k: list(v) for k, v in UPSTREAM_GROUPS.items()}
    if suite_name == OFFLINE:
        groups = {"Classification": [t.name for t in tasks if t.type == CLASSIFICATION],
                  "Retrieval": [t.name for t in tasks if t.type == RETRIEVAL]}
        return None, {k: v for k, v in groups.items() if v}
    return None, {}


def leaderboard_suite(suite: str) -> dict:
    """What the leaderboard scores for ``suite``: tasks {key: name}, groups, imagenet, unscored, and for
    the offline suite, whose metrics are ours, each task's main metric (a line must carry it)."""
    if suite == DATACOMP38:
        return {"tasks": {t.key: t.name for t in _UPSTREAM}, "groups": {k: list(v) for k, v in UPSTREAM_GROUPS.items()},
                "imagenet": UPSTREAM_IMAGENET, "unscored": {t.key: t.name for t in UNSCORED.values()}}
    if suite == OFFLINE:
        from .offline import OFFLINE_TASKS

        tasks = [Task(key=k, name=OFFLINE_TASKS[k]["name"], type=OFFLINE_TASKS[k]["type"],
                      main_metric=OFFLINE_TASKS[k]["main_metric"]) for k in OFFLINE_TASK_KEYS]
        imagenet, groups = suite_groups(OFFLINE, tasks)
        return {"tasks": {t.key: t.name for t in tasks}, "groups": groups, "imagenet": imagenet, "unscored": {},
                "metrics": {t.key: t.main_metric for t in tasks}}
    raise KeyError(f"unknown suite {suite!r}; known: {DATACOMP38}, {OFFLINE}")


def all_listed(data_root=None, pool=None) -> list[Task]:
    """Upstream tasks, the unscored ones, then tasks found on disk (pool evalsets, data root)."""
    out = list(_UPSTREAM) + list(UNSCORED.values())
    seen = {t.key for t in out}
    roots = []
    if pool is not None:
        roots.append(PoolLayout.at(pool).evalsets)
    roots.append(Path(data_root) if data_root is not None else default_data_root())
    for r in roots:
        for t in find_user_tasks(r).values():
            if t.key not in seen:
                out.append(t)
                seen.add(t.key)
    return out
