"""`datacurate run`: every stage of the benchmark, resumable, in one command.

The run folder holds one pool (built, downloaded, scored by the filtering network)
shared by every recipe, and per recipe a subset, its training shards, a trained
model and its evaluation::

    DIR/pool/                 POOL (docs/formats.md)
    DIR/fnet/                 the filtering network
    DIR/subsets/R.npy, R.json the subset of recipe R (upstream uid format)
    DIR/data/R/               its training shards (reshard)
    DIR/runs/R/               its checkpoint, out.log, eval_results.jsonl, scores.json
    DIR/report.html           the run report (PNGs in DIR/report/)
    DIR/comparison.json       the recipes side by side

Each stage knows how to tell that its outputs are complete (the last file it writes,
atomically); a second run after a success does nothing and says so, and a killed run
resumes at the stage that was cut off (the stages themselves skip finished shards).
"""
from __future__ import annotations

import argparse
import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .atomic import write_text_atomic
from .errors import UserError
from .layout import BenchLayout, DataLayout, NetLayout, RunLayout, subset_record
from .scales import Scale, as_scale, offline_scales

DEFAULT_RECIPES = ["no_filter", "dedup_clip"]


@dataclass
class Stage:
    name: str
    done: Callable[[], bool]
    run: Callable[[], object]
    describe: str = ""
    # stages with the same chain run in order; different chains may run side by side (``jobs``)
    chain: str | None = None


def default_jobs() -> int:
    """Trainings run side by side on a CPU: each trains on one thread (training.launch.CPU_TRAIN_THREADS),
    and on 2 cores two tiny trainings at once take 140 s where one after the other take 184 s; one on a GPU."""
    import os

    from .clip import pick_device

    if not pick_device(None).startswith("cpu"):
        return 1
    return max(1, min(4, (os.cpu_count() or 1)))


def add_parser(sub) -> None:
    p = sub.add_parser(
        "run", help="run the whole benchmark (pool -> filter -> train -> eval), resumable",
        description="Run every stage for an offline scale into DIR, skipping stages whose outputs are complete, "
                    "and write DIR/report.html.",
        epilog="examples:\n  datacurate run --scale tiny --out runs/tiny\n"
               "  datacurate run --scale micro --out /tmp/micro --recipe no_filter --recipe basic_offline\n"
               "  datacurate run --scale tiny --out runs/tiny --report-only",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", default="tiny", choices=offline_scales(),
                   help="offline scales run end to end here (default: tiny)")
    p.add_argument("--out", required=True, type=Path, help="run directory")
    p.add_argument("--recipe", action="append", default=None,
                   help=f"filter recipe(s) to compare (repeatable; a built-in name or a YAML path); "
                        f"default: {' and '.join(DEFAULT_RECIPES)}")
    p.add_argument("--seed", type=int, default=0, help="pool and training seed")
    p.add_argument("--master", default=None, help="Spark master (default local[*])")
    p.add_argument("--jobs", type=int, default=None,
                   help="trainings (with their evaluations) run side by side (default: the CPU cores, at most 4; "
                        "1 on a GPU)")
    p.add_argument("--report-only", action="store_true", help="only rebuild DIR/report.html from what is there")
    p.set_defaults(func=_cmd, out_folder="benchmark folder")


def _cmd(args) -> int:
    if args.report_only:
        path = write_run_report(BenchLayout(args.out), args.recipe or DEFAULT_RECIPES, args.scale)
        print(f"report: {path}")
        return 0
    if args.jobs is not None and args.jobs < 1:
        raise UserError(f"--jobs {args.jobs}: give at least 1")
    return run_benchmark(args.out, scale=args.scale, recipes=args.recipe, seed=args.seed, master=args.master,
                         jobs=args.jobs)


def _recipe_name(recipe: str) -> str:
    p = Path(recipe)
    return p.stem if p.suffix in (".yaml", ".yml") else recipe


def _json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}


def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(obj, indent=2))


def pool_stages(lay: BenchLayout, scale: Scale, seed: int, master: str | None) -> list[Stage]:
    pool = lay.pool

    def build():
        from .pool.build import build_pool

        build_pool(pool, scale=scale, seed=seed)

    def download():
        from .pool.download import download_pool

        download_pool(pool, master=master, samples_per_shard=scale.shard_size)

    def fnet():
        from training.filter_net import train_filter_net

        train_filter_net(pool, lay.fnet, seed=seed, steps=scale.filter_net_steps, batch_size=scale.filter_net_batch)

    def embed():
        from .embed import embed_pool

        summary = embed_pool(pool, str(lay.fnet))
        _write_json(lay.embed_summary, summary)

    return [
        Stage("pool build", lay.pool_layout.is_built, build,
              "the offline pool from real registry data, with injected web defects"),
        Stage("pool download", lay.pool_layout.is_downloaded, download,
              "img2dataset on Spark from a loopback HTTP server"),
        Stage("filter-net", NetLayout(lay.fnet).is_trained, fnet,
              "a small CLIP trained on the trusted split (the offline CLIP score)"),
        Stage("embed", lay.embed_summary.exists, embed,
              "filtering-network embeddings and similarity scores for the pool and the held-out sets"),
    ]


