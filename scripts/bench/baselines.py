"""The baseline study: the benchmark's ranking instrument, every offline recipe at several seeds.

DataComp's claim that filters can be ranked rests on the ranking standing out of the seed
noise; this study measures that on our scales. One pool, filtering network and embeddings
(a `datacurate run` folder) are shared; each recipe's subset is made once and trained with
seeds 0..S-1 at the same samples seen. Stages run seed-major (every recipe at seed 0, then
every recipe at seed 1, ...), so a study cut short still has complete seeds.

It prints, over the seeds complete for every recipe (paired: a missing run drops its seed
from the study and is named, never counted as zero):

* per recipe: subset size and fraction of the pool, mean ± sample std (ddof=1) of the metric
  (scores.json "aggregates", default Average) with its 95 % t-interval, and of each task
  (scores.json "tasks");
* the gap of the best filtering recipe to no filtering and to a random subset of the same
  size, in units of the larger of the two sample stds (is it >= 5?);
* the split-half Kendall tau of the recipe ranking (first half of the seeds against the second);
* with ``--compare``, the Spearman rho of the recipe ranking against other scales' studies.

It writes DIR/baselines.json (rows and a summary), DIR/report/baselines.png (score against
subset size), DIR/report/clip_fraction_sweep.png (CLIP-score keep fraction 10..50 %: upstream's
30 % sweet spot is tested here, not assumed) and the study as the last section of DIR/report.html.

    .venv/bin/python scripts/bench/baselines.py --scale tiny --seeds 6 --out runs/tiny
    .venv/bin/python scripts/bench/baselines.py --scale micro --seeds 3 --out runs/micro
    .venv/bin/python scripts/bench/baselines.py --scale micro --seeds 3 --out runs/micro --compare runs/micro runs/tiny
    .venv/bin/python scripts/bench/baselines.py --scale tiny --seeds 6 --out runs/tiny --report-only

``--compare`` skips the folder the study itself is in; ``--report-only`` runs no stage (a study
cut short, or one another scale finished since, is tabulated from the runs there are).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from datacurate.layout import BenchLayout, RunLayout  # noqa: E402  (after the path insert)
from training.sample_order import ORDERS  # noqa: E402

STUDY = ["no_filter", "random_30", "basic_offline", "text_based_offline", "image_based", "image_based_and_clip",
         "clip_score_top10", "clip_score_top20", "clip_score_top30", "clip_score_top40", "clip_score_top50",
         "dedup_clip", "decontaminate_phash_dedup_clip"]
REFS = ("no_filter", "random_30")     # the references a filter must beat; never "the best filter"
STRONG = 5.0                          # a gap counted as standing out of the seed noise, in sample stds
TAU_GOAL = 0.8                        # split-half Kendall tau the ranking should reach (issue 15)
SWEEP = re.compile(r"^clip_score_top(\d+)$")


# --------------------------------------------------------------------------- stages

TRAINING_FIELDS = ("batch_size", "learning_rate", "warmup", "beta2", "weight_decay", "data_order", "model")


def named_choices(key: str) -> tuple[str, tuple[str, ...]] | None:
    """(what it is, the values it may take) for a training field set by name; None for a number."""
    if key == "data_order":
        return "data order (training/sample_order.py)", tuple(ORDERS)
    if key == "model":
        from datacurate.clip import register_model_configs

        return "config in training/model_configs", tuple(register_model_configs())
    return None


def recipe_variant(scale: str, settings: list[str]):
    """The scale with some of its training recipe changed (``learning_rate=5e-4``): a study of the
    instrument itself. The pool, the filtering network and the subsets do not depend on these."""
    import dataclasses

    from datacurate.scales import as_scale

    changes = {}
    for item in settings:
        key, eq, value = item.partition("=")
        if not eq or key not in TRAINING_FIELDS:
            raise SystemExit(f"baselines.py: error: --set {item!r}: give FIELD=VALUE, FIELD one of "
                             f"{', '.join(TRAINING_FIELDS)}; the pool's own fields would make another pool")
        named = named_choices(key)
        if named is not None:
            what, choices = named
            if value not in choices:
                raise SystemExit(f"baselines.py: error: --set {item!r}: no such {what}; give one of {', '.join(choices)}")
            changes[key] = value
            continue
        try:
            changes[key] = type(getattr(as_scale(scale), key) or 0.0)(float(value))
        except ValueError:
            raise SystemExit(f"baselines.py: error: --set {item!r}: {value!r} is not a number") from None
    return dataclasses.replace(as_scale(scale), **changes)


def share_inputs(lay, source: Path) -> list[str]:
    """Link SOURCE's pool, filtering network, subsets and training shards into a new study folder,
    so a recipe variant trains on exactly the data the source study trained on."""
    from datacurate.layout import BenchLayout

    linked = []
    lay.out.mkdir(parents=True, exist_ok=True)
    for src, dst in zip(BenchLayout(source).training_inputs, lay.training_inputs):
        if not src.exists():
            raise SystemExit(f"baselines.py: error: --share {source}: no {src.name} there; give a finished study folder")
        if not dst.exists():
            dst.symlink_to(src.resolve())
            linked.append(dst.name)
    return linked


def study_stages(lay, recipes: list[str], scale, seeds: int, master: str | None = None) -> list:
    """Pool stages, every recipe's filter + reshard, then train + eval seed-major."""
    from datacurate.run import pool_stages, recipe_stages
    from datacurate.scales import as_scale

    scale = as_scale(scale)
    stages = pool_stages(lay, scale, 0, master)
    for r in recipes:
        stages += recipe_stages(lay, r, scale, 0, master, run_stages=False)
    for s in range(seeds):
        for r in recipes:
            stages += recipe_stages(lay, r, scale, 0, master, train_seed=s, subset_stages=False)
    return stages


