"""Hand-made pools for the embed / filter-net tests: shapes in colours with true captions.

Shards are written with webdataset's TarWriter (KEY.jpg, KEY.txt, KEY.json) and the
metadata parquet in upstream's schema, as `pool download` leaves them; the holdout
parquets hold transparent PNGs like the builder's trusted/eval sets.
"""
from __future__ import annotations

import hashlib
import io
import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

COLOURS = {"red": (220, 30, 30), "green": (30, 170, 40), "blue": (30, 60, 220), "yellow": (240, 220, 20),
           "black": (10, 10, 10), "purple": (140, 40, 180)}
SHAPES = ("circle", "square", "triangle")


def draw_item(colour: str, shape: str, size: int = 64, rgba: bool = True):
    from PIL import Image, ImageDraw

    img = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    c = COLOURS[colour] + (255,)
    m = size // 8
    if shape == "circle":
        d.ellipse([m, m, size - m, size - m], fill=c)
    elif shape == "square":
        d.rectangle([m, m, size - m, size - m], fill=c)
    else:
        d.polygon([(size // 2, m), (size - m, size - m), (m, size - m)], fill=c)
    if rgba:
        return img
    bg = Image.new("RGBA", img.size, (255, 255, 255, 255))
    return Image.alpha_composite(bg, img).convert("RGB")


def all_items():
    return [(c, s) for c in COLOURS for s in SHAPES]


def _png(img) -> bytes:
    b = io.BytesIO()
    img.save(b, format="PNG")
    return b.getvalue()


def write_holdout(pool: Path, which: str, items, seed: int = 0, repeats: int = 1) -> None:
    rows = {k: [] for k in ("item_id", "image", "text", "name", "group", "subgroup", "source")}
    for r in range(repeats):
        for c, s in items:
            rows["item_id"].append(f"{which}-{c}-{s}-{r}")
            rows["image"].append(_png(draw_item(c, s, size=48 + 8 * r)))
            rows["text"].append(f"a {c} {s}")
            rows["name"].append(f"{c} {s}")
            rows["group"].append("shapes")
            rows["subgroup"].append(s)
            rows["source"].append("handmade")
    (pool / "holdout").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(rows), pool / "holdout" / f"{which}.parquet")


def make_pool(root: Path, shards: int = 2, per_shard: int = 18, swap_every: int = 3, seed: int = 0) -> Path:
    """A downloaded-looking pool; every ``swap_every``-th sample has a swapped caption (ground truth kept)."""
    import webdataset as wds
    from PIL import Image

    rng = random.Random(seed)
    pool = Path(root)
    (pool / "shards").mkdir(parents=True, exist_ok=True)
    (pool / "metadata").mkdir(parents=True, exist_ok=True)
    items = all_items()
    gt = {"uid": [], "defect": []}
    n = 0
    for s in range(shards):
        meta = {k: [] for k in ("uid", "url", "text", "original_width", "original_height", "sha256", "key")}
        with wds.TarWriter(str(pool / "shards" / f"{s:05d}.tar")) as tw:
            for i in range(per_shard):
                colour, shape = items[n % len(items)]
                img = Image.new("RGB", (72, 72), tuple(rng.randrange(256) for _ in range(3)))
                fg = draw_item(colour, shape, size=56)
                img.paste(fg, (rng.randrange(0, 16), rng.randrange(0, 16)), fg)
                swapped = n % swap_every == swap_every - 1
                oc, os_ = items[(n + 7) % len(items)] if swapped else (colour, shape)
                text = f"a {oc} {os_}"
                uid = hashlib.blake2b(f"{seed}-{n}".encode(), digest_size=16).hexdigest()
                key = f"{s:05d}{i:04d}"
                buf = io.BytesIO()
                img.save(buf, format="JPEG", quality=95)
                tw.write({"__key__": key, "jpg": buf.getvalue(), "txt": text,
                          "json": json.dumps({"uid": uid, "key": key, "caption": text}).encode()})
                meta["uid"].append(uid)
                meta["url"].append(f"http://offline.datacurate/{n}.jpg")
                meta["text"].append(text)
                meta["original_width"].append(72)
                meta["original_height"].append(72)
                meta["sha256"].append(hashlib.sha256(buf.getvalue()).hexdigest())
                meta["key"].append(key)
                gt["uid"].append(uid)
                gt["defect"].append("swapped_caption" if swapped else "none")
                n += 1
        # rows in an order that differs from the tar's, as a Spark/img2dataset merge may leave them
        t = pa.table(meta)
        t = t.take(list(range(per_shard))[::-1])
        pq.write_table(t, pool / "metadata" / f"{s:05d}.parquet")
    pq.write_table(pa.table(gt), pool / "ground_truth.parquet")
    write_holdout(pool, "trusted", items, repeats=2)
    write_holdout(pool, "eval", items[:6])
    return pool


def make_random_net(out: Path, seed: int = 0, model: str = "TinyCLIP-ViT-64") -> Path:
    """A filtering-network directory with random (seeded) weights: enough for shape/alignment tests."""
    import open_clip
    import torch

    from datacurate.clip import register_model_configs

    register_model_configs()
    torch.manual_seed(seed)
    net = open_clip.create_model(model)
    out.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": net.state_dict()}, out / "checkpoint.pt")
    (out / "info.json").write_text(json.dumps({"model": model, "steps": 0, "seed": seed}))
    return out
