"""Perceptual hashes: copies of a picture (re-encoded, resized, slightly cropped, alpha) match; others don't."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from datacurate.errors import UserError
from filters import image_hash as H


def picture(seed: int, size: int = 256) -> Image.Image:
    """A synthetic 'photo': random coloured shapes on a random background."""
    rng = np.random.default_rng(seed)
    im = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(0, 256, 3)))
    d = ImageDraw.Draw(im)
    for _ in range(12):
        x0, y0 = (int(v) for v in rng.integers(0, size, 2))
        w, h = (int(v) for v in rng.integers(20, size // 2, 2))
        col = tuple(int(v) for v in rng.integers(0, 256, 3))
        (d.ellipse if rng.random() < 0.5 else d.rectangle)([x0, y0, x0 + w, y0 + h], fill=col)
    return im


def encode(im: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    b = io.BytesIO()
    im.save(b, fmt, **kw)
    return b.getvalue()


EVAL = [picture(s) for s in range(30)]
OTHERS = [picture(1000 + s) for s in range(30)]


def test_hamming_known_values():
    assert H.hamming(np.uint64(0), np.uint64(0)) == 0
    assert H.hamming(np.uint64(0), np.uint64(2**64 - 1)) == 64
    assert H.hamming(np.uint64(0b1011), np.uint64(0b0001)) == 2
    d = H.hamming(np.array([1, 3, 7], dtype=np.uint64), np.uint64(0))
    assert d.tolist() == [1, 2, 3]


@pytest.mark.parametrize("kind", ["phash", "dhash"])
def test_copies_match_and_unrelated_do_not(kind):
    fn = H.HASHES[kind]
    ref = H.hash_images((encode(im) for im in EVAL), kind)
    index = H.HashIndex(ref)
    copies = {
        "jpeg q60": [encode(im, "JPEG", quality=60) for im in EVAL],
        "resized 100px": [encode(im.resize((100, 100))) for im in EVAL],
        "cropped 4px": [encode(im.crop((4, 4, 252, 252))) for im in EVAL],
    }
    for what, imgs in copies.items():
        h = np.array([fn(b) for b in imgs], dtype=np.uint64)
        dist, idx = index.nearest(h)
        assert (dist <= H.DEFAULT_MAX_DISTANCE).all(), (what, dist.max())
        assert idx.tolist() == list(range(len(EVAL))), what  # matched to ITS original
    other = H.hash_images((encode(im) for im in OTHERS), kind)
    assert not index.matches(other).any()
    assert index.nearest(other)[0].min() > H.DEFAULT_MAX_DISTANCE


def test_transparent_png_composited_on_white():
    im = EVAL[0]
    rgba = im.convert("RGBA")
    a = np.asarray(rgba).copy()
    a[:40, :, 3] = 0  # top band fully transparent: must read as white, not as hidden colour
    a[:40, :, :3] = 0
    on_white = np.asarray(im).copy()
    on_white[:40] = 255
    h_alpha = H.phash(encode(Image.fromarray(a, "RGBA")))
    h_white = H.phash(encode(Image.fromarray(on_white, "RGB")))
    h_black = H.phash(encode(Image.fromarray(a[:, :, :3], "RGB")))
    assert H.hamming(h_alpha, h_white) == 0
    assert H.hamming(h_alpha, h_black) > 0


def test_undecodable_bytes_give_clear_error():
    with pytest.raises(UserError, match="cannot decode"):
        H.phash(b"not an image")
    with pytest.raises(UserError, match="unknown image hash"):
        H.hash_images([], "ahash")
