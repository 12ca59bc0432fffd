"""Task data in clip_benchmark's webdataset layout, read from a local copy or fetched from the Hub.

Layout (clip_benchmark ``datasets/builder.py: build_wds_dataset``)::

    <task folder>/
        test/nshards.txt             number of shards N
        test/0.tar .. test/N-1.tar   KEY.webp|png|jpg|jpeg + KEY.cls (class index)
                                     or KEY.txt (captions, one per line) for retrieval,
                                     + KEY.npy (metadata row) for the WILDS / fairness tasks
        classnames.txt               one class name per line
        zeroshot_classification_templates.txt   one template per line, {c} = class name
        dataset_type.txt             "retrieval" for retrieval tasks (else classification)
        subclasses.json              optional: names scored with each class (eval/classnames.py)

Every file there is part of the task's fingerprint (:func:`data_fingerprint`): change one and
the task is evaluated again.
"""
from __future__ import annotations

import io
import os
import re
from pathlib import Path
from typing import Iterator, Optional

from datacurate.errors import UserError

from .tasks import ASSOCIATION, MULTI_OBJECTIVE, RETRIEVAL, UNSUPPORTED, Task, task_dir

IMAGE_EXTS = ("webp", "png", "jpg", "jpeg")
SPLIT = "test"


class TaskDataMissing(UserError):
    """The task's data is not on disk; the message says where it was looked for and how to get it."""


def shard_paths(folder: Path) -> list[Path]:
    """The test shards, in order: nshards.txt when present, else every test/*.tar by number."""
    d = folder / SPLIT
    nfile = d / "nshards.txt"
    if nfile.is_file():
        try:
            n = int(nfile.read_text().strip())
        except ValueError:
            raise UserError(f"{nfile}: expected an integer number of shards") from None
        paths = [d / f"{i}.tar" for i in range(n)]
        absent = [p.name for p in paths if not p.is_file()]
        if absent:
            raise TaskDataMissing(f"{d}: nshards.txt says {n} shard(s) but {', '.join(absent[:3])} "
                                  f"{'is' if len(absent) == 1 else 'are'} missing")
        return paths
    tars = [p for p in d.glob("*.tar") if re.fullmatch(r"\d+", p.stem)] if d.is_dir() else []
    return sorted(tars, key=lambda p: int(p.stem))


def missing_reason(task: Task, data_root=None) -> Optional[str]:
    """None when the task can run, else why not (no loader, data absent)."""
    if task.type == UNSUPPORTED:
        return task.note or "no loader for this task"
    folder = task_dir(task, data_root)
    if task.type == ASSOCIATION:
        from .winogavil import missing_data

        return missing_data(folder)
    why = folder / "unavailable.txt"
    if why.is_file():
        return why.read_text(encoding="utf-8").strip()
    try:
        shards = shard_paths(folder)
    except TaskDataMissing as e:
        return str(e)
    if not shards:
        how = f" (`datacurate eval --download` fetches {task.hf_repo})" if task.hf_repo else ""
        return f"no data at {folder / SPLIT}/*.tar{how}"
    return None


FINGERPRINT_VERSION = 2   # bump when what data_fingerprint covers changes
RACY_SECONDS = 2.0        # a file changed this recently is hashed again next time


def file_digest(path: Path, memo: Optional[dict] = None) -> str:
    """sha256 of a file's bytes. ``memo`` ({path: {"stat", "sha256"}}, kept in RUN/eval_state.json)
    spares re-reading a file whose size, mtime and ctime are unchanged; a file changed in the last
    seconds is not memoised, since a rewrite within the same clock tick would not show in its stat
    (git's "racily clean" entries)."""
    import time

    from datacurate.clip import sha256_file

    st = path.stat()
    stat = [st.st_size, st.st_mtime_ns, st.st_ctime_ns]
    key = str(path.resolve())
    hit = (memo or {}).get(key)
    if isinstance(hit, dict) and hit.get("stat") == stat and isinstance(hit.get("sha256"), str):
        return hit["sha256"]
    digest = sha256_file(path)
    if memo is not None and time.time() - st.st_ctime > RACY_SECONDS:   # ctime: any write, any utime
        memo[key] = {"stat": stat, "sha256": digest}
    return digest