def recipe_stages(lay: BenchLayout, recipe: str, scale: Scale, seed: int, master: str | None,
                  train_seed: int | None = None, subset_stages: bool = True,
                  run_stages: bool = True) -> list[Stage]:
    """filter -> reshard -> train -> eval for one recipe; ``train_seed`` names an extra training run.

    ``subset_stages`` / ``run_stages`` keep only the subset's half (filter, reshard) or the
    run's half (train, eval): a seed study makes each subset once and trains it per seed. With
    both, the four stages are one chain: one recipe's subset is made while another's trains."""
    name = _recipe_name(recipe)
    train_seed = seed if train_seed is None else train_seed
    subset, data, run = lay.subset(name), lay.data(name), lay.run(name, train_seed)

    def do_filter():
        from filters import run_recipe

        run_recipe(lay.pool, recipe, subset, master=master, seed=seed, progress=not _side_by_side())

    def do_reshard():
        from .reshard import reshard

        reshard(lay.pool, subset, data, shard_size=scale.train_shard_size, master=master,
                progress=not _side_by_side())

    def is_trained() -> bool:
        from training import trained_as_asked

        return trained_as_asked(run, scale, data, train_seed)

    def do_train():
        from training import train

        train(scale, data, run, seed=train_seed, progress=not _side_by_side())

    def do_eval():
        from eval import evaluate_run

        evaluate_run(run, suite="offline", pool=lay.pool, log=_quiet_log if _side_by_side() else print)

    tag = name if train_seed == seed else f"{name} seed {train_seed}"
    chain = str(run) if run_stages else None    # a subset shared by several runs is made before any of them
    making = [
        Stage(f"filter [{name}]", lambda: subset_record(subset).exists() and subset.exists(), do_filter,
              f"recipe {recipe} -> {subset.name}", chain=chain),
        Stage(f"reshard [{name}]", DataLayout(data).is_complete, do_reshard,
              "the subset copied into training shards", chain=chain),
    ]
    training = [
        Stage(f"train [{tag}]", is_trained, do_train,
              f"the fixed {scale.name} recipe with open_clip_train", chain=str(run)),
        Stage(f"eval [{tag}]", lambda: _scored_on_current_suite(run, lay.pool), do_eval,
              "the offline zero-shot suite", chain=str(run)),
    ]
    return (making if subset_stages else []) + (training if run_stages else [])


def _scored_on_current_suite(run: Path, pool: Path) -> bool:
    """RUN/scores.json exists and was scored on the offline suite as it is now built from POOL
    (a new eval.parquet, taxonomy or suite version means scoring again; unchanged tasks are reused)."""
    from eval.offline import suite_fingerprint

    scores = _json(RunLayout(run).scores)
    return bool(scores) and scores.get("offline_fingerprint") == suite_fingerprint(pool)


_local = threading.local()


def _side_by_side() -> bool:
    """True inside a chain that runs beside others: progress bars would overwrite each other."""
    return getattr(_local, "side_by_side", False)


def _quiet_log(*args, **kwargs) -> None:
    pass


def execute_stages(stages: list[Stage], jobs: int = 1) -> dict[str, float]:
    """Run the stages not yet complete, one status line each; returns seconds per stage run.

    Stages run in order, except that consecutive stages with a ``chain`` form chains (a training
    and its evaluation) of which up to ``jobs`` run side by side, each in order. The first error
    stops every chain before its next stage; the stages already running finish, then it is raised."""
    times: dict[str, float] = {}
    lock = threading.Lock()
    n = len(stages)

    def run_one(i: int, st: Stage) -> None:
        tag = f"[{i:>2}/{n}]"
        if st.done():
            with lock:
                print(f"{tag} skip {st.name}: already complete", flush=True)
            return
        with lock:
            print(f"{tag} run  {st.name}: {st.describe}", flush=True)
        t = time.time()
        st.run()
        with lock:
            times[st.name] = round(time.time() - t, 1)
            print(f"{tag} done {st.name} in {times[st.name]:.1f}s", flush=True)

    i = 0
    while i < n:
        if stages[i].chain is None or jobs <= 1:
            run_one(i + 1, stages[i])
            i += 1
            continue
        chains: dict[str, list[tuple[int, Stage]]] = {}
        while i < n and stages[i].chain is not None:
            chains.setdefault(stages[i].chain, []).append((i + 1, stages[i]))
            i += 1
        _run_chains(list(chains.values()), jobs, run_one)
    return times


