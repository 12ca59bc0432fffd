"""Running a recipe: ``filter_pool`` loads it, runs it shard by shard with the local executor or
the Spark one (datacurate.executor, every stage's), and writes ``SUBSET.npy`` (upstream's
format, via ``datacurate.uids.write_subset``) and ``SUBSET.json`` beside it, each
under a temporary name first.
"""
from __future__ import annotations

import json
import platform
import time
from pathlib import Path

from datacurate.atomic import write_text_atomic
from datacurate.executor import LocalExecutor, SparkExecutor

from .engine import RunResult, evaluate_recipe, to_pairs
from .recipe import Recipe, load_recipe


def json_path_for(out: Path) -> Path:
    out = Path(out)
    return out.with_name(out.name[:-4] + ".json") if out.name.endswith(".npy") else out.with_name(out.name + ".json")


def write_outputs(out: Path, recipe: Recipe, result: RunResult, runner: str, seed: int) -> dict:
    """SUBSET.npy then SUBSET.json, both atomic; returns the json record."""
    from datacurate.uids import fingerprint, write_subset

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    pairs = to_pairs(result.uids)
    kept = write_subset(out, pairs)
    record = {
        "recipe": recipe.to_dict(),
        "recipe_source": recipe.source,
        "recipe_text": recipe.text,
        "pool": str(Path(getattr(result, "pool", "")).resolve()),
        "pool_rows": result.pool_rows,
        "pool_fingerprint": result.pool_fingerprint,
        "kept": kept,
        "fraction_kept": kept / result.pool_rows if result.pool_rows else 0.0,
        "subset_fingerprint": fingerprint(pairs),
        "counts": result.counts,
        "runner": runner,
        "seed": seed,
        "passes": result.passes,
        "seconds": round(result.seconds, 3),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": platform.python_version(),
    }
    jp = json_path_for(out)
    write_text_atomic(jp, json.dumps(record, indent=2))
    return record


def filter_pool(pool, recipe, out, master: str | None = None, seed: int = 0, runner: str | None = None,
                spark=None, progress: bool = True) -> dict:
    """Run ``recipe`` (path, built-in name or Recipe) over ``pool``; write ``out`` and its json.

    ``runner``: "local" (default) or "spark" (default when ``master`` or ``spark`` is given).
    Returns the json record (counts per step, fingerprints, time).
    """
    from datacurate.atomic import check_writable
    from datacurate.layout import as_pool

    check_writable(out, "subset")      # a bad --out fails now, not after the filtering
    rec = recipe if isinstance(recipe, Recipe) else load_recipe(recipe, overrides={"seed": seed})
    runner = runner or ("spark" if (master or spark is not None) else "local")
    if runner == "spark":
        executor = SparkExecutor(spark=spark, master=master, progress=progress)
    elif runner == "local":
        executor = LocalExecutor(progress=progress)
    else:
        from datacurate.errors import UserError

        raise UserError(f"unknown runner {runner!r}; use 'local' or 'spark'")
    lay = as_pool(pool)          # found once: a path, a metadata folder or a PoolLayout
    result = evaluate_recipe(lay, rec, executor, seed=seed, progress=progress)
    result.pool = str(lay.root)
    record = write_outputs(Path(out), rec, result, executor.name, seed)
    return record


# the name the pipeline (`datacurate run`) calls it by
run_recipe = filter_pool
