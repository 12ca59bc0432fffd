"""Run a suite of tasks on a run's checkpoint: batched encoding, metrics, resumable results."""
from __future__ import annotations

import os
import sys
import time
import warnings
from pathlib import Path
from typing import Optional

from datacurate.atomic import write_text_atomic
from datacurate.errors import UserError
from datacurate.layout import RunLayout

from . import metrics as M
from .classnames import classnames_for, subclasses_for, templates_for
from .data import data_fingerprint, download_task, iter_samples, missing_reason
from .results import aggregate, aggregate_se, read_state, result_line, scores_path, write_results, write_state
from .tasks import (ASSOCIATION, CLASSIFICATION, MULTI_OBJECTIVE, OFFLINE, RETRIEVAL, Task, resolve_suite, suite_groups,
                    task_dir)

DEFAULT_BATCH = 64


def _batches(samples, size: int):
    batch = []
    for s in samples:
        batch.append(s)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _bar(desc: str, total: Optional[int] = None):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="img", file=sys.stderr, leave=False,
                disable=os.environ.get("DATACURATE_NO_PROGRESS") == "1")


def _image_keys(batch) -> list[bytes]:
    """Content hashes of a batch's encoded images: the cache's keys, and the noise analysis's items."""
    import hashlib

    return [hashlib.blake2b(b[0], digest_size=16).digest() for b in batch]


class ImageCache:
    """Image embeddings by content hash, kept for one evaluate_run: the offline tasks share
    their images, so each is decoded and encoded once. Bounded, so big suites do not grow it."""

    def __init__(self, max_items: int = 200_000, workers: int = 0):
        self.max_items = max_items
        self.feats: dict[bytes, object] = {}
        self.text: dict[tuple, object] = {}   # (class names, templates) -> class embeddings
        self.pool = None
        if workers > 0:   # decode + preprocess in threads (PIL releases the GIL): keeps a GPU fed
            from concurrent.futures import ThreadPoolExecutor

            self.pool = ThreadPoolExecutor(max_workers=workers)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()

    def class_weights(self, lm, names, templates) -> "torch.Tensor":
        """(D, C) prompt-ensembled class embeddings, kept for the run: the offline group and
        subgroup tasks share their ~1,000 member names."""
        key = (tuple(names), tuple(templates))
        if key not in self.text:
            self.text[key] = M.class_embeddings(lm.model.encode_text, lm.tokenizer, list(names), list(templates),
                                                lm.device).cpu()
        return self.text[key]

    def encode(self, lm, batch) -> "torch.Tensor":
        """batch: (image bytes, where, ...) tuples -> (B, D) normalised features on CPU."""
        import torch
        import torch.nn.functional as F

        from .data import decode_image

        keys = _image_keys(batch)
        todo = {k: b for k, b in zip(keys, batch) if k not in self.feats}
        if todo:
            prep = lambda b: lm.preprocess(decode_image(b[0], b[1]))
            items = list(todo.values())
            x = torch.stack(list(self.pool.map(prep, items)) if self.pool else [prep(b) for b in items])
            x = x.to(lm.device)
            with torch.no_grad():
                f = F.normalize(lm.model.encode_image(x).float(), dim=-1).cpu()
            fresh = dict(zip(todo, f))
            if len(self.feats) + len(fresh) <= self.max_items:
                self.feats.update(fresh)
        else:
            fresh = {}
        return torch.stack([fresh[k] if k in fresh else self.feats[k] for k in keys])


