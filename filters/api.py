"""The one interface every filter implements (in the style of HuggingFace datatrove: small steps).

A filter is a class with typed, documented parameters. It declares what it reads
(``needs``: metadata columns, embeddings by model name, pixels) and answers, for a
``Batch`` of rows, either a boolean keep-mask (``output = "mask"``) or a float score
per row (``output = "score"``; a recipe turns scores into a mask with a threshold or
a top fraction).

Most filters look at one row at a time. A *global* filter (k-means, dedup) needs the
whole pool first: the runner calls ``collect(batch)`` on every batch of the rows that
reach it (pass 1, on executors: returns small picklable arrays), ``fit(parts, ctx)``
once on the driver, then ``__call__(batch)`` on every batch again (pass 2).
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterable

import numpy as np

from datacurate.errors import UserError

_MISSING = object()


class RecipeError(UserError):
    """A recipe names an unknown filter or gives a bad parameter; the message says where."""


class PoolDataError(UserError):
    """Pool files a filter reads are missing, misaligned or malformed."""


@dataclass(frozen=True)
class Param:
    """One filter parameter: its type, default, bounds and a one-line doc."""

    name: str
    type: type | tuple = float
    default: Any = _MISSING
    doc: str = ""
    min: float | None = None
    max: float | None = None
    choices: tuple | None = None
    optional: bool = False  # None is allowed

    @property
    def required(self) -> bool:
        return self.default is _MISSING

    def type_name(self) -> str:
        types = self.type if isinstance(self.type, tuple) else (self.type,)
        s = "|".join(t.__name__ for t in types)
        return s + ("|None" if self.optional else "")

    def describe(self) -> str:
        d = "required" if self.required else f"default {self.default!r}"
        bounds = ""
        if self.choices:
            bounds = f", one of {list(self.choices)}"
        elif self.min is not None and self.max is not None:
            bounds = f", in [{self.min}, {self.max}]"
        elif self.min is not None:
            bounds = f", >= {self.min}"
        elif self.max is not None:
            bounds = f", <= {self.max}"
        return f"{self.name}: {self.type_name()} ({d}{bounds}) {self.doc}".rstrip()

    def check(self, value: Any, where: str) -> Any:
        """Validate and coerce ``value``; raise RecipeError naming ``where`` and the field."""
        if value is None:
            if self.optional:
                return None
            raise RecipeError(f"{where}: field {self.name!r} must not be empty")
        types = self.type if isinstance(self.type, tuple) else (self.type,)
        ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
        if not ok and float in types and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if not ok:
            raise RecipeError(f"{where}: field {self.name!r} must be {self.type_name()}, "
                              f"got {type(value).__name__} {value!r}")
        if self.choices is not None and value not in self.choices:
            raise RecipeError(f"{where}: field {self.name!r} must be one of {list(self.choices)}, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise RecipeError(f"{where}: field {self.name!r} must be a finite number, got {value!r}")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if self.min is not None and value < self.min or self.max is not None and value > self.max:
                raise RecipeError(f"{where}: field {self.name!r} = {value!r} is out of range "
                                  f"[{'' if self.min is None else self.min}, {'' if self.max is None else self.max}]")
        return value


@dataclass
class Needs:
    """What a filter reads: metadata columns, npz embedding keys, the images themselves."""

    columns: list[str] = field(default_factory=list)
    embeddings: list[str] = field(default_factory=list)  # npz keys, e.g. "fnet_img"
    pixels: bool = False

    def merge(self, other: "Needs") -> "Needs":
        return Needs(sorted(set(self.columns) | set(other.columns)),
                     sorted(set(self.embeddings) | set(other.embeddings)),
                     self.pixels or other.pixels)


@dataclass
class Context:
    """Where a filter runs: the pool folder (its root: holdout/ is there), its row count, the run seed, and a
    place for notes."""

    pool: Path
    seed: int = 0
    notes: dict = field(default_factory=dict)
    pool_rows: int | None = None     # rows of the whole pool (the engine counts them once)


class Batch:
    """A slice of one shard: metadata columns (pyarrow), embeddings (numpy), pixels on demand."""

    def __init__(self, table, embeddings: dict[str, np.ndarray] | None = None, shard: str = "",
                 tar_path: Path | None = None, start: int = 0):
        self.table = table
        self.embeddings = embeddings or {}
        self.shard = shard
        self.tar_path = tar_path
        self.start = start  # row offset of this batch inside its shard

    def __len__(self) -> int:
        return self.table.num_rows

    def column(self, name: str) -> np.ndarray:
        """A metadata column as numpy (strings as an object array)."""
        col = self.table.column(name)
        if col.type in (_pa().string(), _pa().large_string()):
            return np.asarray(col.to_pylist(), dtype=object)
        return col.to_numpy(zero_copy_only=False)

    def texts(self) -> list[str]:
        return ["" if t is None else str(t) for t in self.table.column("text").to_pylist()]

    def embedding(self, key: str) -> np.ndarray:
        return self.embeddings[key]

    def take(self, rows: np.ndarray) -> "Batch":
        """The rows at ``rows`` (indices into this batch) as a new batch."""
        rows = np.asarray(rows, dtype=np.int64)
        return Batch(self.table.take(_pa().array(rows)), {k: v[rows] for k, v in self.embeddings.items()},
                     self.shard, self.tar_path, self.start)

    def images(self) -> list:
        """Decoded PIL images of the rows (via the shard's tar and the ``key`` column); None if absent."""
        from PIL import Image

        from datacurate.images import read_tar_images

        if self.tar_path is None or not Path(self.tar_path).is_file():
            raise PoolDataError(f"shard {self.shard}: no image tar {self.tar_path} to read pixels from")
        keys = [str(k) for k in self.table.column("key").to_pylist()]
        blobs = read_tar_images(Path(self.tar_path), keys, self.shard)
        out = []
        for k in keys:
            b = blobs.get(k)
            try:
                out.append(None if b is None else Image.open(io.BytesIO(b)))
            except Exception:
                out.append(None)
        return out


def _pa():
    import pyarrow

    return pyarrow


class Filter:
    """Base class: subclass, set ``name``, ``params``, ``output``, implement ``needs`` and ``__call__``."""

    name: ClassVar[str] = ""
    params: ClassVar[tuple[Param, ...]] = ()
    output: ClassVar[str] = "mask"  # or "score"
    is_global: ClassVar[bool] = False
    source: ClassVar[str] = ""  # where the rule comes from (upstream file, paper)

    def __init__(self, **kwargs):
        where = kwargs.pop("_where", f"filter {self.name!r}")
        known = {p.name: p for p in self.params}
        for k in kwargs:
            if k not in known:
                raise RecipeError(f"{where}: unknown field {k!r} for filter {self.name!r}; "
                                  f"its parameters are {sorted(known) or 'none'}")
        for p in self.params:
            if p.name in kwargs:
                value = p.check(kwargs[p.name], where)
            elif p.required:
                raise RecipeError(f"{where}: filter {self.name!r} needs field {p.name!r} ({p.doc})")
            else:
                value = p.default
            setattr(self, p.name, value)
        self.where = where
        self.validate()

    # ------------------------------------------------------------------ to override
    def validate(self) -> None:
        """Cross-field checks (raise RecipeError with ``self.where``)."""

    def needs(self) -> Needs:
        return Needs()

    def setup(self, ctx: Context) -> None:
        """Driver-side preparation before pass 1 (read a target set, check files)."""

    def __call__(self, batch: Batch) -> np.ndarray:
        raise NotImplementedError

    def collect(self, batch: Batch) -> Any:
        """Pass 1 of a global filter: small picklable arrays from one batch."""
        raise NotImplementedError

    def fit(self, parts: list, ctx: Context) -> None:
        """Between the passes, on the driver: turn the collected parts into state."""

    def default_selection(self) -> dict | None:
        """For score filters: {"top_fraction": f} or {"threshold": t} when the recipe gives none."""
        return None

    # ------------------------------------------------------------------ helpers
    def param_values(self) -> dict:
        return {p.name: getattr(self, p.name) for p in self.params}

    @classmethod
    def describe(cls) -> str:
        doc = (cls.__doc__ or "").strip().splitlines()
        return doc[0] if doc else ""


def pack_uids(uids: Iterable[str]) -> np.ndarray:
    """Hex uids -> (n, 2) uint64 (high, low) without a Python loop per character."""
    arr = np.asarray(list(uids), dtype="U32")
    if len(arr) == 0:
        return np.empty((0, 2), dtype=np.uint64)
    b = np.char.encode(arr, "ascii").view(np.uint8).reshape(len(arr), 32)
    nib = np.where(b >= ord("a"), b - ord("a") + 10, b - ord("0")).astype(np.uint64)
    w = (np.uint64(1) << (np.uint64(4) * np.arange(15, -1, -1, dtype=np.uint64)))
    hi = (nib[:, :16] * w).sum(axis=1, dtype=np.uint64)
    lo = (nib[:, 16:] * w).sum(axis=1, dtype=np.uint64)
    return np.stack([hi, lo], axis=1)


def replace_params(f: Filter, **changes) -> Filter:
    """A copy of filter ``f`` with some parameters changed (validated again)."""
    vals = {**f.param_values(), **changes}
    return type(f)(_where=f.where, **vals)


__all__ = ["Param", "Needs", "Context", "Batch", "Filter", "RecipeError", "PoolDataError",
           "pack_uids", "replace_params"]
