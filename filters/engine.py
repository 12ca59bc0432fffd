"""Evaluating a recipe over a pool, shard by shard, with any executor (local loop or Spark).

The work done per shard lives in three plain functions (``rows_task``,
``collect_task``, ``apply_task``); an executor only maps one of them over the
shards and returns the results in shard order, so the local runner and the Spark
runner run the very same filter code and give the very same subset.

Passes over the pool:

1. *rows*: every row-local step's mask or score for every row, and the uids;
2. for each global step, in recipe order: *collect* over the rows that reach it
   (pass 1 of the step), ``fit`` on the driver, *apply* (pass 2).

Between passes the driver holds only one value per row and step (a bool or a
float) plus the uids: 1 M rows cost tens of MB, whatever the embeddings weigh.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from datacurate.errors import UserError
from datacurate.layout import as_pool

from .api import Context, Filter, Needs, PoolDataError, RecipeError, pack_uids
from .pool_reader import ShardInfo, check_shard, iter_batches, list_shards
from .recipe import Combine, Recipe, Step


class Executor(Protocol):
    """datacurate.executor's LocalExecutor or SparkExecutor: the one shard executor every stage uses."""
    name: str

    def map(self, fn: Callable, tasks: list, desc: str, weights: list[int] | None = None,
            unit: str = "shard") -> list: ...


def map_shards(executor: Executor, fn: Callable[[ShardInfo], object], shards: list[ShardInfo], desc: str) -> list:
    """``fn`` over the pool's shards, the bar in rows."""
    return executor.map(fn, shards, desc, weights=[sh.rows for sh in shards], unit="rows")


# ----------------------------------------------------------------------------- per-shard work

def _check_output(out, f: Filter, n: int, where: str) -> np.ndarray:
    out = np.asarray(out)
    if out.shape != (n,):
        raise RecipeError(f"{where}: filter {f.name!r} returned shape {out.shape} for a batch of {n} rows")
    if f.output == "mask":
        if out.dtype != bool:
            raise RecipeError(f"{where}: filter {f.name!r} must return a boolean mask, got {out.dtype}")
        return out
    if not np.issubdtype(out.dtype, np.number):
        raise RecipeError(f"{where}: filter {f.name!r} must return numeric scores, got {out.dtype}")
    # a float column keeps its own dtype: upstream compares a float32 score column with its
    # threshold in float32, and rows scoring exactly float32(T) are kept there
    return out if np.issubdtype(out.dtype, np.floating) else out.astype(np.float64)


def _call(f: Filter, method: str, batch, where: str, shard: ShardInfo):
    """A filter's method on a batch; an exception of the filter's own code becomes one RecipeError
    naming the step, the filter and the shard (the traceback stays chained for --debug)."""
    try:
        return getattr(f, method)(batch)
    except UserError:
        raise
    except Exception as e:
        raise RecipeError(f"{where}: filter {f.name!r} raised {type(e).__name__}: {e} (shard {shard.name}); "
                          "fix the filter (--debug shows the traceback)") from e


def rows_task(pool: Path, shard: ShardInfo, steps: list[tuple[int, Filter, str]], needs: Needs) -> dict:
    """uids and every row-local step's output for one shard."""
    uids, outs = [], {i: [] for i, _, _ in steps}
    for batch in iter_batches(pool, shard, needs):
        uids.append(pack_uids(batch.table.column("uid").to_pylist()))
        for i, f, where in steps:
            outs[i].append(_check_output(_call(f, "__call__", batch, where, shard), f, len(batch), where))
    res = {"uids": np.concatenate(uids) if uids else np.empty((0, 2), np.uint64)}
    for i, f, _ in steps:
        res[i] = np.concatenate(outs[i]) if outs[i] else np.empty(0, bool if f.output == "mask" else np.float64)
    return res


def collect_task(pool: Path, shard: ShardInfo, f: Filter, needs: Needs, population: np.ndarray) -> list:
    """Pass 1 of a global step over the rows of one shard that reach it."""
    parts = []
    if not population.any():
        return parts
    for batch in iter_batches(pool, shard, needs):
        rows = np.flatnonzero(population[batch.start:batch.start + len(batch)])
        if len(rows):
            parts.append(_call(f, "collect", batch.take(rows), f.where, shard))
    return parts


def apply_task(pool: Path, shard: ShardInfo, f: Filter, needs: Needs, population: np.ndarray, where: str) -> np.ndarray:
    """Pass 2 of a global step: its output for the rows of one shard that reach it."""
    out = np.zeros(shard.rows, bool) if f.output == "mask" else np.full(shard.rows, np.nan)
    if not population.any():
        return out
    for batch in iter_batches(pool, shard, needs):
        rows = np.flatnonzero(population[batch.start:batch.start + len(batch)])
        if len(rows):
            out[batch.start + rows] = _check_output(_call(f, "__call__", batch.take(rows), where, shard), f,
                                                    len(rows), where)
    return out


# ----------------------------------------------------------------------------- selection

def top_fraction_threshold(values: np.ndarray, fraction: float) -> float:
    """Upstream DataComp's rule (baselines/apply_filter.py get_threshold): n = int(len * fraction),
    threshold = the scores sorted descending at index n; rows with score >= threshold are kept."""
    n = int(len(values) * fraction)
    if len(values) == 0:
        return np.inf
    if n >= len(values):
        return -np.inf
    return float(-np.partition(-values, n)[n])


