"""Web-looking images from real emoji art, and captions that are true of them.

An emoji rendition is pasted at a random scale and position onto a background (a solid
colour, a gradient, noise around a colour, or a patch of one of scikit-image's bundled
photographs) and encoded as a web image. What was drawn is kept in a small context dict
so that every caption template only states what is true of the picture.
"""
from __future__ import annotations

import io
import random
from functools import lru_cache

import numpy as np

from ..taxonomy import group_title, subgroup_title

# named colours used for backgrounds; a caption may name the colour, so names are plain
COLOURS = {
    "white": (250, 250, 250), "black": (12, 12, 12), "grey": (128, 128, 128),
    "light grey": (210, 210, 210), "red": (210, 30, 35), "dark red": (120, 10, 20),
    "orange": (245, 140, 20), "yellow": (245, 225, 40), "green": (40, 160, 60),
    "dark green": (15, 80, 35), "blue": (30, 80, 210), "light blue": (150, 200, 245),
    "navy": (15, 25, 90), "purple": (120, 40, 160), "pink": (245, 150, 190),
    "brown": (120, 75, 35), "beige": (230, 215, 180), "teal": (20, 140, 140),
}
COLOUR_NAMES = sorted(COLOURS)

# scikit-image's bundled photographs (files inside the package, no download) and what they show
PHOTOS = {"coffee": "a cup of coffee", "chelsea": "a cat", "rocket": "a rocket launch",
          "astronaut": "an astronaut", "hubble_deep_field": "a starry sky", "grass": "grass",
          "gravel": "gravel", "brick": "a brick wall"}
PHOTO_NAMES = sorted(PHOTOS)

STYLE_OF = {"google": "Noto Emoji", "twitter": "Twemoji"}   # what each source's art is called

BACKGROUND_KINDS = (("solid", 0.5), ("gradient", 0.2), ("noise", 0.1), ("photo", 0.2))


@lru_cache(maxsize=None)
def photo(name: str):
    """An RGB uint8 array of a bundled scikit-image photograph."""
    import skimage.data

    a = getattr(skimage.data, name)()
    if a.ndim == 2:
        a = np.stack([a] * 3, axis=-1)
    return np.ascontiguousarray(a[..., :3]).astype(np.uint8)


@lru_cache(maxsize=4096)
def load_rgba(path: str):
    from PIL import Image

    with Image.open(path) as im:
        return im.convert("RGBA")


def _pick(rng: random.Random, weighted):
    x, acc = rng.random(), 0.0
    for name, w in weighted:
        acc += w
        if x < acc:
            return name
    return weighted[-1][0]


def background(rng: random.Random, w: int, h: int, kind: str | None = None):
    """(RGB image, context) for a w x h background of a random kind."""
    from PIL import Image

    kind = kind or _pick(rng, BACKGROUND_KINDS)
    if kind == "solid":
        c = rng.choice(COLOUR_NAMES)
        return Image.new("RGB", (w, h), COLOURS[c]), {"bg": "solid", "colour": c}
    if kind == "gradient":
        c1, c2 = rng.sample(COLOUR_NAMES, 2)
        t = np.linspace(0.0, 1.0, w if rng.random() < 0.5 else h, dtype=np.float32)
        a, b = np.array(COLOURS[c1], np.float32), np.array(COLOURS[c2], np.float32)
        line = a[None, :] * (1 - t[:, None]) + b[None, :] * t[:, None]
        arr = np.broadcast_to(line[None, :, :], (h, w, 3)) if len(t) == w else \
            np.broadcast_to(line[:, None, :], (h, w, 3))
        return Image.fromarray(np.ascontiguousarray(arr).round().astype(np.uint8)), \
            {"bg": "gradient", "colour": c1, "colour2": c2}
    if kind == "noise":
        c = rng.choice(COLOUR_NAMES)
        g = np.random.default_rng(rng.getrandbits(63))
        sigma = rng.uniform(8, 30)
        arr = np.array(COLOURS[c], np.float32)[None, None, :] + g.normal(0, sigma, (h, w, 1)).astype(np.float32)
        return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)), {"bg": "noise", "colour": c}
    name = rng.choice(PHOTO_NAMES)
    p = photo(name)
    ph, pw = p.shape[:2]
    s = rng.uniform(0.35, 1.0)
    cw, ch = max(16, int(pw * s)), max(16, int(ph * s))
    if cw / ch > w / h:
        cw = max(16, int(ch * w / h))
    else:
        ch = max(16, int(cw * h / w))
    cw, ch = min(cw, pw), min(ch, ph)
    x0, y0 = rng.randint(0, pw - cw), rng.randint(0, ph - ch)
    img = Image.fromarray(p[y0:y0 + ch, x0:x0 + cw]).resize((w, h), Image.BILINEAR)
    return img, {"bg": "photo", "photo": name}


