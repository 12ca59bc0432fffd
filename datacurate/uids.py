"""128-bit sample ids: hex strings, upstream's ``.npy`` subset files, set operations.

Upstream DataComp stores a subset as ``np.save`` of a *sorted* structured array of
dtype ``[('f0','<u8'),('f1','<u8')]``: the high and low 64-bit halves of each
uid (see datacomp ``baselines/apply_filter.py``). We read and write exactly that.
"""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Iterable

import numpy as np

from .errors import UserError

UID_DTYPE = np.dtype("u8,u8")
HEX_LEN = 32
UID_PATTERN = "^[0-9a-f]{32}$"   # upstream's uid: 32 lowercase hex characters, nothing else
_UID = re.compile(UID_PATTERN)


class UidFileError(UserError):
    """A uid file is not what upstream DataComp writes."""


def make_uid(*parts: object) -> str:
    """A deterministic 128-bit uid (32 lowercase hex) from arbitrary parts."""
    h = hashlib.blake2b(digest_size=16)
    for p in parts:
        h.update(str(p).encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()


def is_uid(s: object) -> bool:
    """32 lowercase hex characters (``int(s, 16)`` alone would also take "0x...", "+..." and "_")."""
    return isinstance(s, str) and _UID.fullmatch(s) is not None


def check_uid_column(column, source: str, *, start: int = 0, unique: bool = True,
                     error: type[UserError] = UidFileError) -> None:
    """Every uid of an arrow column well-formed (and, with ``unique``, none twice); the error names the row.

    The one uid check of metadata, url lists and pool batches; vectorised in arrow, so a
    million-row file is checked without a Python loop. ``start`` is the column's first row
    in ``source`` (a batch of a larger file)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        raise error(f"{source}: column 'uid' holds {column.type}; expected strings of 32 lowercase hex "
                    "characters (upstream's uid format)")
    good = pc.fill_null(pc.match_substring_regex(column, UID_PATTERN), False)
    if not pc.all(good).as_py():
        i = pc.index(good, False).as_py()
        raise error(f"{source}: row {start + i}: uid {column[i].as_py()!r} is not 32 lowercase hex characters "
                    "(upstream's uid format); fix the metadata")
    if unique and pc.count_distinct(column).as_py() != len(column):
        counts = pc.value_counts(column)
        dup = pc.filter(counts.field("values"), pc.greater(counts.field("counts"), 1))[0]
        rows = pc.indices_nonzero(pc.equal(column, dup)).to_pylist()[:2]
        raise error(f"{source}: row {start + rows[1]}: duplicate uid {dup.as_py()} (first at row "
                    f"{start + rows[0]}); each sample needs its own uid")


def hex_to_pairs(uids: Iterable[str], source: str = "<uids>") -> np.ndarray:
    """Hex strings -> structured (u8,u8) array, in the given order."""
    uids = list(uids)
    out = np.empty(len(uids), dtype=UID_DTYPE)
    for i, u in enumerate(uids):
        if not is_uid(u):
            raise UidFileError(f"{source}: row {i}: {u!r} is not a uid (32 lowercase hex characters)")
        out[i] = (int(u[:16], 16), int(u[16:], 16))
    return out


def pairs_to_hex(arr: np.ndarray) -> list[str]:
    return [f"{int(a):016x}{int(b):016x}" for a, b in zip(arr["f0"], arr["f1"])]


def sort_pairs(arr: np.ndarray) -> np.ndarray:
    return np.sort(arr, order=["f0", "f1"])


def validate_pairs(arr: np.ndarray, source: str = "<array>") -> np.ndarray:
    """Check dtype, sortedness and uniqueness; return the array unchanged."""
    if not isinstance(arr, np.ndarray) or arr.dtype != UID_DTYPE:
        found = getattr(arr, "dtype", type(arr).__name__)
        raise UidFileError(
            f"{source}: wrong dtype {found}; expected upstream's structured dtype {UID_DTYPE} "
            "(high and low 64-bit halves of each uid)")
    if arr.ndim != 1:
        raise UidFileError(f"{source}: expected a 1-d array, found shape {arr.shape}")
    if len(arr) > 1:
        hi, lo = arr["f0"], arr["f1"]
        prev_hi, next_hi = hi[:-1], hi[1:]
        bad_order = (next_hi < prev_hi) | ((next_hi == prev_hi) & (lo[1:] < lo[:-1]))
        if bad_order.any():
            i = int(np.argmax(bad_order)) + 1
            raise UidFileError(f"{source}: not sorted: row {i} ({pairs_to_hex(arr[i:i+1])[0]}) "
                               f"comes before row {i-1}; upstream subsets are sorted")
        dup = (next_hi == prev_hi) & (lo[1:] == lo[:-1])
        if dup.any():
            i = int(np.argmax(dup)) + 1
            raise UidFileError(f"{source}: duplicate uid {pairs_to_hex(arr[i:i+1])[0]} at rows {i-1} and {i}")
    return arr


def write_subset(path: str | os.PathLike, uids: Iterable[str] | np.ndarray) -> int:
    """Write a subset file exactly as upstream does (sorted, unique); atomic. Returns its size."""
    arr = uids if isinstance(uids, np.ndarray) and uids.dtype == UID_DTYPE else hex_to_pairs(uids, str(path))
    arr = np.unique(sort_pairs(arr))
    from .atomic import atomic_path

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, arr)
    return len(arr)


def read_subset(path: str | os.PathLike) -> np.ndarray:
    """Read and validate an upstream subset ``.npy``."""
    path = Path(path)
    if not path.exists():
        raise UidFileError(f"{path}: no such uid file")
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as e:  # not an npy at all
        raise UidFileError(f"{path}: not a numpy .npy file ({e})") from None
    return validate_pairs(arr, str(path))


def read_subset_hex(path: str | os.PathLike) -> list[str]:
    return pairs_to_hex(read_subset(path))


def fingerprint(arr: np.ndarray) -> str:
    """sha256 of a sorted uid array's bytes: the same subset gives the same fingerprint."""
    return hashlib.sha256(np.ascontiguousarray(sort_pairs(arr)).tobytes()).hexdigest()


def intersect(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.intersect1d(a, b)


def union(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.union1d(a, b)


def difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.setdiff1d(a, b)