# --------------------------------------------------------------------------- reading runs

def read_run(run: Path, metric: str, fingerprint: str | None = None) -> tuple[dict | None, str | None]:
    """(``{"value", "tasks"}``, None) for a complete, current run, else (None, why it does not count).

    A run scored on another suite version, or with tasks missing, would compare unlike things."""
    try:
        scores = json.loads(RunLayout(Path(run)).scores.read_text())
    except OSError:
        return None, "no scores.json"
    except ValueError:
        return None, "unreadable scores.json"
    value = (scores.get("aggregates") or {}).get(metric)
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return None, f"no {metric} in scores.json"
    if scores.get("complete") is False:
        return None, "scores.json incomplete: " + (", ".join(sorted(scores.get("missing") or {})) or "tasks missing")
    if fingerprint is not None and scores.get("offline_fingerprint") not in (None, fingerprint):
        return None, "scored on another version of the offline suite"
    tasks = {t: float(v) for t, v in (scores.get("tasks") or {}).items() if isinstance(v, (int, float))}
    return {"value": float(value), "tasks": tasks}, None


def read_study(lay, recipes: list[str], seeds: int, metric: str, fingerprint: str | None = None,
               run_of=None) -> tuple[dict, list[tuple[str, int, str]]]:
    """``{recipe: {seed: {"value", "tasks"}}}`` of the complete runs, and the missing ones (recipe, seed, why).

    ``run_of(recipe, seed)`` gives the folder whose scores count (default: the study's run)."""
    run_of = run_of or lay.run
    got, missing = {}, []
    for r in recipes:
        got[r] = {}
        for s in range(seeds):
            res, why = read_run(run_of(r, s), metric, fingerprint)
            if res is None:
                missing.append((r, s, why))
            else:
                got[r][s] = res
    return got, missing


def common_seeds(runs: dict[str, dict[int, dict]]) -> tuple[list[int], list[str]]:
    """(the seeds complete for every recipe that has any run, the recipes with none).

    Paired seeds: every mean in the study is over the same training seeds, so a run cut off
    drops its seed rather than biasing one recipe."""
    absent = [r for r, by in runs.items() if not by]
    sets = [set(by) for by in runs.values() if by]
    return (sorted(set.intersection(*sets)) if sets else []), absent


# --------------------------------------------------------------------------- statistics

def mean_std(values) -> dict:
    """n, mean, sample std (ddof=1), standard error and the 95 % t-interval of the mean."""
    from scipy import stats

    v = np.asarray([x for x in values], dtype=float)
    n = len(v)
    out = {"n": n, "mean": float(v.mean()) if n else None, "std": None, "sem": None, "ci95": None}
    if n >= 2:
        std = float(v.std(ddof=1))
        sem = std / math.sqrt(n)
        half = float(stats.t.ppf(0.975, n - 1)) * sem
        out.update(std=std, sem=sem, ci95=[out["mean"] - half, out["mean"] + half])
    return out


def recipe_rows(runs: dict[str, dict[int, dict]], seeds: list[int], metric: str) -> list[dict]:
    """One row per recipe with runs at every study seed: the metric and each task over those seeds."""
    rows = []
    for r, by in runs.items():
        if not seeds or any(s not in by for s in seeds):
            continue
        m = mean_std([by[s]["value"] for s in seeds])
        names = sorted(set().union(*(by[s]["tasks"] for s in seeds)))
        tasks = {}
        for t in names:
            vals = [by[s]["tasks"][t] for s in seeds if t in by[s]["tasks"]]
            tm = mean_std(vals)
            tasks[t] = [tm["mean"], tm["std"]]
        rows.append({"recipe": r, metric: m["mean"], metric + "_std": m["std"], "sem": m["sem"],
                     "ci95": m["ci95"], "n": m["n"], "seeds": {str(s): by[s]["value"] for s in seeds},
                     "tasks": tasks})
    return rows


