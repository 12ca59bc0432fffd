"""A small hand-made pool as `pool build` leaves it (docs/formats.md), for the download tests.

POOL/manifest.json (url_base, scale), POOL/urls.parquet (uid, url, text) and POOL/www/
with good JPEGs and PNGs of known sizes, urls of missing files (404) and files of
garbage bytes (undecodable). Returns what each uid should become.
"""
from __future__ import annotations

import io
import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

URL_BASE = "http://offline.datacurate/"


def _image_bytes(rng: random.Random, w: int, h: int, fmt: str) -> bytes:
    from PIL import Image, ImageDraw

    mode = "RGBA" if fmt == "PNG" and rng.random() < 0.5 else "RGB"
    img = Image.new(mode, (w, h), tuple(rng.randrange(256) for _ in mode))
    d = ImageDraw.Draw(img)
    for _ in range(3):
        x0, y0 = rng.randrange(w), rng.randrange(h)
        d.rectangle([x0, y0, min(w - 1, x0 + w // 3), min(h - 1, y0 + h // 3)],
                    fill=tuple(rng.randrange(256) for _ in mode))
    b = io.BytesIO()
    img.save(b, format=fmt)
    return b.getvalue()


def make_download_pool(root: Path, n_good: int = 30, n_missing: int = 4, n_garbage: int = 3,
                       seed: int = 0, scale: str | None = None) -> dict:
    """Write the pool; return {"good": {uid: (url, text, w, h)}, "missing": [uid], "garbage": [uid]}."""
    from datacurate.uids import make_uid

    rng = random.Random(seed)
    pool = Path(root)
    www = pool / "www"
    (www / "img").mkdir(parents=True, exist_ok=True)
    kinds = ["good"] * n_good + ["missing"] * n_missing + ["garbage"] * n_garbage
    rng.shuffle(kinds)
    rows = {"uid": [], "url": [], "text": []}
    truth: dict = {"good": {}, "missing": [], "garbage": []}
    for i, kind in enumerate(kinds):
        uid = make_uid("download-test", seed, i)
        text = f"sample {i}: a {rng.choice(['red', 'green', 'blue'])} thing, café {i % 7}"
        if kind == "good":
            fmt = rng.choice(["JPEG", "PNG"])
            w, h = rng.randrange(12, 400), rng.randrange(12, 300)
            rel = f"img/{i:04d}.{'jpg' if fmt == 'JPEG' else 'png'}"
            (www / rel).write_bytes(_image_bytes(rng, w, h, fmt))
            truth["good"][uid] = (URL_BASE + rel, text, w, h)
        elif kind == "missing":
            rel = f"img/gone-{i:04d}.jpg"  # never written: the server answers 404
            truth["missing"].append(uid)
        else:
            rel = f"img/{i:04d}.jpg"
            (www / rel).write_bytes(bytes(rng.randrange(256) for _ in range(600)))
            truth["garbage"].append(uid)
        rows["uid"].append(uid)
        rows["url"].append(URL_BASE + rel)
        rows["text"].append(text)
    pq.write_table(pa.table(rows), pool / "urls.parquet")
    manifest = {"scale": scale or "handmade", "seed": seed, "builder_version": "test",
                "url_base": URL_BASE,
                "sources": [{"name": "hand-drawn rectangles", "package": "pillow", "version": "any",
                             "licence": "CC0-1.0", "homepage": "https://python-pillow.org"}],
                "counts": {"pool": len(kinds)}}
    (pool / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return truth
