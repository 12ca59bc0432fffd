"""The offline suite: zero-shot tasks built from the pool's real held-out items.

``POOL/holdout/eval.parquet`` (item_id, image = PNG bytes, text, name, group, subgroup,
source; docs/formats.md) becomes ``POOL/evalsets/<task>/`` in clip_benchmark's webdataset
layout plus a ``task.yaml``, exactly as a user adds a task (docs/eval.md); the same code
then runs them as the upstream tasks. Images are alpha-composited on white, as
img2dataset does with the pool's images, so evaluation sees what training saw.

Tasks (``OFFLINE_TASKS``): the emoji's group and subgroup by zero-shot classification
(class names as the captions write them: "food-drink" -> "food & drink"), the emoji itself
among all held-out emoji by its CLDR name, and retrieval between each image and its real
captions (the English caption and the emoji's name). All four are built; the suite
(``eval.tasks.OFFLINE_TASK_KEYS``) scores and averages the last three, the group task is
scored only when named.

Group and subgroup classes also score by their member emoji's names (CHiLS, Novack et al.
2023; ``subclasses.json``), taken from ``POOL/holdout/taxonomy.parquet`` without the ``eval``
split: an unseen emoji is matched to the group of the seen emoji it resembles. With the
class names alone the tiny model trained on the unfiltered pool scored at chance on
subgroup (0.017, 0.0065 and 0.0092 over three seeds; chance 0.0116); with members, 0.046
to 0.063 (docs/eval.md).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import sys
from pathlib import Path

from datacurate.atomic import folder_lock, replace_dir
from datacurate.errors import UserError
from datacurate.images import to_rgb
from datacurate.layout import PoolLayout

from .tasks import CLASSIFICATION, OFFLINE_TASK_KEYS, RETRIEVAL

BUILDER_VERSION = 5
UNAVAILABLE = "unavailable.txt"   # a task folder without data says why in this file
TAXONOMY = "taxonomy.parquet"      # beside eval.parquet: every concept's group, subgroup and split
COLUMNS = ("item_id", "image", "text", "name", "group", "subgroup")
# Prompts in the words the pool's web-style captions use ("food & drink: red apple", "red apple,
# a food & drink emoji"), as CLIP's authors wrote prompts per dataset. The earlier generic set
# ("an emoji of {c}.", ...) left the tiny model at chance on emoji_group (0.10 vs 0.11) while
# these give 0.20 with the same checkpoint.
TEMPLATES = ("{c} emoji", "a {c} emoji", "{c} icon", "{c}:")

# Every task scores by the mean rank percentile of the right answer (eval.metrics.rank_percentiles:
# 1 = first, 0.5 = chance), not by top-1: at the few percent a CPU-scale model gets right, top-1
# counts a handful of hits out of 764 images and the seed-to-seed spread of the study was mostly
# that count's noise. On the 78 runs of the 2026-12-03 tiny study the spread between recipes over
# the spread between seeds went from 1.47 (top-1, recall@1) to 2.57 (docs/eval.md, "Main metric").
MAIN_METRIC = "mean_rank_percentile"
OFFLINE_TASKS: dict[str, dict] = {
    "emoji_group": {"name": "Emoji group", "type": CLASSIFICATION, "main_metric": MAIN_METRIC, "column": "group"},
    "emoji_subgroup": {"name": "Emoji subgroup", "type": CLASSIFICATION, "main_metric": MAIN_METRIC,
                       "column": "subgroup"},
    "emoji_name": {"name": "Emoji caption retrieval", "type": RETRIEVAL, "main_metric": MAIN_METRIC},
    # which held-out emoji is this, among all of them by name: the ImageNet of the suite
    # (fine-grained object names, where group and subgroup are coarse categories)
    "emoji_concept": {"name": "Emoji concept", "type": CLASSIFICATION, "main_metric": MAIN_METRIC, "column": "name"},
}


def readable_group(label: str) -> str:
    """Emojibase group slug -> its title as the web writes it: 'food-drink' -> 'food & drink'.

    ``datacurate.taxonomy.group_title``, the pool builder's too, so the class names are the words the captions
    use: a class name the training captions never say cannot be matched zero-shot.
    """
    from datacurate.taxonomy import group_title

    return group_title(label)


def readable_subgroup(label: str) -> str:
    """Emojibase subgroup slug -> words: 'food-fruit' -> 'food fruit' (the pool captions' own words)."""
    from datacurate.taxonomy import subgroup_title

    return subgroup_title(label)


def _fingerprint(parquet: Path) -> str:
    h = hashlib.sha256(f"v{BUILDER_VERSION}".encode())
    for path in (parquet, parquet.with_name(TAXONOMY)):
        if path.is_file():
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
    return h.hexdigest()


def _members(parquet: Path, column: str, splits: tuple[str, ...] | None = None) -> dict | None:
    """{group or subgroup label: sorted names of its non-eval emoji}, from the pool's taxonomy
    (``splits``: only the emoji of these splits; a study that scores other held-out items)."""
    import pyarrow.parquet as pq

    path = parquet.with_name(TAXONOMY)
    if not path.is_file():
        return None
    t = pq.read_table(path).to_pydict()
    for c in ("name", column, "split"):
        if c not in t:
            raise UserError(f"{path}: column {c!r} missing; expected name, group, subgroup, split")
    out: dict = {}
    for name, label, split in zip(t["name"], t[column], t["split"]):
        if name and (split in splits if splits else split != "eval"):
            out.setdefault(str(label), set()).add(str(name))
    return {k: sorted(v) for k, v in out.items()}


def _white_png(data: bytes, where: str) -> bytes:
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except (UnidentifiedImageError, OSError) as e:
        raise UserError(f"{where}: the image is not a readable PNG ({e})") from None
    out = io.BytesIO()
    to_rgb(img).save(out, format="PNG")
    return out.getvalue()


def _read_holdout(parquet: Path):
    import pyarrow.parquet as pq

    if not parquet.is_file():
        raise UserError(f"{parquet}: missing (the pool builder writes the held-out items; run `datacurate pool build`)")
    table = pq.read_table(parquet)
    absent = [c for c in COLUMNS if c not in table.column_names]
    if absent:
        raise UserError(f"{parquet}: column(s) {', '.join(absent)} missing; expected {', '.join(COLUMNS)}")
    rows = table.select(list(COLUMNS)).to_pylist()
    if not rows:
        raise UserError(f"{parquet}: no rows")
    for i, r in enumerate(rows):
        for c in COLUMNS:
            if r[c] is None or (c != "image" and not str(r[c]).strip()):
                raise UserError(f"{parquet}: row {i} (item_id {r['item_id']!r}): field {c!r} is empty")
    return rows


def _write_task(dst: Path, key: str, spec: dict, samples: list[tuple], classnames: list[str] | None,
                fingerprint: str, unavailable: str | None = None, subclasses: list | None = None) -> None:
    """Write one task folder under a temporary name, then rename it into place."""
    import webdataset as wds
    import yaml

    tmp = dst.with_name(f".{dst.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if unavailable:
        (tmp / UNAVAILABLE).write_text(unavailable + "\n", encoding="utf-8")
    else:
        (tmp / "test").mkdir()
    with (wds.TarWriter(str(tmp / "test" / "0.tar")) if not unavailable else _Nothing()) as w:
        for i, (png, target) in enumerate(samples):
            s = {"__key__": f"s{i:07d}", "png": png}
            if spec["type"] == RETRIEVAL:
                s["txt"] = "\n".join(target)
            else:
                s["cls"] = int(target)
            w.write(s)
    if not unavailable:
        (tmp / "test" / "nshards.txt").write_text("1\n")
    meta = {"key": key, "name": spec["name"], "type": spec["type"], "main_metric": spec["main_metric"]}
    if spec["type"] == RETRIEVAL:
        (tmp / "dataset_type.txt").write_text("retrieval\n")
    else:
        (tmp / "classnames.txt").write_text("\n".join(classnames) + "\n", encoding="utf-8")
        (tmp / "zeroshot_classification_templates.txt").write_text("\n".join(TEMPLATES) + "\n", encoding="utf-8")
        meta["random_score"] = 0.5           # MAIN_METRIC's chance, whatever the number of classes
        if subclasses:
            (tmp / "subclasses.json").write_text(json.dumps(
                {"source": f"pool taxonomy ({TAXONOMY}), eval split excluded", "subclasses": subclasses},
                ensure_ascii=False, indent=0) + "\n", encoding="utf-8")
    (tmp / "task.yaml").write_text(yaml.safe_dump(meta, sort_keys=False), encoding="utf-8")
    (tmp / "source.json").write_text(json.dumps({"fingerprint": fingerprint, "items": len(samples),
                                                 "builder_version": BUILDER_VERSION}) + "\n")
    replace_dir(tmp, dst)


class _Nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def suite_fingerprint(pool: str | os.PathLike) -> str | None:
    """What the offline suite is: the data its tasks are built from (eval.parquet, taxonomy, builder
    version; for a pool copied without its holdout/, the built tasks' own record) and the tasks it
    averages (``OFFLINE_TASK_KEYS``); None when the data is not there. A run's scores.json keeps the
    one it was scored on, so a changed suite is scored again (unchanged tasks come from the cache)."""
    lay = PoolLayout.at(pool)
    parquet = lay.holdout_parquet("eval")
    if parquet.is_file():
        data = _fingerprint(parquet)
    else:
        try:
            data = json.loads((lay.evalsets / next(iter(OFFLINE_TASKS)) / "source.json").read_text())["fingerprint"]
        except (OSError, ValueError, KeyError):
            return None
    return f"{data}/{','.join(OFFLINE_TASK_KEYS)}"


def _is_current(dst: Path, fingerprint: str) -> bool:
    try:
        return json.loads((dst / "source.json").read_text())["fingerprint"] == fingerprint \
            and (dst / "task.yaml").is_file()
    except (OSError, ValueError, KeyError):
        return False


def build_offline_evalsets(pool: str | os.PathLike, force: bool = False) -> Path:
    """Write POOL/evalsets/<task>/ for every offline task (skips tasks already built from this parquet)."""
    lay = PoolLayout.at(pool)
    parquet = lay.holdout_parquet("eval")
    if not parquet.is_file():
        raise UserError(f"{parquet}: missing (the pool builder writes the held-out items; run `datacurate pool build`)")
    fp = _fingerprint(parquet)
    root = lay.evalsets
    if not force and all(_is_current(root / k, fp) for k in OFFLINE_TASKS):
        return root
    with folder_lock(root / ".lock", wait=True):     # two chains evaluating side by side: one builds
        _build(root, parquet, fp, [k for k in OFFLINE_TASKS if force or not _is_current(root / k, fp)])
    return root


def _build(root: Path, parquet: Path, fp: str, todo: list[str]) -> None:
    if not todo:
        return
    rows = _read_holdout(parquet)
    root.mkdir(parents=True, exist_ok=True)
    pngs = [_white_png(r["image"], f"{parquet}: row {i} (item_id {r['item_id']!r})") for i, r in enumerate(rows)]
    for key in todo:
        spec = OFFLINE_TASKS[key]
        members = None
        if spec.get("column") in ("group", "subgroup"):
            members = _members(parquet, spec["column"])
            if members is None:
                print(f"warning: {parquet.with_name(TAXONOMY)} missing: {key} scores class names alone",
                      file=sys.stderr)
        write_rows_task(root / key, key, spec, rows, pngs, fp, parquet, members)


def write_rows_task(dst: Path, key: str, spec: dict, rows: list[dict], pngs: list[bytes], fingerprint: str,
                    source: Path, members: dict | None = None, labels: list[str] | None = None) -> None:
    """One offline task from held-out rows (read from ``source``) and their PNGs: retrieval over each
    item's caption and name, or classification by ``spec["column"]`` over ``labels`` (default: the
    labels the rows hold), a class scored by its ``members`` too where given (CHiLS)."""
    if spec["type"] == RETRIEVAL:
        samples = [(png, list(dict.fromkeys([str(r["text"]).strip(), str(r["name"]).strip()])))
                   for png, r in zip(pngs, rows)]
        _write_task(dst, key, spec, samples, None, fingerprint)
        return
    col = spec["column"]
    labels = labels or sorted({str(r[col]) for r in rows})
    index = {lab: i for i, lab in enumerate(labels)}
    readable = {"group": readable_group, "subgroup": readable_subgroup}.get(col, str)
    names = [readable(lab) for lab in labels]
    if len(set(names)) != len(names):     # two slugs read the same: keep the slugs
        names = labels
    samples = [(png, index[str(r[col])]) for png, r in zip(pngs, rows)]
    subclasses = [members.get(lab, []) for lab in labels] if members else None
    if len(labels) < 2:      # nothing to tell apart: the task is written without data
        samples = []
        reason = f"{source}: only one {col} ({labels[0]!r}) among the held-out items"
    else:
        reason = None
    _write_task(dst, key, spec, samples, names, fingerprint, reason, subclasses)


def ensure_offline_evalsets(pool: str | os.PathLike) -> Path:
    """POOL/evalsets, built (or rebuilt when eval.parquet changed) if needed.

    A pool copied without its holdout/ but with built evalsets is used as it is.
    """
    lay = PoolLayout.at(pool)
    root = lay.evalsets
    if not lay.holdout_parquet("eval").is_file() and all((root / k / "task.yaml").is_file()
                                                                  for k in OFFLINE_TASKS):
        return root
    return build_offline_evalsets(pool, force=False)
