"""`datacurate pool ...`: build the offline pool, download a pool with img2dataset on Spark."""
from __future__ import annotations

import argparse
import importlib

# (sub-subcommand, module with add_parser(sub))
POOL_COMMANDS = [
    ("build", "datacurate.pool.build"),
    ("download", "datacurate.pool.download"),
    ("summary", "datacurate.pool.summary"),
]


def add_parser(sub) -> None:
    p = sub.add_parser(
        "pool", help="build the offline pool or download a pool into shards + metadata",
        description="Pool stage: `pool build` makes the offline pool from real registry data; "
                    "`pool download` fetches it (or a real crawl's url+text parquet) with img2dataset on Spark.",
        epilog="examples:\n  datacurate pool build --scale micro --out runs/micro/pool\n"
               "  datacurate pool download --pool runs/micro/pool\n"
               "  datacurate pool summary --pool runs/micro/pool",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    psub = p.add_subparsers(dest="pool_command", metavar="POOL_COMMAND")
    for name, mod_name in POOL_COMMANDS:
        try:
            mod = importlib.import_module(mod_name)
        except ModuleNotFoundError as e:
            if e.name == mod_name:
                continue
            raise
        mod.add_parser(psub)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
