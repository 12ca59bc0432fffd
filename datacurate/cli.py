"""`datacurate`: one command, a subcommand per stage.

Each stage module exposes ``add_parser(subparsers)`` that registers its
subcommand and sets ``func``; heavy imports (torch, pyspark, faiss) happen inside
``func`` so that ``datacurate --help`` starts fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# (subcommand, "module:function") in the order the stages run
COMMANDS: list[tuple[str, str]] = [
    ("scales", "datacurate.cli:add_scales_parser"),
    ("pool", "datacurate.pool.cli:add_parser"),
    ("filter-net", "training.filter_net:add_parser"),
    ("embed", "datacurate.embed:add_parser"),
    ("filter", "filters.cli:add_parser"),
    ("reshard", "datacurate.reshard:add_parser"),
    ("train", "training.cli:add_parser"),
    ("eval", "eval.cli:add_parser"),
    ("submit", "leaderboard.submit:add_parser"),
    ("leaderboard", "leaderboard.cli:add_parser"),
    ("run", "datacurate.run:add_parser"),
]

EPILOG = """\
examples:
  datacurate scales
  datacurate pool build --scale micro --out runs/micro/pool
  datacurate pool download --pool runs/micro/pool
  datacurate run --scale tiny --out runs/tiny

every subcommand has --help with examples."""


def add_scales_parser(sub) -> None:
    p = sub.add_parser("scales", help="print the table of competition scales",
                       description="Print the scale table (upstream small..xlarge plus the CPU scales micro, tiny, base) and the rules the CPU scales keep.",
                       epilog="example:\n  datacurate scales\n  datacurate scales --json",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_run_scales)


def _run_scales(args) -> int:
    from .scales import SCALES, format_table

    if args.json:
        import json

        print(json.dumps({k: v.as_dict() for k, v in SCALES.items()}, indent=2))
    else:
        print(format_table())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="datacurate", description="Benchmark pipeline for multimodal data curation (DataComp design).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true",
                        help="show the Python traceback of an error (also DATACURATE_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, target in COMMANDS:
        mod_name, fn_name = target.split(":")
        try:
            mod = importlib.import_module(mod_name)
        except ModuleNotFoundError as e:
            if e.name and (mod_name == e.name or mod_name.startswith(e.name + ".")):
                continue  # stage not built yet: not listed
            raise
        getattr(mod, fn_name)(sub)
    return parser


def check_out(args) -> None:
    """A command that writes a folder (``set_defaults(out_folder="what")``) checks its --out before any work:
    a file, a path under a file or a folder it cannot write is one line, and nothing is left behind."""
    what = getattr(args, "out_folder", None)
    if what and getattr(args, "out", None) is not None:
        from .atomic import check_writable_folder

        check_writable_folder(args.out, what)


def main(argv: list[str] | None = None) -> int:
    from .env import apply_offline_env
    from .errors import one_line

    import os

    apply_offline_env()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if argv is None and len(sys.argv) == 1 else 2
    debug = args.debug or os.environ.get("DATACURATE_DEBUG") == "1"
    if debug:
        os.environ["DATACURATE_DEBUG"] = "1"       # Spark's executors then log their tracebacks too
    try:
        check_out(args)
        rc = args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:   # the one error path: a line, status 2; a traceback only with --debug or for a bug
        line = one_line(e)
        if line is None or debug:
            raise
        print(f"datacurate {args.command}: error: {line}", file=sys.stderr)
        return 2
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
