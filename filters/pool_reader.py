"""Reading a pool shard by shard: metadata parquet batches with their row-aligned embeddings.

Only what the filters of a recipe need is read: the named columns of
``POOL/metadata/NNNNN.parquet`` (pyarrow, batch by batch), the named keys of the
row-aligned ``NNNNN.npz``, and on demand the images of ``POOL/shards/NNNNN.tar``.
Misaligned embeddings (row counts that differ) are refused with the file named.
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from datacurate.layout import as_pool
from datacurate.uids import check_uid_column

from .api import Batch, Needs, PoolDataError

BATCH_ROWS = 65_536


@dataclass(frozen=True)
class ShardInfo:
    name: str      # NNNNN
    rows: int
    offset: int    # first global row of this shard


def list_shards(pool) -> list[ShardInfo]:
    """Every metadata parquet of the pool in name order, with its row count (from the footer)."""
    import pyarrow.parquet as pq

    lay = as_pool(pool)
    out, offset = [], 0
    for n in lay.shard_ids():
        path = lay.parquet(n)
        try:
            rows = pq.ParquetFile(path).metadata.num_rows
        except Exception as e:
            raise PoolDataError(f"{path}: not a readable parquet file ({e})") from None
        out.append(ShardInfo(n, rows, offset))
        offset += rows
    return out


def npz_shapes(path: Path) -> dict[str, tuple]:
    """{key: shape} of an (uncompressed or compressed) npz without loading the arrays."""
    shapes = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for name in zf.namelist():
                if not name.endswith(".npy"):
                    continue
                with zf.open(name) as f:
                    major, _minor = np.lib.format.read_magic(f)
                    if major == 1:
                        shape, _, _ = np.lib.format.read_array_header_1_0(f)
                    else:
                        shape, _, _ = np.lib.format.read_array_header_2_0(f)
                shapes[name[:-4]] = shape
    except FileNotFoundError:
        raise PoolDataError(f"{path}: no embeddings file; run `datacurate embed` first") from None
    except (zipfile.BadZipFile, ValueError) as e:
        raise PoolDataError(f"{path}: not a readable npz file ({e})") from None
    return shapes




def _check_type(meta: Path, col: str, t) -> None:
    """The metadata columns the stages rely on have upstream's types (else filtering is silently wrong)."""
    import pyarrow as pa

    text = lambda t: pa.types.is_string(t) or pa.types.is_large_string(t)  # noqa: E731
    rules = {"uid": (text, "a string of 32 lowercase hex characters"), "key": (text, "a string"),
             "text": (lambda t: text(t) or pa.types.is_null(t), "a string (or null)"),
             "url": (text, "a string"),
             "original_width": (pa.types.is_integer, "an integer"), "original_height": (pa.types.is_integer, "an integer")}
    ok, want = rules.get(col, (None, None))
    if col.endswith("_similarity_score"):
        ok, want = pa.types.is_floating, "a float (CLIP cosine similarity)"
    if ok is not None and not ok(t):
        raise PoolDataError(f"{meta}: column {col!r} holds {t}; expected {want}, as upstream's metadata")


def check_uids(table, meta: Path, start: int) -> None:
    """Every uid of a batch is 32 lowercase hex characters; the first that is not is named with its row."""
    check_uid_column(table.column("uid"), str(meta), start=start, unique=False, error=PoolDataError)


def check_shard(pool: Path, shard: ShardInfo, needs: Needs, who: dict[str, str] | None = None) -> None:
    """Columns present, embeddings present and row-aligned; ``who`` maps a need to the step asking."""
    import pyarrow.parquet as pq

    who = who or {}
    lay = as_pool(pool)
    meta = lay.parquet(shard.name)
    try:
        schema = pq.ParquetFile(meta).schema_arrow
    except Exception as e:
        raise PoolDataError(f"{meta}: not a readable parquet file ({type(e).__name__}: {e}); "
                            "download the shard again or remove it") from None
    names = set(schema.names)
    for col in ["uid", *needs.columns]:
        if col != "*" and col not in names:
            hint = " (run `datacurate embed` to add CLIP score columns)" if col.endswith("_similarity_score") else ""
            raise PoolDataError(f"{meta}: no column {col!r}, needed by {who.get(col, 'a filter')}{hint}")
    for col in names & {"uid", *needs.columns}:
        _check_type(meta, col, schema.field(col).type)
    if needs.embeddings:
        npz = lay.npz(shard.name)
        shapes = npz_shapes(npz)
        for key in needs.embeddings:
            if key not in shapes:
                raise PoolDataError(f"{npz}: no embeddings {key!r}, needed by {who.get(key, 'a filter')}; "
                                    f"found {sorted(shapes) or 'none'}")
            if len(shapes[key]) != 2 or shapes[key][0] != shard.rows:
                raise PoolDataError(f"{npz}: embeddings {key!r} have {shapes[key][0] if shapes[key] else 0} rows "
                                    f"but {meta.name} has {shard.rows}: misaligned with the metadata")
    if needs.pixels:
        tar = lay.tar(shard.name)
        if not tar.is_file():
            raise PoolDataError(f"{tar}: no image shard, needed by {who.get('pixels', 'a filter')}")
        if "key" not in names:
            raise PoolDataError(f"{meta}: no column 'key' to find images in {tar.name}")


def iter_batches(pool: Path, shard: ShardInfo, needs: Needs, batch_rows: int = BATCH_ROWS) -> Iterator[Batch]:
    """Batches of one shard with the needed columns (always uid) and embedding slices."""
    import pyarrow.parquet as pq

    lay = as_pool(pool)
    meta = lay.parquet(shard.name)
    try:
        pf = pq.ParquetFile(meta)
    except Exception as e:
        raise PoolDataError(f"{meta}: not a readable parquet file ({type(e).__name__}: {e})") from None
    if "*" in needs.columns:
        columns = None
    else:
        columns = ["uid"] + [c for c in needs.columns if c != "uid"]
        if needs.pixels and "key" not in columns:
            columns.append("key")
    emb: dict[str, np.ndarray] = {}
    if needs.embeddings:
        npz = lay.npz(shard.name)
        try:
            with np.load(npz) as z:
                for key in needs.embeddings:
                    emb[key] = z[key]
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise PoolDataError(f"{npz}: not a readable npz file ({type(e).__name__}: {e}); "
                                "run `datacurate embed --force` to write it again") from None
        for key in needs.embeddings:
            if len(emb[key]) != shard.rows:
                raise PoolDataError(f"{npz}: embeddings {key!r} have {len(emb[key])} rows but "
                                    f"{meta.name} has {shard.rows}: misaligned with the metadata")
    tar = lay.tar(shard.name)
    start = 0
    batches = pf.iter_batches(batch_size=batch_rows, columns=columns)
    while True:
        import pyarrow as pa

        try:
            rb = next(batches, None)
        except Exception as e:   # a truncated or corrupt file fails part-way
            raise PoolDataError(f"{meta}: cannot read rows after row {start} ({type(e).__name__}: {e})") from None
        if rb is None:
            break
        table = pa.Table.from_batches([rb])
        n = table.num_rows
        if "uid" in table.column_names:
            check_uids(table, meta, start)
        yield Batch(table, {k: v[start:start + n] for k, v in emb.items()}, shard.name,
                    tar if needs.pixels else None, start)
        start += n
