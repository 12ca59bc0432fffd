"""Small training DATA folders (the layout `datacurate reshard` writes) for the training tests.

Images are coloured shapes on a light background with a caption that names them, so a
micro CLIP has something learnable; written with webdataset's TarWriter like real shards.
"""
from __future__ import annotations

import hashlib
import io
import json
import random
from pathlib import Path

COLOURS = {"red": (220, 30, 30), "green": (30, 170, 60), "blue": (40, 70, 220),
           "yellow": (235, 210, 40), "purple": (140, 50, 170), "orange": (245, 140, 20)}
SHAPES = ("circle", "square", "triangle", "cross")


def shape_image(shape: str, colour: tuple, size: int, rng: random.Random):
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (size, size), (245, 245, 240))
    d = ImageDraw.Draw(img)
    r = rng.randint(size // 5, size // 3)
    cx, cy = rng.randint(r, size - r), rng.randint(r, size - r)
    box = (cx - r, cy - r, cx + r, cy + r)
    if shape == "circle":
        d.ellipse(box, fill=colour)
    elif shape == "square":
        d.rectangle(box, fill=colour)
    elif shape == "triangle":
        d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
    else:
        w = max(2, r // 3)
        d.rectangle((cx - r, cy - w, cx + r, cy + w), fill=colour)
        d.rectangle((cx - w, cy - r, cx + w, cy + r), fill=colour)
    return img


def jpeg_bytes(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def make_training_data(out: Path, n_samples: int = 512, shard_size: int = 128, seed: int = 0,
                       image_size: int = 64, corrupt_every: int = 0) -> Path:
    """Write OUT/shards/NNNNN.tar, OUT/sizes.json and OUT/reshard.json; return OUT.
    ``corrupt_every``: every k-th sample's image is bytes no decoder reads (a web defect)."""
    import webdataset as wds

    out = Path(out)
    (out / "shards").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    sizes, uids = {}, []
    names = list(COLOURS)
    for shard_no, start in enumerate(range(0, n_samples, shard_size)):
        name = f"{shard_no:05d}.tar"
        count = min(shard_size, n_samples - start)
        with wds.TarWriter(str(out / "shards" / name)) as sink:
            for i in range(start, start + count):
                colour, shape = rng.choice(names), rng.choice(SHAPES)
                uid = hashlib.sha256(f"{seed}/{i}".encode()).hexdigest()[:32]
                uids.append(uid)
                sink.write({
                    "__key__": f"{shard_no:05d}{i - start:04d}",
                    "jpg": b"not an image" if corrupt_every and i % corrupt_every == 0 else
                    jpeg_bytes(shape_image(shape, COLOURS[colour], image_size, rng)),
                    "txt": f"a {colour} {shape} on a white background",
                    "json": {"uid": uid, "caption": f"a {colour} {shape}"},
                })
        sizes[name] = count
    (out / "sizes.json").write_text(json.dumps(sizes, indent=1))
    fp = hashlib.sha256("".join(sorted(uids)).encode()).hexdigest()
    (out / "reshard.json").write_text(json.dumps({"subset_fingerprint": fp, "found": n_samples, "missing": 0}))
    return out
