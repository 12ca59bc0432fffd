"""What the tau goal takes: a study's signal against its noise, and the split-half tau they give.

The split-half Kendall tau of one 3-against-3 split is a single draw, and a wide one (the 12-seed
tiny study's 9,240 disjoint 3-seed halves reach 0.8 in 29 % of draws: ``rank_statistic.py --half 3``).
What a lever has to change is the distribution the draw comes from. A ranking's agreement depends on
two things: how far apart the recipes' true means lie (the signal) and how far one run lands from
its recipe (the noise). This estimates both from a finished study and draws the two halves from them:

- the noise: the residual std of the recipe x seed table once each recipe's mean and each seed's
  mean are taken out (a seed that lowers every recipe alike does not change a ranking);
- the signal: the recipes' means, pulled towards their grand mean so that their spread loses what
  the study's own sampling noise adds to it (var(true) = var(observed) - noise^2 / seeds).

Each draw gives every recipe two independent half-means, true mean + normal noise / sqrt(seeds per
half), and ranks them. On the 12-seed tiny study the projection gives +0.761 and 29 % at 0.8 for 3
seeds a side, where the 9,240 real draws give +0.765 and 29 %. The last columns give the factor by
which signal over noise must grow (a larger spread or a smaller per-run std, in any mix) for the
3-against-3 tau to reach 0.8 on average, and in half and in 90 % of draws.

    .venv/bin/python scripts/bench/tau_projection.py docs/studies/tiny-12seeds docs/studies/base \\
        docs/studies/micro
    .venv/bin/python scripts/bench/tau_projection.py docs/studies/{tiny,tiny-12seeds,base,micro} \\
        docs/studies/tiny-{l4-12seeds,l4,rn,fq,lr2e-3,lr5e-4,sample-times,b256,batch64} --plot docs/studies/tau_projection.png
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

DRAWS = 4000                      # pairs of halves per projection: the share at 0.8 to about 1 %
FACTORS = np.round(np.arange(1.0, 3.01, 0.05), 2)


def signal_and_noise(runs: dict, seeds: list[int]) -> tuple[list[str], np.ndarray, float]:
    """(recipes, their true means as estimated, the residual per-run std) from a study's runs."""
    recipes = sorted(r for r, by in runs.items() if all(s in by for s in seeds))
    x = np.array([[runs[r][s]["value"] for s in seeds] for r in recipes])
    n, k = x.shape
    if n < 3 or k < 2:
        raise ValueError(f"needs at least 3 recipes and 2 complete seeds, have {n} and {k}")
    means = x.mean(axis=1)
    resid = x - means[:, None] - x.mean(axis=0)[None, :] + x.mean()
    noise = float(np.sqrt((resid ** 2).sum() / ((n - 1) * (k - 1))))
    observed = means.var(ddof=1)
    true = max(observed - noise ** 2 / k, 0.0)
    shrink = np.sqrt(true / observed) if observed > 0 else 0.0
    return recipes, means.mean() + (means - means.mean()) * shrink, noise


def projected_tau(means: np.ndarray, noise: float, half: int, draws: int = DRAWS, seed: int = 0) -> np.ndarray:
    """Kendall tau of DRAWS pairs of independent HALF-seed rankings of recipes with these true means.

    Normal noise leaves no ties, so tau is the mean over recipe pairs of the product of the two
    rankings' signs (tau-a = tau-b), computed for all draws at once."""
    rng = np.random.default_rng(seed)
    sd = noise / np.sqrt(half)
    i, j = np.triu_indices(means.size, k=1)
    a = means + rng.normal(0.0, sd, (draws, means.size))
    b = means + rng.normal(0.0, sd, (draws, means.size))
    return (np.sign(a[:, i] - a[:, j]) * np.sign(b[:, i] - b[:, j])).mean(axis=1)


def factor_needed(means: np.ndarray, noise: float, half: int, share: float | None) -> float | None:
    """The smallest factor on signal over noise (of FACTORS) at which the HALF-against-HALF tau reaches
    TAU_GOAL on average (``share`` None) or in at least SHARE of draws; None beyond the grid."""
    from baselines import TAU_GOAL, share_at_goal

    for f in FACTORS:
        t = projected_tau(means, noise / f, half)
        if (t.mean() >= TAU_GOAL) if share is None else (share_at_goal(t) >= share):
            return float(f)
    return None


def project(folder: Path, halves=(1, 2, 3, 6)) -> dict:
    """A study's noise, signal and projected taus (see the module doc)."""
    from baselines import share_at_goal
    from rank_statistic import study_runs

    runs, seeds = study_runs(folder, prog="tau_projection.py")
    try:
        recipes, means, noise = signal_and_noise(runs, seeds)
    except ValueError as exc:
        raise SystemExit(f"tau_projection.py: error: {folder}/baselines.json: {exc}; "
                         "give a finished study") from None
    spread = float(means.std(ddof=1))
    out = {"seeds": len(seeds), "recipes": len(recipes), "noise": noise, "spread": spread,
           "ratio": spread / noise if noise > 0 else None, "halves": {}}
    for h in halves:
        t = projected_tau(means, noise, h)
        out["halves"][h] = {"mean": float(t.mean()), "at_goal": share_at_goal(t)}
    out["factor"] = {name: factor_needed(means, noise, 3, share)
                     for name, share in (("mean", None), ("half", 0.5), ("most", 0.9))}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("studies", nargs="+", type=Path, help="study folders holding baselines.json")
    ap.add_argument("--plot", type=Path, default=None, metavar="PNG",
                    help="also draw each study's projected 3 v 3 and 6 v 6 tau against the goal")
    args = ap.parse_args(argv)
    from baselines import TAU_GOAL, or_dash

    halves = (1, 2, 3, 6)
    print(f"{'study':30s} {'seeds':>5s} {'noise':>7s} {'spread':>7s} {'ratio':>5s}  "
          + "  ".join(f"{f'{h} v {h}':>12s}" for h in halves)
          + "  x for 3 v 3: mean / 50% / 90% at 0.8")
    drawn = []
    for folder in args.studies:
        p = project(folder, halves)
        drawn.append((folder.name, {h: (v["mean"], v["at_goal"]) for h, v in p["halves"].items()}))
        cells = "  ".join(f"{p['halves'][h]['mean']:+.3f} {p['halves'][h]['at_goal']:4.0%}" for h in halves)
        need = " / ".join(or_dash(p["factor"][k], ".2f") for k in ("mean", "half", "most"))
        print(f"{str(folder):30s} {p['seeds']:5d} {p['noise']:7.4f} {p['spread']:7.4f} {or_dash(p['ratio'], '.2f'):>5s}  "
              f"{cells}  {need}")
    if args.plot is not None:
        from datacurate.report.plots import tau_projections

        print(f"plot: {tau_projections(drawn, TAU_GOAL, args.plot)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
