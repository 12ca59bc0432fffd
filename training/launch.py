"""Run OpenCLIP's trainer on a DATA folder with a scale's fixed recipe; resumable; writes RUN/info.json.

The training itself is ``open_clip_train.main`` in a child process (``python -m
training.open_clip_entry`` or, for several GPUs/nodes, ``torchrun`` of it), exactly as
upstream DataComp runs it. This module only checks the data, builds the arguments, shows
progress from OpenCLIP's log lines, and records what was trained.

RUN layout (``--logs RUN.parent --name RUN.name``, so OpenCLIP writes straight into RUN):
``checkpoints/epoch_latest.pt`` (after every interval), ``checkpoints/epoch_N.pt`` (the last), ``params.txt``, ``out.log``
(OpenCLIP's log), ``console.log`` (the child's whole output), ``train_state.json``
(request and attempts), ``info.json`` (written last: the run is finished).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from datacurate.atomic import write_text_atomic
from datacurate.errors import UserError
from datacurate.clip import pick_device
from datacurate.layout import CHECKPOINT, RunLayout
from datacurate.scales import Scale, get_scale

from .data_check import DataSummary, check_training_data
from .recipe import Recipe, RecipeError, expected_samples_seen, open_clip_argv, per_device_batch, recipe_for

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# "Train Epoch: 0 [  64/2048 (3%)] ... LR: 0.000125 Logit Scale: 14.286 ... Loss: 4.1589 (4.1589)"
_STEP = re.compile(r"Train Epoch: (\d+) \[\s*(\d+)/(\d+) .*?LR: ([\d.e+-]+) .*?Loss: ([\d.e+-]+) \(")


class TrainingFailed(UserError):
    """OpenCLIP's trainer stopped with an error; the message carries its last lines."""


@dataclass
class LaunchPlan:
    """One training launch: what runs, where, with which split of the fixed global batch."""
    recipe: Recipe
    run: Path
    data: DataSummary
    device: str
    nodes: int = 1
    procs_per_node: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 29500
    workers: int = 1
    threads: int | None = None   # the trainer's intra-op threads on the CPU (None: torch's default, on a GPU)
    accum_freq: int = 1
    seed: int = 0
    log_every_n_steps: int = 10
    argv: list[str] = field(default_factory=list)

    @property
    def world_size(self) -> int:
        return self.nodes * self.procs_per_node

    @property
    def per_device_batch(self) -> int:
        return per_device_batch(self.recipe, self.world_size, self.accum_freq)

    @property
    def samples_seen(self) -> int:
        return expected_samples_seen(self.recipe, self.world_size, self.workers, self.accum_freq)

    def command(self) -> list[str]:
        """The child command: plain python for one process, torchrun (as OpenCLIP documents) for more."""
        if self.world_size == 1:
            return [sys.executable, "-m", "training.open_clip_entry", *self.argv]
        return [sys.executable, "-m", "torch.distributed.run",
                "--nnodes", str(self.nodes), "--nproc-per-node", str(self.procs_per_node),
                "--node-rank", str(self.node_rank), "--master-addr", self.master_addr,
                "--master-port", str(self.master_port),
                "-m", "training.open_clip_entry", *self.argv]

    def request(self) -> dict:
        """What makes this run this run: a resume must ask for the same."""
        return {"recipe": self.recipe.as_dict(), "data": self.data.data,
                "data_fingerprint": self.data.data_fingerprint, "seed": self.seed}


# forward GFLOPs per sample (image + text) of upstream's models, from open_clip's docs/model_profile.csv
FORWARD_GFLOPS = {"ViT-B-32": 14.78, "ViT-B-16": 41.09, "ViT-L-14": 175.33}
CPU_GFLOPS_PER_CORE = 50.0   # an optimistic fp32 rate per core: the estimate is a lower bound
# A CPU training runs its math on one thread, whatever the machine. The thread count changes the
# order of the sums (tiny, seed 1: weights up to 5e-5 apart between 1 and 2 threads), so a fixed
# count keeps "same seed, same data, same checkpoint bytes" true whatever the core count (across
# machines the scores still agree to about 5e-6: docs/training.md). It costs a lone
# run on an idle 2-core machine 12 % (train_speed.py 2026-12-03: 249 against 285 samples/s on
# torch's default; an earlier A/B had one thread ahead, 86 s against 92 s); more cores are used by
# training several runs side by side (`datacurate run --jobs`), which is how studies run.
CPU_TRAIN_THREADS = 1