def gap(best: tuple[float, float | None], ref: tuple[float, float | None]) -> tuple[float, float | None]:
    """(difference of the means, that difference in units of the larger of the two sample stds)."""
    d = best[0] - ref[0]
    stds = [s for s in (best[1], ref[1]) if s is not None]
    if not stds or max(stds) <= 0:
        return d, None
    return d, d / max(stds)


def best_gaps(rows: list[dict], metric: str, refs=REFS) -> dict:
    """The best filtering recipe (by mean; no reference) and its gap to each reference present."""
    by = {r["recipe"]: r for r in rows}
    cands = [r for r in rows if r["recipe"] not in refs and r.get(metric) is not None]
    if not cands:
        return {"best": None, "gaps": {}}
    best = max(cands, key=lambda r: r[metric])
    out = {}
    for ref in refs:
        if ref in by:
            d, k = gap((best[metric], best[metric + "_std"]), (by[ref][metric], by[ref][metric + "_std"]))
            out[ref] = {"diff": d, "in_std": k, "strong": k is not None and k >= STRONG}
    return {"best": best["recipe"], "gaps": out}


def held_out_best(runs: dict[str, dict[int, dict]], seeds: list[int], refs=REFS) -> dict:
    """The best filtering recipe picked on the first half of the seeds and measured on the second.

    "The best" picked and measured on the same seeds is an upper estimate of its lead (the pick
    favours seeds that were lucky for it); measured on seeds it was not picked on, it is not.
    Halves as in :func:`split_half_tau`; the gap is in units of the larger second-half sample std."""
    seeds = sorted(seeds)
    h = len(seeds) // 2
    first, second = seeds[:h], seeds[len(seeds) - h:]
    out = {"first": first, "second": second, "best": None, "rank_on_second": None, "gaps": {}}
    cands = [r for r, by in runs.items() if r not in refs and all(s in by for s in seeds)]
    if h < 1 or not cands:
        return out
    mean = lambda r, ss: float(np.mean([runs[r][s]["value"] for s in ss]))  # noqa: E731
    best = max(cands, key=lambda r: mean(r, first))
    order = sorted(cands, key=lambda r: -mean(r, second))
    out.update(best=best, rank_on_second=order.index(best) + 1, candidates=len(cands))
    for ref in refs:
        if ref in runs and all(s in runs[ref] for s in seeds):
            b = mean_std([runs[best][s]["value"] for s in second])
            r = mean_std([runs[ref][s]["value"] for s in second])
            d, k = gap((b["mean"], b["std"]), (r["mean"], r["std"]))
            out["gaps"][ref] = {"diff": d, "in_std": k, "strong": k is not None and k >= STRONG}
    return out


def split_half_tau(runs: dict[str, dict[int, dict]], seeds: list[int], center=np.mean) -> dict:
    """Kendall tau between the recipe ranking by mean over the first half of the seeds and the second.

    With S seeds: the first S//2 against the last S//2 (an odd S's middle seed goes to neither).
    A tau near 1 says the ranking is a property of the recipes, not of the seeds. ``center``: what
    ranks a recipe within a half (the mean; scripts/bench/rank_statistic.py tries the median)."""
    from scipy import stats

    seeds = sorted(seeds)
    h = len(seeds) // 2
    recipes = [r for r, by in runs.items() if all(s in by for s in seeds)]
    out = {"first": seeds[:h], "second": seeds[len(seeds) - h:], "recipes": len(recipes), "tau": None, "p": None}
    if h < 1:
        return {**out, "message": f"split-half tau needs at least 2 complete seeds, have {len(seeds)}"}
    if len(recipes) < 3:
        return {**out, "message": f"split-half tau needs at least 3 recipes, have {len(recipes)}"}
    a = [float(center([runs[r][s]["value"] for s in out["first"]])) for r in recipes]
    b = [float(center([runs[r][s]["value"] for s in out["second"]])) for r in recipes]
    res = stats.kendalltau(a, b)
    out["all_splits"] = all_splits_tau(runs, recipes, seeds, center)
    if not math.isfinite(res.statistic):
        return {**out, "message": "split-half tau undefined (one half ranks every recipe equal)"}
    return {**out, "tau": float(res.statistic), "p": float(res.pvalue), "message": ""}