def classify(task: Task, lm, folder: Path, batch_size: int = DEFAULT_BATCH, cache=None,
             outcomes: Optional[dict] = None) -> dict:
    """Zero-shot classification: prompt-ensembled class embeddings, logits = 100 * cos.

    ``outcomes``: a dict that receives ``{task.key: {"keys": image hashes, "metric": the main
    metric, "correct": top-1 per image, "rank": rank percentile per image}}`` (the noise analysis,
    scripts/bench/eval_noise.py, splits the items)."""
    import numpy as np
    import torch

    cache = cache or ImageCache()
    classnames, _ = classnames_for(task, folder)
    templates, _ = templates_for(task, folder)
    W = cache.class_weights(lm, classnames, templates)
    subclasses = subclasses_for(folder, len(classnames))
    if subclasses:
        names = sorted({n for group in subclasses for n in group})
        col = {n: i for i, n in enumerate(names)}
        members = [[col[n] for n in group] for group in subclasses]
        Wsub = cache.class_weights(lm, names, templates)
    logits, targets, metas, keys = [], [], [], []
    with _bar(task.name) as bar:
        for batch in _batches(iter_samples(task, folder), batch_size):
            if outcomes is not None:
                keys.extend(_image_keys(batch))
            feats = cache.encode(lm, batch)
            out = 100.0 * feats @ W
            if subclasses:
                out = M.hierarchical_logits(out, 100.0 * feats @ Wsub, members)
            logits.append(out)
            targets.extend(b[2] for b in batch)
            metas.extend(b[3] for b in batch)
            bar.update(len(batch))
    logits = torch.cat(logits)
    target = torch.as_tensor(targets)
    bad = target[(target < 0) | (target >= len(classnames))]
    if len(bad):
        raise UserError(f"{folder}: class index {int(bad[0])} outside the {len(classnames)} class names")
    out = M.classification_metrics(logits, target)
    out[M.SE_KEY] = M.classification_se(logits, target, task.main_metric)
    pred = logits.argmax(dim=1).numpy()
    if outcomes is not None:
        outcomes[task.key] = {"keys": keys, "metric": task.main_metric, "correct": pred == target.numpy(),
                              "rank": M.rank_percentiles(logits.numpy(), target.numpy())}
    if "f1_macro" in task.extra_metrics:                     # iWildCam (WILDS metric names)
        out["acc_avg"] = out["acc1"]
        out["recall-macro_all"] = M.macro_recall(target.numpy(), pred)
        out["F1-macro_all"] = M.f1_macro(target.numpy(), pred)
    if task.groups:
        if any(m is None for m in metas):
            raise UserError(f"{folder}: task {task.key!r} needs a .npy metadata row per sample (worst-group metrics)")
        meta = np.stack([np.asarray(m).reshape(-1) for m in metas])
        top5 = logits.topk(min(5, logits.shape[1]), dim=1).indices
        correct = {"acc": pred == target.numpy(),
                   "acc_top5": (top5 == target.view(-1, 1)).any(dim=1).numpy()}
        for name, col, field in task.groups:
            g = M.group_metrics(correct[name], meta[:, col], name, field)
            if len(task.groups) > 1:                         # FMoW: acc_worst_year, acc_worst_region
                g[f"{name}_worst_{field}"] = g.pop(f"{name}_wg")
            out.update(g)
    out["num_samples"] = int(len(target))
    out["num_classes"] = len(classnames)
    return out


def retrieve(task: Task, lm, folder: Path, batch_size: int = DEFAULT_BATCH, cache=None,
             outcomes: Optional[dict] = None) -> dict:
    """Image-text retrieval, recall@1/5/10 both ways.

    ``outcomes`` receives ``{task.key: {"keys", "metric", "text_hit", "caption_hits", "text_rank",
    "caption_ranks", "captions"}}`` per image: its text-retrieval R@1 hit and rank percentile, and
    how many of its captions found it at R@1 and the sum of their rank percentiles."""
    import torch
    import torch.nn.functional as F

    cache = cache or ImageCache()
    img_embs, txt_embs, txt_img, keys = [], [], [], []
    n = 0
    with _bar(task.name) as bar:
        for batch in _batches(iter_samples(task, folder), batch_size):
            if outcomes is not None:
                keys.extend(_image_keys(batch))
            img_embs.append(cache.encode(lm, batch))
            texts = [c for b in batch for c in b[2]]
            txt_img.extend(n + i for i, b in enumerate(batch) for _ in b[2])
            with torch.no_grad():
                tok = lm.tokenizer(texts).to(lm.device)
                txt_embs.append(F.normalize(lm.model.encode_text(tok).float(), dim=-1).cpu())
            n += len(batch)
            bar.update(len(batch))
    hits = M.retrieval_hits(torch.cat(img_embs), torch.cat(txt_embs), txt_img)
    if outcomes is not None:
        import numpy as np

        owner = np.asarray(txt_img, dtype=np.int64)
        outcomes[task.key] = {
            "keys": keys, "metric": task.main_metric, "text_hit": hits["text_retrieval_recall@1"].numpy(),
            "caption_hits": np.bincount(owner, weights=hits["image_retrieval_recall@1"].numpy().astype(float),
                                        minlength=n),
            "text_rank": hits["text_retrieval_rank_percentile"],
            "caption_ranks": np.bincount(owner, weights=hits["image_retrieval_rank_percentile"], minlength=n),
            "captions": np.bincount(owner, minlength=n)}
    out = M.retrieval_recalls(hits)
    out[M.SE_KEY] = M.retrieval_se(hits, txt_img, task.main_metric)
    out["num_samples"] = n
    out["num_captions"] = len(txt_img)
    return out