def cpu_days(recipe: Recipe, cores: int | None = None) -> float | None:
    """A lower bound on the days a CPU needs for the recipe (training ~ 3 x forward), or None if unknown."""
    gflops = FORWARD_GFLOPS.get(recipe.model)
    if gflops is None:
        return None
    cores = cores or os.cpu_count() or 1
    return recipe.samples_seen * 3 * gflops / (cores * CPU_GFLOPS_PER_CORE) / 86_400


def plan_training(scale: "Scale | str", data: str | Path, out: str | Path, *, device: str | None = None,
                  gpus: int | None = None, nodes: int = 1, node_rank: int = 0, master_addr: str = "127.0.0.1",
                  master_port: int = 29500, workers: int | None = None, accum_freq: int = 1, seed: int = 0,
                  log_every_n_steps: int | None = None, recipe: Recipe | None = None,
                  progress: bool = True, allow_cpu: bool = False) -> LaunchPlan:
    """Check the data and the request; return the launch (nothing is started)."""
    recipe = recipe or recipe_for(scale)
    run = Path(out).resolve()
    device = pick_device(device)   # asked for and absent: an error, never a quiet CPU run
    if device.startswith("cpu") and not get_scale(recipe.scale).offline and not allow_cpu:
        days = cpu_days(recipe)
        cost = f"at least {days:,.0f} days on this machine's {os.cpu_count()} cores" if days else "weeks"
        raise RecipeError(f"--scale {recipe.scale}: {recipe.model}, {recipe.samples_seen:,} samples seen, global "
                          f"batch {recipe.batch_size:,} is a GPU recipe: on the CPU it would take {cost} and "
                          "tens of GB of memory; train on GPUs, or pass --allow-cpu to start it anyway")
    if device.startswith("cpu"):
        if gpus:
            raise RecipeError(f"--gpus {gpus} asked for, but the device is the CPU (no CUDA GPU is visible)")
        procs = 1
    else:
        if gpus is None:
            import torch

            gpus = max(1, torch.cuda.device_count())
        procs = gpus
    if nodes < 1 or procs < 1:
        raise RecipeError("--nodes and --gpus must be at least 1")
    if workers is None:
        workers = 1 if device.startswith("cpu") else 4   # 4: upstream train.py's default
    threads = CPU_TRAIN_THREADS if device.startswith("cpu") else None
    per_device_batch(recipe, nodes * procs, accum_freq)   # refuses an uneven split early
    summary = check_training_data(data, cache=RunLayout(run).data_check, progress=progress)
    if log_every_n_steps is None:
        steps = recipe.samples_per_checkpoint // recipe.batch_size
        log_every_n_steps = max(1, min(100, steps // 50))   # 100: upstream's default
    plan = LaunchPlan(recipe=recipe, run=run, data=summary, device=device, nodes=nodes, procs_per_node=procs,
                      node_rank=node_rank, master_addr=master_addr, master_port=master_port, workers=workers,
                      threads=threads, accum_freq=accum_freq, seed=seed, log_every_n_steps=log_every_n_steps)
    plan.argv = open_clip_argv(recipe, summary.train_data, logs=str(run.parent), name=run.name, device=device,
                               world_size=plan.world_size, workers=workers, accum_freq=accum_freq, seed=seed,
                               log_every_n_steps=log_every_n_steps)
    return plan


class _CheckpointPeek:
    """Read a torch checkpoint's plain fields (``epoch``) without importing torch.

    A checkpoint is a zip whose ``data.pkl`` refers to tensor storages by persistent id
    and rebuilds tensors with ``torch._utils`` functions; here every torch object becomes
    ``None``, so only the plain values (ints, strings, dicts) come back. Importing torch in
    the launcher would cost seconds of CPU that the trainer needs.
    """

    @staticmethod
    def load(path: Path):
        import pickle
        import zipfile

        class _Stub:
            def __init__(self, *a, **k):
                pass

            def __call__(self, *a, **k):
                return None

            def __setstate__(self, state):
                pass

        class _Unpickler(pickle.Unpickler):
            def find_class(self, module, name):
                if module == "collections" and name == "OrderedDict":
                    import collections

                    return collections.OrderedDict
                if module.split(".")[0] in ("torch", "numpy", "_codecs"):
                    return _Stub()
                raise pickle.UnpicklingError(f"unexpected {module}.{name} in a training checkpoint")

            def persistent_load(self, pid):
                return None

        with zipfile.ZipFile(path) as zf:
            name = next(n for n in zf.namelist() if n.endswith("/data.pkl") or n == "data.pkl")
            with zf.open(name) as f:
                return _Unpickler(f).load()


def checkpoint_epoch(path: Path) -> int | None:
    """The number of finished checkpoint intervals a training checkpoint records (None: none there)."""
    if not path.is_file():
        return None
    try:
        ck = _CheckpointPeek.load(path)
    except Exception as e:  # a checkpoint we cannot read is not one to resume from
        raise UserError(f"{path}: cannot read the checkpoint ({type(e).__name__}: {e}); "
                        "move it away to restart") from None
    return int(ck.get("epoch", 0)) if isinstance(ck, dict) else None


def samples_seen_from_log(log: Path) -> int:
    """Samples trained, from OpenCLIP's log: per interval, the last complete line wins (resumes re-log)."""
    per_epoch: dict[int, int] = {}
    if log.is_file():
        for line in log.read_text(errors="replace").splitlines():
            m = _STEP.search(line)
            if m and int(m[2]) == int(m[3]):
                per_epoch[int(m[1])] = int(m[3])
    return sum(per_epoch.values())


def _versions() -> dict:
    import platform
    from importlib import metadata

    v = {"python": platform.python_version(), "platform": platform.platform()}
    for dist, key in [("torch", "torch"), ("open_clip_torch", "open_clip"), ("webdataset", "webdataset"),
                      ("torchvision", "torchvision"), ("datacurate", "datacurate")]:
        try:
            v[key] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            v[key] = None
    v["open_clip_train"] = v["open_clip"]   # shipped inside open_clip_torch
    return v


def _write_json(path: Path, obj: dict) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2))


