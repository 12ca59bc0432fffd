"""Benchmark: `datacurate train` against a direct `open_clip_train.main` call, same configuration.

Both train the same model with the same OpenCLIP arguments on the same DATA, one after
the other in this one run (order alternates over repeats); each is timed end to end (process
start to exit, checkpoints included), and the steady training rate is read from OpenCLIP's
log. The ratio (ours / direct) shows what the wrapper costs (aim >= 0.95).

Three runs per repeat: ours, OpenCLIP directly on ours' thread count (the ratio: what the wrapper
costs) and OpenCLIP directly on torch's default thread count (what the fixed thread count costs).
The wrapper side goes through ``training.launch.train`` (what `datacurate train` calls,
minus argument parsing), because the budget here is shortened with ``--samples`` and the
CLI, by design, cannot change the recipe.

    .venv/bin/python scripts/bench/train_speed.py                 # tiny, 16,384 samples, ~3 min
    .venv/bin/python scripts/bench/train_speed.py --quick         # tiny, 4,096 samples
    .venv/bin/python scripts/bench/train_speed.py --samples 20000   # a whole tiny run
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

_TS = re.compile(r"^(\d{4}-\d\d-\d\d,\d\d:\d\d:\d\d) \| INFO \| Train Epoch: (\d+) \[\s*(\d+)/(\d+) ")


def steady_rate(log: Path) -> float | None:
    """Samples/s between the first and the last step line of OpenCLIP's log (start-up excluded)."""
    pts = []
    for line in log.read_text(errors="replace").splitlines():
        m = _TS.match(line)
        if m:
            t = datetime.strptime(m[1], "%Y-%m-%d,%H:%M:%S").timestamp()
            pts.append((t, int(m[2]) * int(m[4]) + int(m[3])))
    if len(pts) < 2 or pts[-1][0] <= pts[0][0]:
        return None
    return (pts[-1][1] - pts[0][1]) / (pts[-1][0] - pts[0][0])


def cpu_seconds() -> float:
    """User+system CPU time of this process and its waited-for children (the trainer, its loaders)."""
    import resource

    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def run_direct(argv: list[str], threads: int | None = None) -> float:
    """`open_clip_train.main.main(argv)` in a fresh process (our model config registered first), on
    `threads` intra-op threads as ours runs (None: torch's own default, all cores)."""
    from datacurate.env import child_env

    code = ("import sys, open_clip; open_clip.add_model_config(sys.argv[1]); "
            "from open_clip_train.main import main; sys.exit(1 if main(sys.argv[2:]) == -1 else 0)")
    t = time.time()
    env = child_env()
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    subprocess.run([sys.executable, "-c", code, str(ROOT / "training" / "model_configs"), *argv],
                   check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.time() - t


def run_ours(recipe, data: Path, out: Path, workers: int) -> float:
    from training.launch import train

    t = time.time()
    train(recipe.scale, data, out, recipe=recipe, device="cpu", workers=workers, progress=False)
    return time.time() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", default="tiny")
    ap.add_argument("--samples", type=int, default=16_384, help="samples seen per run (default 16,384)")
    ap.add_argument("--quick", action="store_true", help="4,096 samples per run")
    ap.add_argument("--repeats", type=int, default=1, help="pairs of runs (best of each side is kept)")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--data-samples", type=int, default=2048, help="size of the generated DATA folder")
    args = ap.parse_args()

    from datacurate.env import apply_offline_env
    from train_data_maker import make_training_data
    from datacurate.layout import RunLayout
    from training.launch import plan_training, samples_seen_from_log
    from training.recipe import recipe_for

    apply_offline_env()
    full = recipe_for(args.scale)
    samples = 4096 if args.quick else args.samples
    recipe = dataclasses.replace(full, samples_seen=samples)
    with tempfile.TemporaryDirectory(prefix="train_speed_") as tmp:
        tmp = Path(tmp)
        data = make_training_data(tmp / "data", n_samples=args.data_samples, shard_size=256)
        sides = ("direct", "ours", "direct_default")
        times = {s: [] for s in sides}
        rates = {s: [] for s in sides}
        per_cpu = {s: [] for s in sides}
        for i in range(args.repeats):
            order = list(sides) if i % 2 == 0 else list(reversed(sides))
            for side in order:
                out = tmp / f"{side}_{i}"
                if side != "ours":   # same arguments as ours (planning is not timed for it)
                    plan = plan_training(recipe.scale, data, out, recipe=recipe, device="cpu", workers=args.workers,
                                         progress=False)
                cpu0 = cpu_seconds()
                if side == "ours":
                    wall = run_ours(recipe, data, out, args.workers)
                else:   # "direct": ours' thread count (CPU_TRAIN_THREADS); "direct_default": torch's own
                    wall = run_direct(plan.argv, plan.threads if side == "direct" else None)
                cpu = cpu_seconds() - cpu0
                seen = samples_seen_from_log(RunLayout(out).log)
                times[side].append(seen / wall)
                per_cpu[side].append(seen / cpu)
                rates[side].append(steady_rate(RunLayout(out).log))
                print(f"  {side:14s} run {i}: {seen:,} samples in {wall:.1f}s end to end = {seen / wall:.1f} samples/s; "
                      f"steady {rates[side][-1] or float('nan'):.1f} samples/s; "
                      f"{cpu:.0f} CPU-s = {seen / cpu:.1f} samples per CPU-second", flush=True)
                for ck in RunLayout(out).checkpoints.glob("*.pt"):
                    ck.unlink()
    ours, direct, default = max(times["ours"]), max(times["direct"]), max(times["direct_default"])
    steady_ours = max(r for r in rates["ours"] if r) if any(rates["ours"]) else float("nan")
    print(f"\nscale {args.scale} ({full.model}, global batch {full.batch_size}, fp32, CPU, workers {args.workers}, "
          f"{plan.threads} torch thread(s) on {os.cpu_count()} cores), {samples:,} samples per run")
    print(f"datacurate train      : {ours:8.1f} samples/s (end to end)")
    print(f"open_clip_train.main  : {direct:8.1f} samples/s (end to end, the same thread count)")
    print(f"ratio ours/direct     : {ours / direct:8.3f}   (aim >= 0.95: what the wrapper costs)")
    print(f"open_clip_train.main on torch's default threads: {default:.1f} samples/s; ours / that "
          f"{ours / default:.3f} (what the fixed thread count costs or gains on this machine; it buys "
          "checkpoints that are byte-identical across machines)")
    cpu_ours, cpu_direct = max(per_cpu["ours"]), max(per_cpu["direct"])
    print(f"samples per CPU-second: ours {cpu_ours:.1f}, direct {cpu_direct:.1f}, ratio {cpu_ours / cpu_direct:.3f} "
          "(less sensitive to other processes sharing the cores, not immune: threads spin when starved)")
    print(f"{args.scale} steady rate      : {steady_ours:8.1f} samples/s (from OpenCLIP's log; aim >= 250 for tiny)")
    est = full.samples_seen / steady_ours if steady_ours == steady_ours else float("nan")
    print(f"a full {args.scale} run ({full.samples_seen:,} samples) would take about {est / 60:.1f} min "
          f"of training at that rate (plus ~10-20 s start-up)")
    print("note: the 2 CPU cores may be shared with other processes; compare the ratio, not absolute figures")
    return 0


if __name__ == "__main__":
    sys.exit(main())
