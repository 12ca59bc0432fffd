"""Training: the fixed OpenCLIP recipe per scale (see ``datacurate.scales``)."""
from __future__ import annotations


def __getattr__(name: str):
    """The public API, imported on first use (keeps `datacurate --help` fast)."""
    import importlib

    if name in ("data_check", "launch", "recipe", "cli", "open_clip_entry"):
        return importlib.import_module(f"{__name__}.{name}")
    data_check, launch, recipe = (importlib.import_module(f"{__name__}.{m}") for m in ("data_check", "launch", "recipe"))

    api = {
        "train": launch.train, "plan_training": launch.plan_training, "read_info": launch.read_info,
        "trained_as_asked": launch.trained_as_asked,
        "TrainingFailed": launch.TrainingFailed,
        "Recipe": recipe.Recipe, "recipe_for": recipe.recipe_for, "RecipeError": recipe.RecipeError,
        "check_training_data": data_check.check_training_data, "TrainingDataError": data_check.TrainingDataError,
    }
    if name in api:
        return api[name]
    raise AttributeError(f"module 'training' has no attribute {name!r}")


__all__ = ["train", "plan_training", "read_info", "trained_as_asked",
           "TrainingFailed", "Recipe", "recipe_for", "RecipeError",
           "check_training_data", "TrainingDataError"]
