"""Perceptual hashes of pixels, for decontamination that survives re-encoding and resizing.

dHash (gradient signs) and pHash (low DCT frequencies vs their median), 64 bits on a
grayscale thumbnail, as plain numpy/PIL; a transparent image is composited on white
first so that the same picture saved with or without alpha hashes alike. Hashes are
`np.uint64`; `HashIndex` finds, for each pool hash, the nearest eval hash by Hamming
distance with faiss' binary index (exact, batched).
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Iterable

import numpy as np

from datacurate.errors import UserError
from datacurate.images import has_alpha, to_rgb

HASH_BITS = 64
# Default Hamming radius for "same picture" with pHash: re-encoding and resizing move a
# 64-bit pHash by 0-6 bits, unrelated pictures sit near 32 (see tests/test_image_hash.py).
DEFAULT_MAX_DISTANCE = 10


def to_gray(image, name: str = "image"):
    """A PIL grayscale ("L") image from bytes, a path or a PIL image; alpha composited on white."""
    from PIL import Image, UnidentifiedImageError

    try:
        if isinstance(image, (bytes, bytearray, memoryview)):
            img = Image.open(io.BytesIO(bytes(image)))
        elif isinstance(image, (str, Path)):
            img = Image.open(image)
        else:
            img = image
        img.load()
    except (UnidentifiedImageError, OSError) as e:
        raise UserError(f"{name}: cannot decode image ({e})") from e
    return to_rgb(img).convert("L") if has_alpha(img) else img.convert("L")


def _bits_to_u64(bits: np.ndarray) -> np.uint64:
    flat = np.asarray(bits, dtype=bool).ravel()
    if flat.size != HASH_BITS:
        raise ValueError(f"expected {HASH_BITS} bits, got {flat.size}")
    return np.uint64(int.from_bytes(np.packbits(flat).tobytes(), "big"))


def dhash(image) -> np.uint64:
    """64-bit difference hash: is each pixel brighter than its right neighbour (9x8 thumbnail)."""
    from PIL import Image

    hash_size = 8
    g = to_gray(image).resize((hash_size + 1, hash_size), Image.Resampling.LANCZOS)
    a = np.asarray(g, dtype=np.float32)
    return _bits_to_u64(a[:, 1:] > a[:, :-1])


def _dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II matrix: (C @ v) is the DCT of v."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    c = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    c[0] /= np.sqrt(2.0)
    return c


_DCT32 = _dct_matrix(32)


def phash(image) -> np.uint64:
    """64-bit perceptual hash: the 8x8 lowest DCT frequencies of a 32x32 thumbnail vs their median."""
    from PIL import Image

    hash_size, n = 8, 32
    g = to_gray(image).resize((n, n), Image.Resampling.LANCZOS)
    a = np.asarray(g, dtype=np.float64)
    low = (_DCT32 @ a @ _DCT32.T)[:hash_size, :hash_size]
    return _bits_to_u64(low > np.median(low))


HASHES = {"phash": phash, "dhash": dhash}


def hash_images(images: Iterable, kind: str = "phash") -> np.ndarray:
    """uint64 array of `kind` hashes ("phash" or "dhash") of many images."""
    if kind not in HASHES:
        raise UserError(f"unknown image hash {kind!r}; choose from {sorted(HASHES)}")
    fn = HASHES[kind]
    return np.fromiter((fn(im) for im in images), dtype=np.uint64)


def hamming(a, b) -> np.ndarray:
    """Hamming distance between uint64 hashes (broadcasting); an int for two scalars."""
    x = np.bitwise_xor(np.asarray(a, dtype=np.uint64), np.asarray(b, dtype=np.uint64))
    if hasattr(np, "bitwise_count"):
        d = np.bitwise_count(x).astype(np.int64)
    else:  # numpy < 2
        d = np.unpackbits(x.reshape(-1, 1).view(np.uint8), axis=1).sum(axis=1).reshape(x.shape)
    return int(d) if d.ndim == 0 else d


def _as_codes(hashes: np.ndarray) -> np.ndarray:
    """uint64 hashes -> (n, 8) uint8 codes for faiss' binary indexes (big-endian bytes)."""
    h = np.ascontiguousarray(np.asarray(hashes, dtype=np.uint64).astype(">u8"))
    return h.view(np.uint8).reshape(-1, 8)


class HashIndex:
    """Exact nearest-hash search over a set of reference (eval) hashes, by Hamming distance."""

    def __init__(self, hashes: np.ndarray):
        import faiss

        self.hashes = np.asarray(hashes, dtype=np.uint64).ravel()
        if len(self.hashes) == 0:
            raise UserError("HashIndex needs at least one reference hash")
        self.index = faiss.IndexBinaryFlat(HASH_BITS)
        self.index.add(_as_codes(self.hashes))

    def nearest(self, hashes: np.ndarray, batch_size: int = 262_144) -> tuple[np.ndarray, np.ndarray]:
        """(distance int64, reference index int64) of the nearest reference for each hash."""
        q = np.asarray(hashes, dtype=np.uint64).ravel()
        dist = np.empty(len(q), dtype=np.int64)
        idx = np.empty(len(q), dtype=np.int64)
        for s in range(0, len(q), batch_size):
            D, I = self.index.search(_as_codes(q[s : s + batch_size]), 1)
            dist[s : s + len(D)] = D[:, 0]
            idx[s : s + len(D)] = I[:, 0]
        return dist, idx

    def matches(self, hashes: np.ndarray, max_distance: int = DEFAULT_MAX_DISTANCE) -> np.ndarray:
        """Boolean mask: True where a hash lies within `max_distance` bits of any reference."""
        return self.nearest(hashes)[0] <= int(max_distance)
