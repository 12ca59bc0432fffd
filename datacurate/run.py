"""`datacurate run`: every stage of the benchmark, resumable, in one command.

Each stage knows how to tell that its outputs are complete; a second run after a
success does nothing and says so. Stages whose code is not installed are listed
as "not available yet" instead of failing.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .errors import UserError


@dataclass
class Stage:
    name: str
    done: Callable[[], bool]
    run: Callable[[], object]
    describe: str = ""


def add_parser(sub) -> None:
    p = sub.add_parser(
        "run", help="run the whole benchmark (pool -> filter -> train -> eval), resumable",
        description="Run every stage for a scale into DIR, skipping stages whose outputs are complete.",
        epilog="examples:\n  datacurate run --scale tiny --out runs/tiny\n"
               "  datacurate run --scale micro --out /tmp/micro --recipe no_filter --recipe basic",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", default="tiny", choices=["micro", "tiny"],
                   help="offline scales run end to end here (default: tiny)")
    p.add_argument("--out", required=True, type=Path, help="run directory")
    p.add_argument("--recipe", action="append", default=None,
                   help="filter recipe(s) to compare (repeatable); default: no_filter and the best built-in")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--master", default=None, help="Spark master (default local[*])")
    p.set_defaults(func=_cmd)


def _cmd(args) -> int:
    return run_benchmark(args.out, scale=args.scale, recipes=args.recipe, seed=args.seed, master=args.master)


def pool_stages(out: Path, scale: str, seed: int, master: str | None) -> list[Stage]:
    pool = out / "pool"

    def build():
        from .pool.build import build_pool

        build_pool(pool, scale=scale, seed=seed)

    def download():
        from .pool.download import download_pool

        download_pool(pool, master=master)

    return [
        Stage("pool build", lambda: (pool / "manifest.json").exists(), build,
              "the offline pool from real registry data, with injected web defects"),
        Stage("pool download", lambda: (pool / "download_summary.json").exists(), download,
              "img2dataset on Spark from a loopback HTTP server"),
    ]


def run_benchmark(out: Path, scale: str = "tiny", recipes: list[str] | None = None, seed: int = 0,
                  master: str | None = None) -> int:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stages = pool_stages(out, scale, seed, master)
    t0 = time.time()
    did = []
    for st in stages:
        if st.done():
            print(f"[skip] {st.name}: already complete")
            continue
        print(f"[run ] {st.name}: {st.describe}", flush=True)
        t = time.time()
        st.run()
        did.append(st.name)
        print(f"[done] {st.name} in {time.time() - t:.1f}s", flush=True)
    from .pool.summary import pool_summary, print_summary

    print_summary(pool_summary(out / "pool"))
    if not did:
        print("nothing to do: every stage is already complete")
    else:
        print(f"ran {len(did)} stage(s) in {time.time() - t0:.1f}s")
    (out / "run_state.json").write_text(json.dumps({"scale": scale, "seed": seed, "stages": [s.name for s in stages]}, indent=2))
    return 0
