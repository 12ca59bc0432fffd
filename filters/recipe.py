"""Recipes: YAML files that chain and combine filters.

::

    name: image_based_and_clip
    description: upstream's image-based filter intersected with CLIP score top 30%
    steps:                     # applied one after the other: each step sees the survivors
      - {filter: basic, min_side: 32}
      - intersect:             # every child sees the same rows; keep rows all children keep
          - {filter: clip_score, model: fnet, top_fraction: 0.3}
          - {filter: image_based, model: fnet, target: eval, clusters: 100}
      - union: [...]           # keep rows any child keeps
      - chain: [...]           # a nested sequence (inside intersect/union)

A step's keys are the filter's parameters plus ``filter`` (a registered name or a
``module:function`` path), ``label`` (its name in the counts), and for filters that
output a score: ``top_fraction`` (keep the highest-scoring fraction of the rows that
reach the step, with upstream DataComp's rule) or ``threshold`` (keep score >= t),
``keep: low`` to keep the lowest instead.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .api import Filter, RecipeError
from .registry import get_filter

RECIPES_DIR = Path(__file__).parent / "recipes"
COMBINERS = ("intersect", "union", "chain")


@dataclass
class Step:
    filter: Filter
    label: str
    where: str
    top_fraction: float | None = None
    threshold: float | None = None
    keep_low: bool = False
    id: int = -1

    def spec(self) -> dict:
        d = {"filter": self.filter.name, **self.filter.param_values()}
        if self.top_fraction is not None:
            d["top_fraction"] = self.top_fraction
        if self.threshold is not None:
            d["threshold"] = self.threshold
        if self.keep_low:
            d["keep"] = "low"
        return d


@dataclass
class Combine:
    op: str                  # intersect | union | chain
    children: list
    label: str
    where: str
    id: int = -1


@dataclass
class Recipe:
    name: str
    description: str
    root: Combine            # op "chain"
    source: str              # file it came from
    text: str = ""
    steps: list[Step] = field(default_factory=list)  # every Step, depth first

    def to_dict(self) -> dict:
        def node(n):
            if isinstance(n, Step):
                return n.spec()
            return {n.op: [node(c) for c in n.children]}

        return {"name": self.name, "description": self.description,
                "steps": [node(c) for c in self.root.children]}


def builtin_recipes() -> dict[str, Path]:
    return {p.stem: p for p in sorted(RECIPES_DIR.glob("*.yaml"))}


def resolve(recipe: str | os.PathLike) -> Path:
    """A recipe path, or the file of a built-in recipe name."""
    p = Path(recipe)
    if p.is_file():
        return p
    builtins = builtin_recipes()
    if str(recipe) in builtins:
        return builtins[str(recipe)]
    raise RecipeError(f"recipe {str(recipe)!r}: no such file and no built-in recipe of that name "
                      f"(built-in: {', '.join(builtins)})")


def load_recipe(recipe: str | os.PathLike, overrides: dict | None = None) -> Recipe:
    """Read and validate a recipe (path or built-in name). ``overrides``: defaults such as {"seed": 3}."""
    path = resolve(recipe)
    text = path.read_text()
    return parse_recipe(text, str(path), overrides)


def parse_recipe(text: str, source: str = "<recipe>", overrides: dict | None = None) -> Recipe:
    import yaml

    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise RecipeError(f"{source}: not valid YAML ({e})") from None
    if not isinstance(doc, dict):
        raise RecipeError(f"{source}: a recipe is a mapping with 'name' and 'steps'")
    unknown = set(doc) - {"name", "description", "steps"}
    if unknown:
        raise RecipeError(f"{source}: unknown top-level field(s) {sorted(unknown)}; "
                          "a recipe has name, description, steps")
    steps = doc.get("steps")
    if not isinstance(steps, list) or not steps:
        raise RecipeError(f"{source}: field 'steps' must be a non-empty list")
    name = str(doc.get("name") or Path(source).stem)
    all_steps: list[Step] = []
    root = Combine("chain", [], "recipe", source)
    search = [Path(source).parent] if Path(source).is_file() else []   # user modules beside the recipe
    root.children = [_node(s, f"{source}: steps[{i}]", all_steps, overrides or {}, search)
                     for i, s in enumerate(steps)]
    counter = 0
    for s in all_steps:
        s.id = counter
        counter += 1
    _number(root, [counter])
    return Recipe(name, str(doc.get("description") or ""), root, source, text, all_steps)


def _number(node, counter) -> None:
    if isinstance(node, Combine):
        node.id = counter[0]
        counter[0] += 1
        for c in node.children:
            _number(c, counter)


def _node(spec: Any, where: str, all_steps: list, overrides: dict, search: list = ()):
    if not isinstance(spec, dict):
        raise RecipeError(f"{where}: a step is a mapping like {{filter: NAME, ...}} or {{intersect: [...]}}, "
                          f"got {spec!r}")
    combiners = [k for k in spec if k in COMBINERS]
    if combiners:
        op = combiners[0]
        extra = set(spec) - {op, "label"}
        if extra:
            raise RecipeError(f"{where}: {op!r} takes a list of steps (and an optional label), "
                              f"not {sorted(extra)}")
        children = spec[op]
        if not isinstance(children, list) or not children:
            raise RecipeError(f"{where}: {op!r} must be a non-empty list of steps")
        node = Combine(op, [], str(spec.get("label") or op), where)
        node.children = [_node(c, f"{where}.{op}[{i}]", all_steps, overrides, search)
                         for i, c in enumerate(children)]
        return node
    if "filter" not in spec:
        raise RecipeError(f"{where}: a step needs a 'filter' field (or intersect/union/chain); got {sorted(spec)}")
    fname = spec["filter"]
    if not isinstance(fname, str):
        raise RecipeError(f"{where}: field 'filter' must be a name, got {fname!r}")
    cls = get_filter(fname, where, list(search))
    where = f"{where} ({fname})"
    scored = cls.output == "score"
    own = {p.name for p in cls.params}
    selection = {k for k in ("top_fraction", "threshold") if scored and k not in own}
    params = {k: v for k, v in spec.items() if k not in ("filter", "label", "keep") and k not in selection}
    for k, v in overrides.items():  # run-wide defaults, e.g. --seed, only where the recipe is silent
        if k not in params and k in own:
            params[k] = v
    if not scored:
        for k in ("top_fraction", "threshold", "keep"):
            if k in params and k not in own:
                raise RecipeError(f"{where}: field {k!r} applies to score filters; {fname!r} returns a keep-mask")
    f = cls(_where=where, **params)
    top = spec.get("top_fraction") if "top_fraction" in selection else None
    thr = spec.get("threshold") if "threshold" in selection else None
    keep = spec.get("keep", "high")
    if keep not in ("high", "low"):
        raise RecipeError(f"{where}: field 'keep' must be 'high' or 'low', got {keep!r}")
    if scored:
        if top is None and thr is None:
            default = f.default_selection() or {}
            top, thr = default.get("top_fraction"), default.get("threshold")
        if top is not None and thr is not None:
            raise RecipeError(f"{where}: give either 'top_fraction' or 'threshold', not both")
        if top is None and thr is None:
            raise RecipeError(f"{where}: filter {fname!r} returns a score: add 'top_fraction' or 'threshold'")
        if top is not None:
            if isinstance(top, bool) or not isinstance(top, (int, float)) or not 0 < top <= 1:
                raise RecipeError(f"{where}: field 'top_fraction' must be a number in (0, 1], got {top!r}")
            top = float(top)
        if thr is not None:
            if isinstance(thr, bool) or not isinstance(thr, (int, float)) or not math.isfinite(thr):
                raise RecipeError(f"{where}: field 'threshold' must be a finite number, got {thr!r}")
            thr = float(thr)
    step = Step(f, str(spec.get("label") or fname), where, top, thr, keep == "low")
    all_steps.append(step)
    return step
