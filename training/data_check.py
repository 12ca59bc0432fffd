"""Check a DATA folder before training starts, so a broken subset fails in seconds, not mid-run.

DATA is what ``datacurate reshard`` writes (docs/formats.md): ``shards/NNNNN.tar``
(webdataset: KEY.jpg, KEY.txt, KEY.json), ``sizes.json`` ({"NNNNN.tar": n}) and
``reshard.json`` (subset fingerprint). Every shard's tar headers are read (no image is
decoded): it must be a complete tar whose every sample has an image and a caption, and
``sizes.json`` must list exactly these shards with their true counts. The result is cached
in the run folder keyed by the shards' names, sizes and mtimes, so a resumed run does not
scan again.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import tarfile
from dataclasses import asdict, dataclass
from pathlib import Path

from datacurate.atomic import write_text_atomic
from datacurate.errors import UserError
from datacurate.images import IMAGE_EXTS   # what open_clip_train's loader renames to "image"
from datacurate.layout import DataLayout


class TrainingDataError(UserError):
    """The DATA folder cannot be trained on; the message names the file and the fault."""


@dataclass
class DataSummary:
    data: str                  # absolute DATA path
    shards: list[str]          # shard file names, sorted
    data_size: int             # samples in all shards
    train_data: str            # the --train-data spec OpenCLIP gets (brace range or '::' list)
    subset_fingerprint: str | None
    data_fingerprint: str      # sha256 over shard names, sizes.json counts and byte sizes

    def as_dict(self) -> dict:
        return asdict(self)


def _shard_samples(path: Path) -> int:
    """Count the samples in one shard; raise if it is not a complete tar or a sample lacks jpg/txt."""
    fsize = path.stat().st_size
    keys: dict[str, set[str]] = {}
    order: list[str] = []
    try:
        with tarfile.open(path, "r:") as tf:
            for m in tf:
                if not m.isfile():
                    continue
                if m.offset_data + m.size > fsize:
                    raise TrainingDataError(f"{path}: corrupt shard: truncated inside member {m.name!r}")
                base = os.path.basename(m.name)
                if "." not in base:
                    continue
                key, ext = base.split(".", 1)
                key = os.path.join(os.path.dirname(m.name), key)
                if key not in keys:
                    keys[key] = set()
                    order.append(key)
                keys[key].add(ext.lower())
    except tarfile.TarError as e:
        raise TrainingDataError(f"{path}: corrupt shard: not a readable tar file ({e})") from None
    if fsize and not keys:
        raise TrainingDataError(f"{path}: corrupt shard: no samples could be read from it")
    for key in order:
        exts = keys[key]
        if not any(e in exts for e in IMAGE_EXTS):
            raise TrainingDataError(f"{path}: sample {key!r} has no image (found {sorted(exts)}; need .jpg)")
        if "txt" not in exts:
            raise TrainingDataError(f"{path}: sample {key!r} has no caption (found {sorted(exts)}; need .txt)")
    return len(order)


def train_data_spec(shard_dir: Path, names: list[str]) -> str:
    """Upstream train.py's shard spec: ``DIR/{00000..00012}.tar`` when contiguous, else a '::' list."""
    nums = [re.fullmatch(r"(\d+)\.tar", n) for n in names]
    if all(nums):
        width = {len(m.group(1)) for m in nums}
        values = [int(m.group(1)) for m in nums]
        if len(width) == 1 and values == list(range(values[0], values[0] + len(values))):
            w = width.pop()
            if len(values) == 1:
                return str(shard_dir / names[0])
            return str(shard_dir / f"{{{values[0]:0{w}d}..{values[-1]:0{w}d}}}.tar")
    return "::".join(str(shard_dir / n) for n in names)


def _stamp(shard_paths: list[Path], sizes_path: Path) -> str:
    h = hashlib.sha256()
    for p in [sizes_path, *shard_paths]:
        st = p.stat()
        h.update(f"{p.name}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()


def check_training_data(data: str | Path, cache: Path | None = None, progress: bool = True) -> DataSummary:
    """Validate DATA and describe it; ``cache`` (a json file) skips the scan when nothing changed."""
    data = Path(data).resolve()
    lay = DataLayout(data)
    shard_dir = lay.shards
    if not data.is_dir():
        raise TrainingDataError(f"{data}: no such data folder (make one with `datacurate reshard`)")
    shard_paths = sorted(shard_dir.glob("*.tar")) if shard_dir.is_dir() else []
    if not shard_paths:
        raise TrainingDataError(f"{shard_dir}: no shards (*.tar) found; a DATA folder from `datacurate reshard` "
                                "holds shards/NNNNN.tar and sizes.json")
    sizes_path = lay.sizes
    if not sizes_path.is_file():
        raise TrainingDataError(f"{sizes_path}: missing (it lists the samples per shard: {{\"00000.tar\": n}})")
    try:
        sizes = json.loads(sizes_path.read_text())
    except json.JSONDecodeError as e:
        raise TrainingDataError(f"{sizes_path}: not valid JSON ({e})") from None
    if not isinstance(sizes, dict) or not all(isinstance(v, int) and v >= 0 for v in sizes.values()):
        raise TrainingDataError(f"{sizes_path}: expected an object of shard name -> sample count")
    names = [p.name for p in shard_paths]
    missing = sorted(set(names) - set(sizes))
    extra = sorted(set(sizes) - set(names))
    if missing or extra:
        raise TrainingDataError(
            f"{sizes_path}: inconsistent with {shard_dir}: "
            + (f"shards not listed: {missing[:5]}{' ...' if len(missing) > 5 else ''} " if missing else "")
            + (f"listed but absent: {extra[:5]}{' ...' if len(extra) > 5 else ''}" if extra else ""))

    stamp = _stamp(shard_paths, sizes_path)
    if cache is not None and cache.is_file():
        try:
            cached = json.loads(cache.read_text())
            if cached.get("stamp") == stamp:
                return DataSummary(**cached["summary"])
        except (json.JSONDecodeError, KeyError, TypeError):
            pass

    from tqdm import tqdm

    for p in tqdm(shard_paths, desc="checking shards", unit="shard",
                  disable=not progress or len(shard_paths) < 2):
        n = _shard_samples(p)
        if n != sizes[p.name]:
            raise TrainingDataError(f"{sizes_path}: says {p.name} has {sizes[p.name]} samples, the shard has {n}")
    data_size = sum(sizes[n] for n in names)
    if data_size == 0:
        raise TrainingDataError(f"{shard_dir}: the shards hold no samples")

    fingerprint = None
    reshard = lay.report
    if reshard.is_file():
        try:
            meta = json.loads(reshard.read_text())
        except json.JSONDecodeError as e:
            raise TrainingDataError(f"{reshard}: not valid JSON ({e})") from None
        fingerprint = meta.get("subset_fingerprint") or meta.get("fingerprint")
    h = hashlib.sha256()
    for p in shard_paths:
        h.update(f"{p.name}:{sizes[p.name]}:{p.stat().st_size};".encode())
    summary = DataSummary(data=str(data), shards=names, data_size=data_size,
                          train_data=train_data_spec(shard_dir, names), subset_fingerprint=fingerprint,
                          data_fingerprint=h.hexdigest())
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(cache, json.dumps({"stamp": stamp, "summary": summary.as_dict()}, indent=1))
    return summary