def read_info(run: str | Path) -> dict | None:
    """RUN/info.json of a finished run, or None."""
    lay = RunLayout(Path(run))
    return lay.read_info() if lay.is_trained() else None


def finished_differs(info: dict, recipe: Recipe, data: str | Path, seed: int = 0) -> list[str]:
    """What a finished run's info.json records differently from the training asked for: recipe
    fields by name, ``data``, ``seed`` ([] when it is that training)."""
    asked = recipe.as_dict()
    differ = sorted(k for k in {**info["recipe"], **asked} if info["recipe"].get(k) != asked.get(k))
    if info["data"] != str(Path(data).resolve()):
        differ.append("data")
    if info.get("seed", 0) != seed:
        differ.append("seed")
    return differ


def trained_as_asked(run: str | Path, scale: "Scale | str", data: str | Path, seed: int = 0) -> bool:
    """RUN holds a finished training of SCALE's recipe on DATA with SEED. A finished run of
    another recipe (a datacurate that changed the scale's recipe) is not done: training it
    again is refused by ``train`` with the fields that differ, never served as this recipe's."""
    info = read_info(run)
    return info is not None and not finished_differs(info, recipe_for(scale), data, seed)


def _load_state(plan: LaunchPlan) -> dict:
    path = RunLayout(plan.run).train_state
    state = json.loads(path.read_text()) if path.is_file() else {}
    old = state.get("request")
    if old and old != plan.request():
        diff = [k for k in plan.request() if old.get(k) != plan.request().get(k)]
        raise RecipeError(
            f"{plan.run} holds a run started with a different {', '.join(diff)} "
            f"(was: scale {old['recipe']['scale']}, data {old['data']}, seed {old['seed']}); "
            "use a new --out for a different run")
    state["request"] = plan.request()
    state.setdefault("attempts", [])
    return state


_LIVE: set = set()   # trainer processes running now (several when `datacurate run --jobs` > 1)


def stop_trainers() -> None:
    """Terminate every trainer this process started and that still runs (an interrupted side-by-side run)."""
    for proc in list(_LIVE):
        if proc.poll() is None:
            proc.terminate()


