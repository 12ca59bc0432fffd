"""`datacurate embed`: CLIP image and text embeddings for every pool sample, upstream's layout.

For each ``POOL/metadata/NNNNN.parquet`` it writes ``NNNNN.npz`` (keys ``{name}_img``,
``{name}_txt``: float16, L2-normalised, row-aligned with the parquet, as upstream
DataComp's metadata) and adds the column ``clip_{name}_similarity_score`` (float32
cosine similarity) to the parquet. Images come from ``POOL/shards/NNNNN.tar`` matched
by the parquet's ``key`` column. Shards already done are skipped (resumable); a shard
whose npz already holds the embeddings (e.g. upstream's) only gets its score column.
The holdout sets get ``POOL/holdout/{eval,trusted}.{name}.npz`` (img, txt, item_id).
With ``--master`` the shards are embedded by a Spark job, one model per executor.
"""
from __future__ import annotations

import argparse
import io
import os
import time
from pathlib import Path

import numpy as np

from .clip import ModelSpec, fingerprint, load_spec, parse_model, pick_device, pick_threads
from .errors import UserError
from .images import read_tar_images, to_rgb
from .layout import PoolLayout, as_pool

HOLDOUT_SETS = ("eval", "trusted")
META_PREFIX = "datacurate.embed."  # parquet key-value metadata: which weights made the column
_MODEL_CACHE: dict = {}  # (spec, device) -> (model, preprocess, tokenizer): one model per process/executor


class EmbedError(UserError):
    """A shard or metadata file cannot be embedded as it is."""


# ----------------------------------------------------------------------------- small pieces

def _npz_keys(path: Path) -> dict[str, int]:
    """{key: rows} of an npz file, {} when it does not exist or is unreadable."""
    if not path.is_file():
        return {}
    try:
        with np.load(path) as z:
            return {k: int(z[k].shape[0]) for k in z.files}
    except Exception:
        return {}


