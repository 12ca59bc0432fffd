"""Where the benchmark's seed spread comes from: the model's initialisation, the data order, or the eval set.

A training ``--seed`` fixes two things in OpenCLIP's trainer: the initialisation
(``random_seed(seed, 0)`` before the model is made) and the data order (``random_seed(seed,
rank)`` before the data loader; with ``training/open_clip_entry``'s seeded shuffle that fixes
the shard draw, the sample order and the random crops). This study trains one recipe's data
of a study folder (``scripts/bench/baselines.py``) with the initialisation seed varied and the
data seed held at 0, then the other way round, scores each on the offline suite, and sets the
two spreads beside the eval bootstrap standard error (the spread a fixed model has from the
finite eval set: ``aggregates_se`` in scores.json). The (0, 0) run must have the study's own
seed-0 weights exactly; the script checks it.

    .venv/bin/python scripts/bench/seed_noise.py --out runs/tiny --recipe no_filter --seeds 3

Runs go to OUT/noise/RECIPE/init{I}-data{D}/; the figures to OUT/noise/RECIPE/seed_noise.json.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def child(init: int, data: int, argv: list[str]) -> int:
    """The trainer with random_seed's first call (initialisation) and later calls (data) split."""
    import open_clip_train.main as ocm

    seed_calls: list[int] = []
    original = ocm.random_seed

    def random_seed(seed=42, rank=0):
        seed_calls.append(seed)
        return original(init if len(seed_calls) == 1 else data, rank)

    ocm.random_seed = random_seed
    from training.open_clip_entry import main as entry

    return entry(argv)


def train_split(scale: str, data_dir: Path, run: Path, init: int, data: int) -> None:
    """One training with separate initialisation and data seeds, recorded as `datacurate train` records."""
    from training.launch import _finish, _load_state, _run_child, plan_training

    run.mkdir(parents=True, exist_ok=True)
    plan = plan_training(scale, data_dir, run, device="cpu", progress=False, seed=data)
    plan.command = lambda: [sys.executable, str(Path(__file__).resolve()), "--child", str(init), str(data),
                            "--", *plan.argv]
    state = _load_state(plan)
    _, wall = _run_child(plan, 0, progress=False)
    state["attempts"].append({"wall_time_s": round(wall, 3), "from_checkpoint": 0, "init_seed": init,
                              "data_seed": data})
    _finish(plan, state)


def same_weights(a: Path, b: Path) -> bool:
    """Two checkpoints hold the same weights (their bytes differ by the run name OpenCLIP stores)."""
    import torch

    sa, sb = (torch.load(p, map_location="cpu", weights_only=False)["state_dict"] for p in (a, b))
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        return child(int(argv[1]), int(argv[2]), argv[4:])
    from datacurate.env import apply_offline_env

    apply_offline_env()
    from datacurate.atomic import write_json_atomic
    from datacurate.layout import BenchLayout, DataLayout, RunLayout
    from eval import evaluate_run

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="a study folder (baselines.py --out)")
    ap.add_argument("--recipe", default="no_filter")
    ap.add_argument("--scale", default=None, help="default: the study's (run_state.json or the pool's manifest)")
    ap.add_argument("--seeds", type=int, default=3, help="seeds per factor (0..S-1)")
    args = ap.parse_args(argv)
    lay = BenchLayout(args.out)
    scale = args.scale or lay.pool_layout.manifest()["scale"]
    data_dir = lay.data(args.recipe)
    if not DataLayout(data_dir).is_complete():
        raise SystemExit(f"{data_dir}: no training shards; run scripts/bench/baselines.py --out {args.out} first")
    home = lay.out / "noise" / args.recipe
    pairs = sorted({(i, 0) for i in range(args.seeds)} | {(0, d) for d in range(args.seeds)})
    rows = {}
    for init, data in pairs:
        run = home / f"init{init}-data{data}"
        if not RunLayout(run).info.exists():
            print(f"train {args.recipe}: init seed {init}, data seed {data}", flush=True)
            train_split(scale, data_dir, run, init, data)
        if not RunLayout(run).scores.exists():
            evaluate_run(run, suite="offline", pool=lay.pool, log=lambda *_: None)
        s = json.loads(RunLayout(run).scores.read_text())
        rows[(init, data)] = {"Average": s["aggregates"]["Average"], "se": (s.get("aggregates_se") or {}).get("Average"),
                              "tasks": s["tasks"]}
        t = rows[(init, data)]
        print(f"init {init} data {data}: Average {t['Average']:.4f}  "
              + "  ".join(f"{k} {v:.4f}" for k, v in t["tasks"].items()), flush=True)
    study0 = RunLayout(lay.run(args.recipe, 0)).checkpoint
    same = study0.exists() and same_weights(study0, RunLayout(home / "init0-data0").checkpoint)
    spread = lambda keys, f: float(np.std([f(rows[k]) for k in keys], ddof=1))
    init_keys = [(i, 0) for i in range(args.seeds)]
    data_keys = [(0, d) for d in range(args.seeds)]
    tasks = list(rows[(0, 0)]["tasks"])
    summary = {
        "recipe": args.recipe, "scale": scale, "seeds": args.seeds,
        "init_only_std": spread(init_keys, lambda r: r["Average"]),
        "data_only_std": spread(data_keys, lambda r: r["Average"]),
        "eval_bootstrap_se": float(np.mean([r["se"] for r in rows.values() if r["se"] is not None])),
        "per_task": {t: {"init_only_std": spread(init_keys, lambda r: r["tasks"][t]),
                         "data_only_std": spread(data_keys, lambda r: r["tasks"][t])} for t in tasks},
        "seed0_equals_study_run": same,
        "runs": {f"init{i}-data{d}": r for (i, d), r in rows.items()},
    }
    print(f"\n{args.recipe} at {scale}, {args.seeds} seeds per factor (sample std of the offline Average):")
    print(f"  initialisation only (data seed 0): {summary['init_only_std']:.4f}")
    print(f"  data order only (init seed 0):     {summary['data_only_std']:.4f}")
    print(f"  eval bootstrap se of one model:    {summary['eval_bootstrap_se']:.4f}")
    for t, v in summary["per_task"].items():
        print(f"  {t}: init {v['init_only_std']:.4f}, data {v['data_only_std']:.4f}")
    print(f"  (init 0, data 0) has the study's seed-0 weights exactly: {same}")
    write_json_atomic(home / "seed_noise.json", summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
