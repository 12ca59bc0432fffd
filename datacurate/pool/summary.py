"""`datacurate pool summary`: where a pool's data comes from, and how its download went."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import UserError
from ..layout import PoolLayout, read_json


def pool_summary(pool: str | Path) -> dict:
    """Manifest facts (scale, sources, licences, defect counts) + the download summary, if any."""
    pool = Path(pool)
    if not pool.is_dir():
        raise UserError(f"{pool}: no such pool folder")
    lay = PoolLayout.at(pool)
    out: dict = {"pool": str(pool), "manifest": None, "download": None, "metadata_shards": 0}
    for key, path in (("manifest", lay.manifest_path), ("download", lay.download_summary_path)):
        out[key] = read_json(path) or None
    out["metadata_shards"] = len(list(lay.metadata.glob("*.parquet"))) if lay.metadata.is_dir() else 0
    return out


def print_summary(summary: dict, file=None) -> None:
    """Human-readable lines of ``pool_summary``'s result."""
    import sys

    w = lambda s="": print(s, file=file or sys.stdout)  # noqa: E731
    m, d = summary.get("manifest") or {}, summary.get("download")
    w(f"pool {summary['pool']}")
    if m:
        w(f"  scale {m.get('scale', '?')}, seed {m.get('seed', '?')}, builder {m.get('builder_version', m.get('version', '?'))}")
        sources = m.get("sources") or []
        if sources:
            w("  sources:")
            for s in sources:
                ver = f" {s['version']}" if s.get("version") else ""
                pkg = f" ({s['package']}{ver})" if s.get("package") else ""
                lic = s.get("licence") or s.get("license") or "licence unknown"
                home = f"  {s['homepage']}" if s.get("homepage") else ""
                w(f"    - {s.get('name', '?')}{pkg}: {lic}{home}")
        for key in ("counts", "defects", "counts_per_defect", "defect_rates"):
            if isinstance(m.get(key), dict) and m[key]:
                w(f"  {key.replace('_', ' ')}: " + ", ".join(f"{k} {_fmt(v)}" for k, v in m[key].items()))
    else:
        w("  no manifest.json (not built by `datacurate pool build`)")
    if d:
        rate = d["succeeded"] / d["tried"] if d.get("tried") else 0.0
        w(f"  download: {d['succeeded']:,} of {d['tried']:,} samples ({rate:.1%}) in {d['shards']} shard(s), "
          f"{d.get('distributor', '?')} on {d.get('master') or '-'}, from {d.get('served_from', '?')}")
        if d.get("failed"):
            w(f"  failed: {d['failed']:,}: " + ", ".join(f"{k} {v:,}" for k, v in d["failed_by_reason"].items()))
        t = [f"wall {d['wall_time_s']:.1f}s"]
        if d.get("spark_startup_s") is not None:
            t.append(f"Spark start-up {d['spark_startup_s']:.1f}s")
        if d.get("download_s"):
            t.append(f"img2dataset {d['download_s']:.1f}s")
        w("  time: " + ", ".join(t))
    else:
        w(f"  not downloaded yet (run `datacurate pool download --pool {summary['pool']}`)")
    w(f"  metadata shards: {summary.get('metadata_shards', 0)}")


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} {_fmt(x)}" for k, x in v.items()) + "}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def add_parser(psub) -> None:
    p = psub.add_parser(
        "summary", help="print a pool's sources, licences and download counts",
        description="Print the sources and licences from POOL/manifest.json and the download "
                    "counts and failures by reason from POOL/download_summary.json.",
        epilog="examples:\n  datacurate pool summary --pool runs/micro/pool\n"
               "  datacurate pool summary --pool runs/tiny/pool --json",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pool", required=True, type=Path, help="pool folder")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=_cmd)


def _cmd(args) -> int:
    s = pool_summary(args.pool)
    if args.json:
        print(json.dumps(s, indent=2))
    else:
        print_summary(s)
    return 0
