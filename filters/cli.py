"""`datacurate filter`: run a recipe over a pool and write the subset, or list filters and recipes."""
from __future__ import annotations

import argparse
import json
import sys

EPILOG = """\
examples:
  datacurate filter --list
  datacurate filter --pool runs/tiny/pool --recipe basic_offline --out runs/tiny/basic.npy
  datacurate filter --pool runs/tiny/pool --recipe clip_score_top30 --out subsets/clip.npy --seed 1
  datacurate filter --pool POOL --recipe my_recipe.yaml --out SUBSET.npy --master spark://host:7077

The recipe is a YAML file or the name of a built-in recipe (see --list). The subset is
written in upstream DataComp's format (sorted u8,u8 uids) with SUBSET.json beside it:
the recipe, the pool's fingerprint, the rows kept after each step and the time taken.
With --master (or --runner spark) the same filters run as a Spark job."""


def add_parser(sub) -> None:
    p = sub.add_parser("filter", help="apply a filtering recipe to a pool -> SUBSET.npy",
                       description="Apply a recipe of filters to a pool's metadata (and embeddings) and "
                                   "write the kept uids.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--list", action="store_true", help="list filters (with parameters) and built-in recipes")
    p.add_argument("--pool", help="pool folder (POOL/metadata/*.parquet [+ .npz]; upstream's download folder), "
                                  "its metadata/ folder, or img2dataset's output folder")
    p.add_argument("--recipe", help="recipe YAML path or built-in recipe name")
    p.add_argument("--out", help="output subset .npy (SUBSET.json is written beside it)")
    p.add_argument("--master", default=None, help="Spark master (e.g. local[2], spark://host:7077): run on Spark")
    p.add_argument("--runner", choices=("local", "spark"), default=None,
                   help="local (default) or spark (default when --master is given)")
    p.add_argument("--seed", type=int, default=0, help="seed for filters with a seed the recipe leaves unset")
    p.add_argument("--json", action="store_true", help="with --list: print JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_run)


def list_text() -> str:
    from .recipe import builtin_recipes, load_recipe
    from .registry import list_filters

    lines = ["filters:"]
    for name, cls in list_filters().items():
        kind = cls.output + (", global: two passes" if cls.is_global else "")
        lines.append(f"  {name}  [{kind}]  {cls.describe()}")
        if cls.source:
            lines.append(f"      source: {cls.source}")
        for prm in cls.params:
            lines.append(f"      {prm.describe()}")
        if cls.output == "score":
            lines.append("      (step fields: top_fraction | threshold, keep: high|low)")
    lines.append("")
    lines.append("built-in recipes (--recipe NAME):")
    for name, path in builtin_recipes().items():
        try:
            desc = load_recipe(path).description
        except Exception as e:  # a broken built-in is shown, not hidden
            desc = f"(invalid: {e})"
        lines.append(f"  {name}  {desc}")
    return "\n".join(lines)


def list_json() -> dict:
    from .recipe import builtin_recipes
    from .registry import list_filters

    return {"filters": {n: {"output": c.output, "global": c.is_global, "doc": c.describe(), "source": c.source,
                            "params": [{"name": p.name, "type": p.type_name(),
                                        "default": None if p.required else p.default, "required": p.required,
                                        "doc": p.doc, "min": p.min, "max": p.max,
                                        "choices": list(p.choices) if p.choices else None} for p in c.params]}
                        for n, c in list_filters().items()},
            "recipes": {n: str(p) for n, p in builtin_recipes().items()}}


def _run(args) -> int:
    from datacurate.errors import UserError

    if args.list:
        print(json.dumps(list_json(), indent=2) if args.json else list_text())
        return 0
    missing = [f"--{k}" for k in ("pool", "recipe", "out") if not getattr(args, k)]
    if missing:
        raise UserError(f"missing {', '.join(missing)} (or use --list)")
    from datacurate.layout import PoolLayout

    from .runner_local import filter_pool

    lay = PoolLayout.find(args.pool)
    if lay.kind != "pool":
        print(lay.describe(), file=sys.stderr)
    rec = filter_pool(lay, args.recipe, args.out, master=args.master, seed=args.seed, runner=args.runner,
                      progress=not args.quiet)
    for c in rec["counts"]:
        extra = f" (threshold {c['threshold']:.4g})" if c.get("threshold") is not None else ""
        print(f"  {c['step']:<28} {c['label']:<18} {c['rows_in']:>10} -> {c['kept']:>10}{extra}", file=sys.stderr)
    print(f"kept {rec['kept']} of {rec['pool_rows']} ({100 * rec['fraction_kept']:.1f}%) -> {args.out} "
          f"in {rec['seconds']:.1f}s [{rec['runner']}]")
    return 0
