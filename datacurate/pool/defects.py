"""The defects a web crawl has, planted at known rates, and how each sample is made.

``plan_samples`` decides, from the seed alone, which sample shows which real rendition
and which defect it carries; ``render`` turns one plan entry into bytes + caption (it is
a pure function of the entry, so it runs in any process in any order and gives the
same bytes); ``render_duplicate`` derives exact and near duplicates from a rendered
original.
"""
from __future__ import annotations

import io
import random
from dataclasses import dataclass, field

from . import compose

DEFECTS = ("none", "swapped_caption", "boilerplate", "foreign_language", "exact_duplicate",
           "near_duplicate", "tiny_image", "extreme_aspect", "broken_url", "undecodable", "eval_overlap")

# A web crawl is mostly noise: DataComp's best small-scale filters keep about 30% of
# CommonPool. About half of this pool's samples carry a defect; swapped captions (the
# defect only an image-text model can see) are the largest share.
DEFAULT_RATES = {
    "swapped_caption": 0.25, "boilerplate": 0.08, "foreign_language": 0.08,
    "exact_duplicate": 0.04, "near_duplicate": 0.04, "tiny_image": 0.02, "extreme_aspect": 0.02,
    "broken_url": 0.02, "undecodable": 0.01, "eval_overlap": 0.01,
}
MIN_PER_DEFECT = 4          # so that even `micro` has a few of each

DUPLICATES = ("exact_duplicate", "near_duplicate")
BOILERPLATE = ("image", "photo", "click here", "untitled", "stock image", "picture", "thumbnail",
               "no description available", "download", "placeholder", "view image", "see more",
               "free clipart", "banner", "IMG_{n4}.jpg", "DSC{n5}.JPG", "image{n3}.png",
               "untitled-{n2}.png", "Screenshot_2021{mm}{dd}-{n6}.png", "photo_{n4}.jpeg", "img{n3}")


@dataclass
class Spec:
    """One planned pool sample (picklable; all a worker needs to make it)."""
    index: int
    seed: int
    defect: str
    item_id: str
    path: str                # emoji PNG as shipped
    label: str
    tags: tuple
    source: str
    group: str
    subgroup: str
    other: dict | None = None        # swapped_caption: the other item's caption context
    foreign: tuple | None = None     # foreign_language: (locale, label, tags)
    dup_of: int | None = None        # duplicates: plan index of the original
    extra: dict = field(default_factory=dict)

    def rng(self, salt: str = "") -> random.Random:
        return random.Random(f"datacurate-pool/{self.seed}/{self.index}/{salt}")

    def context(self) -> dict:
        return {"label": self.label, "tags": self.tags, "group": self.group, "subgroup": self.subgroup,
                "style": compose.STYLE_OF[self.source]}


@dataclass
class Rendered:
    index: int
    data: bytes | None       # None: nothing is served (broken_url)
    fmt: str                 # JPEG | PNG | none
    text: str
    clean_text: str
    lang: str
    width: int = 0
    height: int = 0
    quality: int = 0
    ctx: dict = field(default_factory=dict)
    planted_as: str | None = None  # eval_overlap: "file" (the held-out file), "flattened" (on white, resized), "scene"


def plan_counts(n: int, rates: dict | None = None, min_each: int = MIN_PER_DEFECT) -> dict:
    """Samples per defect for a pool of ``n`` (``none`` takes the rest)."""
    rates = dict(DEFAULT_RATES if rates is None else rates)
    unknown = set(rates) - set(DEFECTS)
    if unknown:
        raise ValueError(f"unknown defects {sorted(unknown)}; known: {', '.join(DEFECTS[1:])}")
    counts = {d: (max(min_each, round(rates[d] * n)) if rates.get(d, 0) > 0 else 0) for d in DEFECTS[1:]}
    rest = n - sum(counts.values())
    if rest < max(counts.get("exact_duplicate", 0), counts.get("near_duplicate", 0)) + 1:
        raise ValueError(f"pool of {n} samples is too small for the defect rates {rates}")
    return {"none": rest, **counts}


# ----------------------------------------------------------------------------- rendering

def _fmt(rng: random.Random) -> tuple[str, int]:
    if rng.random() < 0.85:
        return "JPEG", rng.choice((70, 75, 80, 85, 90, 95))
    return "PNG", 0


def _boilerplate(rng: random.Random) -> str:
    t = rng.choice(BOILERPLATE)
    return t.format(n2=rng.randint(1, 99), n3=f"{rng.randint(1, 999):03d}", n4=f"{rng.randint(1, 9999):04d}",
                    n5=f"{rng.randint(1, 99999):05d}", n6=f"{rng.randint(0, 235959):06d}",
                    mm=f"{rng.randint(1, 12):02d}", dd=f"{rng.randint(1, 28):02d}")


