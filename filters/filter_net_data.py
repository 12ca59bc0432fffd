"""Training pairs for the filtering network: trusted emoji laid on random backgrounds, with caption templates.

The pool shows each item composed onto a background (solid colour, gradient, noise
or a photo patch), resized and cropped; the trusted set holds the bare items
(transparent PNGs). To make a net trained on the trusted set transfer to the pool,
each training view places the item on a fresh random background at a random scale
and position, then applies a random resized crop and colour jitter.
"""
from __future__ import annotations

import io
import random

import numpy as np

# caption templates: the item's own caption most of the time, otherwise its name in a template
TEMPLATES = (
    "{name}",
    "a {name}",
    "an emoji of {name}",
    "a picture of {name}",
    "an icon of {name}",
    "{name} emoji",
    "a drawing of {name}",
    "{name} on a background",
)


def load_items(table) -> list[dict]:
    """Trusted rows -> [{image: RGBA PIL, text, name}] (decoded once)."""
    from PIL import Image

    items = []
    images = table.column("image").to_pylist()
    texts = table.column("text").to_pylist()
    names = table.column("name").to_pylist() if "name" in table.column_names else texts
    for i, (b, t, n) in enumerate(zip(images, texts, names)):
        try:
            im = Image.open(io.BytesIO(b))
            im.load()
        except Exception as e:
            from datacurate.errors import UserError

            raise UserError(f"trusted set row {i}: cannot decode image ({e})") from None
        items.append({"image": im.convert("RGBA"), "text": str(t or n or ""), "name": str(n or t or "")})
    return items


def random_caption(item: dict, rng: random.Random) -> str:
    if rng.random() < 0.5 or not item["name"]:
        return item["text"]
    return rng.choice(TEMPLATES).format(name=item["name"].lower())


def _photo_patches(seed: int = 0, n: int = 12, size: int = 96) -> list:
    """Patches of scikit-image's bundled photographs (real textures, shipped with the package)."""
    from PIL import Image

    try:
        from skimage import data
    except Exception:
        return []
    rng = np.random.default_rng(seed)
    patches = []
    for fn in ("astronaut", "coffee", "chelsea", "rocket", "camera", "grass", "gravel", "brick"):
        try:
            arr = getattr(data, fn)()
        except Exception:
            continue
        img = Image.fromarray(arr).convert("RGB")
        for _ in range(max(1, n // 8)):
            w, h = img.size
            s = int(rng.integers(min(w, h) // 4, min(w, h)))
            x, y = int(rng.integers(0, w - s + 1)), int(rng.integers(0, h - s + 1))
            patches.append(img.crop((x, y, x + s, y + s)).resize((size, size)))
    return patches


class Composer:
    """Makes one augmented RGB view of an item: random background, placement, crop, jitter."""

    def __init__(self, size: int = 64, seed: int = 0):
        from torchvision import transforms as T

        self.size = size
        self.rng = random.Random(seed)
        self.canvas = int(size * 1.25)
        self.photos = _photo_patches(seed, size=self.canvas)
        self.crop = T.RandomResizedCrop(size, scale=(0.6, 1.0), ratio=(0.8, 1.25),
                                        interpolation=T.InterpolationMode.BICUBIC)
        self.jitter = T.ColorJitter(0.3, 0.3, 0.3, 0.03)

    def background(self):
        from PIL import Image

        r, c = self.rng, self.canvas
        kind = r.random()
        col = lambda: tuple(r.randrange(256) for _ in range(3))  # noqa: E731
        if kind < 0.35:
            return Image.new("RGB", (c, c), col())
        if kind < 0.6:
            a, b = np.array(col(), np.float32), np.array(col(), np.float32)
            t = np.linspace(0, 1, c, dtype=np.float32)[:, None, None]
            grad = np.broadcast_to(a + (b - a) * t, (c, c, 3))
            if r.random() < 0.5:
                grad = grad.transpose(1, 0, 2)
            return Image.fromarray(np.ascontiguousarray(grad).astype(np.uint8))
        if kind < 0.8 or not self.photos:
            base = np.array(col(), np.float32)
            noise = np.random.default_rng(r.randrange(2**31)).normal(0, r.uniform(10, 60), (c, c, 3))
            return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))
        return r.choice(self.photos).copy()

    def __call__(self, item: dict):
        r, c = self.rng, self.canvas
        bg = self.background()
        im = item["image"]
        side = int(c * r.uniform(0.5, 0.95))
        scale = side / max(im.size)
        fg = im.resize((max(1, int(im.width * scale)), max(1, int(im.height * scale))))
        x, y = r.randrange(0, c - fg.width + 1), r.randrange(0, c - fg.height + 1)
        bg.paste(fg, (x, y), fg)
        return self.jitter(self.crop(bg))