def _run_child(plan: LaunchPlan, start_samples: int, progress: bool) -> tuple[int, float]:
    """Start OpenCLIP, show a progress bar from its step lines; return (exit code, wall seconds)."""
    from tqdm import tqdm

    from datacurate.env import child_env, sigterm_raises

    extra = {"PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")])),
             "PYTHONUNBUFFERED": "1"}
    if plan.threads:
        extra.update(OMP_NUM_THREADS=str(plan.threads), MKL_NUM_THREADS=str(plan.threads))
    env = child_env(extra)
    tail: deque[str] = deque(maxlen=40)
    bar = tqdm(total=plan.samples_seen, initial=start_samples, unit="sample", unit_scale=True,
               desc=f"train {plan.recipe.scale}", disable=not progress, dynamic_ncols=True)
    t0 = time.time()
    restore_sigterm = sigterm_raises()
    proc = subprocess.Popen(plan.command(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            bufsize=1, env=env, cwd=str(PROJECT_ROOT))
    _LIVE.add(proc)
    try:
        with open(RunLayout(plan.run).console, "a") as console:
            console.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(plan.command())}\n")
            for line in proc.stdout:
                console.write(line)
                tail.append(line.rstrip("\n"))
                m = _STEP.search(line)
                if m:
                    epoch, n, per_epoch = int(m[1]), int(m[2]), int(m[3])
                    bar.n = min(plan.samples_seen, epoch * per_epoch + n)
                    bar.set_postfix(loss=m[5], lr=m[4], refresh=False)
                    bar.refresh()
                elif " | WARNING | " in line or " | ERROR | " in line or "Error" in line:
                    bar.write(line.rstrip("\n"), file=sys.stderr)
        rc = proc.wait()
    finally:
        if proc.poll() is None:   # we were interrupted: stop the trainer we started
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        _LIVE.discard(proc)
        restore_sigterm()
        bar.close()
    if rc != 0:
        raise TrainingFailed(f"OpenCLIP training stopped with exit code {rc}; last lines:\n  "
                             + "\n  ".join(tail) + f"\n(full output: {RunLayout(plan.run).console})")
    return rc, time.time() - t0


def train(scale: "Scale | str", data: str | Path, out: str | Path, *, dry_run: bool = False, progress: bool = True,
          **options) -> dict:
    """Train the scale's fixed recipe on DATA into OUT; resume if killed; return info.json's content.

    ``options`` are what a participant may choose (see ``plan_training``): device, gpus,
    nodes, node_rank, master_addr, master_port, workers, accum_freq, seed, log_every_n_steps.
    """
    run = Path(out).resolve()
    done = read_info(run)
    recipe = options.get("recipe") or recipe_for(scale)
    if done and not dry_run:
        differ = finished_differs(done, recipe, data, options.get("seed", 0))
        if differ:
            raise RecipeError(f"{run} already holds a finished run with another {', '.join(differ)} "
                              f"(scale {done['scale']}, data {done['data']}, seed {done.get('seed', 0)}); "
                              "use a new --out, or remove that run to train it again")
        print(f"{run}: already finished ({done['samples_seen']:,} samples seen); nothing to do", file=sys.stderr)
        return done
    plan = plan_training(scale, data, run, progress=progress, **options)
    if dry_run:
        print(" ".join(plan.command()))
        return {}
    run.mkdir(parents=True, exist_ok=True)
    if plan.node_rank != 0:
        # other nodes train; node 0 records the run (shared file systems: one writer)
        _run_child(plan, 0, progress=False)
        return {}
    state = _load_state(plan)
    lay = RunLayout(run)
    _write_json(lay.train_state, state)

    per_interval = plan.samples_seen // plan.recipe.num_checkpoints
    epoch = checkpoint_epoch(lay.checkpoint) or 0
    if epoch >= plan.recipe.num_checkpoints:
        print(f"{run}: training already complete in {lay.checkpoint}; writing {lay.info.name}", file=sys.stderr)
    else:
        if epoch:
            print(f"resuming {run} from {lay.checkpoint}: checkpoint {epoch} of {plan.recipe.num_checkpoints}",
                  file=sys.stderr)
        print(f"training {plan.recipe.model} ({plan.recipe.scale} scale) on {plan.data.data_size:,} samples, "
              f"{plan.samples_seen:,} samples seen, global batch {plan.recipe.batch_size} = "
              f"{plan.world_size} x {plan.per_device_batch} x accum {plan.accum_freq}, device {plan.device}",
              file=sys.stderr)
        started = time.strftime("%Y-%m-%dT%H:%M:%S")
        _, wall = _run_child(plan, epoch * per_interval, progress)
        state["attempts"].append({"started": started, "wall_time_s": round(wall, 3), "from_checkpoint": epoch,
                                  "world_size": plan.world_size, "workers": plan.workers,
                                  "threads": plan.threads})
        _write_json(lay.train_state, state)
        epoch = checkpoint_epoch(lay.checkpoint) or 0
        if epoch < plan.recipe.num_checkpoints:
            raise TrainingFailed(f"{lay.checkpoint}: training ended at checkpoint {epoch} of "
                                 f"{plan.recipe.num_checkpoints}; see {lay.log}")
    return _finish(plan, state)


