"""Upstream DataComp's baseline assets, read as upstream's ``download()`` leaves them.

A participant who ran upstream's ``baselines.py`` holds them in ``~/.cache/datacomp`` (upstream's
default root; ``$DATACOMP_CACHE`` here points elsewhere): the ImageNet-1k OpenAI ViT-L/14
image features the image-based baseline targets (``in1k_clip_vit_l14_{0..4}.pt``, each a
``torch.save`` of ``{"image_features": tensor}``) and the pool centroids per scale
(``{scale}_centroids.pt``, a ``torch.save`` of a float32 numpy array, 100,000 x 768). Names,
URLs and sha256 are upstream's (``baselines/utils.py``, ``download``). Nothing is fetched here
(this project runs without the web): a missing file is an error that says where to get it.
"""
from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path

import numpy as np

from .api import PoolDataError

_BASE = "https://github.com/sagadre/datacomp_baseline_assets/releases/download/v0.1.0-alpha/"
# name -> sha256, from upstream baselines/utils.py; upstream caches NAME.pt, fetched from _BASE + the
# name (the centroids' release files carry an "_l14" suffix)
SHA256 = {
    "imagenet21k_wordnet_ids": "66362bdedf36d933382edca5493fc562dcc17128ce36403c9e730a75f48cb2f2",
    "in1k_clip_vit_l14_0": "304990fd492f40ba90072b80af78d6e8edcab9d042476ef513e03441cf53743b",
    "in1k_clip_vit_l14_1": "72f008e6aa3bfb54174fa322963215337f843fc90fd642a9dccc815dd9e7ee76",
    "in1k_clip_vit_l14_2": "83c3cc6503b8a50a22cac7023ca6cd61b130ab9725db2a7519f1bec5cabf5493",
    "in1k_clip_vit_l14_3": "83faa289f847799ddcd438e5b74df1cb5973c345674896d10ba31ea48bc63804",
    "in1k_clip_vit_l14_4": "067a45f4a140a93371876510a2fd9198a89ac1d194ae4063a51b45a6da69cadf",
    "small_centroids": "23c66a05e49ad77283c1e2b33355c7eb088ac332a944c97ff85d5dfd48a5b251",
    "medium_centroids": "028b1721b1d0f139c565b6b0ac99f8a1756f4bae89c36b0ec6d1c6ea9b6f112d",
    "large_centroids": "04eeab1069d3540c246cf7ce69323147351a474017fc472e4c50a018ca32240b",
    "xlarge_centroids": "3f62e5f8ae3a715ce84e422846fcfce1536d184455ea234790c4a6465c4c6726",
}


def asset_url(name: str) -> str:
    if name == "imagenet21k_wordnet_ids":
        return _BASE + f"{name}.txt"       # a text file, cached by upstream as NAME.pt all the same
    return _BASE + (f"{name}_l14.pt" if name.endswith("_centroids") else f"{name}.pt")


IN1K_L14 = "in1k_l14"          # a target name: the five ImageNet-1k feature files together
UPSTREAM_SCALES = ("small", "medium", "large", "xlarge")


def cache_dir() -> Path:
    return Path(os.environ.get("DATACOMP_CACHE") or Path.home() / ".cache" / "datacomp")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def asset_path(name: str, verify: bool = True) -> Path:
    """The cached file of an upstream asset; an error naming the URL when it is missing or altered."""
    url, sha = asset_url(name), SHA256[name]
    path = cache_dir() / f"{name}.pt"
    where = f"upstream's baselines download it from {url} into {cache_dir()} (set DATACOMP_CACHE to use another folder)"
    if not path.is_file():
        raise PoolDataError(f"{path}: missing; {where}")
    if verify and os.environ.get("DATACURATE_SKIP_ASSET_SHA256") != "1" and _sha256(path) != sha:
        raise PoolDataError(f"{path}: sha256 differs from upstream's {sha} (a partial or other file); {where}")
    return path


def _torch_load(path: Path):
    import torch

    try:
        # upstream's files hold a numpy array or a dict of tensors: a full unpickle is needed
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise PoolDataError(f"{path}: not a torch file ({type(e).__name__}: {e})") from None


def _as_matrix(obj, path: Path, what: str) -> np.ndarray:
    if isinstance(obj, dict):
        if "image_features" not in obj:
            raise PoolDataError(f"{path}: no 'image_features' key (found {sorted(obj)}); expected upstream's {what}")
        obj = obj["image_features"]
    if hasattr(obj, "detach"):
        obj = obj.detach().cpu().float().numpy()
    x = np.asarray(obj)
    if x.ndim != 2 or len(x) == 0 or not np.issubdtype(x.dtype, np.number):
        raise PoolDataError(f"{path}: holds {x.dtype} shape {x.shape}; expected (rows, dim) numbers: {what}")
    return x.astype(np.float32)


def load_matrix(path: str | Path, what: str, key: str = "img") -> np.ndarray:
    """A (rows, dim) float32 matrix from a .pt (upstream's: array, tensor or {"image_features": ...}),
    .npy, or .npz (``key``)."""
    path = Path(path)
    if not path.is_file():
        raise PoolDataError(f"{path}: no such file ({what})")
    if path.suffix == ".pt":
        return _as_matrix(_torch_load(path), path, what)
    if path.suffix == ".npy":
        return _as_matrix(np.load(path), path, what)
    if path.suffix == ".npz":
        with np.load(path) as z:
            if key not in z.files:
                raise PoolDataError(f"{path}: no key {key!r}; found {z.files}")
            return _as_matrix(z[key], path, what)
    raise PoolDataError(f"{path}: unknown file type {path.suffix!r} for {what}; use .pt, .npy or .npz")


def in1k_l14_features() -> np.ndarray:
    """Upstream's image-based target: the five ImageNet-1k ViT-L/14 feature files, concatenated in order."""
    parts = [load_matrix(asset_path(f"in1k_clip_vit_l14_{i}"), "ImageNet-1k ViT-L/14 image features")
             for i in range(5)]
    return np.concatenate(parts)


def nearest_upstream_scale(pool_rows: int) -> str:
    """The upstream scale whose pool size is nearest (in log) to ``pool_rows``: which centroids fit a pool."""
    from datacurate.scales import SCALES

    return min(UPSTREAM_SCALES, key=lambda s: abs(math.log(max(pool_rows, 1) / SCALES[s].pool_size)))


def load_centroids(spec: str, pool_rows: int | None = None) -> tuple[np.ndarray, str]:
    """``small|medium|large|xlarge`` (upstream's cached centroids), ``auto`` (the scale nearest the
    pool's size) or a file path -> (float32 centroids, what was loaded)."""
    if spec == "auto":
        if pool_rows is None:
            raise PoolDataError("centroids: auto needs the pool's row count")
        spec = nearest_upstream_scale(pool_rows)
    if spec in UPSTREAM_SCALES:
        path = asset_path(f"{spec}_centroids")
        return load_matrix(path, f"upstream's {spec} pool centroids"), f"upstream {spec} centroids ({path})"
    return load_matrix(spec, "k-means centroids"), str(spec)