def all_splits_tau(runs: dict[str, dict[int, dict]], recipes: list[str], seeds: list[int],
                    center=np.mean, half: int | None = None) -> dict:
    """The split-half tau over every way to draw two disjoint halves of ``len(seeds) // 2`` seeds
    (each pair of halves once): the issue's one split is a single draw of it (the 6-seed tiny study:
    0.744 on seeds 0-2 vs 3-5, 0.59-0.90 over the 10 splits). With an odd number of seeds every seed
    takes part (3 seeds: 0 vs 1, 0 vs 2, 1 vs 2), where the one split leaves the middle seed out.
    ``half``: seeds per half, fewer than half the study's (3 of 12: how often the issue's 3-against-3
    split reaches TAU_GOAL, from many more draws than 6 seeds give)."""
    import itertools

    from scipy import stats

    h = half or len(seeds) // 2
    mean = lambda r, ss: float(center([runs[r][s]["value"] for s in ss]))  # noqa: E731
    taus = []
    for first in itertools.combinations(seeds, h):
        rest = [s for s in seeds if s not in first]
        for second in itertools.combinations(rest, h):
            if second < first:
                continue
            t = stats.kendalltau([mean(r, first) for r in recipes], [mean(r, second) for r in recipes]).statistic
            if math.isfinite(t):
                taus.append(float(t))
    if not taus:
        return {"splits": 0, "mean": None, "min": None, "max": None, "at_goal": None}
    return {"splits": len(taus), "mean": float(np.mean(taus)), "min": min(taus), "max": max(taus),
            "at_goal": share_at_goal(taus)}


def share_at_goal(taus) -> float:
    """The share of these split-half taus at TAU_GOAL or above (rounding below it still counts)."""
    return float(np.mean(np.asarray(taus, dtype=float) >= TAU_GOAL - 1e-12))


def read_finished_study(lay, recipes: list[str], seeds: int, prog: str,
                        metric: str = "Average") -> tuple[dict, list[int]]:
    """(runs at the seeds complete for every recipe, those seeds): a finished study as the scripts that
    read it again take it (task_families.py, task_weights.py), every run left out named on the way; with
    no seed complete for every recipe, ``prog: error: ...`` and exit."""
    runs, missing = read_study(lay, recipes, seeds, metric)
    for r, s, why in missing:
        print(f"left out: {r} seed {s} ({why})")
    used, _ = common_seeds(runs)
    if not used:
        raise SystemExit(f"{prog}: error: {lay.out}: no seed has a scored run for every recipe ({len(missing)} "
                         f"of {len(recipes) * seeds} missing); finish the study first "
                         f"(scripts/bench/baselines.py --out {lay.out})")
    return {r: {s: by[s] for s in used} for r, by in runs.items()}, used


def finished_study_parser(doc: str, seeds: int = 6) -> argparse.ArgumentParser:
    """The arguments of a script that reads a finished study again (eval_noise.py, task_families.py)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="the study's run folder (scripts/bench/baselines.py --out)")
    ap.add_argument("--seeds", type=int, default=seeds)
    ap.add_argument("--recipes", nargs="+", default=None, help="default: the study's recipes")
    ap.add_argument("--json", type=Path, default=None)
    return ap


def open_finished_study(doc: str, prog: str, argv=None, seeds: int = 6):
    """(args, study layout, runs, seeds used) for a script that reads a finished study again: the
    offline environment set, its arguments parsed (finished_study_parser), the runs read
    (read_finished_study)."""
    from datacurate.env import apply_offline_env

    apply_offline_env()
    args = finished_study_parser(doc, seeds=seeds).parse_args(argv)
    lay = BenchLayout(args.out)
    runs, used = read_finished_study(lay, args.recipes or STUDY, args.seeds, prog)
    return args, lay, runs, used


def load_study(folder: Path) -> dict | None:
    """A run folder's baselines.json as {"rows", "summary"} (an older list of rows is accepted)."""
    try:
        data = json.loads(BenchLayout(Path(folder)).baselines.read_text())
    except (OSError, ValueError):
        return None
    return {"rows": data, "summary": {}} if isinstance(data, list) else data


def cross_scale_rho(rows: list[dict], metric: str, other: dict | None, name: str) -> dict:
    """Spearman rho of the recipe ranking (by mean) here against another study, over the recipes both have.

    Fewer than 3 common recipes is refused: with 2 the rank correlation is +-1 whatever the data."""
    from scipy import stats

    out = {"other": name, "scale": None, "common": 0, "rho": None, "p": None}
    if other is None:
        return {**out, "message": "no baselines.json"}
    summary = other.get("summary") or {}
    out["scale"] = summary.get("scale")
    om = summary.get("metric", metric)
    if om != metric:
        return {**out, "message": f"its study compares {om}, this one {metric}"}
    here = {r["recipe"]: r[metric] for r in rows if r.get(metric) is not None}
    there = {r["recipe"]: r[metric] for r in other.get("rows", []) if isinstance(r.get(metric), (int, float))}
    common = [r for r in here if r in there]
    out["common"] = len(common)
    if len(common) < 3:
        return {**out, "message": f"{len(common)} recipe(s) in common, a rank correlation needs at least 3"}
    res = stats.spearmanr([here[r] for r in common], [there[r] for r in common])
    if not math.isfinite(res.statistic):
        return {**out, "message": "rho undefined (one study ranks the common recipes all equal)"}
    return {**out, "rho": float(res.statistic), "p": float(res.pvalue), "recipes": common, "message": ""}


