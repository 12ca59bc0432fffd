"""A filtering network for the offline benchmark (in the spirit of Data Filtering Networks).

There are no pretrained CLIP weights offline, so we train a small CLIP (our
``TinyCLIP-ViT-64`` config) on the pool's trusted split (real items with their true
captions, disjoint from the pool and from the evaluation sets), with augmentation that
mimics how the pool composes its images. ``datacurate embed --model NET`` then scores
the pool with it (``fnet_img``/``fnet_txt``, ``clip_fnet_similarity_score``), and
:func:`evaluate_auc` measures how well that score separates matched from swapped captions.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np

from datacurate.atomic import atomic_path, write_json_atomic
from datacurate.errors import UserError

from datacurate.layout import NetLayout, PoolLayout, as_pool

from datacurate.clip import FILTER_NET_NAME, pick_threads

DEFAULT_MODEL = "TinyCLIP-ViT-64"


def _trusted_table(pool: Path):
    import pyarrow.parquet as pq

    src = PoolLayout.at(pool).holdout_parquet("trusted")
    if not src.is_file():
        raise UserError(f"{src}: no trusted set (made by `datacurate pool build`)")
    table = pq.read_table(src)
    missing = [c for c in ("image", "text") if c not in table.column_names]
    if missing:
        raise UserError(f"{src}: missing column(s) {', '.join(missing)}")
    if table.num_rows < 2:
        raise UserError(f"{src}: {table.num_rows} row(s); contrastive training needs at least 2")
    return src, table


def _cosine_lr(step: int, total: int, warmup: int, base: float) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    p = (step - warmup) / max(1, total - warmup)
    return 0.5 * base * (1 + math.cos(math.pi * p))


def train_filter_net(pool, out, steps: int = 300, batch_size: int = 128, lr: float = 1e-3,
                     weight_decay: float = 0.1, seed: int = 0, model: str = DEFAULT_MODEL,
                     threads: int | None = None, loader_workers: int = 1) -> dict:
    """Train the filtering network on ``POOL/holdout/trusted.parquet``; write NET/checkpoint.pt + info.json.

    fp32 on CPU (amp is much slower there); the whole loop is in-process with open_clip's
    model and ClipLoss; ``loader_workers=1`` composes the batches in a loader process beside the
    training step (0: inline, the same bytes, slower). Returns the info dict.
    """
    import open_clip
    import torch
    from torchvision import transforms as T
    from tqdm import tqdm

    from datacurate.clip import load_clip

    from .filter_net_data import Composer, TrainingBatches, batch_loader, load_items

    if steps < 1 or batch_size < 2:
        raise UserError("--steps must be >= 1 and --batch-size >= 2")
    out = Path(out)
    src, table = _trusted_table(Path(pool))
    torch.set_num_threads(pick_threads(threads))
    torch.manual_seed(seed)
    net, preprocess, tokenizer = load_clip(model, None, "cpu")       # a fresh initialisation, seeded above
    normalize = next(t for t in preprocess.transforms if isinstance(t, T.Normalize))
    size = net.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else int(size)
    to_tensor = T.Compose([T.ToTensor(), normalize])
    items = load_items(table)
    composer = Composer(size=size, seed=seed)
    batch_size = min(batch_size, len(items))

    decay = [p for n, p in net.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in net.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.98), eps=1e-6)
    loss_fn = open_clip.ClipLoss()
    warmup = max(1, steps // 10)
    losses = []
    net.train()
    # the batches are composed in a loader process while the model trains on the previous one;
    # they continue torch's RNG from here, so the checkpoint is the one an inline loop gives
    stream = TrainingBatches(items, composer, tokenizer, to_tensor, steps=steps, batch_size=batch_size,
                             seed=seed, torch_state=torch.get_rng_state())
    batches = batch_loader(stream, workers=loader_workers)
    t0 = time.time()
    bar = tqdm(range(steps), desc="filter-net train", unit="step")
    for step in bar:
        pix, tok = next(batches)
        for g in opt.param_groups:
            g["lr"] = _cosine_lr(step, steps, warmup, lr)
        img_f, txt_f, scale = net(pix, tok)[:3]
        loss = loss_fn(img_f, txt_f, scale)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():  # CLIP clamps the temperature at 100 (open_clip_train does the same)
            net.logit_scale.clamp_(0, math.log(100))
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    bar.close()
    train_s = time.time() - t0
    k = max(1, min(20, steps // 5))
    out.mkdir(parents=True, exist_ok=True)
    ckpt = NetLayout(out).checkpoint
    with atomic_path(ckpt) as tmp, open(tmp, "wb") as f:
        # through a file object: saved to a path, torch names the zip's entries after the file (the
        # temporary name, which holds the process id), so the same weights gave other bytes
        torch.save({"state_dict": net.state_dict(), "step": steps}, f)
    info = {
        "model": model, "checkpoint": ckpt.name, "arch_name": FILTER_NET_NAME,
        "steps": steps, "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay, "seed": seed,
        "trusted_set": str(src), "trusted_size": len(items),
        "epochs": round(steps * batch_size / len(items), 2), "train_seconds": round(train_s, 1),
        "initial_loss": round(float(np.mean(losses[:k])), 4), "final_loss": round(float(np.mean(losses[-k:])), 4),
        "loss_curve": [round(x, 4) for x in losses[:: max(1, steps // 50)]],
    }
    _write_info(out, info)
    return info


def _write_info(net: Path, info: dict) -> None:
    write_json_atomic(NetLayout(Path(net)).info, info)


def scores_with_truth(pool: Path, column: str):
    """(defect labels, scores) of every pool row, in metadata order; an error names a row the ground truth lacks."""
    import pyarrow.parquet as pq

    gt_path = as_pool(pool).ground_truth
    if not gt_path.is_file():
        raise UserError(f"{gt_path}: no ground truth (only built pools have one)")
    gt = pq.read_table(gt_path, columns=["uid", "defect"]).to_pandas().set_index("uid")["defect"]
    uids, scores = [], []
    for p in as_pool(pool).metadata_files():
        pf = pq.ParquetFile(p)
        if column not in pf.schema_arrow.names:
            raise UserError(f"{p}: no {column!r} column; run `datacurate embed` first")
        t = pf.read(columns=["uid", column])
        uids += t.column("uid").to_pylist()
        scores += t.column(column).to_pylist()
    labels = gt.reindex(uids).to_numpy()
    lost = next((u for u, d in zip(uids, labels) if not isinstance(d, str)), None)
    if lost is not None:
        raise UserError(f"{gt_path}: no row for uid {lost} of the pool's metadata; give the pool it was built with")
    return labels, np.asarray(scores, dtype=np.float64)


def caption_auc(labels, scores, defect: str = "swapped_caption") -> float | None:
    """ROC AUC of ``scores``: rows with the true caption (defect none) against rows with ``defect``; None if either is absent."""
    from sklearn.metrics import roc_auc_score

    labels, scores = np.asarray(labels), np.asarray(scores)
    clean, bad = labels == "none", labels == defect
    if not clean.any() or not bad.any():
        return None
    return float(roc_auc_score(np.r_[np.ones(clean.sum()), np.zeros(bad.sum())], np.r_[scores[clean], scores[bad]]))


def evaluate_auc(pool, arch: str = FILTER_NET_NAME) -> dict:
    """ROC AUC of ``clip_{arch}_similarity_score``: matched captions (defect none) vs swapped ones.

    Also reports the AUC against the other caption defects present (boilerplate, foreign language).
    """
    column = f"clip_{arch}_similarity_score"
    labels, scores = scores_with_truth(Path(pool), column)
    clean = labels == "none"
    result: dict = {"score_column": column, "n_none": int(clean.sum()),
                    "mean_score_none": round(float(scores[clean].mean()), 4) if clean.any() else None}
    for defect in ("swapped_caption", "boilerplate", "foreign_language"):
        bad = labels == defect
        auc = caption_auc(labels, scores, defect)
        if auc is None:
            continue
        key = "auc" if defect == "swapped_caption" else f"auc_{defect}"
        result[key] = round(auc, 4)
        result[f"n_{defect}"] = int(bad.sum())
        result[f"mean_score_{defect}"] = round(float(scores[bad].mean()), 4)
    if "auc" not in result:
        raise UserError(f"{pool}: the ground truth has no 'none' and 'swapped_caption' rows to compare")
    return result


def record_auc(net, pool, arch: str = FILTER_NET_NAME) -> dict:
    """evaluate_auc and store the result in NET/info.json under 'pool_auc'."""
    net = Path(net)
    path = NetLayout(net).info
    if not path.is_file():
        raise UserError(f"{path}: no filtering-network info (run `datacurate filter-net train`)")
    info = json.loads(path.read_text())
    res = evaluate_auc(pool, arch)
    res["pool"] = str(pool)
    info["pool_auc"] = res
    _write_info(net, info)
    return res


# ----------------------------------------------------------------------------- CLI

EPILOG = """\
examples:
  datacurate filter-net train --pool runs/tiny/pool --out runs/tiny/fnet
  datacurate embed --pool runs/tiny/pool --model runs/tiny/fnet          # scores as clip_fnet_similarity_score
  datacurate filter-net auc --pool runs/tiny/pool --net runs/tiny/fnet   # matched vs swapped captions

