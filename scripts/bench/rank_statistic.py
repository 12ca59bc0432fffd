"""Does ranking each half's recipes by the median of its seeds agree better than by the mean?

A few runs in every study land 0.03-0.05 under their recipe's others (docs/training.md); one such
run moves a 3-seed mean by 0.01-0.017, as much as the spread of the top recipes at tiny. The
median of three ignores one outlier but is noisier than the mean for well-behaved runs. This reads
finished studies' baselines.json (per-seed scores; no run is needed) and prints, for each, the
split-half Kendall tau (first half of the seeds against the second) and its mean over every halving,
with each half's recipes ranked by the mean and by the median of their seeds, and the share of
halvings at tau 0.8 or above. ``--half 3`` on a 12-seed study draws every disjoint pair of 3-seed halves
(9,240): how often the issue's 3-against-3 split reaches 0.8, from far more draws than 6 seeds give.

The rule for taking the median was fixed before it was computed (2026-12-05): tau >= 0.80 on the
issue's split of the tiny study with the all-halvings mean >= 0.77, and on every other 6-seed study
the all-halvings mean no lower than by the mean.

    .venv/bin/python scripts/bench/rank_statistic.py docs/studies/tiny docs/studies/tiny-sample-times \\
        docs/studies/tiny-lr5e-4 docs/studies/tiny-lr2e-3 docs/studies/micro
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

CENTERS = {"mean": np.mean, "median": np.median}


def study_runs(folder: Path, prog: str = "rank_statistic.py") -> tuple[dict, list[int]]:
    """({recipe: {seed: {"value": score}}}, seeds every recipe has) from FOLDER/baselines.json."""
    from baselines import common_seeds, load_study

    data = load_study(folder)
    if data is None:
        raise SystemExit(f"{prog}: error: {folder}/baselines.json: missing or not JSON; "
                         "give a study folder (scripts/bench/baselines.py --out)")
    runs = {}
    for row in data["rows"]:
        seeds = row.get("seeds")
        if not isinstance(seeds, dict):
            raise SystemExit(f"{prog}: error: {folder}/baselines.json:rows:{row.get('recipe')}:seeds: "
                             "no per-seed scores; tabulate the study again (baselines.py --report-only)")
        runs[row["recipe"]] = {int(s): {"value": float(v)} for s, v in seeds.items() if v is not None}
    used, _ = common_seeds(runs)
    return runs, used


def compare(runs: dict, seeds: list[int], half: int | None = None) -> dict:
    """{center: {"tau": the first half against the second, "all": mean over all halvings, "at_goal":
    their share at TAU_GOAL or above}} for each center; ``half``: seeds per half (default: half the study)."""
    from baselines import all_splits_tau, split_half_tau

    out = {}
    for name, center in CENTERS.items():
        if half is None:
            t = split_half_tau(runs, seeds, center)
            tau, every = t.get("tau"), t.get("all_splits") or {}
        else:                            # no one split of the study to name: only the draws
            tau, every = None, all_splits_tau(runs, sorted(runs), seeds, center, half)
        out[name] = {"tau": tau, "all": every.get("mean"), "at_goal": every.get("at_goal")}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("studies", nargs="+", type=Path, help="study folders holding baselines.json")
    ap.add_argument("--half", type=int, default=None,
                    help="seeds per half, every disjoint pair of such halves (default: half the study's seeds)")
    args = ap.parse_args(argv)
    print(f"{'study':34s} {'seeds':>5s}  {'mean: tau':>9s} {'all':>6s} {'>=0.8':>5s}  "
          f"{'median: tau':>11s} {'all':>6s} {'>=0.8':>5s}")
    from baselines import or_dash

    f = lambda x: or_dash(x, "+.3f")  # noqa: E731
    share = lambda x: or_dash(x, ".0%")  # noqa: E731
    for folder in args.studies:
        runs, seeds = study_runs(folder)
        if args.half is not None and not 1 <= args.half <= len(seeds) // 2:
            raise SystemExit(f"rank_statistic.py: error: --half {args.half}: {folder} has {len(seeds)} complete "
                             f"seeds; give 1 to {len(seeds) // 2}")
        c = compare(runs, seeds, args.half)
        print(f"{str(folder):34s} {len(seeds):5d}  {f(c['mean']['tau']):>9s} {f(c['mean']['all']):>6s} "
              f"{share(c['mean']['at_goal']):>5s}  {f(c['median']['tau']):>11s} {f(c['median']['all']):>6s} "
              f"{share(c['median']['at_goal']):>5s}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
