"""The metric code: zero-shot classifiers, accuracy, mean per-class recall, retrieval recall@k,
worst-group accuracy, and the bootstrap standard error of a main metric over eval items.
Pure functions of embeddings and labels, so they can be checked exactly.

Definitions follow clip_benchmark (``metrics/zeroshot_classification.py``,
``metrics/zeroshot_retrieval.py``) and upstream DataComp's ``eval_utils`` (WILDS-style group
metrics: ``<metric>_avg`` over all samples, ``<metric>_wg`` the worst group with samples).
"""
from __future__ import annotations

from typing import Callable, Iterable, Optional, Sequence

import numpy as np

SE_KEY = "main_metric_se"       # the extra metric key eval_results.jsonl lines carry
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0               # fixed: the same checkpoint gives the same standard errors
_CHUNK_CELLS = 4_000_000         # resamples x items drawn at once (bounds memory on ImageNet's 50k)


def class_embeddings(encode_text: Callable, tokenizer: Callable, classnames: Sequence[str],
                     templates: Sequence[str], device="cpu", batch_size: int = 256):
    """(D, C) zero-shot weights: per class, the mean of its L2-normalised prompt embeddings, re-normalised."""
    import torch
    import torch.nn.functional as F

    prompts = [t.format(c=c) for c in classnames for t in templates]
    embs = []
    with torch.no_grad():
        for i in range(0, len(prompts), batch_size):
            tok = tokenizer(prompts[i:i + batch_size]).to(device)
            embs.append(F.normalize(encode_text(tok).float(), dim=-1))
    e = torch.cat(embs).view(len(classnames), len(templates), -1).mean(dim=1)
    return F.normalize(e, dim=-1).T.contiguous()


def hierarchical_logits(class_logits, sub_logits, members):
    """(N, C) logits where class c scores the best of its own logit and its subclasses' (CHiLS).

    ``members[c]``: indices into the columns of ``sub_logits`` (N, S) that belong to class c.
    """
    import torch

    out = class_logits.clone()
    for c, idx in enumerate(members):
        if len(idx):
            out[:, c] = torch.maximum(out[:, c], sub_logits[:, list(idx)].max(dim=1).values)
    return out


def _fraction(hits) -> float:
    """Exact hits/total as a Python float (a float32 mean would round the last digits)."""
    return int(hits.sum()) / int(hits.numel())


def topk_accuracy(logits, target, k: int) -> float:
    """Fraction of samples whose label is among the k highest logits."""
    import torch

    k = min(k, logits.shape[1])
    top = logits.topk(k, dim=1).indices
    return _fraction((top == torch.as_tensor(target).view(-1, 1)).any(dim=1))


def mean_per_class_recall(target, pred) -> float:
    """Mean over classes present in ``target`` of the fraction predicted right (sklearn's balanced accuracy)."""
    target, pred = np.asarray(target), np.asarray(pred)
    recalls = [int(np.sum(pred[target == c] == c)) / int(np.sum(target == c)) for c in np.unique(target)]
    return float(np.mean(recalls))


def rank_percentiles(scores, right) -> np.ndarray:
    """Per query (row of ``scores``): the share of the wrong answers scored below the right one.

    1 = the right answer ranked first, 0.5 = chance, whatever the number of answers; ties count
    half. Where top-1 accuracy is a few percent it keeps what a ranking knows beyond its first
    place (the offline suite's main metric, docs/eval.md)."""
    s = np.asarray(scores)                      # compared, never summed: no float64 copy (COCO: 25k x 5k)
    right = np.asarray(right, dtype=np.int64)
    own = s[np.arange(len(right)), right][:, None]
    below = (s < own).sum(axis=1)
    ties = (s == own).sum(axis=1) - 1
    return (below + 0.5 * ties) / max(1, s.shape[1] - 1)


def classification_metrics(logits, target) -> dict:
    """acc1, acc5 (None under 5 classes, as upstream), mean_per_class_recall, mean_rank_percentile."""
    import torch

    target = torch.as_tensor(target)
    pred = logits.argmax(dim=1)
    return {
        "acc1": topk_accuracy(logits, target, 1),
        "acc5": topk_accuracy(logits, target, 5) if logits.shape[1] >= 5 else None,
        "mean_per_class_recall": mean_per_class_recall(target.numpy(), pred.numpy()),
        "mean_rank_percentile": float(rank_percentiles(logits.numpy(), target.numpy()).mean()),
    }


