"""Metadata parquet: upstream DataComp's column names and types, checked with clear errors.

Upstream pool metadata (datacomp ``download_upstream.py`` / the released parquet)
has ``uid, url, text, original_width, original_height, clip_b32_similarity_score,
clip_l14_similarity_score, face_bboxes, sha256``. We require the core columns and
accept the optional ones when their type is right.
"""
from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .errors import UserError
from .uids import check_uid_column

REQUIRED: dict[str, pa.DataType] = {
    "uid": pa.string(),
    "url": pa.string(),
    "text": pa.string(),
    "original_width": pa.int64(),
    "original_height": pa.int64(),
    "sha256": pa.string(),
}

OPTIONAL: dict[str, pa.DataType] = {
    "clip_b32_similarity_score": pa.float32(),
    "clip_l14_similarity_score": pa.float32(),
    "face_bboxes": pa.list_(pa.list_(pa.float64())),
    # img2dataset bookkeeping kept beside the upstream columns
    "key": pa.string(),
    "status": pa.string(),
    "error_message": pa.string(),
    "width": pa.int64(),
    "height": pa.int64(),
}

# the url+text parquet that `pool download` reads
URL_LIST: dict[str, pa.DataType] = {"uid": pa.string(), "url": pa.string(), "text": pa.string()}

_INTS = {pa.int8(), pa.int16(), pa.int32(), pa.int64(), pa.uint8(), pa.uint16(), pa.uint32(), pa.uint64()}
_FLOATS = {pa.float16(), pa.float32(), pa.float64()}


class SchemaError(UserError):
    """A metadata file does not have upstream's columns or types."""


def _compatible(found: pa.DataType, want: pa.DataType) -> bool:
    if found == want:
        return True
    if want in _INTS:
        return found in _INTS
    if want in _FLOATS:
        return found in _FLOATS
    if want == pa.string():
        return found in (pa.string(), pa.large_string())
    if pa.types.is_list(want):
        return pa.types.is_list(found) or pa.types.is_large_list(found)
    return False


def check_schema(schema: pa.Schema, source: str, required: dict[str, pa.DataType] = REQUIRED,
                 optional: dict[str, pa.DataType] = OPTIONAL) -> None:
    """Raise SchemaError naming the file and the column when ``schema`` is off."""
    names = set(schema.names)
    missing = [c for c in required if c not in names]
    if missing:
        raise SchemaError(f"{source}: missing column(s) {', '.join(missing)}; "
                          f"found {', '.join(schema.names)}")
    for col, want in {**required, **optional}.items():
        if col in names:
            found = schema.field(col).type
            if not _compatible(found, want):
                raise SchemaError(f"{source}: column {col!r} has type {found}, expected {want}")


def check_uids(table: pa.Table, source: str, column: str = "uid") -> None:
    """Every uid well-formed and unique; the error names the row."""
    check_uid_column(table.column(column), source, error=SchemaError)


def read_metadata(path: str | os.PathLike, columns: list[str] | None = None,
                  required: dict[str, pa.DataType] = REQUIRED) -> pa.Table:
    """Read one metadata parquet, validating schema and uids."""
    path = Path(path)
    try:
        pf = pq.ParquetFile(path)
    except FileNotFoundError:
        raise SchemaError(f"{path}: no such metadata file") from None
    except Exception as e:
        raise SchemaError(f"{path}: not a readable parquet file ({e})") from None
    check_schema(pf.schema_arrow, str(path), required)
    table = pf.read(columns=columns)
    if "uid" in table.column_names:
        check_uids(table, str(path))
    return table


def cast_to_upstream(table: pa.Table) -> pa.Table:
    """Cast known columns to upstream's exact types (e.g. int32 sizes -> int64)."""
    spec = {**REQUIRED, **OPTIONAL}
    fields = []
    for f in table.schema:
        want = spec.get(f.name)
        fields.append(pa.field(f.name, want if want is not None else f.type))
    return table.cast(pa.schema(fields))


def write_table_atomic(table: pa.Table, path: str | os.PathLike, **kw) -> None:
    """Write a parquet file under a temporary name, then rename: never half-written."""
    from .atomic import atomic_path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, **kw)
