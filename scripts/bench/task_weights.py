"""Which of the offline tasks carry the ranking? Aggregates of a finished study's task scores, compared.

The suite's Average weighs its tasks equally, as upstream's does. A task whose seed-to-seed
noise is large against the spread it puts between recipes adds more noise than signal to that
mean. This script reads every run's per-task scores (scores.json; the group task, which the suite
has left since this study, from scores.emoji_group.json where scores.json lacks it) and gives, for each aggregate:
the per-run std pooled over the recipes, the spread of the recipe means, their ratio, the
split-half Kendall tau (seeds 0-2 vs 3-5, and the mean over every halving) and the best recipe's
lead over no filter and random 30 %, as baselines.py does.

The aggregates were fixed before the tiny study's per-seed task scores were looked at
(2026-12-05): the four tasks equally (the suite), the three without the group task (9 coarse
classes: the lowest spread-to-noise of the four tasks in every committed study), and weights by
inverse per-run variance, the tasks' pooled variances averaged over the other studies
(docs/studies/{tiny-lr2e-3,tiny-lr5e-4,tiny-b256,micro,base}); each task alone is shown too.

    .venv/bin/python scripts/bench/task_weights.py --out runs/tiny --seeds 6
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from datacurate.atomic import write_json_atomic  # noqa: E402  (after the path insert)
from datacurate.layout import RunLayout  # noqa: E402

RETRIEVAL, CONCEPT, GROUP, SUBGROUP = "Emoji caption retrieval", "Emoji concept", "Emoji group", "Emoji subgroup"
TASKS = (RETRIEVAL, CONCEPT, GROUP, SUBGROUP)
GROUP_KEY = "emoji_group"      # built beside the offline suite, scored only by name since 2026-12-05
AGGREGATES = {
    "all four, equal (the suite's Average until 2026-12-05)": {RETRIEVAL: 1, CONCEPT: 1, GROUP: 1, SUBGROUP: 1},
    "without the group task (the suite's since)": {RETRIEVAL: 1, CONCEPT: 1, SUBGROUP: 1},
    "inverse per-run variance of the other studies": {RETRIEVAL: .379, CONCEPT: .287, GROUP: .092, SUBGROUP: .242},
    **{f"{t} alone": {t: 1} for t in TASKS},
}


def with_group_task(run: Path, tasks: dict[str, float]) -> dict[str, float]:
    """The run's task scores with the group task's: from scores.json for a run scored when the suite held
    it, else from the file of its own suite (`datacurate eval --run RUN --suite emoji_group`)."""
    from eval.results import read_scores

    if GROUP in tasks:
        return tasks
    value = (read_scores(run, GROUP_KEY).get("tasks") or {}).get(GROUP)
    return {**tasks, GROUP: float(value)} if isinstance(value, (int, float)) else tasks


def require_tasks(run: Path, tasks: dict[str, float], prog: str = "task_weights.py") -> None:
    """Every aggregate reads the four tasks: a run scored without one of them stops the script."""
    absent = [t for t in TASKS if t not in tasks]
    if absent:
        raise SystemExit(f"{prog}: error: {RunLayout(run).scores}:tasks: no {', '.join(absent)}; "
                         f"score the run on the offline suite and on {GROUP_KEY} (`datacurate eval --run RUN "
                         f"--pool POOL --suite offline`, then `--suite {GROUP_KEY}`)")


def four_task_scores(run: Path, tasks: dict[str, float], prog: str = "task_weights.py") -> dict[str, float]:
    """The run's four task scores (:func:`with_group_task`), or one error line naming what is missing."""
    tasks = with_group_task(run, tasks)
    require_tasks(run, tasks, prog)
    return tasks


def weigh(runs: dict, weights: dict[str, float]) -> dict:
    z = sum(weights.values())
    return {r: {s: {"value": sum(w * v["tasks"][t] for t, w in weights.items()) / z, "tasks": {}}
                for s, v in by.items()} for r, by in runs.items()}


def measure(runs: dict, seeds: list[int]) -> dict:
    from baselines import held_out_best, recipe_rows, best_gaps
    from task_families import instrument

    out = instrument(runs, seeds)
    rows = recipe_rows(runs, seeds, "Average")
    out["best"] = best_gaps(rows, "Average")
    out["held_out"] = held_out_best(runs, seeds)
    return out


def print_header(width: int) -> None:
    print(f"{'aggregate':{width}s} {'std':>7s} {'spread':>7s} {'ratio':>5s} {'tau':>6s} {'all':>6s}  "
          "best vs no filter / random (held out), larger-stds")


def print_row(name: str, m: dict, width: int) -> None:
    """One aggregate's line: what ``measure`` found."""
    from baselines import or_dash

    g, h = m["best"]["gaps"], m["held_out"]["gaps"]
    lead = " / ".join(f"{or_dash(g[k]['in_std'], '.1f')} ({or_dash(h.get(k, {}).get('in_std'), '.1f')})"
                      for k in ("no_filter", "random_30") if k in g)
    print(f"{name:{width}s} {m['pooled_std']:.4f} {m['spread']:.4f} {m['ratio']:5.2f} {or_dash(m['tau'], '+.3f')} "
          f"{or_dash(m['tau_all_splits'], '+.3f')}  {m['best']['best']}: {lead}")


def main(argv=None) -> int:
    from baselines import open_finished_study

    args, lay, runs, seeds = open_finished_study(__doc__, "task_weights.py", argv)
    for r, by in runs.items():
        for s in seeds:
            by[s]["tasks"] = four_task_scores(lay.run(r, s), by[s]["tasks"])
    result = {"study": str(args.out), "seeds": seeds, "recipes": len(runs), "aggregates": {}}
    print(f"{len(runs)} recipes x seeds {seeds}")
    print_header(56)
    for name, weights in AGGREGATES.items():
        m = measure(weigh(runs, weights), seeds)
        result["aggregates"][name] = {"weights": weights, **m}
        print_row(name, m, 56)
    if args.json:
        write_json_atomic(args.json, result)
        print(f"numbers: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
