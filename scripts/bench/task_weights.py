"""Which of the offline tasks carry the ranking? Aggregates of a finished study's task scores, compared.

The suite's Average weighs its tasks equally, as upstream's does. A task whose seed-to-seed
noise is large against the spread it puts between recipes adds more noise than signal to that
mean. This script reads every run's per-task scores (scores.json; for a run scored on a suite
without the group task, that task from RUN/scores.emoji_group.json, scored there first if
missing) and gives, for each aggregate: the per-run std pooled over the recipes, the spread of
the recipe means, their ratio, the split-half Kendall tau (seeds 0-2 vs 3-5, and the mean over
every halving) and the best recipe's lead over no filter and random 30 %, as baselines.py does.

The aggregates were fixed before the tiny study's per-seed task scores were looked at
(2026-12-05): the four tasks equally (the suite), the three without the group task (9 coarse
classes: the lowest spread-to-noise of the four tasks in every committed study), and weights by inverse per-run variance taken from the other studies
(docs/studies/{tiny-lr2e-3,tiny-lr5e-4,tiny-b256,micro,base}); each task alone is shown too.

    .venv/bin/python scripts/bench/task_weights.py --out runs/tiny --seeds 6
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from datacurate.atomic import write_json_atomic  # noqa: E402  (after the path insert)
from datacurate.layout import BenchLayout, RunLayout  # noqa: E402

RETRIEVAL, CONCEPT, GROUP, SUBGROUP = "Emoji caption retrieval", "Emoji concept", "Emoji group", "Emoji subgroup"
TASKS = (RETRIEVAL, CONCEPT, GROUP, SUBGROUP)
AGGREGATES = {
    "all four, equal (the suite's Average)": {RETRIEVAL: 1, CONCEPT: 1, GROUP: 1, SUBGROUP: 1},
    "without the group task": {RETRIEVAL: 1, CONCEPT: 1, SUBGROUP: 1},
    "inverse per-run variance of the other studies": {RETRIEVAL: .379, CONCEPT: .287, GROUP: .092, SUBGROUP: .242},
    **{f"{t} alone": {t: 1} for t in TASKS},
}
GROUP_SUITE = "emoji_group"


def task_scores(run: Path, pool: Path) -> dict[str, float]:
    """The run's four task scores: the suite's from scores.json, the group task's from its side file."""
    from eval.results import scores_path

    tasks = dict(json.loads(RunLayout(run).scores.read_text()).get("tasks") or {})
    if GROUP not in tasks:
        side = scores_path(run, GROUP_SUITE)
        if not side.is_file():
            from eval.runner import evaluate_run

            evaluate_run(run, suite=GROUP_SUITE, pool=pool, device="cpu", log=lambda m: None)
        tasks[GROUP] = json.loads(side.read_text())["tasks"][GROUP]
    return {t: float(tasks[t]) for t in TASKS}


def weigh(runs: dict, weights: dict[str, float]) -> dict:
    z = sum(weights.values())
    return {r: {s: {"value": sum(w * v["tasks4"][t] for t, w in weights.items()) / z, "tasks": {}}
                for s, v in by.items()} for r, by in runs.items()}


def measure(runs: dict, seeds: list[int]) -> dict:
    from baselines import held_out_best, recipe_rows, best_gaps
    from task_families import instrument

    out = instrument(runs, seeds)
    rows = recipe_rows(runs, seeds, "Average")
    out["best"] = {k: v for k, v in best_gaps(rows, "Average").items()}
    out["held_out"] = held_out_best(runs, seeds)
    return out


def main(argv=None) -> int:
    from datacurate.env import apply_offline_env

    apply_offline_env()
    from baselines import STUDY, common_seeds, finished_study_parser, read_study

    args = finished_study_parser(__doc__, seeds=6).parse_args(argv)
    lay = BenchLayout(args.out)
    runs, missing = read_study(lay, args.recipes or STUDY, args.seeds, "Average")
    for r, s, why in missing:
        print(f"left out: {r} seed {s} ({why})")
    seeds, _ = common_seeds(runs)
    for r, by in runs.items():
        for s in [s for s in by if s not in seeds]:
            del by[s]
        for s in seeds:
            by[s]["tasks4"] = task_scores(lay.run(r, s), lay.pool)
    result = {"study": str(args.out), "seeds": seeds, "recipes": len(runs), "aggregates": {}}
    print(f"{len(runs)} recipes x seeds {seeds}")
    print(f"{'aggregate':48s} {'std':>7s} {'spread':>7s} {'ratio':>5s} {'tau':>6s} {'all':>6s}  best vs no filter / random "
          "(held out), larger-stds")
    for name, weights in AGGREGATES.items():
        m = measure(weigh(runs, weights), seeds)
        result["aggregates"][name] = {"weights": weights, **m}
        g, h = m["best"]["gaps"], m["held_out"]["gaps"]
        lead = " / ".join(f"{_f(g[k]['in_std'], 1)} ({_f(h.get(k, {}).get('in_std'), 1)})" for k in ("no_filter", "random_30")
                          if k in g)
        print(f"{name:48s} {m['pooled_std']:.4f} {m['spread']:.4f} {m['ratio']:5.2f} {_f(m['tau'])} "
              f"{_f(m['tau_all_splits'])}  {m['best']['best']}: {lead}")
    if args.json:
        write_json_atomic(args.json, result)
        print(f"numbers: {args.json}")
    return 0


def _f(x, digits: int = 3) -> str:
    return "-" if x is None else f"{x:+.{digits}f}" if digits == 3 else f"{x:.{digits}f}"


if __name__ == "__main__":
    sys.exit(main())
