"""Small image helpers every stage shares: flattening onto white, image bytes from a shard's tar."""
from __future__ import annotations

import os
import tarfile
from pathlib import Path

from .errors import UserError

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")   # the image extensions img2dataset and webdataset write


class ShardImageError(UserError):
    """A pool shard's tar is missing, unreadable, or lacks an image its metadata names."""


def has_alpha(img) -> bool:
    return img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)


def to_rgb(img, background=(255, 255, 255)):
    """RGB image; transparent pixels are laid over ``background`` (not left as their hidden colour).

    Emoji art ships as transparent PNG: img2dataset, the filters and the evaluation all see
    it on white, so every stage flattens it the same way.
    """
    from PIL import Image

    if has_alpha(img):
        img = img.convert("RGBA")
        base = Image.new("RGBA", img.size, tuple(background) + (255,))
        return Image.alpha_composite(base, img).convert("RGB")
    return img.convert("RGB")


def read_tar_images(tar_path: Path, keys: list[str], shard: str) -> dict[str, bytes]:
    """{key: image bytes} for ``keys`` from a webdataset tar; clear error for a missing key."""
    if not tar_path.is_file():
        raise ShardImageError(f"shard {shard}: no image tar {tar_path}")
    wanted = set(keys)
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(tar_path) as tf:
            for m in tf:
                if not m.isfile():
                    continue
                base = os.path.basename(m.name)
                key, _, ext = base.partition(".")
                if ext.lower() in IMAGE_EXTS and key in wanted and key not in found:
                    found[key] = tf.extractfile(m).read()
    except tarfile.TarError as e:
        raise ShardImageError(f"shard {shard}: {tar_path} is not a readable tar ({e})") from None
    missing = [k for k in keys if k not in found]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ShardImageError(f"shard {shard}: {tar_path} has no image for key {missing[0]!r}{more} "
                         f"listed in metadata/{shard}.parquet")
    return found