def retrieval_hits(image_emb, text_emb, text_image_index: Sequence[int],
                   ks: Iterable[int] = (1, 5, 10)) -> dict:
    """Per-query outcomes of recall@k, several captions per image.

    image_retrieval_recall@k: per caption (bool, n_captions), is its image among the k nearest images.
    text_retrieval_recall@k: per image (bool, n_images), is any of its captions among the k nearest captions.
    """
    import torch

    scores = text_emb.float() @ image_emb.float().T                  # (texts, images)
    idx = torch.as_tensor(list(text_image_index), dtype=torch.long)
    n_txt, n_img = scores.shape
    out = {"image_retrieval_rank_percentile": rank_percentiles(scores.numpy(), idx.numpy()),
           "text_retrieval_rank_percentile": _text_rank_percentiles(scores.numpy(), idx.numpy())}
    for k in ks:
        ki = min(k, n_img)
        top_img = scores.topk(ki, dim=1).indices                       # per caption
        out[f"image_retrieval_recall@{k}"] = (top_img == idx.view(-1, 1)).any(dim=1)
        kt = min(k, n_txt)
        top_txt = scores.T.topk(kt, dim=1).indices                     # per image: caption ids
        out[f"text_retrieval_recall@{k}"] = (idx[top_txt] == torch.arange(n_img).view(-1, 1)).any(dim=1)
    return out


