"""The metric code: zero-shot classifiers, accuracy, mean per-class recall, retrieval recall@k,
worst-group accuracy. Pure functions of embeddings and labels, so they can be checked exactly.

Definitions follow clip_benchmark (``metrics/zeroshot_classification.py``,
``metrics/zeroshot_retrieval.py``) and upstream DataComp's ``eval_utils`` (WILDS-style group
metrics: ``<metric>_avg`` over all samples, ``<metric>_wg`` the worst group with samples).
"""
from __future__ import annotations

from typing import Callable, Iterable, Sequence

import numpy as np


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


def classification_metrics(logits, target) -> dict:
    """acc1, acc5 (None under 5 classes, as upstream), mean_per_class_recall."""
    import torch

    target = torch.as_tensor(target)
    pred = logits.argmax(dim=1)
    return {
        "acc1": topk_accuracy(logits, target, 1),
        "acc5": topk_accuracy(logits, target, 5) if logits.shape[1] >= 5 else None,
        "mean_per_class_recall": mean_per_class_recall(target.numpy(), pred.numpy()),
    }


def retrieval_metrics(image_emb, text_emb, text_image_index: Sequence[int],
                      ks: Iterable[int] = (1, 5, 10)) -> dict:
    """Recall@k both ways, several captions per image.

    image_retrieval_recall@k: per caption, is its image among the k nearest images.
    text_retrieval_recall@k: per image, is any of its captions among the k nearest captions.
    mean_recall@1 is their mean (upstream retr_eval.py's main metric).
    """
    import torch

    scores = text_emb.float() @ image_emb.float().T                  # (texts, images)
    idx = torch.as_tensor(list(text_image_index), dtype=torch.long)
    n_txt, n_img = scores.shape
    out = {}
    for k in ks:
        ki = min(k, n_img)
        top_img = scores.topk(ki, dim=1).indices                       # per caption
        out[f"image_retrieval_recall@{k}"] = _fraction((top_img == idx.view(-1, 1)).any(dim=1))
        kt = min(k, n_txt)
        top_txt = scores.T.topk(kt, dim=1).indices                     # per image: caption ids
        hit = (idx[top_txt] == torch.arange(n_img).view(-1, 1)).any(dim=1)
        out[f"text_retrieval_recall@{k}"] = _fraction(hit)
    if 1 in set(ks):
        out["mean_recall@1"] = 0.5 * (out["text_retrieval_recall@1"] + out["image_retrieval_recall@1"])
    return out


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