def sweep_points(rows: list[dict], metric: str) -> list[tuple[float, float, float | None, str]]:
    """(keep fraction, mean, sample std, recipe) of the clip_score_topNN recipes, by fraction."""
    pts = []
    for r in rows:
        m = SWEEP.match(r["recipe"])
        if m and r.get(metric) is not None:
            pts.append((int(m.group(1)) / 100, r[metric], r.get(metric + "_std"), r["recipe"]))
    return sorted(pts)


# --------------------------------------------------------------------------- output

def _pm(mean, std, digits=4) -> str:
    if mean is None:
        return "-"
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if std is not None else f"{mean:.{digits}f}"


def table(rows: list[dict], metric: str) -> tuple[list[str], list[list[str]]]:
    """The study's table: recipe, size, fraction of the pool, seeds, mean ± sample std, 95 % CI, tasks."""
    tasks = sorted(set().union(*(r["tasks"] for r in rows))) if rows else []
    header = ["recipe", "size", "of pool", "seeds", f"{metric} (mean ± sample std)", "95% CI", *tasks]
    body = []
    for r in rows:
        ci = r.get("ci95")
        body.append([r["recipe"], f"{r['size']:,}" if r.get("size") is not None else "-",
                     f"{r['fraction']:.1%}" if r.get("fraction") is not None else "-", str(r["n"]),
                     _pm(r[metric], r[metric + "_std"]), f"[{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "-",
                     *[_pm(*r["tasks"][t], digits=3) if t in r["tasks"] else "-" for t in tasks]])
    return header, body


def format_table(header: list[str], body: list[list[str]]) -> str:
    widths = [max(len(h), *(len(t[i]) for t in body)) if body else len(h) for i, h in enumerate(header)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)) for line in [header, *body])


def missing_lines(missing: list[tuple[str, int, str]], absent: list[str]) -> list[str]:
    """Which runs do not count, grouped by recipe and reason (what a --report-only reader needs)."""
    groups: dict[tuple[str, str], list[int]] = {}
    for r, s, why in missing:
        groups.setdefault((r, why), []).append(s)
    out = [f"  {r}: seed{'s' if len(ss) > 1 else ''} {', '.join(map(str, ss))} ({why})"
           + (" - left out of the study" if r in absent else "") for (r, why), ss in groups.items()]
    return (["missing runs (a seed missing for a recipe is left out for every recipe):"] + out) if out else []


def verdict_lines(summary: dict, metric: str) -> list[str]:
    lines = [f"seeds used: {', '.join(map(str, summary['seeds'])) or 'none'} (of {summary['seeds_requested']} requested)"]
    bg = summary["best"]
    for ref, g in bg["gaps"].items():
        k = g["in_std"]
        spread = (f"{k:+.1f} x the larger sample std; {'' if g['strong'] else 'NOT '}>= {STRONG:g} std"
                  if k is not None else "no sample std (one seed)")
        lines.append(f"best {bg['best']} - {ref} = {g['diff']:+.4f} {metric} ({spread})")
    hb = summary.get("held_out_best") or {}
    if hb.get("best"):
        for ref, g in hb["gaps"].items():
            k = g["in_std"]
            lines.append(f"held out: best on seeds {hb['first']} is {hb['best']} (rank {hb['rank_on_second']} of "
                         f"{hb['candidates']} on seeds {hb['second']}); there it leads {ref} by {g['diff']:+.4f}"
                         + (f" ({k:+.1f} x the larger sample std)" if k is not None else " (one seed: no std)"))
    if summary.get("pooled_std") is not None:
        lines.append(f"per-run sample std pooled over the recipes {summary['pooled_std']:.4f}; the recipes' means "
                     f"spread {summary['spread_of_means']:.4f} (sample std)")
    t = summary["split_half_tau"]
    lines.append(f"split-half Kendall tau of the ranking ({len(t['first'])} seeds {t['first']} vs {t['second']}, "
                 f"{t['recipes']} recipes): " + (f"{t['tau']:+.3f} (p = {t['p']:.3g})" if t["tau"] is not None
                                                 else t["message"]))
    al = t.get("all_splits") or {}
    if al.get("splits", 0) > 1:
        lines.append(f"  over all {al['splits']} ways to draw two halves of {len(t['first'])} from the seeds: mean {al['mean']:+.3f} "
                     f"(min {al['min']:+.3f}, max {al['max']:+.3f}"
                     + (f"; {al['at_goal']:.0%} at {TAU_GOAL} or above)" if al.get("at_goal") is not None else ")"))
    for c in summary["cross_scale"]:
        lines.append(f"cross-scale Spearman rho vs {c['other']} (scale {c['scale']}, {c['common']} common recipes): "
                     + (f"{c['rho']:+.3f} (p = {c['p']:.3g})" if c["rho"] is not None else c["message"]))
    return lines