def _run_chains(chains: list[list[tuple[int, Stage]]], jobs: int, run_one) -> None:
    from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

    stop = threading.Event()

    def chain(steps):
        _local.side_by_side = True
        for i, st in steps:
            if stop.is_set():
                return
            try:
                run_one(i, st)
            except BaseException:
                stop.set()        # before this worker thread can pick up a queued chain
                raise

    from .env import sigterm_raises

    def halt() -> None:          # no queued chain starts, no running chain goes on to its next stage
        stop.set()
        for f in futures:
            f.cancel()

    restore = sigterm_raises()
    pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="chain")
    futures = [pool.submit(chain, c) for c in chains]
    try:
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
    except BaseException:      # Ctrl-C or SIGTERM here: stop the trainers the chains started, then go
        halt()
        from training.launch import stop_trainers

        stop_trainers()
        pool.shutdown(wait=True)
        raise
    finally:
        restore()
    failed = next((f for f in done if f.exception() is not None), None)
    if failed is not None:
        halt()
    pool.shutdown(wait=True)
    if failed is not None:
        raise failed.exception()



def comparison(lay: BenchLayout, recipes: list[str]) -> list[dict]:
    """One row per recipe: subset size and the eval aggregates."""
    from .uids import read_subset

    rows = []
    for r in recipes:
        name = _recipe_name(r)
        sub = lay.subset(name)
        scores = _json(RunLayout(lay.run(name)).scores)
        rows.append({"recipe": name, "size": len(read_subset(sub)) if sub.exists() else None,
                     **(scores.get("aggregates") or {})})
    return rows


def print_comparison(rows: list[dict]) -> None:
    keys = []
    for r in rows:
        for k, v in r.items():
            if k not in ("recipe", "size") and isinstance(v, (int, float)) and k not in keys:
                keys.append(k)
    keys = keys[:6]
    header = ["recipe", "size", *keys]
    table = [[str(r["recipe"]), f"{r['size']:,}" if r.get("size") is not None else "-",
              *[f"{r[k]:.4f}" if isinstance(r.get(k), (int, float)) else "-" for k in keys]] for r in rows]
    widths = [max(len(h), *(len(t[i]) for t in table)) for i, h in enumerate(header)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    for t in table:
        print("  ".join(c.ljust(w) for c, w in zip(t, widths)))


def write_run_report(lay: BenchLayout, recipes: list[str], scale: str) -> Path:
    from .report.html import RecipeRun, write_report

    rr = [RecipeRun(_recipe_name(r), lay.subset(_recipe_name(r)), lay.run(_recipe_name(r))) for r in recipes]
    return write_report(lay.out, lay.pool, rr, title=f"datacurate run: {scale} scale")


def run_benchmark(out: Path, scale: Scale | str = "tiny", recipes: list[str] | None = None, seed: int = 0,
                  master: str | None = None, jobs: int | None = None) -> int:
    """Run every stage not yet complete; print the comparison table and the report's path.

    After the pool stages, each recipe is one chain (filter, reshard, train, eval), ``jobs`` side by side."""
    lay = BenchLayout(Path(out))
    lay.out.mkdir(parents=True, exist_ok=True)
    recipes = recipes or list(DEFAULT_RECIPES)
    names = [_recipe_name(r) for r in recipes]
    if len(set(names)) != len(names):
        raise UserError(f"--recipe names must differ: {names}")
    sc = as_scale(scale)
    scale = sc.name
    stages = pool_stages(lay, sc, seed, master)
    for r in recipes:
        stages += recipe_stages(lay, r, sc, seed, master)
    t0 = time.time()
    times = execute_stages(stages, jobs=default_jobs() if jobs is None else jobs)
    did = list(times)
    rows = comparison(lay, recipes)
    report = lay.report_html
    if did or not report.exists():
        _write_json(lay.comparison, rows)
        report = write_run_report(lay, recipes, scale)
        state = _json(lay.state)
        state.setdefault("stage_seconds", {}).update(times)
        state.update({"scale": scale, "seed": seed, "recipes": names, "stages": [s.name for s in stages]})
        _write_json(lay.state, state)
    print()
    print_comparison(rows)
    print()
    if not did:
        print("nothing to do: every stage is already complete")
    else:
        print(f"ran {len(did)} stage(s) in {time.time() - t0:.1f}s")
    print(f"report: {report}")
    return 0
