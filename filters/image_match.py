"""A copy detector for eval images pasted into new scenes: local features, then a pixel check.

A perceptual hash sees the whole picture, so an eval image pasted at 40-85% of a new
canvas, on a new background, at a random place, is invisible to it. Here each eval image
(an RGBA emoji: its alpha says which pixels are the art) gives SIFT keypoints of the art
laid on plain black and on plain white (so that its outline gives features of either
contrast, whatever the background is). For a pool image:

1. *candidates*: its SIFT descriptors search all eval descriptors in one faiss index; the
   neighbours within Lowe's ratio of the nearest vote for their eval images (an ambiguous
   descriptor's vote is split); eval images are ranked by their most matches agreeing on
   one scale and position (a coarse Hough grid), so that a textured background's
   scattered matches do not outrank a small copy's few consistent ones;
2. *placement*: for the best candidates, every descriptor match proposes a scale
   (ratio of keypoint sizes) and a position (paste is axis-aligned: no rotation); the
   proposal most other matches agree with wins (a Hough-style vote);
3. *pixel check*: the eval image is resized to that scale (PIL bicubic, as a paste is) and
   slid over a few pixels and sizes around the proposal (masked ``cv2.matchTemplate`` on
   the art's opaque pixels); the
   best placement must reproduce the art everywhere: split into a grid of cells, every
   cell must have few pixels off by more than a JPEG's error. A picture of another
   emoji on the same background (or of the same shapes with other colours, or an arrow
   pointing elsewhere) fails the check in some cell.

Three more stages catch what local features miss:

0. *whole picture*: a picture of the eval image's own shape (square here) is compared as a
   32 x 32 thumbnail with every eval image laid on white (the file itself, or the art
   flattened and resized: a pHash of a mostly-white picture flips bits too easily);
4. *regions*: flat art (a plain bell, a drop, a striped flag) on a textured or graded
   background gives SIFT no keypoint to match, but each of its large flat-colour regions
   survives the paste whole. A colour lookup table says which art colours each of the
   picture's pixels is near; a connected region of one colour whose box aspect and outline
   (a 16 x 16 mask) agree with an art region of that colour says where the whole art
   would sit, and the art is fitted there (+- 3 pixels and sizes) and judged as a search;
5. *search* (off by default: ``deep``): the best few candidates searched exhaustively,
   every size and place (a quarter-resolution pass, then full resolution around its best
   three), for the place where the art's opaque pixels agree (``search_error``) and the
   picture just outside the art's outline differs from the art's edge (``min_contrast``):
   flat art (a plain orange diamond) otherwise "matches" any plain region of its colour.

Every pasted copy must also agree *everywhere*: the mean difference over every window of
an eighth of the art's side stays under ``max_local_error``. A look-alike emoji (a clock
at another hour, keycap 6 for keycap 0) differs in one spot that a mean over the art dilutes.

Eval descriptors and templates are numpy arrays (picklable: a Spark executor gets them
with the filter); the faiss index is rebuilt lazily in each process.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from datacurate.errors import UserError
from datacurate.images import to_rgb

RATIO = 0.8            # Lowe's ratio test (SIFT paper): nearest vs neighbours of other eval images
BACKGROUNDS = (0, 255)  # eval art laid on these greys for its keypoints (outline contrast of either sign)
EVAL_UPSCALES = (2,)   # eval art is small (64 px): detect on it enlarged (finer keypoints for pasted-up copies)
OPAQUE = 0.9           # art pixels judged: at least this opaque (edges mix with an unknown background)
MAX_MATCHES = 64       # matches of one candidate used to propose placements
PAD = 16               # eval pixels of plain background added around the art
REGION_TOL = 28        # region stage: a pixel belongs to a flat colour when no channel is further than this
REGION_GROUP = 12      # ... art colours closer than this share one lookup colour
REGION_MIN_FRAC = 0.12  # ... an art region must cover at least this fraction of the art's opaque pixels
REGION_SHAPE = 16      # ... region outlines are compared as masks of this many cells a side
REGION_MIN_AREA = 30   # ... picture regions smaller than this (pixels) propose nothing
REGION_IOU = 0.6       # ... a pool region proposes a placement when its mask overlaps the art region's this much
REGION_ASPECT = 0.2    # ... and its box's aspect ratio is within this (log) of the art region's


_INDEXES: dict = {}  # fingerprint -> faiss index, per process (Spark workers unpickle the filter per task)


@dataclass
class MatchParams:
    """Knobs of the detector (defaults tuned on the offline tiny pool; see scripts/bench/filter_quality.py)."""

    work_side: int = 256       # pool images larger than this are shrunk first (pixels)
    min_side: int = 32         # pasted copies smaller than this (pixels, in the work image) are not sought: a
                               # plain shape (a circle, a flag) that small fits too many places by chance
    max_keypoints: int = 0     # SIFT keypoints kept per pool image (strongest first; 0: all)
    neighbours: int = 16       # faiss neighbours per pool descriptor
    candidates: int = 16       # eval images placed and pixel-checked per pool image
    search: int = 3            # pixel check slides the template +- this many pixels and sizes
    pixel_tol: float = 56.0    # a pixel is "off" when a channel differs by more than this (0-255)
    max_off: float = 0.15      # ... and a cell fails when more than this fraction of its pixels are off
    grid: int = 4              # cells per side of the grid the art is split into
    min_cell_pixels: int = 6   # cells with fewer art pixels than this are not judged
    min_pixels: int = 40       # placements with fewer opaque art pixels than this are not judged
    min_art_pixels: int = 200  # a pasted copy shows at least this many opaque art pixels: fewer (a stroke or
                               # two of a small copy) fit other art by chance (planted copies: >= 307)
    max_mean_error: float = 24.0  # mean max-channel difference over the art allowed for a copy
    quick_error: float = 80.0  # placements whose unrefined mean difference is above this are not refined
    whole_error: float = 10.0  # whole-picture copy: RMS difference of 32 x 32 thumbnails at most this
    deep: int = 0              # best candidates searched exhaustively when no placement passes (0: none; the
                               # region stage finds what it found on the tiny pool, in a third of the time)
    search_error: float = 15.0  # searched copy: RMS difference over the art's opaque pixels at most this
    min_contrast: float = 25.0  # ... and the picture around the outline differs from the art's edge by this
    sift_contrast: float = 0.02  # SIFT's contrastThreshold on pool images (OpenCV's default 0.04 misses faint outlines)
    regions: int = 6           # flat-colour region placements checked per pool image (0: no region stage)
    max_local_error: float = 56.0  # any pasted copy: mean max-channel difference over every window of 1/8 the
                                   # art's side at most this (a look-alike, another clock time or keycap digit,
                                   # differs in one spot)
    region_error: float = 20.0  # region copy: RMS difference over the art's opaque pixels at most this (its
                                # outline already agrees, so the colours may be as far as a low-quality JPEG's)


@dataclass
class Match:
    """Where eval image ``eval_index`` sits in a pool image, and how well its pixels agree."""

    eval_index: int
    x: int
    y: int
    side: int          # pasted width in work-image pixels
    worst_cell: float  # largest fraction of off pixels in a grid cell (0 = every pixel agrees)
    mean_error: float  # mean max-channel absolute difference over the art's pixels
    votes: float
    how: str = "features"  # "whole" (thumbnail), "features" (placed by matches) or "search" (exhaustive)
    contrast: float = 0.0  # search: RMS difference between the art's edge colours and the picture around it
    local_error: float = 0.0  # the worst mean difference over a window of 1/8 the art's side (see MatchParams)
    pixels: int = 0  # opaque art pixels judged (whole-picture copies: 0, not counted)


def _rank(m: Match) -> tuple:
    return (max(m.worst_cell, 0.02), m.mean_error)


def _open(data, name: str):
    """A loaded PIL image from bytes or a PIL image; a clear error naming ``name`` otherwise."""
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(io.BytesIO(data)) if isinstance(data, (bytes, bytearray, memoryview)) else data
        img.load()
    except (UnidentifiedImageError, OSError) as e:
        raise UserError(f"{name}: cannot decode image ({e})") from e
    return img


def _rgba(data, name: str) -> np.ndarray:
    return np.asarray(_open(data, name).convert("RGBA"))


def _thumb(rgb: np.ndarray) -> np.ndarray:
    """A 32 x 32 thumbnail (box-averaged) of an RGB picture as a float vector."""
    import cv2

    return cv2.resize(rgb.astype(np.float32), (32, 32), interpolation=cv2.INTER_AREA).ravel()


CONTRAST_CAP = 60.0  # outline contrast beyond this is no more evidence (keeps one term from swamping the other)


def _fit_map(img: np.ndarray, art) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(score, error, contrast) maps of the RGBA PIL image ``art`` at every place in ``img``.

    error: RMS difference over the art's opaque pixels. contrast: RMS difference between the
    picture on a band just outside the art's outline and the art's own colours carried out
    onto that band (capped). score = error - contrast / 2: low where the art is reproduced
    *and* stands out, so a plain region of the art's colour does not win the search.
    """
    import cv2

    a = np.asarray(art, np.float32)
    if a.shape[0] > img.shape[0] or a.shape[1] > img.shape[1]:
        return None
    on = (a[..., 3] >= 250).astype(np.float32)
    if on.sum() < 8:
        return None
    k = 3 + 2 * int(np.ceil(2 * a.shape[0] / 64))  # the band: past the art's soft (resampled) edge
    band = (cv2.dilate(on, np.ones((k, k), np.uint8)) > 0) & (a[..., 3] <= 20)
    near = cv2.boxFilter(a[..., :3] * on[..., None], -1, (k, k), normalize=False)
    near /= np.maximum(cv2.boxFilter(on, -1, (k, k), normalize=False), 1e-6)[..., None]

    def rms(tpl, mask):
        r = cv2.matchTemplate(img, np.ascontiguousarray(tpl, np.float32), cv2.TM_SQDIFF,
                              mask=np.ascontiguousarray(np.repeat(mask[..., None], 3, axis=2), np.float32))
        return np.sqrt(np.maximum(np.nan_to_num(r, nan=1e12), 0) / (3 * mask.sum()))

    err = rms(a[..., :3], on)
    contrast = np.minimum(rms(np.where(band[..., None], near, 0), band.astype(np.float32)), CONTRAST_CAP) \
        if band.sum() >= 8 else np.zeros_like(err)
    return err - 0.5 * contrast, err, contrast


