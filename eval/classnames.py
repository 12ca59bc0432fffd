"""Class names and prompt templates for a classification task, as data, never retyped.

Looked up in this order, the first that has them wins (the source is returned too):
1. the task's own ``task.yaml`` (``classnames``, ``templates``);
2. the task's data folder: ``classnames.txt`` and ``zeroshot_classification_templates.txt``
   (one per line, ``{c}`` for the class name), as clip_benchmark's and upstream DataComp's
   published webdataset copies ship them;
3. the clip_benchmark package's bundled ``en_classnames.json`` /
   ``en_zeroshot_classification_templates.json`` (keys as clip_benchmark names the datasets;
   templates fall back to its ``imagenet1k`` entry, as clip_benchmark's builder does);
4. open_clip's ``zero_shot_metadata`` (``IMAGENET_CLASSNAMES``, ``OPENAI_IMAGENET_TEMPLATES``)
   for the 1000-class ImageNet tasks.

Optionally a task folder has ``subclasses.json`` (``{"subclasses": [[name, ...], ...]}``, one list
per class name): a class then scores as the best of its own name and its subclasses' names,
as CHiLS does (Novack et al., "CHiLS: Zero-Shot Image Classification with Hierarchical Label
Sets", ICML 2023). The offline suite's group and subgroup tasks use it; upstream's tasks do not.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Optional

from datacurate.errors import UserError

from .tasks import Task

CLASSNAMES_TXT = "classnames.txt"
TEMPLATES_TXT = "zeroshot_classification_templates.txt"
SUBCLASSES_JSON = "subclasses.json"
IMAGENET_1000 = ("imagenet1k", "imagenetv2", "imagenet_sketch")


def _read_lines(path: Path) -> Optional[list[str]]:
    if not path.is_file():
        return None
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    return [ln for ln in lines if ln] or None


@lru_cache(maxsize=None)
def clip_benchmark_json(which: str) -> Optional[dict]:
    """clip_benchmark's bundled ``en_<which>.json``, or None when the package is not installed."""
    import importlib.util

    spec = importlib.util.find_spec("clip_benchmark")
    if spec is None or not spec.submodule_search_locations:
        return None
    f = Path(list(spec.submodule_search_locations)[0]) / "datasets" / f"en_{which}.json"
    if not f.is_file():
        return None
    return json.loads(f.read_text(encoding="utf-8"))


def _clip_benchmark_keys(task: Task) -> list[str]:
    base = task.key.split("/")[-1]
    keys = [base]
    if task.key.startswith("vtab/"):
        keys.insert(0, f"{base}_vtab")        # clip_benchmark: caltech101_vtab
    if base in IMAGENET_1000:
        keys.append("imagenet1k")
    return keys


def _open_clip_templates() -> list[str]:
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    return [t("{c}") for t in OPENAI_IMAGENET_TEMPLATES]   # they are functions of the class name


def _first_source(task: Task, folder: Optional[Path], declared, filename: str, packaged: str,
                  extra_keys: tuple = ()) -> Optional[tuple[list[str], str]]:
    """The first of: the task.yaml's own list, FOLDER/filename, clip_benchmark's packaged json
    (``en_{packaged}.json`` under the task's keys); None when none has them."""
    if declared:
        return list(declared), f"{Path(task.path or '.') / 'task.yaml'}"
    if folder is not None:
        got = _read_lines(folder / filename)
        if got:
            return got, str(folder / filename)
    cb = clip_benchmark_json(packaged)
    for k in (_clip_benchmark_keys(task) + list(extra_keys)) if cb else []:
        if k in cb:
            return list(cb[k]), f"clip_benchmark en_{packaged}.json[{k!r}]"
    return None


def classnames_for(task: Task, folder: Optional[Path]) -> tuple[list[str], str]:
    """(class names, where they came from); UserError naming the folder if none is found."""
    found = _first_source(task, folder, task.classnames, CLASSNAMES_TXT, "classnames")
    if found:
        return found
    if task.key.split("/")[-1] in IMAGENET_1000:
        from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

        return list(IMAGENET_CLASSNAMES), "open_clip.zero_shot_metadata.IMAGENET_CLASSNAMES"
    raise UserError(f"{folder}: no {CLASSNAMES_TXT} for task {task.key!r}, and no packaged class names for it")


def templates_for(task: Task, folder: Optional[Path]) -> tuple[list[str], str]:
    """(prompt templates with ``{c}``, where they came from)."""
    found = _first_source(task, folder, task.templates, TEMPLATES_TXT, "zeroshot_classification_templates",
                          extra_keys=("imagenet1k",))
    return found or (_open_clip_templates(), "open_clip.zero_shot_metadata.OPENAI_IMAGENET_TEMPLATES")


def subclasses_for(folder: Optional[Path], n_classes: int) -> Optional[list[list[str]]]:
    """The folder's ``subclasses.json`` (one list of names per class), or None when it has none."""
    if folder is None or not (folder / SUBCLASSES_JSON).is_file():
        return None
    path = folder / SUBCLASSES_JSON
    try:
        got = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None
    subs = got.get("subclasses") if isinstance(got, dict) else None
    if not isinstance(subs, list) or len(subs) != n_classes:
        found = f"{len(subs)} lists" if isinstance(subs, list) else type(subs).__name__
        raise UserError(f"{path}: 'subclasses' must hold one list of names per class name "
                        f"({n_classes}), found {found}")
    for i, names in enumerate(subs):
        if not isinstance(names, list) or not all(isinstance(n, str) and n.strip() for n in names):
            raise UserError(f"{path}: subclasses[{i}] must be a list of non-empty strings")
    return [[n.strip() for n in names] for names in subs]