def compose(rng: random.Random, emoji, w: int, h: int, fill=(0.4, 0.85), bg_kind=None):
    """Paste the emoji (a file path, or an RGBA image) onto a w x h background; returns (RGB image, context)."""
    from PIL import Image

    img, ctx = background(rng, w, h, bg_kind)
    em = load_rgba(emoji) if isinstance(emoji, str) else emoji
    side = max(8, min(int(min(w, h) * rng.uniform(*fill)), 128))
    em = em.resize((side, side), Image.BICUBIC) if side != em.width else em
    x, y = rng.randint(0, w - side), rng.randint(0, h - side)
    img.paste(em, (x, y), em)
    return img, ctx


def canvas_size(rng: random.Random, lo: int = 96, hi: int = 256) -> tuple[int, int]:
    w = rng.randint(lo, hi)
    h = int(round(w * rng.uniform(0.75, 1.333)))
    return w, max(lo, min(hi, h))


def encode(img, fmt: str, quality: int = 85) -> bytes:
    """Fixed encoder settings so the same image gives the same bytes."""
    b = io.BytesIO()
    if fmt == "JPEG":
        img.convert("RGB").save(b, format="JPEG", quality=quality, optimize=False, progressive=False)
    elif fmt == "PNG":
        img.save(b, format="PNG", optimize=False, compress_level=6)
    else:
        raise ValueError(f"unknown format {fmt}")
    return b.getvalue()


# ----------------------------------------------------------------------------- captions

def _tag(rng, ctx, k=1):
    tags = list(ctx.get("tags") or ())
    return rng.sample(tags, min(k, len(tags))) if tags else []


def _plain_templates(rng, ctx):
    lab, g = ctx["label"], group_title(ctx["group"])
    t = _tag(rng, ctx, 2)
    out = [lab, f"{lab} emoji", f"{lab} icon", lab[:1].upper() + lab[1:], f"a {lab} sticker",
           f"{lab} in {ctx['style']} style", f"{ctx['style']} {lab} emoji",
           f"{g}: {lab}", f"{lab}, a {g} emoji", f"{g} emoji {lab}"]
    if t:
        out += [f"{lab} emoji, {t[0]}", f"{g}: {lab}, {t[0]}",
                f"{lab} ({', '.join(t)})", f"emoji of {lab} - {t[0]}"]
    return out


def _background_templates(ctx):
    lab, bg = ctx["label"], ctx.get("bg")
    if bg == "solid":
        c = ctx["colour"]
        return [f"{lab} icon on a {c} background", f"{lab} on {c}", f"{c} background with a {lab} emoji",
                f"{lab} emoji on plain {c}"]
    if bg == "gradient":
        return [f"{lab} emoji on a {ctx['colour']} to {ctx['colour2']} gradient",
                f"{lab} over a {ctx['colour']} and {ctx['colour2']} gradient background"]
    if bg == "noise":
        return [f"{lab} on a noisy {ctx['colour']} background", f"{lab} emoji, grainy {ctx['colour']} backdrop"]
    if bg == "photo":
        d = PHOTOS[ctx["photo"]]
        return [f"{lab} sticker on a photo of {d}", f"{lab} emoji over a picture of {d}"]
    return []


def _breadcrumb_templates(ctx):
    """Captions in the form of an emoji site's category path (group / subgroup / name)."""
    if not ctx.get("subgroup"):
        return []
    lab, g, sg = ctx["label"], group_title(ctx["group"]), subgroup_title(ctx["subgroup"])
    return [f"{g} / {sg} / {lab}", f"{sg} emoji: {lab}", f"{lab} | {sg} | {g}", f"{lab} - {sg} emoji"]


BREADCRUMB_RATE = 0.2   # of the captions not about the background


def caption(rng: random.Random, ctx: dict, with_background: bool = True) -> str:
    """An English caption that is true of the picture described by ``ctx``."""
    bg = _background_templates(ctx) if with_background else []
    if bg and rng.random() < 0.35:
        return rng.choice(bg)
    crumbs = _breadcrumb_templates(ctx)
    if crumbs and rng.random() < BREADCRUMB_RATE:
        return rng.choice(crumbs)
    return rng.choice(_plain_templates(rng, ctx))


def foreign_caption(rng: random.Random, label: str, tags) -> str:
    tags = list(tags or ())
    r = rng.random()
    if tags and r < 0.3:
        return f"{label}, {rng.choice(tags)}"
    if len(tags) >= 2 and r < 0.5:
        a, b = rng.sample(tags, 2)
        return f"{label} - {a}, {b}"
    return label