def multi_objective(task: Task, lm, folder: Path, batch_size: int = DEFAULT_BATCH, cache=None) -> dict:
    """FairFace / UTKFace (eval.fairface): one zero-shot classifier per objective."""
    import numpy as np
    import torch

    from .fairface import OBJECTIVES, fairface_metrics, split_by_objective

    cache = cache or ImageCache()
    classnames, src_c = classnames_for(task, folder)
    templates, src_t = templates_for(task, folder)
    names = split_by_objective(classnames, "class name", Path(src_c))
    tpls = split_by_objective(templates, "template", Path(src_t))
    W = {o: M.class_embeddings(lm.model.encode_text, lm.tokenizer, names[o], tpls[o], lm.device).cpu()
         for o in OBJECTIVES}
    preds = {o: [] for o in OBJECTIVES}
    metas = []
    with _bar(task.name) as bar:
        for batch in _batches(iter_samples(task, folder), batch_size):
            feats = cache.encode(lm, batch)
            for o in OBJECTIVES:
                preds[o].append((feats @ W[o]).argmax(dim=1))
            metas.extend(np.asarray(b[3]).reshape(-1) for b in batch)
            bar.update(len(batch))
    out = fairface_metrics({o: torch.cat(v).numpy() for o, v in preds.items()}, np.stack(metas))
    out["num_samples"] = len(metas)
    return out


def evaluate_task(task: Task, lm, data_root=None, batch_size: int = DEFAULT_BATCH, cache=None,
                  outcomes: Optional[dict] = None) -> dict:
    """Metrics of one task, with ``main_metric`` set as upstream evaluate.py does, and
    ``main_metric_se`` (its bootstrap standard error over eval items; None where the task's
    main metric has no per-item outcome: worst-group, F1, FairFace). ``outcomes``: see
    :func:`classify` and :func:`retrieve` (other task types leave it as it is)."""
    folder = task_dir(task, data_root)
    if task.type == CLASSIFICATION:
        metrics = classify(task, lm, folder, batch_size, cache, outcomes)
    elif task.type == RETRIEVAL:
        metrics = retrieve(task, lm, folder, batch_size, cache, outcomes)
    elif task.type == MULTI_OBJECTIVE:
        metrics = multi_objective(task, lm, folder, batch_size, cache)
    elif task.type == ASSOCIATION:
        from .winogavil import evaluate as winogavil

        metrics = winogavil(lm, folder)
    else:
        raise UserError(f"task {task.key!r}: {task.note or 'no loader'}")
    metrics["main_metric"] = metrics.get(task.main_metric) if task.main_metric else None
    if metrics["main_metric"] is None or metrics.get(M.SE_KEY) is None:
        metrics[M.SE_KEY] = None
    return metrics


def chance_level(task: Task, metrics: Optional[dict] = None) -> Optional[float]:
    """Upstream's random_score when it has one, else 1/classes (classification) or 1/images (retrieval);
    0.5 for a rank percentile, whatever the task."""
    if task.main_metric == "mean_rank_percentile":
        return 0.5
    if task.random_score is not None:
        return float(task.random_score)
    classes = task.num_classes or (metrics or {}).get("num_classes")
    if task.type == CLASSIFICATION and classes:
        k = 5 if "top5" in (task.main_metric or "") else 1
        return min(1.0, k / classes)
    if task.type == RETRIEVAL and metrics and metrics.get("num_samples"):
        return 1.0 / metrics["num_samples"]
    return None


