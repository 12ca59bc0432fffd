"""Hand-made pools for the filter tests: metadata parquets (+ row-aligned npz) where the right answer is known."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from datacurate.uids import make_uid


def unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def row(i: int, text: str = "a photo of a red fox in the snow", w: int = 256, h: int = 256, score: float = 0.3,
        sha: str | None = None, emb=None, **extra) -> dict:
    r = {"uid": make_uid("filters-test", i), "url": f"http://offline.datacurate/{i}.jpg", "text": text,
         "original_width": w, "original_height": h,
         "sha256": sha or hashlib.sha256(f"img{i}".encode()).hexdigest(), "key": f"{i:09d}",
         "clip_fnet_similarity_score": score, "emb": emb}
    r.update(extra)
    return r


def write_pool(root: Path, rows: list[dict], per_shard: int = 4, dim: int = 8, seed: int = 0) -> Path:
    """POOL/metadata/NNNNN.parquet (+ .npz with fnet_img/fnet_txt when any row has 'emb')."""
    root = Path(root)
    (root / "metadata").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for s in range(0, len(rows), per_shard):
        chunk = rows[s:s + per_shard]
        cols = {k: [r[k] for r in chunk] for k in chunk[0] if k != "emb"}
        t = pa.table(cols)
        t = t.set_column(t.schema.get_field_index("clip_fnet_similarity_score"), "clip_fnet_similarity_score",
                         pa.array(cols["clip_fnet_similarity_score"], pa.float32()))
        name = f"{s // per_shard:05d}"
        pq.write_table(t, root / "metadata" / f"{name}.parquet")
        if any(r.get("emb") is not None for r in rows):
            img = np.stack([unit(r["emb"]) if r.get("emb") is not None else unit(rng.normal(size=dim))
                            for r in chunk]).astype(np.float16)
            np.savez(root / "metadata" / f"{name}.npz", fnet_img=img, fnet_txt=img)
    return root


def write_holdout_npz(root: Path, which: str, img: np.ndarray, model: str = "fnet") -> None:
    (root / "holdout").mkdir(parents=True, exist_ok=True)
    img = unit(img).astype(np.float16)
    np.savez(root / "holdout" / f"{which}.{model}.npz", img=img, txt=img,
             item_id=np.asarray([f"{which}-{i}" for i in range(len(img))]))


def uids_of(rows, idx) -> set[str]:
    return {rows[i]["uid"] for i in idx}


def run(pool: Path, recipe_text: str, tmp: Path, name: str = "r", **kw) -> tuple[set[str], dict]:
    from datacurate.uids import read_subset_hex
    from filters.recipe import parse_recipe
    from filters.runner_local import filter_pool

    path = Path(tmp) / f"{name}.yaml"
    path.write_text(recipe_text)
    out = Path(tmp) / f"{name}.npy"
    from filters.recipe import load_recipe

    rec = filter_pool(pool, path if "runner" not in kw else load_recipe(path), out, progress=False, **kw)
    return set(read_subset_hex(out)), rec


def flat_art(shape: str, colour: tuple[int, int, int]):
    """A 64 x 64 RGBA flat emoji: one plain shape, the kind SIFT finds few keypoints on."""
    from PIL import Image, ImageDraw

    img = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    if shape == "bell":
        d.pieslice((10, 4, 54, 60), 180, 360, fill=colour + (255,))
        d.rectangle((10, 31, 54, 46), fill=colour + (255,))
        d.ellipse((26, 48, 38, 60), fill=colour + (255,))
    elif shape == "drop":
        d.polygon([(32, 2), (12, 38), (52, 38)], fill=colour + (255,))
        d.ellipse((12, 22, 52, 62), fill=colour + (255,))
    else:
        d.rectangle((8, 16, 56, 48), fill=colour + (255,))
    return img


def write_pixels(pool: Path, rows: list[dict], pics: list, per_shard: int, evals: dict) -> None:
    """POOL/shards/NNNNN.tar of ``pics`` (JPEG, keyed as ``rows``, ``per_shard`` a tar, as
    ``write_pool`` cut the metadata) and POOL/holdout/eval.parquet of ``evals`` (item_id -> PIL image)."""
    import io
    import tarfile

    (pool / "shards").mkdir()
    for s in range(0, len(rows), per_shard):
        with tarfile.open(pool / "shards" / f"{s // per_shard:05d}.tar", "w") as tf:
            for r, im in zip(rows[s:s + per_shard], pics[s:s + per_shard]):
                b = io.BytesIO()
                im.save(b, format="JPEG", quality=85)
                info = tarfile.TarInfo(f"{r['key']}.jpg")
                info.size = len(b.getvalue())
                tf.addfile(info, io.BytesIO(b.getvalue()))
    (pool / "holdout").mkdir()
    png = []
    for e in evals.values():
        b = io.BytesIO()
        e.save(b, format="PNG")
        png.append(b.getvalue())
    pq.write_table(pa.table({"item_id": list(evals), "image": png}), pool / "holdout" / "eval.parquet")
