"""`datacurate train`: the scale's fixed OpenCLIP recipe on a resharded subset."""
from __future__ import annotations

import argparse
from pathlib import Path

EPILOG = """\
examples:
  datacurate train --scale micro --data runs/micro/data --out runs/micro/train
  datacurate train --scale tiny --data DATA --out RUN --workers 2
  datacurate train --scale small --data DATA --out RUN --gpus 8
  datacurate train --scale medium --data DATA --out RUN --gpus 8 --nodes 4 \\
      --node-rank $SLURM_NODEID --master-addr $MASTER_ADDR      (one task per node; docs/training.md)
  datacurate train --scale small --data DATA --out RUN --dry-run   (print the OpenCLIP command)

The recipe (model, samples seen, global batch, learning rate, warm-up, weight decay, beta2,
checkpoints, precision) is fixed per scale (see `datacurate scales`): only the data differs
between entries. You may choose what upstream DataComp lets you choose: GPUs, nodes,
data-loader workers, gradient accumulation (the global batch stays the same), seed, log
frequency and the output folder. Run the same command again to resume a killed run."""


class _RefuseFixed(argparse.Action):
    """A flag that would change the fixed recipe: refuse it with the reason."""

    def __call__(self, parser, namespace, values, option_string=None):
        from .recipe import FIXED_FLAGS

        parser.error(
            f"{option_string} is fixed by the scale's recipe ({FIXED_FLAGS[self.dest_flag]}) and cannot be "
            "changed: DataComp's rule is that only the data differs between entries. "
            "You may set --gpus, --nodes, --workers, --accum-freq, --seed, --log-every-n-steps, --out; "
            "see `datacurate scales` for the recipes.")


def add_parser(sub) -> None:
    from .recipe import FIXED_FLAGS

    p = sub.add_parser(
        "train", help="train a CLIP with the scale's fixed OpenCLIP recipe (resumable)",
        description="Train a CLIP on a resharded subset (DATA) with open_clip_train and the scale's fixed "
                    "recipe; writes RUN/checkpoints/epoch_latest.pt, RUN/params.txt, RUN/out.log, RUN/info.json.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", required=True, help="competition scale (micro, tiny, base, small, medium, large, xlarge; `datacurate scales` lists them)")
    p.add_argument("--data", required=True, type=Path, help="DATA folder from `datacurate reshard` (shards/, sizes.json)")
    p.add_argument("--out", required=True, type=Path, help="RUN folder (checkpoints, logs, info.json)")
    g = p.add_argument_group("what you may choose (the global batch and the recipe stay fixed)")
    g.add_argument("--device", default=None, help="cuda or cpu (default: cuda when a GPU is visible)")
    g.add_argument("--gpus", type=int, default=None, help="GPUs per node (default: all visible); >1 uses torchrun")
    g.add_argument("--nodes", type=int, default=1, help="number of nodes (torchrun --nnodes; default 1)")
    g.add_argument("--node-rank", type=int, default=0, help="this node's rank for multi-node runs (default 0)")
    g.add_argument("--master-addr", default="127.0.0.1", help="rank-0 node address for multi-node runs")
    g.add_argument("--master-port", type=int, default=29500, help="rendezvous port (default 29500)")
    g.add_argument("--workers", type=int, default=None, help="data-loader workers per process (default: 1 on CPU, 4 on GPU)")
    g.add_argument("--accum-freq", type=int, default=1,
                   help="gradient accumulation; per-GPU batch = global / (GPUs x nodes x accum-freq)")
    g.add_argument("--seed", type=int, default=0, help="random seed (default 0, as upstream)")
    g.add_argument("--log-every-n-steps", type=int, default=None, help="OpenCLIP log frequency (default: ~50 lines per checkpoint, at most every 100 steps)")
    g.add_argument("--allow-cpu", action="store_true",
                   help="start a GPU scale (small and up) on the CPU anyway (refused otherwise, with an estimate)")
    g.add_argument("--dry-run", action="store_true", help="check the data, print the OpenCLIP command, do not train")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    for flag in FIXED_FLAGS:
        a = p.add_argument(flag, nargs="?", action=_RefuseFixed, help=argparse.SUPPRESS)
        a.dest_flag = flag
    p.set_defaults(func=_cmd, out_folder="run folder")


def _cmd(args) -> int:
    from .launch import train

    train(args.scale, args.data, args.out, dry_run=args.dry_run, progress=not args.no_progress,
          device=args.device, gpus=args.gpus, nodes=args.nodes, node_rank=args.node_rank,
          master_addr=args.master_addr, master_port=args.master_port, workers=args.workers,
          accum_freq=args.accum_freq, seed=args.seed, log_every_n_steps=args.log_every_n_steps,
          allow_cpu=args.allow_cpu)
    return 0
