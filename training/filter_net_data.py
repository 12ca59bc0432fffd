"""Training pairs for the filtering network: trusted emoji laid on random backgrounds, with captions.

The pool shows each item composed onto a background (solid colour, gradient, noise
or a photo patch), resized and cropped; the trusted set holds the bare items
(transparent PNGs). To make a net trained on the trusted set transfer to the pool,
each training view places the item on a fresh random background at a random scale
and position, then applies a random resized crop and colour jitter. Since web captions
often describe the scene too, half of the training captions also say what the
background is ("... on a red background", "... on a photo of a cat"): the composer
knows what it drew, so these captions are true (a synthetic re-captioning of the
trusted items, in the spirit of DFN's high-quality training data).
"""
from __future__ import annotations

import io
import random

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset

# caption templates: the item's own caption most of the time, otherwise its name in a template
TEMPLATES = (
    "{name}",
    "a {name}",
    "an emoji of {name}",
    "a picture of {name}",
    "an icon of {name}",
    "{name} emoji",
    "a drawing of {name}",
    "{name} sticker",
)

# plain English colour names with a typical sRGB value each (jittered when drawn)
PALETTE = {
    "white": (245, 245, 245), "black": (15, 15, 15), "grey": (128, 128, 128),
    "light grey": (205, 205, 205), "red": (215, 25, 30), "dark red": (125, 15, 20),
    "orange": (250, 135, 15), "yellow": (250, 220, 35), "green": (35, 165, 55),
    "dark green": (20, 85, 30), "blue": (35, 85, 215), "light blue": (145, 200, 240),
    "navy": (20, 25, 95), "purple": (125, 45, 165), "pink": (245, 155, 195),
    "brown": (125, 80, 35), "beige": (225, 210, 175), "teal": (25, 135, 140),
}
# scikit-image's bundled photographs (shipped inside the package) and what they show
PHOTOS = {"astronaut": "an astronaut", "coffee": "a cup of coffee", "chelsea": "a cat",
          "rocket": "a rocket launch", "grass": "grass", "gravel": "gravel", "brick": "a brick wall",
          "hubble_deep_field": "a starry sky"}

BACKGROUND_TEMPLATES = {
    "solid": ("{name} on a {c} background", "{name} on {c}", "{c} background with {name}",
              "{name} emoji on plain {c}"),
    "gradient": ("{name} on a {c} to {c2} gradient", "{name} over a {c} and {c2} gradient background"),
    "noise": ("{name} on a noisy {c} background", "{name}, grainy {c} backdrop"),
    "photo": ("{name} on a photo of {d}", "{name} over a picture of {d}", "{name} in front of {d}"),
}


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


def random_caption(item: dict, rng: random.Random, scene: dict | None = None) -> str:
    """A true caption of the item; with ``scene`` (what the composer drew) it may name the background too."""
    name = (item["name"] or item["text"]).lower()
    if scene is not None and name and rng.random() < 0.5:
        return rng.choice(BACKGROUND_TEMPLATES[scene["bg"]]).format(name=name, **scene)
    if rng.random() < 0.5 or not item["name"]:
        return item["text"]
    return rng.choice(TEMPLATES).format(name=name)


