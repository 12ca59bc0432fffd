"""Would another task family rank the recipes more reliably? Candidate tasks scored on a finished study.

The offline suite's four tasks all ask about the held-out emoji as drawn (on white). Upstream
DataComp averages 38 tasks of several families, among them ImageNet's distribution shifts (the
same classes drawn another way: sketches, renditions, new photos). A task whose seed-to-seed
errors are independent of the suite's would shrink the noise of the Average faster than the
signal; one that only repeats the suite (or sits at chance) dilutes it. This script builds such
variants from the same held-out items and measures which, scoring every run of a study again:

* ``emoji_concept_scene``: the emoji pasted on the pool's own web backgrounds (solid, gradient,
  noise, photo) at a random scale and place (datacurate.pool.compose), seeded per item: the
  concepts drawn the way the training images are (ObjectNet / ImageNet-V2 in spirit);
* ``emoji_concept_sketch``: its edges only, black on white (ImageNet-Sketch in spirit);
* ``emoji_concept_grey``: in greyscale (colour taken away);
* ``emoji_cross_style``: image-to-image retrieval between the two art styles of the same emoji
  (Noto Emoji <-> Twemoji), the image tower alone, mean rank percentile both ways.

Each is a classification task with emoji_concept's class names and templates, written as a user
task (docs/eval.md) under OUT/candidate_tasks/ and scored with ``datacurate eval``'s runner (its
scores go to RUN/scores.<suite>.json, beside the run's own); the cross-style score is computed
here. It prints, per candidate: its mean, per-run std and spread of recipe means, the correlation
of its seed deviations with the suite Average's, and for the Average with that task added (as
one more task of equal weight): pooled per-run std, spread of the recipe means, their ratio, and
the split-half Kendall tau (all splits' mean), against the suite as it is.

    .venv/bin/python scripts/bench/task_families.py --out runs/tiny --seeds 6
"""
from __future__ import annotations

import io
import json
import math
import random
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from datacurate.atomic import write_json_atomic  # noqa: E402  (after the path insert)
from datacurate.layout import PoolLayout, RunLayout  # noqa: E402

CANDIDATES = ("emoji_concept_scene", "emoji_concept_sketch", "emoji_concept_grey")
CROSS_STYLE = "emoji_cross_style"
NAMES = {"emoji_concept_scene": "Emoji concept (scene)", "emoji_concept_sketch": "Emoji concept (sketch)",
         "emoji_concept_grey": "Emoji concept (greyscale)", CROSS_STYLE: "Emoji cross-style retrieval"}


def _rgba(data: bytes):
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return im.convert("RGBA")


def _png(img) -> bytes:
    out = io.BytesIO()
    img.convert("RGB").save(out, format="PNG")
    return out.getvalue()


def scene(row: dict) -> bytes:
    """The emoji on one of the pool's web backgrounds, placed and sized as the pool builder does."""
    from datacurate.pool.compose import canvas_size, compose

    rng = random.Random(f"datacurate-task-families/scene/{row['item_id']}")
    w, h = canvas_size(rng)
    return _png(compose(rng, _rgba(row["image"]), w, h)[0])


def sketch(row: dict) -> bytes:
    """The emoji's edges, dark on white; the image's own border is not an edge."""
    from PIL import ImageFilter, ImageOps

    from datacurate.images import to_rgb

    e = ImageOps.invert(to_rgb(_rgba(row["image"])).convert("L").filter(ImageFilter.FIND_EDGES))
    e = ImageOps.expand(e.crop((1, 1, e.width - 1, e.height - 1)), 1, fill=255)
    return _png(ImageOps.autocontrast(e))


def grey(row: dict) -> bytes:
    from datacurate.images import to_rgb

    return _png(to_rgb(_rgba(row["image"])).convert("L"))


DRAW = {"emoji_concept_scene": scene, "emoji_concept_sketch": sketch, "emoji_concept_grey": grey}


def build_candidates(pool: Path, root: Path) -> list[dict]:
    """Write the candidate tasks under ROOT (once); return the held-out rows."""
    import pyarrow.parquet as pq

    from eval.offline import OFFLINE_TASKS, _read_holdout, _write_task
    from eval.tasks import CLASSIFICATION

    parquet = PoolLayout.at(pool).holdout_parquet("eval")
    rows = _read_holdout(parquet)
    for r, source in zip(rows, pq.read_table(parquet, columns=["source"]).column("source").to_pylist()):
        r["source"] = source                     # the art style, for the cross-style task
    labels = sorted({str(r["name"]) for r in rows})
    index = {lab: i for i, lab in enumerate(labels)}
    for key in CANDIDATES:
        if (root / key / "task.yaml").is_file():
            continue
        spec = {"name": NAMES[key], "type": CLASSIFICATION, "main_metric": OFFLINE_TASKS["emoji_concept"]["main_metric"]}
        _write_task(root / key, key, spec, [(DRAW[key](r), index[str(r["name"])]) for r in rows], labels,
                    "task_families.py")
        print(f"built {root / key} ({len(rows)} images)", flush=True)
    return rows