def evaluate_run(run, suite: str = "offline", pool=None, data_root=None, device: str = "auto",
                 batch_size: int = DEFAULT_BATCH, model=None, download: bool = False, redo: bool = False,
                 log=print) -> dict:
    """Evaluate RUN's checkpoint on a suite; write RUN/eval_results.jsonl and the suite's scores; return them.

    The scores go to RUN/scores.json for the run's main suite, else to RUN/scores.<suite>.json
    (eval.results.scores_path); eval_results.jsonl holds every task evaluated for the checkpoint.
    Tasks already evaluated for the same checkpoint (sha256) and task data (data_fingerprint)
    are not redone. ``model``: an already-loaded :class:`eval.model.LoadedModel` (tests,
    benchmarks) instead of RUN/info.json.
    """
    from datacurate.clip import sha256_file

    from .model import load_run_model, read_info

    run = Path(run)
    if not run.is_dir():
        raise UserError(f"{run}: not a directory (a training run folder with info.json)")
    suite_name, tasks = resolve_suite(suite, pool=pool, data_root=data_root)
    if model is None:
        _, ckpt = read_info(run)
        sha = sha256_file(ckpt)
    else:
        sha = model.checkpoint_sha256
    scores_file = scores_path(run, suite_name)
    state = read_state(run)
    keys = {t.key for t in tasks}
    fps = {t.key: data_fingerprint(t, data_root, state["files"]) for t in tasks if not missing_reason(t, data_root)}
    state["tasks"] = {k: v for k, v in state["tasks"].items()       # this checkpoint's, any suite
                      if v.get("sha256") == sha and not (redo and k in keys)
                      and (k not in fps or v.get("data") == fps[k])}
    done = {k: v["line"] for k, v in state["tasks"].items()}
    if download:
        for t in tasks:
            if t.key not in done and missing_reason(t, data_root) and t.hf_repo and not t.path:
                download_task(t, data_root)
        fps.update({t.key: data_fingerprint(t, data_root, state["files"]) for t in tasks
                    if t.key not in fps and not missing_reason(t, data_root)})

    missing: dict[str, str] = {}
    todo = []
    for t in tasks:
        if t.key in done:
            continue
        why = missing_reason(t, data_root)
        if why:
            missing[t.key] = why
        else:
            todo.append(t)
    for k, why in missing.items():
        warnings.warn(f"eval: task {k!r} is missing and excluded from the aggregates: {why}", stacklevel=2)
    done_before = sum(1 for t in tasks if t.key in done)
    log(f"eval: suite {suite_name}: {len(tasks)} task(s), {done_before} already done for this checkpoint, "
        f"{len(todo)} to evaluate, {len(missing)} missing")

    lm = model
    if todo and lm is None:
        lm = load_run_model(run, device)
    if todo:   # until this suite's scores are written, none claim to be current (`datacurate run` checks it)
        scores_file.unlink(missing_ok=True)
    timings = {}
    on_gpu = lm is not None and str(lm.device).startswith("cuda")
    images = ImageCache(workers=min(8, os.cpu_count() or 1) if on_gpu else 0)
    try:
        for t in todo:
            t0 = time.perf_counter()
            metrics = evaluate_task(t, lm, data_root, batch_size, images)
            timings[t.key] = round(time.perf_counter() - t0, 3)
            done[t.key] = result_line(t.key, t.name, metrics)
            state["tasks"][t.key] = {"sha256": sha, "data": fps[t.key], "line": done[t.key]}
            _save(run, state)               # after every task: an interrupted run keeps what it did
            mm = metrics["main_metric"]
            log(f"eval: {t.name}: {t.main_metric} = {'-' if mm is None else f'{mm:.4f}'}  "
                f"({timings[t.key]:.1f} s)")
    finally:
        images.close()

    _save(run, state)
    lines = {x.key: done[x.key] for x in tasks if x.key in done}
    scores = make_scores(suite_name, tasks, lines, missing, sha, timings)
    if suite_name == OFFLINE and pool is not None:
        from .offline import suite_fingerprint

        scores["offline_fingerprint"] = suite_fingerprint(pool)
    import json

    write_text_atomic(scores_file, json.dumps(scores, indent=1) + "\n")
    return scores


def _save(run: Path, state: dict) -> None:
    """eval_state.json, and eval_results.jsonl as upstream keeps it: a line for every task evaluated
    for this checkpoint, whichever suite asked for it (another suite's never disappear)."""
    write_state(run, state)
    write_results(RunLayout(Path(run)).eval_results, {k: v["line"] for k, v in state["tasks"].items()})


def make_scores(suite_name: str, tasks: list[Task], lines: dict[str, dict], missing: dict[str, str],
                sha: str, timings: Optional[dict] = None) -> dict:
    """scores.json's content for a suite from its result lines."""
    imagenet, groups = suite_groups(suite_name, tasks)
    per_task, per_task_se, chance, metric_names = {}, {}, {}, {}
    for t in tasks:
        row = lines.get(t.key)
        if row is None or not t.scored:
            continue
        v = row["metrics"].get("main_metric")
        if v is None:
            missing.setdefault(t.key, "evaluated, but its main metric is undefined")
            continue
        per_task[t.name] = float(v)
        se = row["metrics"].get(M.SE_KEY)      # absent on lines of older code: unknown, never 0
        per_task_se[t.name] = float(se) if isinstance(se, (int, float)) else None
        chance[t.name] = chance_level(t, row["metrics"])
        metric_names[t.name] = t.main_metric
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        aggregates = aggregate(per_task, imagenet, groups)
    return {
        "suite": suite_name,
        "checkpoint_sha256": sha,
        "aggregates": aggregates,
        "aggregates_se": aggregate_se(per_task_se, imagenet, groups),
        "tasks": per_task,
        "tasks_se": per_task_se,
        "main_metric": metric_names,
        "chance": chance,
        "missing": missing,
        "complete": not missing and len(per_task) == sum(1 for t in tasks if t.scored),
        "eval_seconds": timings or {},
    }
