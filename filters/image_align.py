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


def alignment_score(a: Thumb, b: Thumb, inner: float = 0.12, tolerance: float = 0.15,
                    step: float = 1.03) -> float:
    """Best correlation of the centre of the smaller picture placed anywhere in the larger one.

    ``inner``: fraction cut from each side of the smaller picture before sliding it (a crop of
    up to that much per side is still found); ``tolerance``: the relative scale is searched
    within +-this of what the two pictures' areas imply (a crop changes the area a little).
    Returns -1 when the pictures are too small to compare.
    """
    import cv2

    if a.width * a.height > b.width * b.height:
        a, b = b, a
    ta = a.pixels.astype(np.float32)
    tb = b.pixels.astype(np.float32)
    # original a -> original b scale, from the areas; then into thumbnail pixels
    r0 = np.sqrt((b.width * b.height) / (a.width * a.height)) * b.scale / a.scale
    h, w = ta.shape[:2]
    t = ta[int(h * inner): h - int(h * inner), int(w * inner): w - int(w * inner)]
    best, s = -1.0, r0 * (1 - tolerance)
    while s <= r0 * (1 + tolerance) * 1.0001:
        tw, th = round(t.shape[1] * s), round(t.shape[0] * s)
        if 4 <= tw <= tb.shape[1] and 4 <= th <= tb.shape[0]:
            tt = cv2.resize(t, (tw, th), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
            r = cv2.matchTemplate(tb, tt, cv2.TM_CCOEFF_NORMED)
            best = max(best, float(np.nan_to_num(r, nan=-1.0).max()))
        s *= step
    return best