def _text_rank_percentiles(scores: np.ndarray, owner: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """Per image: the share of other images' captions scored below its best own caption."""
    n_txt, n_img = scores.shape
    out = np.empty(n_img)
    for a in range(0, n_img, chunk):
        block = scores[:, a:a + chunk].T                                    # (images, texts)
        mine = owner[None, :] == np.arange(a, a + block.shape[0])[:, None]
        best = np.where(mine, block, -np.inf).max(axis=1, keepdims=True)
        wrong = ~mine
        below = ((block < best) & wrong).sum(axis=1)
        ties = ((block == best) & wrong).sum(axis=1)
        out[a:a + block.shape[0]] = (below + 0.5 * ties) / np.maximum(1, wrong.sum(axis=1))
    return out


def retrieval_recalls(hits: dict) -> dict:
    """Recall@k from :func:`retrieval_hits`; mean_recall@1 is the mean of both ways (upstream
    retr_eval.py's main metric), mean_rank_percentile the same of the rank percentiles."""
    out = {name: (float(np.mean(h)) if name.endswith("rank_percentile") else _fraction(h)) for name, h in hits.items()}
    for metric, a, b in (("mean_recall@1", "text_retrieval_recall@1", "image_retrieval_recall@1"),
                         ("mean_rank_percentile", "text_retrieval_rank_percentile", "image_retrieval_rank_percentile")):
        if a in out and b in out:
            out[metric] = 0.5 * (out[a] + out[b])
    return out


def retrieval_metrics(image_emb, text_emb, text_image_index: Sequence[int],
                      ks: Iterable[int] = (1, 5, 10)) -> dict:
    """Recall@k both ways (see :func:`retrieval_hits`), and mean_recall@1."""
    return retrieval_recalls(retrieval_hits(image_emb, text_emb, text_image_index, ks))


# ----------------------------------------------------------------------------- bootstrap over eval items

def bootstrap_se(stat: Callable[[np.ndarray], np.ndarray], n: int, resamples: int = BOOTSTRAP_RESAMPLES,
                 seed: int = BOOTSTRAP_SEED) -> Optional[float]:
    """Sample std (ddof=1) of ``stat`` over ``resamples`` resamples of n items with replacement.

    ``stat`` maps a (B, n) array of item indices to B values (vectorised: no Python loop per
    resample); non-finite values are dropped. Resamples are drawn in chunks from one seeded
    generator, so the same items give the same number. None under 2 items: no spread to measure.
    """
    if n < 2:
        return None
    rng = np.random.default_rng(seed)
    chunk = max(1, min(resamples, _CHUNK_CELLS // n))
    vals = []
    for start in range(0, resamples, chunk):
        b = min(chunk, resamples - start)
        vals.append(np.asarray(stat(rng.integers(0, n, size=(b, n))), dtype=float))
    vals = np.concatenate(vals)
    vals = vals[np.isfinite(vals)]
    return float(vals.std(ddof=1)) if len(vals) > 1 else None


def _per_class_recall_stat(target, correct) -> Callable[[np.ndarray], np.ndarray]:
    """Mean over the classes present in each resample of their recall (balanced accuracy)."""
    _, codes = np.unique(np.asarray(target), return_inverse=True)
    n_cls = int(codes.max()) + 1
    correct = np.asarray(correct, dtype=float)

    def stat(idx):
        b = idx.shape[0]
        cell = (codes[idx] + n_cls * np.arange(b)[:, None]).ravel()
        tot = np.bincount(cell, minlength=b * n_cls).reshape(b, n_cls)
        hit = np.bincount(cell, weights=correct[idx].ravel(), minlength=b * n_cls).reshape(b, n_cls)
        present = tot > 0
        return (hit / np.maximum(tot, 1)).sum(axis=1) / present.sum(axis=1)
    return stat


def classification_se(logits, target, metric: Optional[str], resamples: int = BOOTSTRAP_RESAMPLES,
                      seed: int = BOOTSTRAP_SEED) -> Optional[float]:
    """Bootstrap se over images of acc1, acc5, mean_per_class_recall or mean_rank_percentile; None for any other metric
    (worst-group, F1: no per-item outcome to resample here) and for acc5 under 5 classes."""
    import torch

    target = torch.as_tensor(target)
    if metric == "acc1":
        correct = (logits.argmax(dim=1) == target).numpy()
    elif metric == "mean_rank_percentile":
        correct = rank_percentiles(logits.numpy(), target.numpy())
    elif metric == "acc5" and logits.shape[1] >= 5:
        correct = (logits.topk(5, dim=1).indices == target.view(-1, 1)).any(dim=1).numpy()
    elif metric == "mean_per_class_recall":
        stat = _per_class_recall_stat(target.numpy(), (logits.argmax(dim=1) == target).numpy())
        return bootstrap_se(stat, len(target), resamples, seed)
    else:
        return None
    correct = correct.astype(float)
    return bootstrap_se(lambda idx: correct[idx].mean(axis=1), len(correct), resamples, seed)


def retrieval_se(hits: dict, text_image_index: Sequence[int], metric: Optional[str],
                 resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> Optional[float]:
    """Bootstrap se over query images of a recall@k (or mean_recall@1) from :func:`retrieval_hits`.

    Images are resampled each with its captions: a caption query belongs to its image, so the two
    directions of mean_recall@1 move together in a resample, as they do between eval sets.
    """
    owner = np.asarray(list(text_image_index), dtype=np.int64)
    parts = {"mean_recall@1": ["text_retrieval_recall@1", "image_retrieval_recall@1"],
             "mean_rank_percentile": ["text_retrieval_rank_percentile", "image_retrieval_rank_percentile"]
             }.get(metric, [metric])
    if not all(p in hits for p in parts):
        return None
    n_img = len(hits[next(k for k in hits if k.startswith("text_retrieval"))])
    caps = np.bincount(owner, minlength=n_img).astype(float)

    def part(name):
        h = np.asarray(hits[name], dtype=float)
        if name.startswith("text_retrieval"):
            return lambda idx: h[idx].mean(axis=1)
        per_img = np.bincount(owner, weights=h, minlength=n_img)
        return lambda idx: per_img[idx].sum(axis=1) / caps[idx].sum(axis=1)

    fns = [part(p) for p in parts]
    with np.errstate(invalid="ignore", divide="ignore"):
        return bootstrap_se(lambda idx: sum(f(idx) for f in fns) / len(fns), n_img, resamples, seed)


def group_metrics(correct, groups, name: str, field: str) -> dict:
    """``{name}_avg``, ``{name}_{field}:{g}`` per group and ``{name}_wg`` (worst group with samples)."""
    correct = np.asarray(correct, dtype=float)
    groups = np.asarray(groups)
    out = {f"{name}_avg": float(correct.mean())}
    per = {}
    for g in np.unique(groups):
        m = groups == g
        per[g] = float(correct[m].mean())
        out[f"{name}_{field}:{g.item() if hasattr(g, 'item') else g}"] = per[g]
        out[f"count_{field}:{g.item() if hasattr(g, 'item') else g}"] = int(m.sum())
    out[f"{name}_wg"] = float(min(per.values()))
    return out


def f1_macro(target, pred) -> float:
    """Macro F1 over the labels present in ``target`` (WILDS' F1(average='macro'))."""
    from sklearn.metrics import f1_score

    target, pred = np.asarray(target), np.asarray(pred)
    return float(f1_score(target, pred, average="macro", labels=np.unique(target), zero_division=0))


def macro_recall(target, pred) -> float:
    from sklearn.metrics import recall_score

    target, pred = np.asarray(target), np.asarray(pred)
    return float(recall_score(target, pred, average="macro", labels=np.unique(target), zero_division=0))
