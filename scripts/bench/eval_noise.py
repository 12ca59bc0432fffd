"""Where the seed noise of a baseline study comes from: the models, or the eval set's few items.

A recipe's score varies from seed to seed for two reasons: the trained models really differ,
and each model is scored on a finite eval set (764 images at tiny), whose own sampling noise
differs from model to model. The split-half method separates them without new eval data:
the eval images are split at random into halves A and B, each run is scored on each half, and
over the seeds of one recipe

    var(full) = var(model) + var(items),  cov(A, B) = var(model)

(a half's item noise is independent of the other half's). So ``cov(A, B)`` estimates the
models' own spread and ``var(full) - cov(A, B)`` the eval set's part; an eval set K times as
large keeps the first and divides the second by K. Estimates are pooled over the recipes
(same number of seeds each) and averaged over several random splits.

    .venv/bin/python scripts/bench/eval_noise.py --out runs/tiny --seeds 6
    .venv/bin/python scripts/bench/eval_noise.py --out runs/tiny --seeds 6 --recipes no_filter random_30 clip_score_top30

It re-scores each run's checkpoint on the offline suite (about 10 s a run on 2 cores), checks
that the full-set average equals RUN/scores.json's, and prints per recipe: seed std, the
model and item parts, and the std and best-vs-reference gap projected for 2x, 4x and 10x the
eval images. ``--json FILE`` writes the numbers.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from datacurate.layout import BenchLayout, RunLayout  # noqa: E402  (after the path insert)

REFS = ("no_filter", "random_30")
SPLITS = 50          # random halvings averaged: one split's covariance is itself noisy
FACTORS = (1, 2, 4, 10)


def run_outcomes(run: Path, tasks) -> dict:
    """Per task, per-image outcomes of RUN's checkpoint (eval.runner.evaluate_task's ``outcomes``)."""
    from eval.model import load_run_model
    from eval.runner import ImageCache, evaluate_task

    lm = load_run_model(run, device="cpu")
    cache, outcomes = ImageCache(), {}
    for t in tasks:
        evaluate_task(t, lm, cache=cache, outcomes=outcomes)
    return outcomes


def task_score(o: dict, take: np.ndarray) -> float:
    """The task's main metric over the images where ``take`` is True: acc1 or mean_recall@1, or
    the rank percentile of either kind (the offline suite's)."""
    rank = o.get("metric") == "mean_rank_percentile"
    if "correct" in o:
        return float(np.asarray(o["rank" if rank else "correct"], dtype=float)[take].mean())
    text = float(np.asarray(o["text_rank" if rank else "text_hit"], dtype=float)[take].mean())
    image = float(o["caption_ranks" if rank else "caption_hits"][take].sum() / o["captions"][take].sum())
    return 0.5 * (text + image)


def average(outcomes: dict, keys: list[bytes], half: set[bytes] | None) -> float:
    """The suite's Average (mean of the tasks' main metrics) over all images, or over ``half``."""
    scores = []
    for o in outcomes.values():
        take = np.array([half is None or k in half for k in o["keys"]])
        scores.append(task_score(o, take))
    return float(np.mean(scores))


def decompose(values: dict[str, list[tuple[float, float, float]]]) -> dict:
    """Pooled over recipes, one halving: var(full) and cov(A, B) of the seeds' (full, A, B) scores."""
    var_full = float(np.mean([np.var([v[0] for v in vs], ddof=1) for vs in values.values()]))
    cov_ab = float(np.mean([np.cov([v[1] for v in vs], [v[2] for v in vs], ddof=1)[0, 1]
                            for vs in values.values()]))
    return {"var_full": var_full, "cov_halves": cov_ab}


def parts_of(splits: list[dict]) -> dict:
    """Averaged over the halvings: the models' variance (cov of the halves, never below 0) and the items' rest."""
    var_full = float(np.mean([d["var_full"] for d in splits]))
    cov = float(np.mean([d["cov_halves"] for d in splits]))
    model = min(max(cov, 0.0), var_full)
    return {"var_full": var_full, "cov_halves": cov, "var_model": model, "var_items": var_full - model}


def projected_std(var_model: float, var_items: float, k: float) -> float:
    return float(np.sqrt(var_model + var_items / k))


def main(argv=None) -> int:
    from datacurate.env import apply_offline_env

    apply_offline_env()
    from baselines import STUDY, finished_study_parser  # noqa: E402  (scripts/bench is on the path as a script)

    args = finished_study_parser(__doc__).parse_args(argv)
    from eval.tasks import resolve_suite

    lay = BenchLayout(args.out)
    recipes = args.recipes or STUDY
    _, tasks = resolve_suite("offline", pool=lay.pool)
    rng = np.random.default_rng(0)
    per_run: dict[str, list[dict]] = {}
    keys = None
    for r in recipes:
        for s in range(args.seeds):
            run = lay.run(r, s)
            scores = json.loads(RunLayout(run).scores.read_text())
            out = run_outcomes(run, tasks)
            if keys is None:
                keys = sorted(set(out[tasks[0].key]["keys"]))
            full = average(out, keys, None)
            want = scores["aggregates"]["Average"]
            if abs(full - want) > 1e-6:
                raise SystemExit(f"{run}: the per-image outcomes give Average {full:.6f}, scores.json {want:.6f}")
            per_run.setdefault(r, []).append({"full": full, "outcomes": out,
                                              "se": (scores.get("aggregates_se") or {}).get("Average")})
            print(f"{r} seed {s}: Average {full:.4f}", flush=True)
    splits = []
    for _ in range(SPLITS):
        half = set(k for k, take in zip(keys, rng.random(len(keys)) < 0.5) if take)
        values = {r: [(x["full"], average(x["outcomes"], keys, half), average(x["outcomes"], keys, set(keys) - half))
                      for x in runs] for r, runs in per_run.items()}
        splits.append(decompose(values))
    parts = parts_of(splits)
    means = {r: float(np.mean([x["full"] for x in runs])) for r, runs in per_run.items()}
    best = max((r for r in means if r not in REFS), key=means.get, default=None)
    print(f"\n{len(keys)} eval images, {len(per_run)} recipes x {args.seeds} seeds, {SPLITS} random halvings")
    print(f"seed variance of the Average (pooled): {parts['var_full']:.3e} (std {np.sqrt(parts['var_full']):.4f})")
    print(f"  models' own spread:  {parts['var_model']:.3e} (std {np.sqrt(parts['var_model']):.4f}, "
          f"{parts['var_model'] / parts['var_full']:.0%})")
    print(f"  eval-set sampling:   {parts['var_items']:.3e} (std {np.sqrt(parts['var_items']):.4f}, "
          f"{parts['var_items'] / parts['var_full']:.0%})")
    ses = [x["se"] for runs in per_run.values() for x in runs if x["se"] is not None]
    if ses:
        print(f"  (one run's bootstrap se over items, mean: {np.mean(ses):.4f})")
    proj = {k: projected_std(parts["var_model"], parts["var_items"], k) for k in FACTORS}
    print("projected seed std of the Average with K times the eval images: "
          + ", ".join(f"K={k}: {v:.4f}" for k, v in proj.items()))
    gaps = {}
    if best:
        for ref in REFS:
            if ref in means:
                gaps[ref] = {k: (means[best] - means[ref]) / v for k, v in proj.items()}
                print(f"{best} - {ref} = {means[best] - means[ref]:+.4f}: "
                      + ", ".join(f"K={k}: {g:.1f} std" for k, g in gaps[ref].items()))
    if args.json:
        args.json.write_text(json.dumps({"images": len(keys), "recipes": list(per_run), "seeds": args.seeds,
                                         "splits": SPLITS, "parts": parts, "means": means, "best": best,
                                         "projected_std": proj, "gaps_in_std": gaps}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