def cross_style(run: Path, rows: list[dict]) -> float:
    """Mean rank percentile of an emoji's other-style rendering among all other-style images, both ways."""
    import torch

    from datacurate.images import to_rgb
    from eval.metrics import rank_percentiles
    from eval.model import load_run_model

    by: dict[str, dict[str, int]] = {}
    for i, r in enumerate(rows):
        by.setdefault(str(r["name"]), {})[str(r.get("source"))] = i
    pairs = [tuple(d[s] for s in sorted(d)) for d in by.values() if len(d) == 2]
    if not pairs:
        raise SystemExit("task_families.py: error: no emoji is held out in two art styles (eval.parquet 'source')")
    lm = load_run_model(run, device="cpu")
    with torch.no_grad():
        x = torch.stack([lm.preprocess(to_rgb(_rgba(r["image"]))) for r in rows])
        e = torch.cat([lm.model.encode_image(x[i:i + 128]) for i in range(0, len(x), 128)])
        e = torch.nn.functional.normalize(e, dim=-1).numpy()
    s = e[[a for a, _ in pairs]] @ e[[b for _, b in pairs]].T
    right = np.arange(len(pairs))
    return float((rank_percentiles(s, right).mean() + rank_percentiles(s.T, right).mean()) / 2)


def score_run(run: Path, root: Path, rows: list[dict]) -> dict[str, float]:
    """{candidate key: score} for one run (the runner's cache skips what is already scored)."""
    from eval.runner import evaluate_run

    got = evaluate_run(run, suite=",".join(CANDIDATES), data_root=root, device="cpu", log=lambda *a, **k: None)
    names = {v: k for k, v in NAMES.items()}
    out = {names[t]: float(v) for t, v in got["tasks"].items() if t in names}
    side = RunLayout(run).root / "cross_style.json"
    try:
        out[CROSS_STYLE] = float(json.loads(side.read_text())["score"])
    except (OSError, ValueError, KeyError):
        out[CROSS_STYLE] = cross_style(run, rows)
        write_json_atomic(side, {"score": out[CROSS_STYLE], "task": NAMES[CROSS_STYLE]})
    return out


def with_task(runs: dict, key: str | None) -> dict:
    """The study's runs with ``value`` = the Average over the run's suite tasks plus ``key`` (None: as is)."""
    out = {}
    for r, by in runs.items():
        out[r] = {}
        for s, x in by.items():
            n = len(x["tasks"])
            v = x["value"] if key is None else (x["value"] * n + x["extra"][key]) / (n + 1)
            out[r][s] = {"value": v, "tasks": {}}
    return out


def instrument(runs: dict, seeds: list[int]) -> dict:
    from baselines import _spread, pooled_std, recipe_rows, split_half_tau

    rows = recipe_rows(runs, seeds, "v")
    noise, spread = pooled_std(rows, "v"), _spread(rows, "v")
    tau = split_half_tau(runs, seeds)
    return {"pooled_std": noise, "spread": spread, "ratio": spread / noise if noise else None,
            "tau": tau.get("tau"), "tau_all_splits": (tau.get("all_splits") or {}).get("mean")}


def main(argv=None) -> int:
    from baselines import open_finished_study, or_dash

    _f = lambda x: or_dash(x, "+.3f")  # noqa: E731

    args, lay, runs, seeds = open_finished_study(__doc__, "task_families.py", argv)
    root = lay.out / "candidate_tasks"
    rows = build_candidates(lay.pool, root)
    for r, by in runs.items():
        for s in seeds:
            by[s]["extra"] = score_run(lay.run(r, s), root, rows)
            print(f"{r} seed {s}: " + ", ".join(f"{k} {v:.4f}" for k, v in by[s]["extra"].items()), flush=True)
    base = instrument(with_task(runs, None), seeds)
    avg = np.array([[runs[r][s]["value"] for s in seeds] for r in runs])
    result = {"study": str(args.out), "seeds": seeds, "recipes": len(runs), "suite": base, "candidates": {}}
    print(f"\n{len(runs)} recipes x seeds {seeds}; suite Average: per-run std {base['pooled_std']:.4f}, "
          f"spread {base['spread']:.4f}, ratio {base['ratio']:.2f}, split-half tau {_f(base['tau'])} "
          f"(all splits {_f(base['tau_all_splits'])})")
    print(f"{'candidate':30s} {'mean':>6s} {'std':>7s} {'spread':>7s} {'corr':>5s} | with it: "
          f"{'std':>7s} {'spread':>7s} {'ratio':>5s} {'tau':>6s} {'all':>6s}")
    for key in (*CANDIDATES, CROSS_STYLE):
        x = np.array([[runs[r][s]["extra"][key] for s in seeds] for r in runs])
        dev_x, dev_a = (x - x.mean(1, keepdims=True)).ravel(), (avg - avg.mean(1, keepdims=True)).ravel()
        corr = float(np.corrcoef(dev_x, dev_a)[0, 1]) if dev_x.std() > 0 else float("nan")
        ins = instrument(with_task(runs, key), seeds)
        own = {"mean": float(x.mean()), "std": float(math.sqrt(x.var(1, ddof=1).mean())),
               "spread": float(x.mean(1).std(ddof=1)), "corr_with_average": corr}
        result["candidates"][key] = {"task": own, "average_with_it": ins}
        print(f"{NAMES[key]:30s} {own['mean']:6.3f} {own['std']:7.4f} {own['spread']:7.4f} {corr:+5.2f} | "
              f"{'':9s}{ins['pooled_std']:7.4f} {ins['spread']:7.4f} {ins['ratio']:5.2f} {_f(ins['tau']):>6s} "
              f"{_f(ins['tau_all_splits']):>6s}")
    if args.json:
        write_json_atomic(args.json, result, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
