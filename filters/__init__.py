"""Filters: one interface, a registry of built-in filters, YAML recipes, local and Spark runners.

Public API (imported lazily so ``datacurate --help`` stays fast)::

    from filters import Filter, Param, Needs, Batch, register, filter_function
    from filters import filter_pool, load_recipe, list_filters, builtin_recipes

    filter_pool(pool, "clip_score_top30", "out/subset.npy", master=None, seed=0) -> dict
    run_recipe(...)  # the same function, under the name `datacurate run` uses
"""
from __future__ import annotations

_EXPORTS = {
    "Filter": "api", "Param": "api", "Needs": "api", "Batch": "api", "Context": "api",
    "RecipeError": "api", "PoolDataError": "api",
    "register": "registry", "filter_function": "registry", "get_filter": "registry",
    "list_filters": "registry", "make_filter": "registry", "ENTRY_POINT_GROUP": "registry",
    "load_recipe": "recipe", "parse_recipe": "recipe", "builtin_recipes": "recipe", "Recipe": "recipe",
    "filter_pool": "runner_local", "LocalExecutor": "runner_local", "SparkExecutor": "runner_local",
    "run_recipe": "runner_local", "evaluate_recipe": "engine",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        mod = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
        return getattr(mod, name)
    raise AttributeError(f"module 'filters' has no attribute {name!r}")