def data_fingerprint(task: Task, data_root=None, memo: Optional[dict] = None) -> str:
    """Everything besides the checkpoint that a task's score depends on, so that a cached result
    is reused only for the same inputs: the content of its shards and of every file beside them
    (task.yaml, classnames.txt, the templates file, subclasses.json, dataset_type.txt, ...), the
    class names and templates it resolves to (packaged ones included) and its registry entry."""
    import hashlib
    import json

    from .classnames import classnames_for, templates_for

    folder = task_dir(task, data_root)
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    if task.type == ASSOCIATION:
        from .winogavil import parquet_files

        data = [p for p in parquet_files(folder) if p not in files]
    else:
        data = shard_paths(folder)
    parts = [[str(p.relative_to(folder)), file_digest(p, memo)] for p in files + data]
    prompts = None
    if task.type not in (RETRIEVAL, ASSOCIATION):
        prompts = [classnames_for(task, folder)[0], templates_for(task, folder)[0]]
    entry = [task.key, task.name, task.type, task.main_metric, task.groups, task.extra_metrics]
    blob = json.dumps([FINGERPRINT_VERSION, entry, parts, prompts])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def decode_image(raw: bytes, where: str):
    """Image bytes -> RGB PIL image, or a UserError naming the sample. Transparency is laid on
    white by the pipeline's one rule (``datacurate.images.to_rgb``), as the embeddings, filters
    and the offline suite's PNGs lay it, never on black."""
    from PIL import Image, UnidentifiedImageError

    from datacurate.images import to_rgb

    try:
        img = Image.open(io.BytesIO(raw))
        img.load()
    except (UnidentifiedImageError, OSError) as e:
        raise UserError(f"{where}: undecodable image ({e})") from None
    return to_rgb(img)


def iter_samples(task: Task, folder: Path) -> Iterator[tuple]:
    """(image bytes, where, target, metadata or None) per sample, shards in order.

    target = class index (classification) or list of captions (retrieval). Images stay
    encoded here: the runner decodes only those it has not embedded yet in this run.
    """
    import numpy as np
    import webdataset as wds

    dtype = folder / "dataset_type.txt"
    if dtype.is_file() and dtype.read_text().strip().lower() == "multilabel":
        raise UserError(f"{dtype}: multilabel tasks are not supported")
    urls = [str(p) for p in shard_paths(folder)]
    ds = wds.WebDataset(urls, shardshuffle=False, nodesplitter=lambda src: src)
    for i, s in enumerate(ds):
        where = f"{s.get('__url__', folder)}: sample {s.get('__key__', i)!r}"
        raw = next((s[e] for e in IMAGE_EXTS if e in s), None)
        if raw is None:
            raise UserError(f"{where}: no image (expected one of .{', .'.join(IMAGE_EXTS)})")
        if task.type == RETRIEVAL:
            if "txt" not in s:
                raise UserError(f"{where}: no .txt captions (retrieval task)")
            caps = [c for c in s["txt"].decode("utf-8").splitlines() if c.strip()]
            if not caps:
                raise UserError(f"{where}: empty .txt captions")
            yield raw, where, caps, None
        else:
            meta = np.load(io.BytesIO(s["npy"]), allow_pickle=False) if "npy" in s else None
            if task.type == MULTI_OBJECTIVE:          # FairFace/UTKFace: the targets are the metadata
                if meta is None:
                    raise UserError(f"{where}: no .npy attribute row (multi-objective task)")
                yield raw, where, None, meta
                continue
            if "cls" not in s:
                raise UserError(f"{where}: no .cls class index (classification task)")
            try:
                label = int(s["cls"].decode().strip())
            except ValueError:
                raise UserError(f"{where}: .cls is not an integer class index") from None
            yield raw, where, label, meta


def download_task(task: Task, data_root) -> Path:
    """Fetch the task's published webdataset copy from the Hugging Face Hub into data_root/<folder>.

    The real route; offline (HF_HUB_OFFLINE=1) it fails with a clear error.
    """
    folder = task_dir(task, data_root)
    if not task.hf_repo or task.type == UNSUPPORTED:
        raise UserError(f"task {task.key!r} has no Hugging Face webdataset copy to download")
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False"):
        raise UserError(f"cannot download {task.hf_repo} for task {task.key!r}: HF_HUB_OFFLINE=1 (no network). "
                        f"Copy the data to {folder} (layout: docs/eval.md) or unset HF_HUB_OFFLINE.")
    from huggingface_hub import snapshot_download

    # WinoGAViL: the Hub's Parquet export of the dataset (its rows, what `datasets` would load)
    revision = None
    if task.type == ASSOCIATION:
        from .winogavil import PARQUET_REVISION as revision
    try:
        snapshot_download(repo_id=task.hf_repo, repo_type="dataset", local_dir=str(folder), revision=revision)
    except Exception as e:  # noqa: BLE001 - the hub raises many kinds; the user needs one line
        raise UserError(f"downloading {task.hf_repo} to {folder} failed: {type(e).__name__}: {e}") from None
    return folder
