"""Filter quality on a built pool's ground truth: fraction kept, precision and recall per defect.

For each recipe (built-in names or YAML paths) the pool is filtered with the local
runner and the dropped rows are compared with POOL/ground_truth.parquet (the injected
defects; filters never read it). For a defect D:

* recall    = dropped rows with defect D / rows with defect D in the pool's metadata;
* precision = dropped rows with defect D / dropped rows.

Duplicates are also scored by pair: a planted copy counts as caught when the filter
keeps exactly one of (copy, original) -- a dedup may keep the copy and drop the
original; dropping both is not deduplication. Defects that never reach the metadata (broken_url, undecodable: the download
drops them) are listed with their count and no filter score. The reference row is
`no_filter` (keeps everything) and `random_30` (drops at random: its precision per
defect is the defect's base rate).

    .venv/bin/python scripts/bench/filter_quality.py --pool runs/tiny/pool
    .venv/bin/python scripts/bench/filter_quality.py --pool P --recipes basic_offline,dedup_clip --json out.json
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from datacurate.layout import PoolLayout  # noqa: E402  (after the path insert)

DEFAULT_RECIPES = [
    "no_filter", "random_30", "basic_offline", "text_based_offline", "clip_score_top30", "image_based",
    "image_based_and_clip", "dedup_clip", "semdedup_clip", "decontaminate_dedup_clip",
    # single filters, to see what each catches on its own
    "step:exact_dedup", "step:phash_dedup", "step:near_dedup", "step:semantic_dedup", "step:decontaminate",
    "step:decontaminate_phash", "step:decontaminate_local",
]
SINGLE = {
    "exact_dedup": "{filter: exact_dedup}",
    "phash_dedup": "{filter: phash_dedup, model: fnet}",
    "near_dedup": "{filter: near_dedup, model: fnet, threshold: 0.95}",
    "semantic_dedup": "{filter: semantic_dedup, model: fnet, clusters: 20, eps: 0.05}",
    "decontaminate": "{filter: decontaminate, model: fnet, target: eval}",
    "decontaminate_phash": "{filter: decontaminate_phash, target: eval}",
    "decontaminate_local": "{filter: decontaminate_local, target: eval}",
}
DEFECTS = ["swapped_caption", "boilerplate", "foreign_language", "exact_duplicate", "near_duplicate",
           "tiny_image", "extreme_aspect", "eval_overlap", "broken_url", "undecodable"]
SHORT = {"swapped_caption": "swap", "boilerplate": "boil", "foreign_language": "lang", "exact_duplicate": "exdup",
         "near_duplicate": "nrdup", "tiny_image": "tiny", "extreme_aspect": "aspect", "eval_overlap": "evalov",
         "broken_url": "url", "undecodable": "undec"}


def pool_uids(pool: Path) -> list[str]:
    import pyarrow.parquet as pq

    out = []
    for p in PoolLayout.find(pool).metadata_files():
        out += pq.read_table(p, columns=["uid"]).column("uid").to_pylist()
    return out


def score(gt, present: set[str], kept: set[str]) -> dict:
    """Per defect: n in pool, recall, precision (over dropped rows), group recall for duplicates."""
    rows = [r for r in gt if r["uid"] in present]
    dropped = {r["uid"] for r in rows} - kept
    out = {"kept": len(kept), "pool": len(rows), "fraction_kept": len(kept) / max(1, len(rows))}
    for d in DEFECTS:
        ds = [r for r in rows if r["defect"] == d]
        absent = sum(1 for r in gt if r["defect"] == d) - len(ds)
        hit = sum(1 for r in ds if r["uid"] in dropped)
        rec = {"n": len(ds), "absent": absent,
               "recall": hit / len(ds) if ds else None,
               "precision": hit / len(dropped) if dropped and ds else None}
        if d in ("exact_duplicate", "near_duplicate"):
            pairs = [r for r in ds if r.get("dup_of") in present]
            caught = sum(1 for r in pairs if (r["uid"] in kept) != (r["dup_of"] in kept))
            rec["group_recall"] = caught / len(pairs) if pairs else None
            rec["pairs"] = len(pairs)
        out[d] = rec
    return out


def fmt(x) -> str:
    return "  -  " if x is None else f"{x:5.2f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pool", required=True, help="a downloaded, embedded pool with ground_truth.parquet")
    ap.add_argument("--recipes", default=",".join(DEFAULT_RECIPES),
                    help="comma-separated recipe names/paths; step:NAME runs one built-in filter alone")
    ap.add_argument("--json", help="also write the figures here")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import pyarrow.parquet as pq

    from datacurate.env import apply_offline_env
    from datacurate.errors import UserError
    from datacurate.uids import read_subset_hex
    from filters.recipe import load_recipe, parse_recipe
    from filters.runner_local import filter_pool

    apply_offline_env()
    pool = Path(args.pool)
    gt_path = PoolLayout.at(pool).ground_truth
    if not gt_path.is_file():
        raise SystemExit(f"{gt_path}: no ground truth (build the pool with `datacurate pool build`)")
    gt = pq.read_table(gt_path).to_pylist()
    present = set(pool_uids(pool))
    results = {}
    head = f"{'recipe':<28} {'kept':>5} {'frac':>5} " + " ".join(f"{SHORT[d]:>11}" for d in DEFECTS[:8])
    print(f"pool {pool}: {len(present)} rows in the metadata, ground truth {len(gt)} rows; "
          f"defects never downloaded: " + ", ".join(
              f"{d} {sum(1 for r in gt if r['defect'] == d and r['uid'] not in present)}" for d in DEFECTS[-2:]))
    print("each defect column: recall/precision of the dropped rows (dups: group recall in the json)")
    print(head)
    with tempfile.TemporaryDirectory(prefix="filter-quality-") as tmp:
        for name in [r for r in args.recipes.split(",") if r]:
            try:
                if name.startswith("step:"):
                    recipe = parse_recipe(f"name: {name}\nsteps:\n  - {SINGLE[name[5:]]}\n", name,
                                          {"seed": args.seed})
                else:
                    recipe = load_recipe(name, overrides={"seed": args.seed})
                out = Path(tmp) / f"{len(results)}.npy"
                t0 = time.time()
                filter_pool(pool, recipe, out, seed=args.seed, progress=False)
                kept = set(read_subset_hex(out))
            except (UserError, KeyError) as e:
                print(f"{name:<28} skipped: {e}")
                continue
            r = score(gt, present, kept)
            r["seconds"] = time.time() - t0
            results[name] = r
            cells = " ".join(f"{fmt(r[d]['recall'])}/{fmt(r[d]['precision'])}" for d in DEFECTS[:8])
            print(f"{name:<28} {r['kept']:>5} {r['fraction_kept']:>5.2f} {cells}", flush=True)
    print("duplicate pairs reduced to exactly one kept row (group recall):")
    for name, r in results.items():
        print(f"  {name:<28} exact {fmt(r['exact_duplicate'].get('group_recall'))} "
              f"({r['exact_duplicate'].get('pairs')} pairs)   near {fmt(r['near_duplicate'].get('group_recall'))} "
              f"({r['near_duplicate'].get('pairs')} pairs)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
