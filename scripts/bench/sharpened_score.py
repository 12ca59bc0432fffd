"""What a better filtering network would do to the ranking, asked before building one.

Issue 15 names the filtering network's quality as a lever (DFN: the filter's quality decides the
subset's), but a better offline network needs a bigger trusted split, i.e. a new pool: a new
benchmark version. This asks first whether it could pay off at all. It makes a study folder whose
pool is a copy of a finished study's with ``clip_fnet_similarity_score`` replaced by

    score + k * std(score) * [the caption is the image's own]

(the pool's ground truth: not a swapped, boilerplate or foreign-language caption), so that matched
and swapped captions are told apart with a chosen ROC AUC (``--auc``, or ``--k`` as given). The
embeddings are the network's, unchanged. Every recipe whose subset comes out identical on the new
pool (same subset fingerprint: no filter, random, basic, text- and image-based do not read the score)
is linked to the source study's subset, training shards and runs, so the baseline study then trains
only the recipes that change:

    .venv/bin/python scripts/bench/sharpened_score.py --source runs/tiny --out runs/tiny-fq --k 0.8
    .venv/bin/python scripts/bench/baselines.py --scale tiny --seeds 6 --out runs/tiny-fq

An oracle's help, for a study of the instrument: never a recipe's score or a leaderboard entry.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from datacurate.layout import BenchLayout, NetLayout, PoolLayout, as_pool  # noqa: E402  (after the path insert)

SCORE = "clip_fnet_similarity_score"
NOT_ITS_OWN = ("swapped_caption", "boilerplate", "foreign_language")   # the caption defects the score should see
PROG = "sharpened_score.py"


def fail(msg: str) -> SystemExit:
    return SystemExit(f"{PROG}: error: {msg}")


def read_scores(pool: Path) -> tuple[list[Path], np.ndarray, np.ndarray]:
    """(metadata files, the score of every row in file order, each row's ground-truth defect)."""
    from datacurate.errors import UserError
    from training.filter_net import scores_with_truth

    try:
        defects, scores = scores_with_truth(pool, SCORE)
        files = as_pool(pool).metadata_files()
    except UserError as e:
        raise fail(str(e)) from None
    defects = defects.astype(str)
    if auc(scores, defects) is None:
        raise fail(f"{as_pool(pool).ground_truth}: no rows with defect 'none' and 'swapped_caption' to tell apart")
    return files, scores, defects


def auc(scores: np.ndarray, defects: np.ndarray) -> float | None:
    """ROC AUC of the score, matched captions against swapped ones (`datacurate filter-net auc`'s); None if either is absent."""
    from training.filter_net import caption_auc

    return caption_auc(defects, scores)


def sharpen(scores: np.ndarray, defects: np.ndarray, k: float) -> np.ndarray:
    """The score plus k of its standard deviations on every row whose caption is its image's own."""
    return scores + k * np.std(scores, ddof=1) * ~np.isin(defects, NOT_ITS_OWN)


def solve_k(scores: np.ndarray, defects: np.ndarray, target: float, tol: float = 1e-4) -> float:
    """The k whose sharpened score reaches ROC AUC ``target`` (the AUC grows with k: bisection)."""
    now = auc(scores, defects)
    if not now <= target < 1.0:
        raise fail(f"--auc {target}: give an AUC between the network's own ({now:.4f}) and 1")
    lo, hi = 0.0, 1.0
    while auc(sharpen(scores, defects, hi), defects) < target:
        lo, hi = hi, hi * 2
    while hi - lo > tol:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if auc(sharpen(scores, defects, mid), defects) < target else (lo, mid)
    return hi


def copy_pool(src: Path, dst: Path, files: list[Path], new: np.ndarray) -> None:
    """DST/metadata: SRC's parquets with the score column replaced (the rest linked); the pool's other entries linked."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from datacurate.atomic import atomic_path

    src_lay, dst_lay = as_pool(src), PoolLayout.at(dst)
    dst.mkdir(parents=True, exist_ok=False)
    for entry in sorted(src_lay.root.iterdir()):
        if entry.name != src_lay.metadata.name:
            (dst / entry.name).symlink_to(entry.resolve())
    dst_lay.metadata.mkdir()
    for entry in sorted(src_lay.metadata.iterdir()):
        if entry.suffix != ".parquet":
            (dst_lay.metadata / entry.name).symlink_to(entry.resolve())
    at = 0
    for f in files:
        t = pq.read_table(f)
        i, field = t.column_names.index(SCORE), t.schema.field(SCORE)
        col = pa.array(new[at: at + t.num_rows], type=pa.float64()).cast(field.type)
        at += t.num_rows
        with atomic_path(dst_lay.metadata / f.name) as tmp:
            pq.write_table(t.set_column(i, field, col), tmp)


def link_unchanged(source: BenchLayout, out: BenchLayout, recipes: list[str]) -> list[str]:
    """Link each recipe whose subset on OUT's pool has the source study's fingerprint; the linked names."""
    from filters import run_recipe

    linked = []
    for r in recipes:
        path = source.subset(r).with_suffix(".json")
        if not path.is_file():
            continue
        record = json.loads(path.read_text())
        out.subsets.mkdir(parents=True, exist_ok=True)
        mine = run_recipe(out.pool, r, out.subset(r), seed=record.get("seed", 0), progress=False)
        if mine["subset_fingerprint"] != record["subset_fingerprint"]:
            continue
        out.training_data.mkdir(parents=True, exist_ok=True)
        if source.data(r).exists() and not out.data(r).exists():
            out.data(r).symlink_to(source.data(r).resolve())
        seed = 0
        while source.run(r, seed).exists():            # a study's seeds are 0..S-1 (BenchLayout names them)
            dst = out.run(r, seed)
            dst.parent.mkdir(parents=True, exist_ok=True)
            if not dst.exists():
                dst.symlink_to(source.run(r, seed).resolve())
            seed += 1
        linked.append(r)
    return linked


def main(argv=None) -> int:
    from datacurate.env import apply_offline_env

    apply_offline_env()
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", type=Path, required=True, help="a finished study folder (pool, fnet, subsets, runs)")
    ap.add_argument("--out", type=Path, required=True, help="the new study folder (must not exist)")
    how = ap.add_mutually_exclusive_group(required=True)
    how.add_argument("--auc", type=float, help="the swapped-caption ROC AUC the sharpened score should reach")
    how.add_argument("--k", type=float, help="the score's standard deviations added to a caption that is its image's own")
    args = ap.parse_args(argv)
    source, out = BenchLayout(args.source), BenchLayout(args.out)
    if out.out.exists():
        raise fail(f"{out.out}: exists; give a new --out")
    if not source.embed_summary.is_file() or not NetLayout(source.fnet).is_trained():
        raise fail(f"{source.out}: not a finished study folder (no embed.json or fnet/); give one --share could use")
    files, scores, defects = read_scores(source.pool)
    k = args.k if args.k is not None else solve_k(scores, defects, args.auc)
    if k < 0:
        raise fail(f"--k {k}: must be >= 0")
    new = sharpen(scores, defects, k)
    recipes = sorted(p.stem for p in source.subsets.glob("*.npy"))
    try:
        copy_pool(source.pool, out.pool, files, new)
        out.fnet.symlink_to(source.fnet.resolve())
        shutil.copyfile(source.embed_summary, out.embed_summary)
        linked = link_unchanged(source, out, recipes)
    except BaseException:
        shutil.rmtree(out.out, ignore_errors=True)    # it did not exist: no half-made study folder is left
        raise
    print(json.dumps({"source": str(source.out), "out": str(out.out), "k": round(k, 4),
                      "auc_network": round(auc(scores, defects), 4), "auc_sharpened": round(auc(new, defects), 4),
                      "linked": linked, "to_train": [r for r in recipes if r not in linked]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