# the fields of RUN/info.json, as written below: the leaderboard refuses any other
INFO_FIELDS = ("scale", "model", "checkpoint", "recipe", "data", "subset_fingerprint", "data_fingerprint",
               "data_size", "samples_seen", "skipped_samples", "wall_time_s", "attempts", "device", "precision",
               "world_size", "per_device_batch", "accum_freq", "workers", "threads", "seed", "versions", "finished",
               "finished_at")
MAX_SKIPPED_SHARE = 0.02   # samples OpenCLIP may skip (undecodable images...) before the run is refused
_SKIPPED = re.compile(r"Handling webdataset error \((\w+)")


def skipped_samples(log: Path) -> dict:
    """Samples OpenCLIP's loader skipped (its ``log_and_continue`` warnings in RUN/out.log), by exception type.
    With resampled shards a bad sample drawn twice counts twice: the share is of the samples seen."""
    reasons: dict[str, int] = {}
    if Path(log).is_file():
        for m in _SKIPPED.finditer(Path(log).read_text(errors="replace")):
            reasons[m.group(1)] = reasons.get(m.group(1), 0) + 1
    return {"total": sum(reasons.values()), "by_reason": dict(sorted(reasons.items(), key=lambda kv: -kv[1]))}


def _finish(plan: LaunchPlan, state: dict) -> dict:
    """Write RUN/info.json (last, atomically): the contract the eval stage reads."""
    lay = RunLayout(plan.run)
    seen = samples_seen_from_log(lay.log) or plan.samples_seen
    skipped = skipped_samples(lay.log)
    if skipped["total"] > MAX_SKIPPED_SHARE * seen:
        why = ", ".join(f"{k} {v:,}" for k, v in skipped["by_reason"].items())
        raise TrainingFailed(f"{lay.log}: OpenCLIP skipped {skipped['total']:,} of {seen:,} samples seen "
                             f"({skipped['total'] / seen:.1%}: {why}), more than {MAX_SKIPPED_SHARE:.0%}; the "
                             f"data in {plan.data.data} holds images no decoder reads: filter them out "
                             "(e.g. the basic filter) and reshard")
    info = {
        "scale": plan.recipe.scale,
        "model": plan.recipe.model,
        "checkpoint": CHECKPOINT,
        "recipe": plan.recipe.as_dict(),
        "data": plan.data.data,
        "subset_fingerprint": plan.data.subset_fingerprint,
        "data_fingerprint": plan.data.data_fingerprint,
        "data_size": plan.data.data_size,
        "samples_seen": seen,
        "skipped_samples": skipped,
        "wall_time_s": round(sum(a["wall_time_s"] for a in state.get("attempts", [])), 3),
        "attempts": len(state.get("attempts", [])),
        "device": plan.device,
        "precision": plan.recipe.precision if not plan.device.startswith("cpu") else "fp32",
        "world_size": plan.world_size,
        "per_device_batch": plan.per_device_batch,
        "accum_freq": plan.accum_freq,
        "workers": plan.workers,
        "threads": plan.threads,
        "seed": plan.seed,
        "versions": _versions(),
        "finished": True,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    _write_json(lay.info, info)
    print(f"finished: {seen:,} samples seen in {info['wall_time_s']:.1f}s of training; "
          f"checkpoint {lay.checkpoint}", file=sys.stderr)
    return info