def task_verdicts(rows: list[dict], refs=REFS) -> list[str]:
    """Per task: the gap of the best filtering recipe to each reference, in sample stds.

    The average can hide a filter's effect behind one noisy task; this says which tasks move."""
    out = []
    by = {r["recipe"]: r for r in rows}
    for t in sorted(set().union(*(r["tasks"] for r in rows))) if rows else []:
        cands = [r for r in rows if r["recipe"] not in refs and r["tasks"].get(t, [None])[0] is not None]
        if not cands:
            continue
        best = max(cands, key=lambda r: r["tasks"][t][0])
        parts = []
        for ref in refs:
            if ref in by and t in by[ref]["tasks"]:
                d, k = gap(tuple(best["tasks"][t]), tuple(by[ref]["tasks"][t]))
                parts.append(f"vs {ref} {d:+.4f} ({f'{k:+.1f} std' if k is not None else 'no std'})")
        out.append(f"  {t}: best {best['recipe']} {', '.join(parts)}")
    return ["per task:"] + out if out else []


def pool_size(lay, sizes: dict[str, int]) -> int | None:
    """Samples in the pool a participant filters: those downloaded (else no_filter's subset)."""
    try:
        return int(json.loads(lay.pool_layout.download_summary_path.read_text())["succeeded"])
    except (OSError, ValueError, KeyError, TypeError):
        return sizes.get("no_filter")


def build_study(lay, recipes: list[str], seeds: int, metric: str, scale: str, compare: list[Path] = (),
                fingerprint: str | None = None) -> dict:
    """Everything the study says, from the run folder as it is: rows, summary, missing runs."""
    from datacurate.uids import read_subset

    runs, missing = read_study(lay, recipes, seeds, metric, fingerprint)
    used, absent = common_seeds(runs)
    rows = recipe_rows(runs, used, metric)
    sizes = {r: len(read_subset(lay.subset(r))) for r in recipes if lay.subset(r).exists()}
    pool = pool_size(lay, sizes)
    for r in rows:
        r["size"] = sizes.get(r["recipe"])
        r["fraction"] = r["size"] / pool if r["size"] is not None and pool else None
    summary = {"scale": scale, "metric": metric, "seeds": used, "seeds_requested": seeds, "pool": pool,
               "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "missing": [{"recipe": r, "seed": s, "why": w} for r, s, w in missing],
               "best": best_gaps(rows, metric), "held_out_best": held_out_best(runs, used),
               "split_half_tau": split_half_tau(runs, used),
               "pooled_std": pooled_std(rows, metric), "spread_of_means": _spread(rows, metric),
               "cross_scale": [cross_scale_rho(rows, metric, load_study(d), str(d)) for d in compare]}
    return {"rows": rows, "summary": summary, "missing": missing, "absent": absent, "runs": runs}


def write_study(lay, study: dict) -> str:
    """DIR/baselines.json and the plots under DIR/report/; returns the report's HTML section."""
    from datacurate.atomic import write_text_atomic
    from datacurate.report import plots
    from datacurate.report.html import _esc, _table

    rows, summary = study["rows"], study["summary"]
    metric = summary["metric"]
    write_text_atomic(lay.baselines, json.dumps({"rows": rows, "summary": summary}, indent=2))
    img = lay.report_dir
    img.mkdir(parents=True, exist_ok=True)
    header, body = table(rows, metric)
    lines = verdict_lines(summary, metric) + task_verdicts(rows) + missing_lines(
        study["missing"], study["absent"])
    if summary.get("averages"):
        lines += averages_lines(summary)
    parts = [f"<h2>Baseline study ({_esc(summary['scale'])}, {len(summary['seeds'])} seeds, same samples seen)</h2>",
             _table(header, body), "<p>" + "<br>".join(_esc(x) for x in lines) + "</p>"]
    if any(r.get("size") is not None for r in rows):
        plots.study_scatter(rows, metric, img / "baselines.png", refs=REFS)
        parts.append('<img src="report/baselines.png" alt="subset size against score">')
    pts = sweep_points(rows, metric)
    if pts:
        by = {r["recipe"]: r for r in rows}
        bands = {ref: (by[ref][metric], by[ref][metric + "_std"]) for ref in REFS if ref in by}
        plots.fraction_sweep([(f, m, s) for f, m, s, _ in pts], bands, metric, img / "clip_fraction_sweep.png")
        parts.append('<img src="report/clip_fraction_sweep.png" alt="CLIP-score keep fraction against score">')
    return "\n".join(parts)