def select(scores: np.ndarray, population: np.ndarray, step: Step) -> tuple[np.ndarray, float]:
    """Score -> keep-mask within ``population``; returns (mask, threshold used)."""
    s = -scores if step.keep_low else scores
    valid = population & ~np.isnan(s)
    if step.top_fraction is not None:
        thr = top_fraction_threshold(s[valid], step.top_fraction)
    else:
        thr = -step.threshold if step.keep_low else step.threshold
    thr = s.dtype.type(thr)     # compared in the scores' dtype (float32 for upstream's columns), as upstream
    with np.errstate(invalid="ignore"):
        keep = valid & (s >= thr)
    return keep, float(-thr if step.keep_low else thr)


# ----------------------------------------------------------------------------- the driver

@dataclass
class RunResult:
    uids: np.ndarray                 # (n, 2) uint64 of the kept rows
    pool_rows: int
    pool_fingerprint: str
    counts: list = field(default_factory=list)   # [{step, label, filter, rows_in, kept}]
    seconds: float = 0.0
    passes: int = 0


def _needs_of(recipe: Recipe) -> tuple[Needs, dict]:
    total, who = Needs(), {}
    for s in recipe.steps:
        n = s.filter.needs()
        total = total.merge(n)
        for k in n.columns + n.embeddings + (["pixels"] if n.pixels else []):
            who.setdefault(k, s.where)
    return total, who


def evaluate_recipe(pool, recipe: Recipe, executor: Executor, seed: int = 0, progress: bool = True) -> RunResult:
    """Evaluate ``recipe`` over ``pool`` with ``executor``; the driver-side algorithm both runners share."""
    t0 = time.time()
    pool = as_pool(pool)
    shards = list_shards(pool)
    ctx = Context(pool=pool.root, seed=seed, pool_rows=sum(sh.rows for sh in shards))
    needs_all, who = _needs_of(recipe)
    for sh in shards:
        check_shard(pool, sh, needs_all, who)
    for s in recipe.steps:
        s.filter.setup(ctx)

    local = [(s.id, s.filter, s.where) for s in recipe.steps if not s.filter.is_global]
    row_needs = Needs(["uid"])
    for _, f, _ in local:
        row_needs = row_needs.merge(f.needs())
    results = map_shards(executor, lambda sh: rows_task(pool, sh, local, row_needs), shards, "filter: rows")
    passes = 1
    uids = np.concatenate([r["uids"] for r in results]) if results else np.empty((0, 2), np.uint64)
    n = len(uids)
    if n != sum(sh.rows for sh in shards):
        raise PoolDataError(f"{pool.metadata}: read {n} rows but the parquet footers say "
                            f"{sum(sh.rows for sh in shards)}")
    row_out = {i: np.concatenate([r[i] for r in results]) for i, _, _ in local}
    del results
    counts: list[dict] = []

    def slices(mask: np.ndarray) -> dict[str, np.ndarray]:
        return {sh.name: mask[sh.offset:sh.offset + sh.rows] for sh in shards}

    def run_global(step: Step, pop: np.ndarray) -> np.ndarray:
        nonlocal passes
        f, needs = step.filter, step.filter.needs()
        f.population_size = int(pop.sum())
        pops = slices(pop)
        parts = map_shards(executor, lambda sh: collect_task(pool, sh, f, needs, pops[sh.name]), shards,
                           f"filter: {step.label} (pass 1)")
        f.fit([p for shard_parts in parts for p in shard_parts], ctx)
        out = map_shards(executor, lambda sh: apply_task(pool, sh, f, needs, pops[sh.name], step.where), shards,
                         f"filter: {step.label} (pass 2)")
        passes += 2
        return np.concatenate(out)

    def evaluate(node, pop: np.ndarray, path: str) -> np.ndarray:
        if isinstance(node, Step):
            out = run_global(node, pop) if node.filter.is_global else row_out[node.id]
            thr = None
            if node.filter.output == "score":
                keep, thr = select(out, pop, node)
            else:
                keep = pop & out
            counts.append({"step": path, "label": node.label, "filter": node.filter.name,
                           "rows_in": int(pop.sum()), "kept": int(keep.sum()),
                           **({"threshold": thr} if thr is not None else {})})
            return keep
        if node.op == "chain":
            cur = pop
            for i, c in enumerate(node.children):
                cur = evaluate(c, cur, f"{path}.chain[{i}]" if path else f"steps[{i}]")
            keep = cur
        else:
            parts = [evaluate(c, pop, f"{path}.{node.op}[{i}]") for i, c in enumerate(node.children)]
            keep = np.logical_and.reduce(parts) if node.op == "intersect" else np.logical_or.reduce(parts)
        if path:
            counts.append({"step": path, "label": node.label, "filter": node.op,
                           "rows_in": int(pop.sum()), "kept": int(keep.sum())})
        return keep

    keep = evaluate(recipe.root, np.ones(n, bool), "")
    from datacurate.uids import UID_DTYPE, fingerprint

    pairs = np.empty(n, dtype=UID_DTYPE)
    pairs["f0"], pairs["f1"] = uids[:, 0], uids[:, 1]
    return RunResult(uids=uids[keep], pool_rows=n, pool_fingerprint=fingerprint(pairs), counts=counts,
                     seconds=time.time() - t0, passes=passes)


def to_pairs(uids: np.ndarray) -> np.ndarray:
    """(n, 2) uint64 -> upstream's structured ``u8,u8`` array."""
    from datacurate.uids import UID_DTYPE

    out = np.empty(len(uids), dtype=UID_DTYPE)
    out["f0"], out["f1"] = uids[:, 0], uids[:, 1]
    return out