trains TinyCLIP-ViT-64 on POOL/holdout/trusted.parquet (fp32, in-process, ~2 min on 2 cores for the tiny
pool) and writes NET/checkpoint.pt (open_clip.create_model_and_transforms(model, pretrained=path) loads
it) and NET/info.json (model, steps, seed, trusted set size, train time, losses)."""


def add_parser(sub) -> None:
    p = sub.add_parser("filter-net", help="train a small CLIP filtering network on the trusted split",
                       description="A DFN-style filtering network for the offline benchmark: a small CLIP "
                                   "trained on the pool's trusted items, used by `datacurate embed`.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sp = p.add_subparsers(dest="filter_net_command", metavar="ACTION")
    t = sp.add_parser("train", help="train the network on POOL/holdout/trusted.parquet",
                      description="Train the filtering network.", epilog=EPILOG,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("--pool", required=True, type=Path)
    t.add_argument("--out", required=True, type=Path, help="output directory NET")
    t.add_argument("--steps", type=int, default=300, help="optimizer steps (default 300)")
    t.add_argument("--epochs", type=float, default=None,
                   help="passes over the trusted set (overrides --steps)")
    t.add_argument("--batch-size", type=int, default=128)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--model", default=DEFAULT_MODEL, help="OpenCLIP model config (default TinyCLIP-ViT-64)")
    t.set_defaults(func=_run_train, out_folder="NET folder")
    a = sp.add_parser("auc", help="ROC AUC of the net's score: matched vs swapped captions (ground truth)",
                      description="Evaluate an embedded pool against its ground truth; store in NET/info.json.",
                      epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    a.add_argument("--pool", required=True, type=Path)
    a.add_argument("--net", type=Path, default=None, help="write the result into NET/info.json")
    a.add_argument("--arch", default=FILTER_NET_NAME, help="score column clip_ARCH_similarity_score")
    a.set_defaults(func=_run_auc)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _run_train(args) -> int:
    steps = args.steps
    if args.epochs is not None:
        import pyarrow.parquet as pq

        src = PoolLayout.at(args.pool).holdout_parquet("trusted")
        n = pq.ParquetFile(src).metadata.num_rows if src.is_file() else 0
        steps = max(1, math.ceil(args.epochs * n / max(1, min(args.batch_size, n or 1))))
    info = train_filter_net(args.pool, args.out, steps=steps, batch_size=args.batch_size, lr=args.lr,
                            seed=args.seed, model=args.model)
    print(json.dumps({k: v for k, v in info.items() if k != "loss_curve"}, indent=2))
    return 0


def _run_auc(args) -> int:
    res = record_auc(args.net, args.pool, args.arch) if args.net else evaluate_auc(args.pool, args.arch)
    print(json.dumps(res, indent=2))
    return 0
