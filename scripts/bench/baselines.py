"""The baseline study: each built-in recipe trained and evaluated with several seeds, same samples seen.

Shares one pool, filtering network and embeddings (a `datacurate run` folder) among the
recipes; each recipe's subset is made once and trained with seeds 0..S-1. Prints mean ±
standard deviation of the offline average and of each task, the gap of the best recipe
to no filtering and to a random subset of the same size in units of the seed spread,
and writes the table and a size-against-score plot into the run's report (DIR/report.html,
its last section; DIR/baselines.json holds the numbers).

    .venv/bin/python scripts/bench/baselines.py --scale tiny --seeds 3 --out runs/tiny
    .venv/bin/python scripts/bench/baselines.py --scale micro --seeds 2 --out /tmp/micro --recipes no_filter random_30
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

RECIPES = ["no_filter", "random_30", "basic_offline", "clip_score_top30", "image_based",
           "image_based_and_clip", "dedup_clip"]


def _scores(run: Path) -> dict:
    try:
        return json.loads((run / "scores.json").read_text())
    except (OSError, ValueError):
        return {}


def _tasks(run: Path) -> dict[str, float]:
    out = {}
    p = run / "eval_results.jsonl"
    if p.exists():
        for line in p.read_text().splitlines():
            rec = json.loads(line)
            main = (rec.get("metrics") or {}).get("main_metric")
            if isinstance(main, (int, float)):
                out[rec.get("dataset", rec.get("key"))] = float(main)
    return out


def main(argv=None) -> int:
    from datacurate.env import apply_offline_env

    apply_offline_env()
    from datacurate.atomic import write_text_atomic
    from datacurate.report import plots
    from datacurate.report.html import RecipeRun, _table, write_report
    from datacurate.run import RunLayout, execute_stages, pool_stages, recipe_stages
    from datacurate.uids import read_subset

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", default="tiny", choices=["micro", "tiny"])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None, help="run folder (default runs/<scale>)")
    ap.add_argument("--recipes", nargs="+", default=RECIPES)
    ap.add_argument("--metric", default="Average", help="aggregate in scores.json's aggregates to compare")
    args = ap.parse_args(argv)
    lay = RunLayout(args.out or ROOT / "runs" / args.scale)
    stages = pool_stages(lay, args.scale, 0, None)
    for r in args.recipes:
        for s in range(args.seeds):
            stages += recipe_stages(lay, r, args.scale, 0, None, train_seed=s, subset_stages=(s == 0))
    execute_stages(stages)

    rows = []
    for r in args.recipes:
        runs = [lay.run(r, s) for s in range(args.seeds)]
        vals = np.array([(_scores(p).get("aggregates") or {}).get(args.metric, np.nan) for p in runs], dtype=float)
        tasks = [_tasks(p) for p in runs]
        names = sorted(set().union(*tasks))
        per_task = {t: (float(np.mean([x[t] for x in tasks if t in x])), float(np.std([x[t] for x in tasks if t in x])))
                    for t in names}
        rows.append({"recipe": r, "size": len(read_subset(lay.subset(r))), args.metric: float(np.nanmean(vals)),
                     args.metric + "_std": float(np.nanstd(vals)), "seeds": vals.tolist(), "tasks": per_task})

    tasks = sorted(set().union(*(r["tasks"] for r in rows)))
    header = ["recipe", "size", f"{args.metric} (mean ± std)", *tasks]
    table = [[r["recipe"], f"{r['size']:,}", f"{r[args.metric]:.4f} ± {r[args.metric + '_std']:.4f}",
              *[f"{r['tasks'][t][0]:.3f} ± {r['tasks'][t][1]:.3f}" if t in r["tasks"] else "-" for t in tasks]]
             for r in rows]
    widths = [max(len(h), *(len(t[i]) for t in table)) for i, h in enumerate(header)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    for t in table:
        print("  ".join(c.ljust(w) for c, w in zip(t, widths)))

    by = {r["recipe"]: r for r in rows}
    verdict = []
    best = max((r for r in rows if r["recipe"] not in ("no_filter", "random_30")),
               key=lambda r: r[args.metric], default=None)
    if best:
        for ref in ("no_filter", "random_30"):
            if ref in by:
                m = args.metric
                gap, in_std = _gap((best[m], best[m + "_std"]), (by[ref][m], by[ref][m + "_std"]))
                # np.std (population, ddof=0) as printed in the table; the sample std (ddof=1) of
                # S seeds is sqrt(S/(S-1)) larger and is given too, for a stricter reading
                k = np.sqrt(args.seeds / (args.seeds - 1)) if args.seeds > 1 else 1.0
                verdict.append(f"{best['recipe']} - {ref} = {gap:+.4f} ({in_std:+.1f} x the larger seed std; "
                               f"{'more' if in_std > 2 else 'NOT more'} than 2 std; "
                               f"{in_std / k:+.1f} x with the sample std, ddof=1)")
    verdict += _task_verdicts(rows, tasks)
    print("\n".join(verdict))
    (lay.out / "report").mkdir(parents=True, exist_ok=True)
    plots.recipe_comparison(rows, args.metric, lay.out / "report" / "baselines.png")
    section = (f"<h2>Baseline study ({args.scale}, {args.seeds} seeds, same samples seen)</h2>"
               + _table(header, table) + "<p>" + "<br>".join(verdict) + "</p>"
               '<img src="report/baselines.png" alt="subset size against score">')
    write_text_atomic(lay.out / "baselines.json", json.dumps(rows, indent=2))
    # the run's report gains the study (every recipe, every seed) as its last section
    order = sorted(args.recipes, key=lambda r: (r != "no_filter", best is None or r != best["recipe"]))
    recipes = [RecipeRun(r, lay.subset(r), lay.run(r, 0), [lay.run(r, s) for s in range(1, args.seeds)])
               for r in order]            # no filter, then the best recipe (its example images are shown)
    page = write_report(lay.out, lay.pool, recipes, title=f"datacurate run: {args.scale} scale, baseline study",
                        extra_html=section)
    print(f"table and plot: {page}")
    return 0


def _gap(best: tuple[float, float], ref: tuple[float, float]) -> tuple[float, float]:
    """(difference of the means, that difference in units of the larger of the two seed stds)."""
    gap = best[0] - ref[0]
    return gap, gap / max(best[1], ref[1], 1e-9)


def _task_verdicts(rows: list[dict], tasks: list[str]) -> list[str]:
    """Per task: the gap of the best filtering recipe to no filter and to random, in seed stds.

    The offline average can hide a filter's effect behind one noisy task; this says which
    tasks the filters move beyond the seed spread.
    """
    out = []
    by = {r["recipe"]: r for r in rows}
    for t in tasks:
        cands = [r for r in rows if r["recipe"] not in ("no_filter", "random_30") and t in r["tasks"]]
        if not cands:
            continue
        best = max(cands, key=lambda r: r["tasks"][t][0])
        parts = []
        for ref in ("no_filter", "random_30"):
            if ref in by and t in by[ref]["tasks"]:
                gap, in_std = _gap(best["tasks"][t], by[ref]["tasks"][t])
                parts.append(f"vs {ref} {gap:+.4f} ({in_std:+.1f} std)")
        out.append(f"  {t}: best {best['recipe']} {', '.join(parts)}")
    return ["per task:"] + out if out else []


if __name__ == "__main__":
    sys.exit(main())
