"""`datacurate eval`: list the tasks, or evaluate a run on a suite."""
from __future__ import annotations

import argparse

EPILOG = """\
examples:
  datacurate eval --list                                   # the 38 upstream tasks + tasks on disk
  datacurate eval --list --pool runs/tiny/pool             # also the pool's offline tasks
  datacurate eval --run runs/tiny/run --suite offline --pool runs/tiny/pool
  datacurate eval --run RUN --suite datacomp38 --data-root /data/datacomp_eval
  datacurate eval --run RUN --suite "ImageNet 1k,vtab/cifar100" --data-root DIR
  datacurate eval --run RUN --suite datacomp38 --download  # fetch missing task data from the Hub

Writes RUN/eval_results.jsonl (upstream DataComp's format, one line per task evaluated for
the checkpoint, any suite) and the suite's aggregates (ImageNet, ImageNet dist. shifts, VTAB,
Retrieval, Average): RUN/scores.json for the run's main suite (offline on CPU scales,
datacomp38 on upstream's), RUN/scores.<suite>.json beside it for any other. Tasks already
evaluated for the same checkpoint and task data are not redone; a task without data is
reported missing and left out of the aggregates. Task data: $DATACURATE_EVAL_DATA or ~/.cache/datacurate/eval
(layout and how to add your own task: docs/eval.md)."""


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="zero-shot evaluation: 38 upstream tasks or the offline suite",
                       description="Evaluate a training run's checkpoint zero-shot on a suite of tasks.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--list", action="store_true", help="print the task table and which tasks have data")
    p.add_argument("--run", help="training run folder (RUN/info.json names model and checkpoint)")
    p.add_argument("--suite", default="offline",
                   help="datacomp38 | offline | comma-separated task keys or names (default offline)")
    p.add_argument("--pool", help="pool folder: the offline suite is built from POOL/holdout/eval.parquet")
    p.add_argument("--data-root", help="task data folder (default $DATACURATE_EVAL_DATA or ~/.cache/datacurate/eval)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] (default auto)")
    p.add_argument("--batch-size", type=int, default=64, help="images per batch (default 64)")
    p.add_argument("--download", action="store_true", help="fetch missing task data from the Hugging Face Hub")
    p.add_argument("--redo", action="store_true", help="evaluate the suite's tasks again even if done")
    p.add_argument("--json", action="store_true", help="print the suite's scores (JSON) instead of the table")
    p.set_defaults(func=_run)


def _run(args) -> int:
    from datacurate.errors import UserError

    if args.list:
        from .report import registry_table
        from .tasks import all_listed, default_data_root

        root = args.data_root or default_data_root()
        print(f"task data root: {root}")
        print(registry_table(all_listed(data_root=root, pool=args.pool), data_root=root))
        if args.pool is None:   # the suite the CPU scales and `datacurate run` use lives in a pool
            from .offline import OFFLINE_TASKS
            from .tasks import OFFLINE_TASK_KEYS

            names = ", ".join(OFFLINE_TASKS[k]["name"] for k in OFFLINE_TASK_KEYS)
            extra = ", ".join(v["name"] for k, v in OFFLINE_TASKS.items() if k not in OFFLINE_TASK_KEYS)
            print(f"\noffline suite (the CPU scales' main suite, what `datacurate run` scores): {names}; "
                  f"built beside it, scored only by name: {extra}; "
                  "its tasks are built from a pool's held-out items: add --pool POOL to list them with their data")
        return 0
    if not args.run:
        raise UserError("give --run RUN (or --list)")
    if args.batch_size < 1:
        raise UserError("--batch-size must be at least 1")
    from pathlib import Path

    from datacurate.atomic import check_writable_folder

    if Path(args.run).is_dir():     # its scores go in it: a folder we cannot write fails now, not after the tasks
        check_writable_folder(args.run, "run folder")
    import json
    import sys
    import warnings

    from .report import scores_table
    from .runner import evaluate_run

    warnings.simplefilter("always", UserWarning)
    shown = warnings.showwarning
    warnings.showwarning = lambda msg, cat, *a, **k: print(f"warning: {msg}", file=sys.stderr) \
        if issubclass(cat, UserWarning) else shown(msg, cat, *a, **k)
    scores = evaluate_run(args.run, suite=args.suite, pool=args.pool, data_root=args.data_root,
                          device=args.device, batch_size=args.batch_size, download=args.download,
                          redo=args.redo, log=lambda m: print(m, file=sys.stderr))
    print(json.dumps(scores, indent=1) if args.json else scores_table(scores))
    return 0
