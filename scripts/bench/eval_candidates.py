"""Would a wider held-out set rank the recipes more reliably? Candidate suites scored on a finished study.

Part of a run's seed-to-seed spread is the model's luck on the particular emoji the suite holds
out (382 concepts, 764 images): a model that happens to tell two of them apart scores higher on
every image of both. More answers to rank against, or more held-out concepts, average more of
that luck away. The pool builder holds out two disjoint sets of concepts the CLIP model never
trains on: ``eval`` (the suite's) and ``trusted`` (the filtering network's training data). The
candidates, fixed before any was scored (2026-12-05, docs/eval.md):

* ``all names``: emoji_concept ranks the right name among every name of the pool's taxonomy
  (1,876: eval, pool and trusted) instead of the 382 eval names; the images are the suite's;
* ``eval + trusted``: all four tasks over the eval and the trusted images (1,518, 759 concepts),
  the group and subgroup members (CHiLS) from the pool's concepts only;
* ``eval + trusted, all names``: the two together.

``trusted only`` (the four tasks over the trusted images) is scored as a check: the filtering
network trained on those concepts, so a candidate that uses them must not favour the CLIP-score
recipes there more than on the eval images.

Each candidate is written as user tasks (docs/eval.md) under OUT/candidate_suites/ and scored with
``datacurate eval``'s runner (scores go to RUN/scores.<suite>.json beside the run's own). It
prints, per aggregate (the tasks weighed equally, as the suite): pooled per-run std, spread of
the recipe means, their ratio, the split-half Kendall tau (seeds 0-2 vs 3-5) and its mean over all
halvings, and the best recipe's lead over no filter and random 30 %, as baselines.py does.

    .venv/bin/python scripts/bench/eval_candidates.py --out runs/tiny --seeds 6 --json runs/tiny/eval_candidates.json
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from datacurate.atomic import write_json_atomic  # noqa: E402  (after the path insert)
from datacurate.layout import PoolLayout  # noqa: E402

SUITE = {"group": "Emoji group", "subgroup": "Emoji subgroup", "name": "Emoji caption retrieval",
         "concept": "Emoji concept"}
TASKS = ("group", "subgroup", "name", "concept")
# key prefix -> the held-out splits whose images are scored: all four tasks, each concept its own class
SETS = {"et": ("eval", "trusted"), "tr": ("trusted",)}
# key prefix -> the same, for the concept task alone with every name of the taxonomy as an answer
ALL_NAMES = {"all": ("eval",), "etall": ("eval", "trusted")}


def _key(prefix: str, task: str) -> str:
    return f"cand_{prefix}_{task}"


def build_candidates(pool: Path, root: Path) -> list[str]:
    """Write every candidate task under ROOT (once); return their keys."""
    import pyarrow.parquet as pq

    from eval.offline import OFFLINE_TASKS, TAXONOMY, _members, _read_holdout, _white_png, write_rows_task

    lay = PoolLayout.at(pool)
    paths = {split: lay.holdout_parquet(split) for split in ("eval", "trusted")}
    rows = {split: _read_holdout(path) for split, path in paths.items()}
    pngs = {split: [_white_png(r["image"], f"{paths[split]}: row {i}") for i, r in enumerate(rs)]
            for split, rs in rows.items()}
    every_name = sorted({str(n) for n in pq.read_table(paths["eval"].with_name(TAXONOMY), columns=["name"])
                         .column("name").to_pylist() if n})
    # CHiLS members from the pool's concepts only: a held-out concept's own name would give its answer away
    members = {col: _members(paths["eval"], col, splits=("pool",)) for col in ("group", "subgroup")}
    keys = []

    def write(key: str, task: str, splits: tuple[str, ...], labels: list[str] | None = None):
        keys.append(key)
        if (root / key / "task.yaml").is_file():
            return
        spec = dict(OFFLINE_TASKS[{"name": "emoji_name"}.get(task, f"emoji_{task}")])
        spec["name"] = f"{SUITE[task]} [{key}]"
        write_rows_task(root / key, key, spec, [r for s in splits for r in rows[s]],
                        [p for s in splits for p in pngs[s]], "eval_candidates.py", paths[splits[-1]],
                        members.get(spec.get("column")), labels)
        print(f"built {root / key}", flush=True)

    for prefix, splits in SETS.items():
        for task in TASKS:
            write(_key(prefix, task), task, splits)
    for prefix, splits in ALL_NAMES.items():
        write(_key(prefix, "concept"), "concept", splits, every_name)
    return keys


def score_run(run: Path, root: Path, keys: list[str]) -> dict[str, float]:
    """{candidate key: main metric} for one run (the runner's cache skips what is already scored)."""
    from eval.runner import evaluate_run

    got = evaluate_run(run, suite=",".join(keys), data_root=root, device="cpu", log=lambda *a, **k: None)
    by_name = {t: float(v) for t, v in got["tasks"].items()}
    return {k: next(v for t, v in by_name.items() if t.endswith(f"[{k}]")) for k in keys}


def aggregates(tasks: dict[str, float], extra: dict[str, float]) -> dict[str, float]:
    """Every candidate Average of one run: four tasks, equal weights, as the suite's were when the
    candidates were fixed (the group task has left the suite since: task_weights.with_group_task)."""
    suite = {t: tasks[SUITE[t]] for t in TASKS}
    et = {t: extra[_key("et", t)] for t in TASKS}
    mean = lambda d: sum(d.values()) / len(d)
    return {"the suite": mean(suite),
            "all names": mean({**suite, "concept": extra[_key("all", "concept")]}),
            "eval + trusted": mean(et),
            "eval + trusted, all names": mean({**et, "concept": extra[_key("etall", "concept")]}),
            "trusted only (check)": mean({t: extra[_key("tr", t)] for t in TASKS})}


def main(argv=None) -> int:
    from baselines import open_finished_study
    from task_weights import four_task_scores, measure, print_header, print_row

    args, lay, runs, seeds = open_finished_study(__doc__, "eval_candidates.py", argv)
    root = lay.out / "candidate_suites"
    keys = build_candidates(lay.pool, root)
    per_run = {}
    for s in seeds:
        for r, by in runs.items():
            scored = by[s]["tasks"]
            mean = sum(scored.values()) / len(scored)
            if abs(mean - by[s]["value"]) > 1e-9:
                raise SystemExit(f"eval_candidates.py: error: {lay.run(r, s)}: its tasks' mean "
                                 f"{mean:.6f} is not its Average {by[s]['value']:.6f}")
            four = four_task_scores(lay.run(r, s), scored, "eval_candidates.py")
            extra = score_run(lay.run(r, s), root, keys)
            per_run.setdefault(r, {})[s] = aggregates(four, extra)
            print(f"{r} seed {s}: " + ", ".join(f"{k} {v:.4f}" for k, v in per_run[r][s].items()), flush=True)
    result = {"study": str(args.out), "seeds": seeds, "recipes": len(runs), "aggregates": {}}
    print(f"\n{len(runs)} recipes x seeds {seeds}")
    print_header(28)
    for name in per_run[next(iter(runs))][seeds[0]]:        # the aggregates' names, in order
        m = measure({r: {s: {"value": v[name], "tasks": {}} for s, v in by.items()} for r, by in per_run.items()},
                    seeds)
        result["aggregates"][name] = {**m, "runs": {r: {str(s): v[name] for s, v in by.items()}
                                                    for r, by in per_run.items()}}
        print_row(name, m, 28)
    if args.json:
        write_json_atomic(args.json, result)
        print(f"numbers: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
