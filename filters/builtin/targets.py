"""Target sets the embedding filters compare the pool with: the pool's held-out splits or a file."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from datacurate.layout import PoolLayout

from ..api import PoolDataError

SPLITS = ("eval", "trusted")


def load_target_embeddings(pool: Path, target: str, model: str, kind: str = "img") -> np.ndarray:
    """``eval``/``trusted`` -> POOL/holdout/{target}.{model}.npz[kind]; ``in1k_l14`` -> upstream's
    ImageNet-1k ViT-L/14 features (filters.upstream_assets); else a file: .npz (key ``kind``), or
    .pt / .npy as upstream saves them (``{"image_features": tensor}``, a tensor or an array)."""
    from ..upstream_assets import IN1K_L14, in1k_l14_features, load_matrix

    if target == IN1K_L14:
        return in1k_l14_features()
    if target not in SPLITS and Path(target).suffix in (".pt", ".npy"):
        return load_matrix(target, "target image embeddings")
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
