"""Target sets the embedding filters compare the pool with: the pool's held-out splits or a file."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from datacurate.layout import PoolLayout

from ..api import PoolDataError

SPLITS = ("eval", "trusted")


def load_target_embeddings(pool: Path, target: str, model: str, kind: str = "img") -> np.ndarray:
    """``eval``/``trusted`` -> POOL/holdout/{target}.{model}.npz[kind]; else an npz path (key ``kind``)."""
    path = PoolLayout.at(pool).holdout_npz(target, model) if target in SPLITS else Path(target)
    if not path.is_file():
        hint = f" (run `datacurate embed --pool {pool} ...` with --arch {model})" if target in SPLITS else ""
        raise PoolDataError(f"{path}: no target embeddings{hint}")
    with np.load(path) as z:
        if kind not in z.files:
            raise PoolDataError(f"{path}: no key {kind!r}; found {z.files}")
        x = np.asarray(z[kind])
    if x.ndim != 2 or len(x) == 0:
        raise PoolDataError(f"{path}: key {kind!r} holds shape {x.shape}, expected (rows, dim) with rows > 0")
    return x.astype(np.float32)


def load_target_images(pool: Path, target: str) -> list[bytes]:
    """Image bytes of a held-out split (POOL/holdout/{target}.parquet column ``image``)."""
    import pyarrow.parquet as pq

    path = PoolLayout.at(pool).holdout_parquet(target)
    if not path.is_file():
        raise PoolDataError(f"{path}: no held-out images to compare against")
    return [b for b in pq.read_table(path, columns=["image"]).column("image").to_pylist() if b]
