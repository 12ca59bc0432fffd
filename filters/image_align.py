"""Is picture A picture B, up to a small crop, a resize and a re-encoding? A check on the pixels.

Perceptual hashes and embeddings find *candidate* copies cheaply, but they cannot settle
it: a crop of a few percent moves a 64-bit pHash by up to ~20 bits, where two different
compositions of one emoji on one background already sit (measured on the offline tiny
pool: at radius 12 a pHash dedup found 88% of the planted near copies). So candidates are
confirmed on the pixels: the centre of the smaller picture (the part any small crop
keeps) is slid over the larger one at the scales their sizes allow, and the best
normalised cross-correlation (OpenCV ``TM_CCOEFF_NORMED``) is the score: about 0.99 for
a re-encoded crop, lower for another composition.
"""
from __future__ import annotations

import io

import numpy as np

WORK_SIDE = 96   # pictures are compared at most this large (pixels, longer side)


class Thumb:
    """A picture shrunk to at most ``WORK_SIDE`` (uint8 RGB), with its original size."""

    __slots__ = ("pixels", "width", "height")

    def __init__(self, image, work_side: int = WORK_SIDE):
        import cv2

        from datacurate.images import to_rgb

        if isinstance(image, (bytes, bytearray, memoryview)):
            from PIL import Image

            image = Image.open(io.BytesIO(bytes(image)))
        image.load()
        a = np.asarray(to_rgb(image))
        self.height, self.width = a.shape[:2]
        f = min(1.0, work_side / max(self.width, self.height))
        if f < 1.0:
            a = cv2.resize(a, (max(1, round(self.width * f)), max(1, round(self.height * f))),
                           interpolation=cv2.INTER_AREA)
        self.pixels = np.ascontiguousarray(a)

    @property
    def scale(self) -> float:
        """Thumbnail pixels per original pixel."""
        return self.pixels.shape[1] / self.width


def _prepare(a: "Thumb", b: "Thumb", inner: float, tolerance: float, step: float):
    """(template, search picture, scales): the smaller picture's centre, the larger picture, and the
    relative scales to try, in the order the search goes (from the lower bound up)."""
    if a.width * a.height > b.width * b.height:
        a, b = b, a
    ta = a.pixels.astype(np.float32)
    tb = b.pixels.astype(np.float32)
    # original a -> original b scale, from the areas; then into thumbnail pixels
    r0 = np.sqrt((b.width * b.height) / (a.width * a.height)) * b.scale / a.scale
    h, w = ta.shape[:2]
    t = ta[int(h * inner): h - int(h * inner), int(w * inner): w - int(w * inner)]
    scales, s = [], r0 * (1 - tolerance)
    while s <= r0 * (1 + tolerance) * 1.0001:
        scales.append(s)
        s *= step
    return t, tb, r0, scales


def _score_at(t: np.ndarray, tb: np.ndarray, s: float) -> float | None:
    """The best correlation of template ``t`` resized by ``s`` anywhere in ``tb`` (None: does not fit)."""
    import cv2

    tw, th = round(t.shape[1] * s), round(t.shape[0] * s)
    if not (4 <= tw <= tb.shape[1] and 4 <= th <= tb.shape[0]):
        return None
    tt = cv2.resize(t, (tw, th), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    r = cv2.matchTemplate(tb, tt, cv2.TM_CCOEFF_NORMED)
    return float(np.nan_to_num(r, nan=-1.0).max())


def alignment_score(a: Thumb, b: Thumb, inner: float = 0.12, tolerance: float = 0.15,
                    step: float = 1.03) -> float:
    """Best correlation of the centre of the smaller picture placed anywhere in the larger one.

    ``inner``: fraction cut from each side of the smaller picture before sliding it (a crop of
    up to that much per side is still found); ``tolerance``: the relative scale is searched
    within +-this of what the two pictures' areas imply (a crop changes the area a little).
    Returns -1 when the pictures are too small to compare.
    """
    t, tb, _, scales = _prepare(a, b, inner, tolerance, step)
    best = -1.0
    for s in scales:
        v = _score_at(t, tb, s)
        if v is not None:
            best = max(best, v)
    return best


def aligned(a: Thumb, b: Thumb, min_alignment: float, inner: float = 0.12, tolerance: float = 0.15,
            step: float = 1.03) -> bool:
    """``alignment_score(a, b) >= min_alignment``, answered as soon as one scale reaches it: the
    same scales, tried from the one the areas imply outwards, so a copy usually stops at the first."""
    t, tb, r0, scales = _prepare(a, b, inner, tolerance, step)
    for s in sorted(scales, key=lambda x: abs(np.log(x / r0))):
        v = _score_at(t, tb, s)
        if v is not None and v >= min_alignment:
            return True
    return -1.0 >= min_alignment        # no scale fits: the score is -1