def print_study(study: dict) -> None:
    metric = study["summary"]["metric"]
    print(format_table(*table(study["rows"], metric)))
    print()
    print("\n".join(verdict_lines(study["summary"], metric) + task_verdicts(study["rows"])
                    + missing_lines(study["missing"], study["absent"])))


# --------------------------------------------------------------------------- weight averages

def score_averages(lay, recipes: list[str], seeds: int, decays: list[float], log=print) -> None:
    """Score each trained run's weight averages (``training.weight_averaging``) on the offline suite.

    Each average is scored as a run of its own, RUN/averages/emaD (``RunLayout.averaged``); its
    checkpoint is written from the run's ``.averages`` file, scored, and removed again (it can be
    written again from there: a study keeps 78 runs' checkpoints already). Averages scored on the
    current suite are skipped."""
    from datacurate.atomic import write_json_atomic
    from datacurate.run import _scored_on_current_suite
    from eval import evaluate_run
    from training.weight_averaging import decay_key, write_averaged_checkpoint

    todo = [(r, s, d) for s in range(seeds) for r in recipes for d in decays
            if RunLayout(lay.run(r, s)).is_trained()
            and not _scored_on_current_suite(RunLayout(lay.run(r, s)).averaged(decay_key(d)).root, lay.pool)]
    for i, (r, s, d) in enumerate(todo, 1):
        run = RunLayout(lay.run(r, s))
        var = run.averaged(decay_key(d))
        info = run.read_info()
        ckpt = write_averaged_checkpoint(run.root / info["checkpoint"], d, var.checkpoint)
        write_json_atomic(var.info, {**info, "checkpoint": str(ckpt.relative_to(var.root)),
                                     "weight_average": {"decay": d, "of": str(run.root / info["checkpoint"])}})
        try:
            evaluate_run(var.root, suite="offline", pool=lay.pool, log=lambda *_: None)
        finally:
            ckpt.unlink(missing_ok=True)
        log(f"averages: {i}/{len(todo)} scored ({r} seed {s}, {decay_key(d)})")


def pooled_std(rows: list[dict], metric: str) -> float | None:
    """The per-run sample std pooled over recipes (root of the mean of their variances)."""
    v = [r[metric + "_std"] ** 2 for r in rows if r.get(metric + "_std") is not None]
    return math.sqrt(sum(v) / len(v)) if v else None


def averages_summary(lay, recipes: list[str], seeds: int, decays: list[float], metric: str,
                     fingerprint: str | None) -> dict:
    """The study's verdicts for each weight average, over the seeds complete for it."""
    from training.weight_averaging import decay_key

    out = {}
    for d in decays:
        key = decay_key(d)
        runs, missing = read_study(lay, recipes, seeds, metric, fingerprint,
                                   run_of=lambda r, s: RunLayout(lay.run(r, s)).averaged(key).root)
        used, _ = common_seeds(runs)
        rows = recipe_rows(runs, used, metric)
        out[key] = {"decay": d, "seeds": used, "missing": [{"recipe": r, "seed": s, "why": w} for r, s, w in missing],
                    "pooled_std": pooled_std(rows, metric), "spread_of_means": _spread(rows, metric),
                    "means": {r["recipe"]: [r[metric], r[metric + "_std"]] for r in rows},
                    "best": best_gaps(rows, metric), "held_out_best": held_out_best(runs, used),
                    "split_half_tau": split_half_tau(runs, used)}
    return out


def _spread(rows: list[dict], metric: str) -> float | None:
    """The sample std of the recipes' means: the signal the per-run std is measured against."""
    m = [r[metric] for r in rows]
    return float(np.std(m, ddof=1)) if len(m) > 1 else None


def averages_lines(summary: dict) -> list[str]:
    """The study summary's weight averages, each beside the raw weights' pooled std and spread."""
    lines = [f"weight averages (each scored as its own run; raw weights: pooled per-run std "
             f"{or_dash(summary['pooled_std'])}, spread of the recipe means {or_dash(summary['spread_of_means'])})"]
    for key, a in summary["averages"].items():
        t = a["split_half_tau"]
        gaps = ", ".join(f"vs {ref} {g['in_std']:+.1f} std" for ref, g in a["best"]["gaps"].items()
                         if g["in_std"] is not None)
        al = t.get("all_splits") or {}
        lines.append(f"  {key}: {len(a['seeds'])} seeds, pooled std {or_dash(a['pooled_std'])}, spread "
                     f"{or_dash(a['spread_of_means'])}, best {a['best']['best']} ({gaps or 'no std'}), split-half tau "
                     + (f"{t['tau']:+.3f}" if t["tau"] is not None else t["message"])
                     + (f" (mean over {al['splits']} splits {al['mean']:+.3f})" if al.get("splits") else "")
                     + (f"; {len(a['missing'])} runs not scored" if a["missing"] else ""))
    return lines


