"""Benchmark: zero-shot evaluation speed on CPU threads (default 2, as the project's machine).

Measures, in one process:
  1. images/s of zero-shot classification (webdataset read + decode + the model's own
     preprocessing + image encoder + logits) for the ``tiny`` model (TinyCLIP-ViT-64) and for
     ViT-B-32, both with random weights, on the same synthetic task; the ratio between them;
  2. the wall time of the whole offline suite (3 tasks) for the tiny model on a hand-made
     held-out set of ``--items`` drawn emoji-like images (or a real pool with ``--pool``),
     against the aim of 60 s, building the evalsets included.

  .venv/bin/python scripts/bench/eval_speed.py --quick
  .venv/bin/python scripts/bench/eval_speed.py --images 512 --items 1000 --threads 2
  .venv/bin/python scripts/bench/eval_speed.py --pool runs/tiny/pool          # the real held-out set
"""
from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DATACURATE_NO_PROGRESS", "1")


def _png(i: int, size: int) -> bytes:
    from PIL import Image, ImageDraw

    img = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    c = ((37 * i) % 256, (91 * i) % 256, (173 * i) % 256, 255)
    m = size // 8
    [d.ellipse, d.rectangle][i % 2]([m, m, size - m, size - m], fill=c)
    b = io.BytesIO()
    img.save(b, format="PNG")
    return b.getvalue()


def synthetic_task(root: Path, n: int, classes: int = 10, size: int = 128, name: str = "speed_cls") -> Path:
    """A classification task folder in clip_benchmark's layout with n PNG images."""
    import webdataset as wds
    import yaml

    d = root / name
    (d / "test").mkdir(parents=True)
    with wds.TarWriter(str(d / "test" / "0.tar")) as w:
        for i in range(n):
            w.write({"__key__": f"{i:06d}", "png": _png(i, size), "cls": i % classes})
    (d / "test" / "nshards.txt").write_text("1\n")
    (d / "classnames.txt").write_text("\n".join(f"class {c}" for c in range(classes)) + "\n")
    (d / "task.yaml").write_text(yaml.safe_dump({"name": "speed", "templates": ["a photo of a {c}."]}))
    return d


def random_model(name: str, device: str = "cpu"):
    import open_clip
    import torch

    from eval.model import LoadedModel
    from datacurate.clip import register_model_configs

    register_model_configs()
    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms(name, device=device)
    model.eval()
    return LoadedModel(model=model, preprocess=preprocess, tokenizer=open_clip.get_tokenizer(name), device=device,
                       name=name, checkpoint=Path("random"), checkpoint_sha256=name.ljust(64, "0")[:64])


def tiny_run(run: Path) -> Path:
    """A RUN/ as training leaves it: info.json + a random-init TinyCLIP-ViT-64 checkpoint."""
    import torch

    from datacurate.layout import CHECKPOINT, RunLayout

    lm, lay = random_model("TinyCLIP-ViT-64"), RunLayout(run)
    lay.checkpoints.mkdir(parents=True)
    torch.save({"state_dict": lm.model.state_dict()}, lay.checkpoint)
    lay.info.write_text(json.dumps({"model": "TinyCLIP-ViT-64", "checkpoint": CHECKPOINT}))
    return run


def time_classification(lm, task_dir: Path, batch: int) -> tuple[float, float]:
    """(seconds, images/s) of one pass of zero-shot classification over the task."""
    from eval.runner import evaluate_task
    from eval.tasks import load_task_yaml

    task = load_task_yaml(task_dir)
    t0 = time.perf_counter()
    m = evaluate_task(task, lm, batch_size=batch)
    dt = time.perf_counter() - t0
    return dt, m["num_samples"] / dt


def offline_suite_seconds(pool: Path | None, items: int, tmp: Path, threads: int) -> dict:
    """Wall time of `evaluate_run(suite='offline')` for a random-init tiny checkpoint (build included)."""
    import torch

    from datacurate.layout import PoolLayout

    from eval import evaluate_run

    if pool is None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pool = tmp / "pool"
        PoolLayout.at(pool).holdout.mkdir(parents=True)
        groups = ["food-drink", "animals-nature", "travel-places", "objects", "symbols"]
        rows = {"item_id": [f"it{i}" for i in range(items)], "image": [_png(i, 72) for i in range(items)],
                "text": [f"an emoji number {i}" for i in range(items)], "name": [f"emoji {i}" for i in range(items)],
                "group": [groups[i % 5] for i in range(items)], "subgroup": [f"{groups[i % 5]}-{i % 3}" for i in range(items)],
                "source": ["google"] * items}
        pq.write_table(pa.table(rows), PoolLayout.at(pool).holdout_parquet("eval"))
    run = tiny_run(tmp / "run")
    torch.set_num_threads(threads)
    prebuilt = PoolLayout.at(pool).evalsets.is_dir()
    t0 = time.perf_counter()
    scores = evaluate_run(run, suite="offline", pool=pool, device="cpu", log=lambda m: None)
    total = time.perf_counter() - t0
    return {"seconds": round(total, 2), "per_task_seconds": scores["eval_seconds"], "tasks": len(scores["tasks"]),
            "evalsets_build_included": not prebuilt}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=512, help="images in the synthetic classification task")
    ap.add_argument("--items", type=int, default=1000, help="held-out items for the offline-suite timing")
    ap.add_argument("--pool", type=Path, help="time the offline suite on this pool's real held-out set")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--quick", action="store_true", help="small sizes (128 images, 200 items)")
    args = ap.parse_args(argv)
    if args.quick:
        args.images, args.items = 128, 200
    import torch

    torch.set_num_threads(args.threads)
    out = {"threads": args.threads, "images": args.images, "cpu_count": os.cpu_count(),
           "note": "CPU shared with other processes at measurement time: figures are lower bounds"}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        task = synthetic_task(tmp / "data", args.images)
        warm = synthetic_task(tmp / "data", 16, name="warm_up")
        for name in ("TinyCLIP-ViT-64", "ViT-B-32"):
            lm = random_model(name)
            time_classification(lm, warm, args.batch_size)           # warm-up
            dt, ips = time_classification(lm, task, args.batch_size)
            out[name] = {"seconds": round(dt, 3), "images_per_s": round(ips, 1)}
            print(f"{name:16s} zero-shot classification: {ips:8.1f} images/s ({args.images} images, {dt:.2f} s)",
                  flush=True)
            del lm
        out["ratio_tiny_over_vitb32"] = round(out["TinyCLIP-ViT-64"]["images_per_s"] / out["ViT-B-32"]["images_per_s"], 2)
        print(f"tiny / ViT-B-32 speed ratio: {out['ratio_tiny_over_vitb32']:.1f}x")
        off = offline_suite_seconds(args.pool, args.items, tmp, args.threads)
        out["offline_suite"] = off
        src = f"pool {args.pool}" if args.pool else f"{args.items} hand-made items"
        verdict = "meets" if off["seconds"] < 60 else "MISSES"
        built = "evalsets build included" if off["evalsets_build_included"] else "evalsets already built"
        print(f"offline suite (tiny model, {src}, {built}): {off['seconds']:.1f} s -> {verdict} the 60 s aim "
              f"(ratio to aim {off['seconds'] / 60:.2f})")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
