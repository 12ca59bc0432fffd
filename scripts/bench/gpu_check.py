"""The GPU paths in one short run: CLIP embedding, faiss k-means and near-duplicate search,
a micro training with amp, and its evaluation. Prepared and tested on the CPU; run it once
where a GPU is lent (device time is scarce):

    .venv/bin/python scripts/bench/gpu_check.py              # about 2-4 minutes on one GPU
    .venv/bin/python scripts/bench/gpu_check.py --json out.json

Without CUDA every step runs small on the CPU and the report says which GPU path it skipped,
so the script itself stays tested. Each step prints one line; a failing step is reported and
the others still run (exit status 1 if any failed).

1. embed: ViT-B-32 (random weights: no hub here) on synthetic 224 px images, fp16 autocast on
   CUDA: images/s, against a bare forward pass of the same batches in the same run.
2. faiss: k-means (1,000 centroids of 200,000 x 512 on GPU; 100 of 20,000 x 128 on CPU) with
   ``datacurate``'s own ``fit_kmeans``, and a 10-nearest-neighbour search of every vector
   (faiss-gpu when ``faiss.get_num_gpus() > 0``).
3. train: the micro recipe on synthetic shards for ``--steps`` steps, ``amp`` on CUDA (fp32 on
   CPU), through ``datacurate``'s launcher: samples/s.
4. eval: the trained checkpoint zero-shot on a synthetic 10-class task: images/s.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "scripts" / "bench")]


def step(name: str, report: dict, fn) -> None:
    t = time.perf_counter()
    try:
        out = fn()
        report[name] = {"ok": True, "seconds": round(time.perf_counter() - t, 2), **out}
        print(f"{name}: " + ", ".join(f"{k} {v}" for k, v in out.items()), flush=True)
    except Exception as e:  # a check reports every failing path, not only the first
        report[name] = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        print(f"{name}: FAILED {type(e).__name__}: {e}", flush=True)
        traceback.print_exc()


def check_embed(cuda: bool) -> dict:
    import torch

    from eval_speed import random_model

    device = "cuda" if cuda else "cpu"
    n, batch = (2048, 256) if cuda else (64, 32)
    lm = random_model("ViT-B-32", device=device)
    x = torch.rand(n, 3, 224, 224)
    amp = torch.autocast("cuda", dtype=torch.float16) if cuda else torch.autocast("cpu", enabled=False)

    def run(copy_each: bool) -> float:
        t = time.perf_counter()
        with torch.no_grad(), amp:
            for i in range(0, n, batch):
                b = x[i:i + batch].to(device, non_blocking=True) if copy_each else xd[i:i + batch]
                lm.model.encode_image(b)
        if cuda:
            torch.cuda.synchronize()
        return n / (time.perf_counter() - t)

    xd = x.to(device)
    run(False)                                  # warm-up (cuDNN autotune, allocator)
    bare = run(False)
    fed = run(True)
    return {"device": device, "images_per_s": round(fed, 1), "bare_forward_images_per_s": round(bare, 1),
            "ratio": round(fed / bare, 3)}


def check_faiss() -> dict:
    import faiss
    import numpy as np

    from filters.faiss_ops import fit_kmeans

    gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    n, d, k = (200_000, 512, 1000) if gpus else (20_000, 128, 100)
    x = np.random.default_rng(0).normal(size=(n, d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    t = time.perf_counter()
    cents = fit_kmeans(x, k, niter=20, seed=0, spherical=False)
    km_s = time.perf_counter() - t
    index = faiss.IndexFlatIP(d)
    if gpus:
        index = faiss.index_cpu_to_all_gpus(index)
    index.add(x)
    t = time.perf_counter()
    sims, ids = index.search(x, 10)
    search_s = time.perf_counter() - t
    assert cents.shape == (k, d) and (ids[:, 0] == np.arange(n)).mean() > 0.99
    return {"faiss_gpus": gpus, "kmeans": f"{n:,}x{d} -> {k} in {km_s:.1f} s",
            "knn10_queries_per_s": round(n / search_s), **({} if gpus else {"skipped": "faiss-gpu (no GPU)"})}


def check_train_and_eval(cuda: bool, steps: int, tmp: Path) -> tuple[dict, Path]:
    from train_data_maker import make_training_data
    from training.launch import train
    from training.recipe import recipe_for

    micro = recipe_for("micro")
    recipe = dataclasses.replace(micro, samples_seen=steps * micro.batch_size, num_checkpoints=1,
                                 precision="amp" if cuda else "fp32")
    data = make_training_data(tmp / "data", n_samples=2048, shard_size=64)
    run = tmp / "run"
    t = time.perf_counter()
    info = train("micro", data, run, recipe=recipe, device="cuda" if cuda else "cpu", progress=False)
    wall = time.perf_counter() - t
    out = {"device": info["device"], "precision": recipe.precision, "samples_seen": info["samples_seen"],
           "samples_per_s": round(info["samples_seen"] / info["wall_time_s"], 1),
           "wall_s_with_startup": round(wall, 1)}
    if not cuda:
        out["skipped"] = "amp on CUDA (no GPU)"
    return out, run


def check_eval(run: Path, tmp: Path, cuda: bool) -> dict:
    from eval.model import load_run_model

    from eval_speed import synthetic_task, time_classification

    lm = load_run_model(run, device="cuda" if cuda else "cpu")
    task = synthetic_task(tmp / "tasks", n=2048 if cuda else 256, size=64)
    seconds, rate = time_classification(lm, task, batch=256)
    return {"device": lm.device, "images": 2048 if cuda else 256, "images_per_s": round(rate, 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=None, help="training steps (default 300 on GPU, 20 on CPU)")
    ap.add_argument("--json", type=Path, default=None, help="also write the report here")
    args = ap.parse_args(argv)

    import torch

    from datacurate.env import apply_offline_env

    apply_offline_env()
    cuda = torch.cuda.is_available()
    report: dict = {"cuda": cuda, "device_name": torch.cuda.get_device_name(0) if cuda else None,
                    "torch": torch.__version__}
    print(f"CUDA: {report['device_name'] or 'not available: every GPU path below runs small on the CPU'}",
          flush=True)
    steps = args.steps or (300 if cuda else 20)
    step("embed", report, lambda: check_embed(cuda))
    step("faiss", report, check_faiss)
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        tmp = Path(tmp)
        holder: dict = {}

        def train_step():
            out, holder["run"] = check_train_and_eval(cuda, steps, tmp)
            return out

        step("train", report, train_step)
        if "run" in holder:
            step("eval", report, lambda: check_eval(holder["run"], tmp, cuda))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if all(v.get("ok", True) for v in report.values() if isinstance(v, dict)) else 1


if __name__ == "__main__":
    sys.exit(main())