def write_npz_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """np.savez under a temporary name, then rename: never half-written."""
    from .atomic import atomic_path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def _merged_npz(path: Path, new: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The npz at ``path`` with ``new`` keys added or replaced (other models' keys kept)."""
    arrays = {}
    if path.is_file():
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files if k not in new}
    arrays.update(new)
    return arrays


def normalise(x):
    """L2-normalise rows (torch or numpy)."""
    import torch

    if isinstance(x, torch.Tensor):
        return torch.nn.functional.normalize(x.float(), dim=-1)
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def similarity(img16: np.ndarray, txt16: np.ndarray) -> np.ndarray:
    """Cosine similarity of stored (normalised) embeddings, float32 (upstream's score column)."""
    return np.einsum("ij,ij->i", img16.astype(np.float32), txt16.astype(np.float32)).astype(np.float32)


def get_model(spec: ModelSpec, device: str):
    key = (spec, device)
    if key not in _MODEL_CACHE:
        _MODEL_CACHE[key] = load_spec(spec, device)
    return _MODEL_CACHE[key]


def split_preprocess(preprocess):
    """(per-image steps, batch steps) of a ``Compose([...PIL steps..., ToTensor(), Normalize(...)])``.

    ToTensor and Normalize are elementwise, so applied to a stacked batch they give the same
    numbers as per image, at a fraction of the Python cost (a third of `embed`'s time went into
    them at 64 px). None when the transform is not of that shape (then it runs per image)."""
    import torchvision.transforms as T

    steps = list(getattr(preprocess, "transforms", []))
    at = next((i for i, t in enumerate(steps) if isinstance(t, T.ToTensor)), None)   # open_clip: MaybeToTensor
    if at is None or not all(type(t) is T.Normalize for t in steps[at + 1:]):
        return None
    return T.Compose(steps[:at]), steps[at + 1:]


def _pixel_batch(pics: list, preprocess, split) -> "torch.Tensor":  # noqa: F821
    """PIL images as one normalised float tensor (N, C, H, W), ``preprocess`` applied to each."""
    return _stack(pics if split is None else [split[0](p) for p in pics], preprocess, split)


def _stack(pics: list, preprocess, split) -> "torch.Tensor":  # noqa: F821
    """Images through the per-image steps (all of ``preprocess`` when it does not split) as one tensor."""
    import torch

    if split is None:
        return torch.stack([preprocess(p) for p in pics])
    if not all(getattr(p, "mode", None) == "RGB" for p in pics):   # ToTensor's other modes: per image
        import torchvision.transforms as T

        pix = torch.stack([T.ToTensor()(p) for p in pics])
    else:
        pix = torch.from_numpy(np.stack([np.asarray(p, dtype=np.uint8) for p in pics]))
        pix = pix.permute(0, 3, 1, 2).float().div(255)   # ToTensor, batched
    for t in split[1]:
        pix = t(pix)
    return pix.contiguous()


def _decode_one(label, blob: bytes, where: str):
    from PIL import Image

    try:
        im = Image.open(io.BytesIO(blob))   # in memory: load() reads it all, nothing is left to close
        im.load()
    except Exception as e:
        raise EmbedError(f"{where}: cannot decode image {label!r} ({e})") from None
    return to_rgb(im)


def prepare_batch(items: list, preprocess, split, where: str, workers=None, slices: int = 1) -> "torch.Tensor":  # noqa: F821
    """Decode ``items`` ((label, image bytes) pairs) and preprocess them into one tensor.

    With ``workers`` (a thread pool) the images are decoded and resized in ``slices`` slices at
    once: PIL releases the GIL there, and one thread alone could not keep up with a 64 px
    model's forward pass on two cores."""
    per_image = (lambda im: im) if split is None else split[0]

    def work(part):
        return [per_image(_decode_one(label, blob, where)) for label, blob in part]

    if workers is None or slices < 2 or len(items) < 2:
        pics = work(items)
    else:
        step = -(-len(items) // slices)
        pics = [p for part in workers.map(work, [items[i:i + step] for i in range(0, len(items), step)]) for p in part]
    return _stack(pics, preprocess, split)


def encode(bundle, items: list, texts, device: str, batch_size: int, progress=None,
           where: str = "embed") -> tuple[np.ndarray, np.ndarray]:
    """Batched image + text embeddings (L2-normalised, float16) of ``items`` ((label, image bytes)).

    The next batch is decoded, preprocessed and tokenised on other threads while the model
    encodes this one (PIL and torch release the GIL), so the I/O overlaps the compute."""
    from concurrent.futures import ThreadPoolExecutor

    import torch

    model, preprocess, tokenizer = bundle
    texts = list(texts)
    split = split_preprocess(preprocess)
    decoders = 1 if str(device).startswith("cuda") else max(1, torch.get_num_threads())

    def prepare(start: int):
        batch_txt = texts[start:start + batch_size]
        pix = prepare_batch(items[start:start + batch_size], preprocess, split, where, workers, decoders)
        return pix, tokenizer(batch_txt), len(batch_txt)

    out_img, out_txt = [], []
    starts = list(range(0, len(texts), batch_size))
    with torch.inference_mode(), ThreadPoolExecutor(1) as ahead, ThreadPoolExecutor(decoders) as workers:
        nxt = ahead.submit(prepare, starts[0]) if starts else None
        for i in range(len(starts)):
            pix, tok, n = nxt.result()
            nxt = ahead.submit(prepare, starts[i + 1]) if i + 1 < len(starts) else None
            out_img.append(normalise(model.encode_image(pix.to(device))).cpu().numpy().astype(np.float16))
            out_txt.append(normalise(model.encode_text(tok.to(device))).cpu().numpy().astype(np.float16))
            if progress is not None:
                progress.update(n)
    if not out_img:
        return np.zeros((0, 0), np.float16), np.zeros((0, 0), np.float16)
    return np.concatenate(out_img), np.concatenate(out_txt)


# ----------------------------------------------------------------------------- one shard

def shard_state(pool: Path, shard: str, spec: ModelSpec, fp: str | None = None) -> str:
    """'done' (npz + score column match the parquet), 'score' (npz matches, score column missing) or 'todo'.

    A shard we embedded records the weights' fingerprint in the parquet's metadata; when
    it differs from ``fp`` the shard is 'todo'. A shard without it (e.g. upstream's
    metadata with its own npz) is used as is.
    """
    import pyarrow.parquet as pq

    lay = as_pool(pool)
    pq_path, npz_path = lay.parquet(shard), lay.npz(shard)
    if lay.embed_pending(shard).exists():      # a swap of npz and parquet was cut short
        return "todo"
    try:
        pf = pq.ParquetFile(pq_path)
    except Exception as e:
        raise EmbedError(f"{pq_path}: not a readable parquet file ({e})") from None
    rows = pf.metadata.num_rows
    made_by = (pf.schema_arrow.metadata or {}).get((META_PREFIX + spec.name).encode())
    if fp is not None and made_by is not None and made_by.decode() != fp:
        return "todo"
    keys = _npz_keys(npz_path)
    if keys.get(spec.img_key) != rows or keys.get(spec.txt_key) != rows:
        return "todo"
    if spec.score_column in pf.schema_arrow.names:
        col = pf.read(columns=[spec.score_column]).column(0)
        if col.null_count == 0:
            return "done"
    return "score"


def _with_scores(pq_path: Path, column: str, scores: np.ndarray, meta: dict[str, str] | None = None):
    """The shard's metadata table with the score column (re)placed and ``meta`` in its schema metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(pq_path)
    if column in table.column_names:
        table = table.drop_columns([column])
    table = table.append_column(column, pa.array(scores, type=pa.float32()))
    if meta:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                               **{k.encode(): v.encode() for k, v in meta.items()}})
    return table


def embed_shard(pool: Path, shard: str, spec: ModelSpec, device: str = "cpu", batch_size: int = 256,
                force: bool = False, progress=None, fp: str | None = None) -> dict:
    """Embed one shard (or only add its score column when the npz already holds the embeddings)."""
    import pyarrow.parquet as pq

    t0 = time.time()
    pool = as_pool(pool)
    pq_path, npz_path, tar_path = pool.parquet(shard), pool.npz(shard), pool.tar(shard)
    fp = fp or fingerprint(spec)
    state = "todo" if force else shard_state(pool, shard, spec, fp)
    rows = pq.ParquetFile(pq_path).metadata.num_rows
    if state == "done":
        return {"shard": shard, "rows": rows, "status": "skipped", "seconds": 0.0}
    if state == "score":
        with np.load(npz_path) as z:
            scores = similarity(z[spec.img_key], z[spec.txt_key])
        from .schema import write_table_atomic

        write_table_atomic(_with_scores(pq_path, spec.score_column, scores), pq_path)
        return {"shard": shard, "rows": rows, "status": "scored", "seconds": time.time() - t0}
    table = pq.read_table(pq_path, columns=None)
    for col in ("key", "text"):
        if col not in table.column_names:
            raise EmbedError(f"{pq_path}: no {col!r} column (the metadata must name each sample's tar key "
                             "and caption)")
    keys = [str(k) for k in table.column("key").to_pylist()]
    texts = ["" if t is None else str(t) for t in table.column("text").to_pylist()]
    blobs = read_tar_images(tar_path, keys, shard)
    img, txt = encode(get_model(spec, device), [(k, blobs[k]) for k in keys], texts, device, batch_size, progress,
                      f"shard {shard}")
    if rows == 0:
        img = txt = np.zeros((0, 0), np.float16)
    _swap_in(pool, shard, _merged_npz(npz_path, {spec.img_key: img, spec.txt_key: txt}),
             _with_scores(pq_path, spec.score_column, similarity(img, txt) if rows else np.zeros(0, np.float32),
                          {META_PREFIX + spec.name: fp}))
    return {"shard": shard, "rows": rows, "status": "embedded", "seconds": time.time() - t0}


def _swap_in(pool, shard: str, arrays: dict[str, np.ndarray], table) -> None:
    """Replace a shard's npz and parquet as a pair: both are written beside the old ones first, a
    marker says the pair is being swapped, then two renames; a run killed between them leaves the
    marker, so the next run embeds the shard again instead of pairing new scores with old vectors."""
    import pyarrow.parquet as pq

    from .atomic import atomic_path

    pending = pool.embed_pending(shard)
    with atomic_path(pool.npz(shard)) as npz_tmp, atomic_path(pool.parquet(shard)) as pq_tmp:
        with open(npz_tmp, "wb") as f:
            np.savez(f, **arrays)
        pq.write_table(table, pq_tmp)
        pending.write_text("")
    pending.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- holdout sets

def _holdout_done(dst: Path, item_ids: np.ndarray, fp: str) -> bool:
    try:
        with np.load(dst) as z:
            return (np.array_equal(z["item_id"], item_ids) and len(z["img"]) == len(item_ids)
                    and str(z["model"]) == fp)
    except Exception:
        return False


def embed_holdout(pool: Path, spec: ModelSpec, device: str = "cpu", batch_size: int = 256,
                  force: bool = False, fp: str | None = None) -> dict[str, str]:
    """``POOL/holdout/{eval,trusted}.parquet`` -> ``{which}.{name}.npz`` (img, txt float16, item_id, model)."""
    import pyarrow.parquet as pq

    fp = fp or fingerprint(spec)
    lay = as_pool(pool)
    done = {}
    for which in HOLDOUT_SETS:
        src = lay.holdout_parquet(which)
        if not src.is_file():
            continue
        dst = lay.holdout_npz(which, spec.name)
        table = pq.read_table(src)
        for col in ("item_id", "image", "text"):
            if col not in table.column_names:
                raise EmbedError(f"{src}: no {col!r} column")
        item_ids = np.asarray([str(x) for x in table.column("item_id").to_pylist()])
        if not force and _holdout_done(dst, item_ids, fp):
            done[which] = "skipped"
            continue
        items = list(zip(item_ids, table.column("image").to_pylist()))
        texts = ["" if t is None else str(t) for t in table.column("text").to_pylist()]
        from tqdm import tqdm

        with tqdm(total=len(texts), desc=f"embed {spec.name} holdout/{which}", unit="sample") as bar:
            img, txt = encode(get_model(spec, device), items, texts, device, batch_size, bar, str(src))
        write_npz_atomic(dst, {"img": img, "txt": txt, "item_id": item_ids, "model": np.array(fp)})
        done[which] = "embedded"
    return done


# ----------------------------------------------------------------------------- the pool

def _spark_embed(spark, pool: Path, spec: ModelSpec, shards: list[str], device: str, batch_size: int,
                 force: bool, fp: str) -> list[dict]:
    """One Spark task per shard (datacurate.executor); each Python worker loads the model once and reuses it."""
    from .executor import SparkExecutor

    parallelism = max(1, spark.sparkContext.defaultParallelism)
    threads = max(1, (os.cpu_count() or 1) // parallelism) if spark.sparkContext.master.startswith("local") else 0
    lay = as_pool(pool)

    def run(shard: str) -> dict:
        import torch
        from pyspark import TaskContext

        dev = device
        if dev == "auto":
            ctx = TaskContext.get()
            gpus = ctx.resources().get("gpu") if ctx is not None else None
            dev = f"cuda:{gpus.addresses[0]}" if gpus is not None and gpus.addresses else pick_device("auto")
        if threads:
            torch.set_num_threads(threads)
        return embed_shard(lay, shard, spec, dev, batch_size, force, fp=fp)

    rows = SparkExecutor(spark).map(run, shards, f"embed {spec.name}")
    return sorted(rows, key=lambda r: r["shard"])


def embed_pool(pool, model: str | ModelSpec, name: str | None = None, device: str = "auto",
               batch_size: int = 256, spark=None, force: bool = False, holdout: bool = True) -> dict:
    """Embed every shard of ``pool`` (and its holdout sets); returns a summary dict.

    Shards already done are skipped without loading the model, so metadata that ships
    with upstream's embeddings and scores works offline even for a hub model.
    """
    from tqdm import tqdm

    pool = as_pool(pool)
    spec = model if isinstance(model, ModelSpec) else parse_model(model, name)
    shards = pool.shard_ids()
    fp = fingerprint(spec)
    states = {s: ("todo" if force else shard_state(pool, s, spec, fp)) for s in shards}
    pending = [s for s in shards if states[s] != "done"]
    holdout_todo = holdout and _holdout_pending(pool, spec, force, fp)
    dev = pick_device(device) if (pending or holdout_todo) and (spark is None or device != "auto") else device
    if spark is None and (pending or holdout_todo) and not str(dev).startswith("cuda"):
        import torch

        torch.set_num_threads(pick_threads())
    t0 = time.time()
    if spark is not None and pending:
        results = _spark_embed(spark, pool, spec, pending, dev, batch_size, force, fp)
    else:
        import pyarrow.parquet as pq

        todo_rows = sum(pq.ParquetFile(pool.parquet(s)).metadata.num_rows
                        for s in pending if states[s] == "todo")
        results = []
        with tqdm(total=todo_rows, desc=f"embed {spec.name}", unit="sample", disable=not todo_rows) as bar:
            for s in pending:
                results.append(embed_shard(pool, s, spec, dev, batch_size, force, progress=bar, fp=fp))
    hold = embed_holdout(pool, spec, dev if dev != "auto" else pick_device("auto"), batch_size, force, fp) \
        if holdout_todo else {}
    return {
        "model": spec.arch, "pretrained": spec.pretrained, "fingerprint": fp, "name": spec.name,
        "score_column": spec.score_column,
        "device": dev, "shards": len(shards), "skipped": len(shards) - len(pending),
        "embedded": sum(r["status"] == "embedded" for r in results),
        "scored": sum(r["status"] == "scored" for r in results),
        "rows": sum(r["rows"] for r in results if r["status"] == "embedded"),
        "seconds": round(time.time() - t0, 2), "holdout": hold,
    }


def _holdout_pending(pool: Path, spec: ModelSpec, force: bool, fp: str) -> bool:
    import pyarrow.parquet as pq

    lay = as_pool(pool)
    for which in HOLDOUT_SETS:
        src = lay.holdout_parquet(which)
        if not src.is_file():
            continue
        dst = lay.holdout_npz(which, spec.name)
        if force or not dst.is_file():
            return True
        ids = np.asarray([str(x) for x in pq.read_table(src, columns=["item_id"]).column(0).to_pylist()])
        if not _holdout_done(dst, ids, fp):
            return True
    return False


# ----------------------------------------------------------------------------- CLI

EPILOG = """\
examples:
  datacurate embed --pool runs/tiny/pool --model runs/tiny/fnet            # filtering network -> fnet_img/fnet_txt
  datacurate embed --pool POOL --model TinyCLIP-ViT-64:runs/x/checkpoints/epoch_latest.pt --arch tiny
  datacurate embed --pool POOL --model ViT-B-32:openai --device cuda       # upstream's b32 (needs the hub)
  datacurate embed --pool POOL --model NET --master spark://host:7077      # one model per Spark executor

writes POOL/metadata/NNNNN.npz ({arch}_img, {arch}_txt: float16, L2-normalised, row-aligned with
NNNNN.parquet), adds clip_{arch}_similarity_score to the parquet, and POOL/holdout/{eval,trusted}.{arch}.npz.
Finished shards are skipped; --force recomputes."""


def add_parser(sub) -> None:
    p = sub.add_parser("embed", help="CLIP image/text embeddings and similarity scores for a pool",
                       description="Compute CLIP embeddings for every pool sample (upstream DataComp's npz "
                                   "layout) and the CLIP similarity score column.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pool", required=True, type=Path, help="pool folder (with metadata/ and shards/), its metadata/ "
                                                            "folder, or img2dataset's output folder")
    p.add_argument("--model", required=True,
                   help="ARCH:TAG (OpenCLIP hub weights), ARCH:CHECKPOINT, or a model directory")
    p.add_argument("--arch", default=None,
                   help="short name for npz keys and score column (default: b32/l14 for OpenAI ViT-B-32/L-14, "
                        "fnet for a filtering network, else from the architecture)")
    p.add_argument("--device", default="auto", help="auto (cuda when available), cpu or cuda[:N]")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--master", default=None, help="Spark master: embed shards on Spark, one model per executor")
    p.add_argument("--force", action="store_true", help="recompute shards that are already done")
    p.add_argument("--no-holdout", action="store_true", help="do not embed POOL/holdout/*.parquet")
    p.set_defaults(func=_run)


def _run(args) -> int:
    import json
    import sys

    if args.batch_size < 1:
        raise UserError("--batch-size must be at least 1")
    spark = None
    if args.master:
        from .spark import get_spark

        spark = get_spark(args.master, app_name="datacurate-embed")
    lay = PoolLayout.find(args.pool)
    if lay.kind != "pool":
        print(lay.describe(), file=sys.stderr)
    summary = embed_pool(lay, args.model, name=args.arch, device=args.device, batch_size=args.batch_size,
                         spark=spark, force=args.force, holdout=not args.no_holdout)
    print(json.dumps(summary, indent=2))
    return 0