def _undecodable(rng: random.Random, good: bytes) -> bytes:
    """Bytes a browser would not show: a truncated file, an HTML error page, or garbage."""
    r = rng.random()
    if r < 0.5:
        return good[:max(16, int(len(good) * rng.uniform(0.05, 0.6)))]
    if r < 0.75:
        return (b"<!DOCTYPE html>\n<html><head><title>Error</title></head><body><h1>Access denied</h1>"
                b"<p>You don't have permission to access this resource.</p></body></html>\n")
    return rng.randbytes(rng.randint(64, 2048))


def render(spec: Spec) -> Rendered:
    """Make the bytes and the caption of one planned (non-duplicate) sample."""
    from PIL import Image

    rng = spec.rng("render")
    d = spec.defect
    if d == "tiny_image":
        w, h = compose.canvas_size(rng, 32, 96)
    elif d == "extreme_aspect":
        short = rng.randint(20, 48)
        long = min(480, int(short * rng.uniform(5.5, 10.0)))
        w, h = (long, short) if rng.random() < 0.7 else (short, long)
    else:
        w, h = compose.canvas_size(rng)
    fmt, q = _fmt(rng)
    raw_png, planted_as = None, None
    if d == "eval_overlap" and rng.random() < 0.35:
        with open(spec.path, "rb") as f:          # the held-out file itself, byte for byte
            raw_png = f.read()
        img, ctx = compose.load_rgba(spec.path), {}
        fmt, q, planted_as = "PNG", 0, "file"
    elif d == "eval_overlap" and rng.random() < 0.5:
        em = compose.load_rgba(spec.path)        # flattened on white and resized
        side = rng.randint(72, 160)
        bg = Image.new("RGB", em.size, compose.COLOURS["white"])
        bg.paste(em, (0, 0), em)
        img, ctx = bg.resize((side, side), Image.BICUBIC), {"bg": "solid", "colour": "white"}
        planted_as = "flattened"
    else:
        fill = (0.6, 0.95) if d == "extreme_aspect" else (0.4, 0.85)
        img, ctx = compose.compose(rng, spec.path, w, h, fill=fill)
        planted_as = "scene" if d == "eval_overlap" else None
    if d == "tiny_image":
        img = img.resize((rng.randint(6, 16), rng.randint(6, 16)), Image.BILINEAR)
    ctx.update(spec.context())
    clean = compose.caption(rng, ctx)
    text, lang = clean, "en"
    if d == "swapped_caption":
        text = compose.caption(rng, spec.other, with_background=False)
    elif d == "boilerplate":
        text, lang = _boilerplate(rng), "und"
    elif d == "foreign_language":
        loc, flabel, ftags = spec.foreign
        text, lang = compose.foreign_caption(rng, flabel, ftags), loc
    data = raw_png if raw_png is not None else compose.encode(img, fmt, q)
    if d == "undecodable":
        data = _undecodable(rng, data)
    elif d == "broken_url":
        data = None
    return Rendered(spec.index, data, fmt, text, clean, lang, img.width, img.height, q, ctx, planted_as)


def render_duplicate(spec: Spec, original: Rendered) -> Rendered:
    """An exact copy (same bytes, new url) or a near copy (cropped, resized, re-encoded)."""
    from PIL import Image

    rng = spec.rng("dup")
    if spec.defect == "exact_duplicate":
        return Rendered(spec.index, original.data, original.fmt, original.text, original.clean_text, "en",
                        original.width, original.height, original.quality, dict(original.ctx))
    with Image.open(io.BytesIO(original.data)) as im:
        img = im.convert("RGB")
    w, h = img.size
    l, t = int(w * rng.uniform(0, 0.06)), int(h * rng.uniform(0, 0.06))
    r, b = w - int(w * rng.uniform(0, 0.06)), h - int(h * rng.uniform(0, 0.06))
    img = img.crop((l, t, r, b))
    f = rng.choice((rng.uniform(0.6, 0.9), rng.uniform(1.1, 1.3)))
    img = img.resize((max(24, int(img.width * f)), max(24, int(img.height * f))), Image.BICUBIC)
    fmt, q = _fmt(rng)
    if fmt == "JPEG" and q == original.quality:
        q = 60 if q != 60 else 65
    data = compose.encode(img, fmt, q)
    ctx = dict(original.ctx)
    text = original.text if rng.random() < 0.5 else compose.caption(rng, ctx)
    return Rendered(spec.index, data, fmt, text, text, "en", img.width, img.height, q, ctx)
