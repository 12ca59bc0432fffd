"""Small image helpers every stage shares (PIL only, imported lazily)."""
from __future__ import annotations


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