def or_dash(x, fmt: str = ".4f") -> str:
    """``x`` formatted, or "-" where there is no number (the tables of every study script)."""
    return "-" if x is None else format(x, fmt)


# --------------------------------------------------------------------------- main

def main(argv=None) -> int:
    from datacurate.env import apply_offline_env

    apply_offline_env()
    from datacurate.report.html import RecipeRun, write_report
    from datacurate.run import _recipe_name, default_jobs, execute_stages
    from datacurate.scales import offline_scales

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", default="tiny", choices=offline_scales())
    ap.add_argument("--seeds", type=int, default=3, help="training seeds 0..S-1 per recipe (default 3)")
    ap.add_argument("--out", type=Path, default=None, help="run folder (default runs/<scale>)")
    ap.add_argument("--recipes", nargs="+", default=STUDY, help="recipes (built-in names or YAML paths)")
    ap.add_argument("--metric", default="Average", help="aggregate in scores.json's aggregates to compare")
    ap.add_argument("--compare", nargs="+", type=Path, default=[],
                    help="other run folders with a baselines.json: the Spearman rho of the ranking against each")
    ap.add_argument("--jobs", type=int, default=None,
                    help="trainings run side by side (default: datacurate run's, the CPU cores up to 4)")
    ap.add_argument("--report-only", action="store_true",
                    help="run no stage; tabulate the complete runs there are and name the missing ones")
    ap.add_argument("--set", nargs="+", default=[], metavar="FIELD=VALUE",
                    help=f"train a variant of the scale's recipe ({', '.join(TRAINING_FIELDS)}) to study the "
                         "instrument itself; use a new --out with --share")
    ap.add_argument("--share", type=Path, default=None,
                    help="a finished study folder whose pool, filtering network, subsets and training shards "
                         "this one links to instead of building its own")
    ap.add_argument("--averages", default=None, metavar="D1,D2",
                    help="also keep exponential moving averages of the weights with these decays beside every "
                         "training (training.weight_averaging) and score each as a run of its own: does a weight "
                         "average rank the recipes more reliably? Use a new --out with --share")
    args = ap.parse_args(argv)
    if args.seeds < 1:
        ap.error("--seeds must be at least 1")
    lay = BenchLayout(args.out or ROOT / "runs" / args.scale)
    names = [_recipe_name(r) for r in args.recipes]
    if len(set(names)) != len(names):
        ap.error(f"recipe names must differ: {names}")
    compare = [d for d in args.compare if d.resolve() != lay.out.resolve()]
    scale = recipe_variant(args.scale, args.set)
    if args.share is not None:
        print(f"linked from {args.share}: {', '.join(share_inputs(lay, args.share)) or 'nothing new'}")
    decays = []
    if args.averages is not None:
        from training.weight_averaging import ENV, AveragesError, parse_decays

        try:
            decays = parse_decays(args.averages, where="--averages")
        except AveragesError as e:
            ap.error(str(e))
        os.environ[ENV] = ",".join(f"{d:g}" for d in decays)    # the trainers it starts keep them
    if not args.report_only:
        execute_stages(study_stages(lay, args.recipes, scale, args.seeds),
                       jobs=default_jobs() if args.jobs is None else max(1, args.jobs))
    from eval.offline import suite_fingerprint

    fingerprint = suite_fingerprint(lay.pool)
    study = build_study(lay, names, args.seeds, args.metric, args.scale, compare, fingerprint)
    if decays:
        if not args.report_only:
            score_averages(lay, names, args.seeds, decays)
        study["summary"]["averages"] = averages_summary(lay, names, args.seeds, decays, args.metric, fingerprint)
    if args.set:
        study["summary"]["recipe_changes"] = {k: getattr(scale, k) for k in (i.partition("=")[0] for i in args.set)}
    print()
    print_study(study)
    if decays:
        print("\n".join(averages_lines(study["summary"])))
    section = write_study(lay, study)
    best = study["summary"]["best"]["best"]
    order = sorted((r["recipe"] for r in study["rows"]), key=lambda r: (r != "no_filter", r != best))
    seeds = study["summary"]["seeds"]
    recipes = [RecipeRun(r, lay.subset(r), lay.run(r, seeds[0]), [lay.run(r, s) for s in seeds[1:]])
               for r in order]       # no filter, then the best recipe (its example images are shown)
    if recipes and lay.pool.exists():
        page = write_report(lay.out, lay.pool, recipes, extra_html=section,
                            title=f"datacurate run: {args.scale} scale, baseline study")
        print(f"table and plots: {page}")
    print(f"numbers: {lay.baselines}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