def _photo_patches(seed: int = 0, per_photo: int = 3, size: int = 96) -> list[tuple]:
    """(patch, what it shows) from scikit-image's bundled photographs (real textures, no download)."""
    from PIL import Image

    try:
        from skimage import data
    except Exception:
        return []
    rng = np.random.default_rng(seed)
    patches = []
    for fn, desc in PHOTOS.items():
        try:
            arr = getattr(data, fn)()
        except Exception:
            continue
        img = Image.fromarray(arr).convert("RGB")
        for _ in range(per_photo):
            w, h = img.size
            s = int(rng.integers(min(w, h) // 3, min(w, h) + 1))
            x, y = int(rng.integers(0, w - s + 1)), int(rng.integers(0, h - s + 1))
            patches.append((img.crop((x, y, x + s, y + s)).resize((size, size)), desc))
    return patches


class Composer:
    """Makes one augmented RGB view of an item and says what background it drew.

    ``composer(item)`` -> (PIL image, scene) where scene is {"bg": solid|gradient|noise|photo,
    "c": colour name, "c2": second colour, "d": what the photo shows}.
    """

    def __init__(self, size: int = 64, seed: int = 0):
        from torchvision import transforms as T

        self.size = size
        self.rng = random.Random(seed)
        self.canvas = int(size * 1.25)
        self.photos = _photo_patches(seed, size=self.canvas)
        self.names = sorted(PALETTE)
        self.crop = T.RandomResizedCrop(size, scale=(0.6, 1.0), ratio=(0.8, 1.25),
                                        interpolation=T.InterpolationMode.BICUBIC)
        self.jitter = T.ColorJitter(0.15, 0.15, 0.15, 0.01)  # mild: colours are named in captions

    def _colour(self) -> tuple[str, np.ndarray]:
        name = self.rng.choice(self.names)
        rgb = np.array(PALETTE[name], np.float32) + np.array([self.rng.uniform(-12, 12) for _ in range(3)])
        return name, np.clip(rgb, 0, 255)

    def background(self):
        """(RGB canvas, scene dict)."""
        from PIL import Image

        r, c = self.rng, self.canvas
        kind = r.random()
        if kind < 0.45:
            name, rgb = self._colour()
            return Image.new("RGB", (c, c), tuple(int(v) for v in rgb)), {"bg": "solid", "c": name}
        if kind < 0.65:
            (n1, a), (n2, b) = self._colour(), self._colour()
            while n2 == n1:
                n2, b = self._colour()
            t = np.linspace(0, 1, c, dtype=np.float32)[:, None, None]
            grad = np.broadcast_to(a + (b - a) * t, (c, c, 3))
            if r.random() < 0.5:
                grad = grad.transpose(1, 0, 2)
            img = Image.fromarray(np.ascontiguousarray(grad).astype(np.uint8))
            return img, {"bg": "gradient", "c": n1, "c2": n2}
        if kind < 0.8 or not self.photos:
            name, rgb = self._colour()
            noise = np.random.default_rng(r.randrange(2**31)).normal(0, r.uniform(8, 30), (c, c, 1))
            return Image.fromarray(np.clip(rgb + noise, 0, 255).astype(np.uint8)), {"bg": "noise", "c": name}
        patch, desc = r.choice(self.photos)
        return patch.copy(), {"bg": "photo", "d": desc}

    def __call__(self, item: dict):
        r, c = self.rng, self.canvas
        bg, scene = self.background()
        im = item["image"]
        side = int(c * r.uniform(0.4, 0.85))
        scale = side / max(im.size)
        fg = im.resize((max(1, int(im.width * scale)), max(1, int(im.height * scale))))
        x, y = r.randrange(0, c - fg.width + 1), r.randrange(0, c - fg.height + 1)
        bg.paste(fg, (x, y), fg)
        return self.jitter(self.crop(bg)), scene


def training_batches(items: list[dict], composer: Composer, tokenizer, to_tensor, *, steps: int,
                     batch_size: int, seed: int, torch_state=None):
    """Yield ``steps`` (pixels, tokens) batches: epochs of fresh shuffles, one view and caption per item.

    One generator owns every random draw of the batches: the Python RNG for order and captions
    (seeded by ``seed``), the composer's own RNG, and torch's global RNG for its crops and jitter,
    which continues from ``torch_state`` (the state the model's initialisation left). Run in the
    trainer's process or in a loader worker, it yields the same bytes."""
    if torch_state is not None:
        torch.set_rng_state(torch_state)
    rng = random.Random(seed)
    order: list[int] = []
    for _ in range(steps):
        if len(order) < batch_size:  # epoch boundary: a fresh shuffle, batches never repeat an item
            fresh = list(range(len(items)))
            rng.shuffle(fresh)
            order += fresh
        idx, order = order[:batch_size], order[batch_size:]
        views = [composer(items[i]) for i in idx]  # (image, scene): captions may name the background
        pix = torch.stack([to_tensor(im) for im, _ in views])
        tok = tokenizer([random_caption(items[i], rng, scene) for i, (_, scene) in zip(idx, views)])
        yield pix, tok


class TrainingBatches(IterableDataset):
    """The batch stream as a dataset a torch DataLoader worker can run (see :func:`batch_loader`)."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs

    def __iter__(self):
        return training_batches(*self.args, **self.kwargs)


def batch_loader(stream: TrainingBatches, workers: int = 1, prefetch: int = 4):
    """Iterate ``stream`` in a loader process, so that composing the next batches overlaps the
    training step (with 0 workers, inline). One worker at most: the batches are one sequential
    random stream, and the worker's own torch seed does not matter since the stream sets torch's
    RNG state itself."""
    if workers <= 0:
        return iter(stream)
    if workers != 1:
        raise ValueError("the filtering network's batches are one random stream: 0 or 1 loader worker")
    return iter(DataLoader(stream, batch_size=None, num_workers=1, prefetch_factor=prefetch,
                           generator=torch.Generator().manual_seed(0)))