def _fit_in(img: np.ndarray, art: np.ndarray, x0: int, y0: int, x1: int, y1: int):
    """(score, error, contrast, side, x, y) of the (resized, RGBA) ``art`` at its best place inside
    the window [x0, x1) x [y0, y1) of ``img`` (clipped to the picture), or None."""
    h, w = img.shape[:2]
    sh, side = art.shape[:2]
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    if x1 - x0 < side or y1 - y0 < sh:
        return None
    r = _fit_map(img[y0:y1, x0:x1], art)
    if r is None:
        return None
    j = np.unravel_index(int(np.argmin(r[0])), r[0].shape)
    return float(r[0][j]), float(r[1][j]), float(r[2][j]), side, x0 + int(j[1]), y0 + int(j[0])


def _luma(rgb: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.cvtColor(np.ascontiguousarray(rgb, dtype=np.uint8), cv2.COLOR_RGB2GRAY)


def _root_sift(d: np.ndarray) -> np.ndarray:
    """RootSIFT (Arandjelovic & Zisserman 2012): L1-normalise, square root; L2 then compares like Hellinger."""
    d = d.astype(np.float32)
    d /= d.sum(axis=1, keepdims=True) + 1e-7
    return np.sqrt(d)


def _sift(max_keypoints: int = 0, contrast: float = 0.04):
    import cv2

    return cv2.SIFT_create(nfeatures=max_keypoints, contrastThreshold=contrast)


def _art_regions(a: np.ndarray) -> list[tuple[np.ndarray, tuple[int, int, int, int], np.ndarray]]:
    """(colour, box x y w h, outline mask) of each large flat-colour region of RGBA art ``a``.

    Flat art (a plain bell, a drop, a striped flag) has few keypoints, but its colour regions
    survive a paste whole: the same shape at a new size, so a pool region of that colour and
    outline says where the art would sit.
    """
    import cv2

    on = a[..., 3] >= 250
    if on.sum() < 30:
        return []
    px = a[..., :3][on].astype(np.float32)
    q = (px // 16).astype(np.int32)
    key = (q[:, 0] << 8) | (q[:, 1] << 4) | q[:, 2]
    left = np.ones(len(px), bool)
    out = []
    for _ in range(6):  # the most common colours, one at a time
        if left.sum() < REGION_MIN_FRAC * on.sum():
            break
        c = px[left & (key == np.bincount(key[left]).argmax())].mean(axis=0)
        c = px[left & (np.abs(px - c).max(axis=1) <= REGION_TOL)].mean(axis=0)
        near = np.abs(px - c).max(axis=1) <= REGION_TOL
        left &= ~near
        if near.sum() < REGION_MIN_FRAC * on.sum():
            continue
        m = np.zeros(on.shape, np.uint8)
        m[on] = near
        n, lab, st, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
        for j in range(1, n):
            x, y, w, h, area = (int(v) for v in st[j])
            if area >= REGION_MIN_FRAC * on.sum() and min(w, h) >= 4:
                shape = (lab[y:y + h, x:x + w] == j).astype(np.float32)
                out.append((c, (x, y, w, h), _outline(shape)))
    return out


def _outline(mask: np.ndarray) -> np.ndarray:
    import cv2

    small = cv2.resize(mask, (REGION_SHAPE, REGION_SHAPE), interpolation=cv2.INTER_AREA)
    return cv2.GaussianBlur(small, (3, 3), 0.8).ravel()  # a thin stroke a cell off still overlaps itself


class EvalIndex:
    """Eval images ready to be found in pool images (build once, call ``find`` per image)."""

    def __init__(self, images: list, params: MatchParams | None = None, names: list[str] | None = None):
        import cv2
        from PIL import Image

        self.params = params or MatchParams()
        if not images:
            raise UserError("image copy detection needs at least one eval image")
        sift = _sift()
        self.templates: list[np.ndarray] = []
        desc, owner, pts, sizes = [], [], [], []
        for i, data in enumerate(images):
            a = _rgba(data, names[i] if names else f"eval image {i}")
            self.templates.append(a)
            af = a.astype(np.float32)
            alpha = af[..., 3:] / 255.0
            for up, bg in ((u, b) for u in EVAL_UPSCALES for b in BACKGROUNDS):
                # no mask: the art alone on a plain grey has no other features, and the outline's
                # own keypoints (centred just off the art) are kept; padded so the edges count too
                rgb = np.pad(af[..., :3] * alpha + bg * (1.0 - alpha), ((PAD, PAD), (PAD, PAD), (0, 0)),
                             constant_values=bg)
                big = cv2.resize(rgb, None, fx=up, fy=up, interpolation=cv2.INTER_CUBIC)
                kp, d = sift.detectAndCompute(_luma(np.clip(big, 0, 255)), None)
                if d is None:
                    continue
                desc.append(_root_sift(d))
                owner.append(np.full(len(kp), i, np.int32))
                pts.append(np.array([k.pt for k in kp], np.float32) / up - PAD)
                sizes.append(np.array([k.size for k in kp], np.float32) / up)
        if not desc:
            raise UserError("no eval image gives any local feature (all blank?)")
        self.desc = np.ascontiguousarray(np.concatenate(desc))
        self.owner = np.concatenate(owner)
        self.pts = np.concatenate(pts)
        self.sizes = np.concatenate(sizes)
        self.widths = np.array([t.shape[1] for t in self.templates], np.float64)
        self.thumbs = np.stack([_thumb(np.asarray(to_rgb(Image.fromarray(t)))) for t in self.templates])
        self.aspects = np.array([t.shape[1] / t.shape[0] for t in self.templates], np.float64)
        self._build_regions()
        self._index = None

    def _build_regions(self) -> None:
        """The eval art's flat-colour regions, and a lookup table of which region colours each colour is near."""
        found = [(i, r) for i, t in enumerate(self.templates) for r in _art_regions(t)]
        self.region_eval = np.array([i for i, _ in found], np.int32)
        self.region_box = np.array([r[1] for _, r in found], np.float32).reshape(-1, 4)
        self.region_shape = np.array([r[2] for _, r in found], np.float32).reshape(-1, REGION_SHAPE ** 2)
        colours = np.array([r[0] for _, r in found], np.float32).reshape(-1, 3)
        groups: list[np.ndarray] = []  # greedy: each colour joins the first group within REGION_GROUP
        self.region_group = np.zeros(len(found), np.int32)
        for k, c in enumerate(colours):
            g = next((j for j, gc in enumerate(groups) if np.abs(gc - c).max() <= REGION_GROUP), None)
            if g is None:
                g = len(groups)
                groups.append(c)
            self.region_group[k] = g
        # colours at 32 levels a channel (cell = r >> 3, g >> 3, b >> 3): member[g, cell] when the cell's
        # colour is within REGION_TOL of group g's (a pixel may belong to two close groups: none is split)
        cells = np.stack(np.meshgrid(*[np.arange(32)] * 3, indexing="ij"), axis=-1).reshape(-1, 3) * 8 + 4
        gc = np.array(groups, np.float32).reshape(-1, 3)
        self.region_member = np.stack([np.abs(cells - c).max(axis=1) <= REGION_TOL for c in gc]) \
            if len(gc) else np.zeros((0, len(cells)), bool)

    def __getstate__(self):
        s = dict(self.__dict__)
        s["_index"] = None  # faiss indexes do not pickle; rebuilt where used
        return s

    @property
    def index(self):
        if self._index is None:
            key = self.fingerprint()
            self._index = _INDEXES.get(key)
        if self._index is None:
            import faiss

            n, d = self.desc.shape
            if n < 20_000:
                index = faiss.IndexFlatL2(d)
            else:  # a graph index: no training, ~1 ms per hundred queries
                index = faiss.IndexHNSWFlat(d, 32)
                index.hnsw.efConstruction = 64
                index.hnsw.efSearch = 40
            index.add(self.desc)
            self._index = _INDEXES[self.fingerprint()] = index
        return self._index

    def fingerprint(self) -> str:
        """What the descriptors are (a process reuses one faiss index for equal eval sets)."""
        import hashlib

        if not getattr(self, "_fingerprint", None):
            h = hashlib.blake2b(self.desc.tobytes(), digest_size=16)
            h.update(self.owner.tobytes())
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    # ------------------------------------------------------------------ per pool image
    def find(self, image) -> Match | None:
        """The best-verified eval image inside ``image`` (PIL image or bytes), or None."""
        import cv2

        p = self.params
        rgb = np.asarray(to_rgb(_open(image, "image")))
        h, w = rgb.shape[:2]
        if min(h, w) < p.min_side:
            return None
        whole = self._whole(rgb)
        if whole is not None:
            return whole
        f = min(1.0, p.work_side / max(h, w))
        if f < 1.0:
            rgb = cv2.resize(rgb, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
        kp, d = _sift(p.max_keypoints, p.sift_contrast).detectAndCompute(_luma(rgb), None)
        if d is None or len(kp) == 0:
            return self._regions(rgb) if p.regions else None
        q = _root_sift(d)
        qpts = np.array([k.pt for k in kp], np.float32)
        qsizes = np.array([k.size for k in kp], np.float32)
        dist, nn = self.index.search(q, p.neighbours)
        valid = nn >= 0
        own = np.where(valid, self.owner[np.maximum(nn, 0)], -1)
        close = valid & (dist <= dist[:, :1] / (RATIO * RATIO))
        ranked = self._rank_candidates(own, close, qpts, qsizes, nn, rgb.shape[:2])
        best: Match | None = None
        for e, support, v in ranked[:p.candidates]:
            rows, cols = np.nonzero(close & (own == e))
            j = nn[rows, cols]
            m = self._verify(rgb, e, qpts[rows], qsizes[rows], self.pts[j], self.sizes[j], v)
            if m is not None and (best is None or _rank(m) < _rank(best)):
                best = m
        if self.is_copy(best):
            return best
        if p.regions:
            m = self._regions(rgb)
            if self.is_copy(m):
                return m
        for e, _, v in ranked[:p.deep]:
            m = self._search(rgb, e, v)
            if self.is_copy(m):
                return m
        return best

    def _whole(self, rgb: np.ndarray) -> Match | None:
        """The eval image whose thumbnail the whole picture (laid on white) reproduces, if any."""
        h, w = rgb.shape[:2]
        same_shape = np.abs(np.log((w / h) / self.aspects)) <= 0.02
        if not same_shape.any():
            return None
        err = np.sqrt(((self.thumbs - _thumb(rgb)[None]) ** 2).mean(axis=1))
        err[~same_shape] = np.inf
        e = int(np.argmin(err))
        if err[e] > self.params.whole_error:
            return None
        return Match(e, 0, 0, w, 0.0, float(err[e]), 0.0, how="whole")

    def _search(self, rgb: np.ndarray, e: int, votes: float, coarse: int = 4) -> Match | None:
        """Every size and place of eval image ``e`` in ``rgb``: the best by art agreement and outline contrast."""
        import cv2
        from PIL import Image

        p = self.params
        h, w = rgb.shape[:2]
        art = Image.fromarray(self.templates[e])
        img = rgb.astype(np.float32)
        small = cv2.resize(img, (w // coarse, h // coarse), interpolation=cv2.INTER_AREA)
        rough = []
        for t in range(max(6, p.min_side // coarse), min(h, w) // coarse + 1):
            r = _fit_map(small, art.resize((t, t), Image.BOX))
            if r is not None:
                j = np.unravel_index(int(np.argmin(r[0])), r[0].shape)
                rough.append((float(r[0][j]), t, j[1], j[0]))
        best = None
        for _, t, x, y in sorted(rough)[:3]:
            for side in range(max(p.min_side, (t - 1) * coarse), min(h, w, (t + 1) * coarse) + 1):
                x0, y0 = max(0, (x - 1) * coarse - 1), max(0, (y - 1) * coarse - 1)
                fit = _fit_in(img, self._art(e, side, side), x0, y0,
                              (x + 1) * coarse + side + 1, (y + 1) * coarse + side + 1)
                if fit is not None and (best is None or fit[0] < best[0]):
                    best = fit
        if best is None:
            return None
        _, err, contrast, side, x, y = best
        return self._judged(rgb, Match(e, x, y, side, 0.0, err, float(votes), how="search", contrast=contrast))

    def _regions(self, rgb: np.ndarray) -> Match | None:
        """Flat-colour regions of the picture whose outline is an eval art region's: placed, then fitted nearby.

        A lookup table says which art colours (groups of close ones) each pixel is near; each
        connected region of pixels near one colour is compared with the art regions of that
        colour by box aspect and outline; an agreeing pair gives the art's size and place,
        where the art is fitted (+- 3 pixels and sizes) and judged. The first copy found, or
        the best fit.
        """
        import cv2

        p = self.params
        h, w = rgb.shape[:2]
        q = rgb.astype(np.int32) >> 3
        cell = (q[..., 0] << 10) | (q[..., 1] << 5) | q[..., 2]
        counts = self.region_member @ np.bincount(cell.ravel(), minlength=self.region_member.shape[1])
        proposals = []
        for g in np.nonzero(counts >= REGION_MIN_AREA)[0]:
            mine = np.nonzero(self.region_group == g)[0]
            box = self.region_box[mine]
            n, lab, st, _ = cv2.connectedComponentsWithStats(self.region_member[g][cell].astype(np.uint8),
                                                             connectivity=8)
            for j in np.nonzero((st[:, 4] >= REGION_MIN_AREA) & (np.minimum(st[:, 2], st[:, 3]) >= 4))[0]:
                x, y, bw, bh = (int(v) for v in st[j, :4])
                if j == 0 or bw * bh > 0.9 * h * w:  # 0: the pixels near no art colour
                    continue
                ok = mine[np.abs(np.log((bw / bh) / (box[:, 2] / box[:, 3]))) < REGION_ASPECT]
                if len(ok) == 0:
                    continue
                shape = _outline((lab[y:y + bh, x:x + bw] == j).astype(np.float32))
                a = self.region_shape[ok]
                iou = np.minimum(a, shape).sum(axis=1) / np.maximum(np.maximum(a, shape).sum(axis=1), 1e-6)
                for k in np.nonzero(iou >= REGION_IOU)[0]:
                    rx, ry, rw, rh = self.region_box[ok[k]]
                    s = 0.5 * (bw / rw + bh / rh)
                    e = int(self.region_eval[ok[k]])
                    if s * self.widths[e] >= p.min_side:
                        proposals.append((-float(iou[k]), e, s, x - s * rx, y - s * ry))
        img = rgb.astype(np.float32)
        best, tried = None, set()
        for _, e, s, tx, ty in sorted(proposals):
            th, tw = self.templates[e].shape[:2]
            key = (e, round(s * tw / 4), round(tx / 4), round(ty / 4))  # one fit per place
            if key in tried:
                continue
            if len(tried) >= p.regions:
                break
            tried.add(key)
            fit = None
            for side in range(max(1, round(s * tw) - 3), round(s * tw) + 4):
                a = self._art(e, side)
                sh = a.shape[0]
                cx, cy = tx + (s * tw - side) / 2, ty + (s * th - sh) / 2  # a size change keeps the centre
                f = _fit_in(img, a, int(cx) - 4, int(cy) - 4, int(cx) + side + 5, int(cy) + sh + 5)
                if f is not None and (fit is None or f[0] < fit[0]):
                    fit = f
            if fit is None:
                continue
            _, err, contrast, side, x, y = fit
            m = self._judged(rgb, Match(e, x, y, side, 0.0, err, 0.0, how="regions", contrast=contrast))
            if self.is_copy(m):
                return m
            if best is None or fit[0] < best[0]:
                best = (fit[0], m)
        return best[1] if best else None

    def _rank_candidates(self, own, close, qpts, qsizes, nn, shape) -> list[tuple[int, float, float]]:
        """(eval index, geometric support, votes), best first.

        Votes: a descriptor whose close neighbours name one eval image gives it 1, an ambiguous
        one splits its vote. Support: the most matches of one eval image that agree on a single
        scale and position (a coarse Hough grid, two offsets), so that a textured background's
        many scattered matches do not outrank a small pasted copy's few consistent ones.
        """
        r, c = np.nonzero(close)
        o = own[r, c]
        if len(o) == 0:
            return []
        weight = 1.0 / np.bincount(r, minlength=len(close))[r]  # an ambiguous descriptor's vote is split
        share = np.bincount(o, weights=weight, minlength=len(self.templates))
        j = nn[r, c]
        sc = qsizes[r] / np.maximum(self.sizes[j], 1e-3)
        t = qpts[r] - sc[:, None] * self.pts[j]
        pasted = sc * self.widths[o]
        fits = (pasted >= self.params.min_side) & (pasted <= 1.1 * max(shape))  # a copy that fits the image
        r, o, sc, t, weight = r[fits], o[fits], sc[fits], t[fits], weight[fits]
        support = np.zeros(len(self.templates))
        for off in (0.0, 0.5):
            bs = np.floor(np.log2(sc) / 0.4 + off)
            cell = np.maximum(3.0, 2.0 ** ((bs + 0.5 - off) * 0.4) * self.widths[o] / 4)
            bx, by = np.floor(t[:, 0] / cell + off), np.floor(t[:, 1] / cell + off)
            key = np.stack([o, bs, bx, by, r], axis=1)
            key, first = np.unique(key, axis=0, return_index=True)  # a query keypoint counts once per bin
            bins, inv = np.unique(key[:, :4], axis=0, return_inverse=True)
            n = np.bincount(inv.ravel(), weights=weight[first])
            np.maximum.at(support, bins[:, 0].astype(np.int64), n)
        cand = np.nonzero(share > 0)[0]
        order = sorted(cand.tolist(), key=lambda e: (-support[e], -share[e], e))
        return [(e, float(support[e]), float(share[e])) for e in order]

    def _placements(self, e: int, qp, qs, ep, es, shape) -> list[tuple[float, float, float]]:
        """(scale, tx, ty) proposals, best supported first: pool = scale * eval + t."""
        pasted = qs / np.maximum(es, 1e-3) * self.widths[e]
        fits = (pasted >= self.params.min_side) & (pasted <= 1.1 * max(shape))
        qp, qs, ep, es = qp[fits], qs[fits], ep[fits], es[fits]
        if len(qs) > MAX_MATCHES:  # a textured background: keep the matches of the most similar sizes
            keep = np.argsort(np.abs(np.log(qs / np.maximum(es, 1e-3)) - np.median(np.log(qs / np.maximum(es, 1e-3)))),
                              kind="stable")[:MAX_MATCHES]
            qp, qs, ep, es = qp[keep], qs[keep], ep[keep], es[keep]
        s = qs / np.maximum(es, 1e-3)
        t = qp - s[:, None] * ep
        side = self.templates[e].shape[1]
        n = len(s)
        support = np.zeros(n)
        for i in range(n):
            tol = max(2.0, 0.08 * s[i] * side)
            ok = (np.abs(np.log(s / s[i])) < 0.25) & (np.hypot(*(t - t[i]).T) < tol)
            support[i] = ok.sum()
        out = []
        for i in np.argsort(-support, kind="stable"):
            tol = max(2.0, 0.08 * s[i] * side)
            ok = (np.abs(np.log(s / s[i])) < 0.25) & (np.hypot(*(t - t[i]).T) < tol)
            if ok.sum() >= 2:  # least squares on the agreeing matches
                a = np.zeros((2 * ok.sum(), 3))
                a[0::2, 0], a[0::2, 1] = ep[ok, 0], 1
                a[1::2, 0], a[1::2, 2] = ep[ok, 1], 1
                sol = np.linalg.lstsq(a, qp[ok].reshape(-1), rcond=None)[0]
                cand = (float(sol[0]), float(sol[1]), float(sol[2]))
                if not (0.5 * s[i] < cand[0] < 2 * s[i]):
                    cand = (float(s[i]), float(t[i, 0]), float(t[i, 1]))
            else:
                cand = (float(s[i]), float(t[i, 0]), float(t[i, 1]))
            if all(abs(np.log(cand[0] / o[0])) > 0.05 or np.hypot(cand[1] - o[1], cand[2] - o[2]) > 2 for o in out):
                out.append(cand)
            if len(out) >= 3:
                break
        return out

    def _verify(self, rgb, e, qp, qs, ep, es, votes) -> Match | None:
        """Pixel-check the placements of eval image ``e`` its matches propose; the best or None."""
        p = self.params
        quick = []
        for scale, tx, ty in self._placements(e, qp, qs, ep, es, rgb.shape[:2]):
            err = self._quick_error(rgb, e, scale, tx, ty)
            if err is not None and err <= p.quick_error:
                quick.append((err, scale, tx, ty))
        best = None
        for _, scale, tx, ty in sorted(quick)[:2]:
            m = self._pixel_check(rgb, e, scale, tx, ty, votes)
            if m is not None and (best is None or _rank(m) < _rank(best)):
                best = m
        return best

    def _quick_error(self, rgb, e, scale, tx, ty) -> float | None:
        """Mean colour difference of the art laid where proposed (no search): a cheap first sieve."""
        import cv2

        tpl = self.templates[e]
        th, tw = tpl.shape[:2]
        side, sh = int(round(scale * tw)), int(round(scale * th))
        h, w = rgb.shape[:2]
        if side < self.params.min_side or side > w or sh > h:
            return None
        x, y = min(max(0, int(round(tx))), w - side), min(max(0, int(round(ty))), h - sh)
        r = cv2.resize(tpl, (side, sh), interpolation=cv2.INTER_AREA if side < tw else cv2.INTER_LINEAR)
        on = r[..., 3] >= 128
        if on.sum() < self.params.min_pixels:
            return None
        d = np.abs(rgb[y:y + sh, x:x + side].astype(np.int16) - r[..., :3].astype(np.int16)).max(axis=2)
        return float(d[on].mean())

    def _pixel_check(self, rgb, e, scale, tx, ty, votes) -> Match | None:
        """Slide the art (resized like the paste) over nearby places and sizes; judge the best fit."""
        import cv2

        p = self.params
        tpl = self.templates[e]
        th, tw = tpl.shape[:2]
        h, w = rgb.shape[:2]
        img = rgb.astype(np.float32)
        fit = None
        for side in range(int(round(scale * tw)) - p.search, int(round(scale * tw)) + p.search + 1):
            sh = max(1, round(side * th / tw))
            if side < p.min_side or side > w or sh > h:
                continue
            r = self._art(e, side)
            on = r[..., 3] >= 255 * OPAQUE
            if on.sum() < max(p.min_pixels, 0.5 * (r[..., 3] >= 128).sum()):
                continue  # thin art at this size: too few solid pixels to tell it from a plain patch
            cx = tx + scale * tw / 2 - side / 2  # a size change keeps the proposed centre
            cy = ty + scale * th / 2 - sh / 2
            x0, y0 = max(0, int(np.floor(cx)) - p.search), max(0, int(np.floor(cy)) - p.search)
            x1, y1 = min(w - side, int(np.ceil(cx)) + p.search), min(h - sh, int(np.ceil(cy)) + p.search)
            if x1 < x0 or y1 < y0:
                continue
            mask = np.repeat(on[..., None], 3, axis=2).astype(np.float32)
            res = cv2.matchTemplate(img[y0:y1 + sh, x0:x1 + side], np.ascontiguousarray(r[..., :3]),
                                    cv2.TM_SQDIFF, mask=mask)
            res = np.nan_to_num(res, nan=np.inf) / on.sum()
            yy, xx = np.unravel_index(int(np.argmin(res)), res.shape)
            if fit is None or res[yy, xx] < fit[0]:
                fit = (float(res[yy, xx]), x0 + int(xx), y0 + int(yy), side, sh, r)
        if fit is None:
            return None
        _, x, y, side, sh, r = fit
        worst, mean, local, pixels = self._judge(img[y:y + sh, x:x + side], r)
        return Match(e, x, y, side, worst, mean, float(votes), local_error=local, pixels=pixels)

    def _art(self, e: int, side: int, sh: int | None = None) -> np.ndarray:
        """Eval image ``e`` resized as a paste is (PIL bicubic) to ``side`` wide (and ``sh`` high; by
        default its own aspect), as float RGBA."""
        from PIL import Image

        tpl = self.templates[e]
        sh = sh or max(1, round(side * tpl.shape[0] / tpl.shape[1]))
        return np.asarray(Image.fromarray(tpl).resize((side, sh), Image.BICUBIC), np.float32)

    def _judged(self, rgb: np.ndarray, m: Match | None) -> Match | None:
        """``m`` (a searched or region placement) with its grid and local errors measured."""
        if m is None:
            return None
        r = self._art(m.eval_index, m.side)
        patch = rgb[m.y:m.y + r.shape[0], m.x:m.x + m.side].astype(np.float32)
        m.worst_cell, _, m.local_error, m.pixels = self._judge(patch, r)
        return m

    def _judge(self, patch: np.ndarray, r: np.ndarray) -> tuple[float, float, float, int]:
        """(worst grid cell's fraction of off pixels, mean error, worst local mean error, opaque pixels)
        of the art ``r`` (RGBA) over ``patch``.

        The art is laid over the patch itself (its transparent parts show the patch), both are
        blurred a little (JPEG's ringing and a half-pixel shift are not differences), and
        the art's pixels are compared.
        """
        import cv2

        p = self.params
        alpha = r[..., 3:] / 255.0
        laid = alpha * r[..., :3] + (1.0 - alpha) * patch
        err = np.abs(cv2.GaussianBlur(laid, (3, 3), 0.8) - cv2.GaussianBlur(patch, (3, 3), 0.8)).max(axis=2)
        on = alpha[..., 0] >= OPAQUE
        off = (err > p.pixel_tol) & on
        g, (sh, side) = p.grid, on.shape
        ys = np.linspace(0, sh, g + 1).round().astype(int)
        xs = np.linspace(0, side, g + 1).round().astype(int)
        worst, judged = 0.0, 0
        least = max(p.min_cell_pixels, 0.3 * on.sum() / (g * g))  # a cell with a sliver of art is too noisy
        for a in range(g):
            for b in range(g):
                n_on = int(on[ys[a]:ys[a + 1], xs[b]:xs[b + 1]].sum())
                if n_on >= least:
                    judged += n_on
                    worst = max(worst, off[ys[a]:ys[a + 1], xs[b]:xs[b + 1]].sum() / n_on)
        if judged < 0.5 * on.sum():  # art too scattered for the grid: judge it as one cell
            worst = off.sum() / max(1, on.sum())
        k = max(3, side // 8)  # windows mostly on the art: a JPEG's edge ringing is not a difference
        art = on.astype(np.float32)
        total = cv2.boxFilter(err * art, -1, (k, k), normalize=False)
        n = cv2.boxFilter(art, -1, (k, k), normalize=False)
        full = n >= 0.5 * k * k
        local = float((total[full] / n[full]).max()) if full.any() else 0.0
        return float(worst), float(err[on].mean()) if on.any() else 255.0, local, int(on.sum())

    def is_copy(self, m: Match | None) -> bool:
        p = self.params
        if m is None:
            return False
        if m.how == "whole":
            return m.mean_error <= p.whole_error
        if m.local_error > p.max_local_error or m.pixels < p.min_art_pixels:
            return False
        if m.how == "search":
            return m.mean_error <= p.search_error and m.contrast >= p.min_contrast
        if m.how == "regions":
            return m.mean_error <= p.region_error and m.contrast >= p.min_contrast
        return m.worst_cell <= p.max_off and m.mean_error <= p.max_mean_error
