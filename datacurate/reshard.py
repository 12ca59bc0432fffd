"""`datacurate reshard`: a subset's samples -> new webdataset training shards (Spark job).

Reads POOL/metadata/*.parquet (uid, key, shard), keeps the uids of SUBSET.npy
(upstream's sorted ``u8,u8`` array), then each Spark task copies its samples out
of the pool's tar shards into one new shard ``DATA/shards/NNNNN.tar``
(``KEY.jpg``, ``KEY.txt``, ``KEY.json`` with the uid). Samples keep the pool's
order (source shard, key), as upstream DataComp's resharder keeps input order;
tar members carry fixed owners and times, so the same subset gives byte-identical
shards. Each shard is written under a temporary name and renamed; finished
shards are skipped on a rerun.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tarfile
import time
from pathlib import Path

from .atomic import atomic_path, folder_lock, write_json_atomic
from .errors import UserError
from .layout import DataLayout, PoolLayout, as_pool, shard_name
from .scales import SCALES

MAX_SHARD_SIZE = 1000   # default samples per output shard (upstream's resharder writes 10,000)
MIN_SHARDS = 4          # open_clip's webdataset loader wants at least one shard per worker
TASK_SAMPLES = 1000     # samples one Spark task copies (several small output shards share a task)


class ReshardError(UserError):
    """The subset, the pool or the output folder cannot be resharded as asked."""


def default_shard_size(found: int) -> int:
    """At most MAX_SHARD_SIZE per shard, and at least MIN_SHARDS shards once there are 256 samples."""
    return max(1, min(MAX_SHARD_SIZE, max(64, math.ceil(found / MIN_SHARDS))))


# ----------------------------------------------------------------------------- executor side

def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.size, ti.mtime, ti.mode = size, 0, 0o444
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    return ti


def write_shards(task: tuple) -> list[tuple[str, int]]:
    """A run of consecutive output shards: ``(pool_shards_dir, [(out_tar, [(src_shard, key, record), ...]), ...])``.

    Runs on a Spark executor. Reads each source tar it needs once, in order, for all the
    outputs of the task (fine training shards would otherwise re-read one pool tar per
    output), then writes every output under a temporary name and renames it.
    Returns ``[(name, n), ...]``.
    """
    import io
    from collections import defaultdict

    src_dir, outputs = task
    src_dir = Path(src_dir)
    wanted: dict[str, set] = defaultdict(set)
    for _, items in outputs:
        for src, key, _ in items:
            wanted[src].add(key)
    found: dict[tuple, dict] = {}
    for src in sorted(wanted):
        path = src_dir / f"{src}.tar"
        try:
            with tarfile.open(path, "r") as tf:
                for m in tf:
                    if not m.isfile():
                        continue
                    base = os.path.basename(m.name)
                    key, _, ext = base.partition(".")
                    if key in wanted[src]:
                        found.setdefault((src, key), {})[ext] = tf.extractfile(m).read()
        except (OSError, tarfile.TarError) as e:
            raise RuntimeError(f"{path}: cannot read pool shard ({e})") from None
    written = []
    for out_tar, items in outputs:
        out_tar = Path(out_tar)
        # a full disk while writing is named by the shard (tar writes carry no file name)
        with atomic_path(out_tar) as tmp, open(tmp, "wb") as f, \
                tarfile.open(fileobj=f, mode="w", format=tarfile.USTAR_FORMAT) as tw:
            for src, key, record in items:
                files = found.get((src, key))
                image_ext = next((e for e in sorted(files or {}) if e not in ("txt", "json")), None)
                if image_ext is None:
                    raise RuntimeError(f"{src_dir / (src + '.tar')}: no image for key {key} "
                                       f"(uid {record['uid']}) listed in metadata/{src}.parquet")
                caption = files.get("txt", b"")
                meta = json.dumps({**record, "key": key, "source_shard": src}, sort_keys=True).encode()
                for ext, data in ((image_ext, files[image_ext]), ("json", meta), ("txt", caption)):
                    tw.addfile(_tarinfo(f"{key}.{ext}", len(data)), io.BytesIO(data))
        written.append((out_tar.name, len(items)))
    return written


def group_outputs(outputs: list[tuple], task_samples: int = TASK_SAMPLES) -> list[list[tuple]]:
    """Consecutive ``(out_tar, items)`` pairs in runs of about ``task_samples`` samples: one Spark task each."""
    groups, current, n = [], [], 0
    for out in outputs:
        current.append(out)
        n += len(out[1])
        if n >= task_samples:
            groups.append(current)
            current, n = [], 0
    if current:
        groups.append(current)
    return groups


# ----------------------------------------------------------------------------- driver side

def _select(spark, pool: PoolLayout, subset_hex: list[str], work: Path) -> list[tuple]:
    """Spark: metadata (uid, key, shard, ...) joined with the subset; sorted (shard, key)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from pyspark.sql import functions as F

    from .schema import write_table_atomic

    files = pool.metadata_files()
    for f in files:  # clear error before Spark's
        names = pq.ParquetFile(f).schema_arrow.names
        for col in ("uid", "key", "url", "original_width", "original_height", "sha256"):
            if col not in names:
                raise ReshardError(f"{f}: missing column {col!r} (a metadata file from `pool download` has it)")
    subset_file = work / "subset_uids.parquet"
    write_table_atomic(pa.table({"uid": pa.array(subset_hex, pa.string())}), subset_file)
    meta = (spark.read.option("mergeSchema", "false").parquet(*[str(f) for f in files])
            .select("uid", "key", "url", "original_width", "original_height", "sha256",
                    F.regexp_extract(F.col("_metadata.file_name"), r"^(\d+)\.parquet$", 1).alias("shard")))
    wanted = spark.read.parquet(str(subset_file))
    rows = (meta.join(wanted, "uid", "inner").orderBy("shard", "key", "uid").collect())
    return [(r["shard"], r["key"], {"uid": r["uid"], "url": r["url"], "original_width": r["original_width"],
                                      "original_height": r["original_height"], "sha256": r["sha256"]})
            for r in rows]


def reshard(pool: str | os.PathLike, subset: str | os.PathLike, out: str | os.PathLike,
            shard_size: int | None = None, spark=None, master: str | None = None,
            progress: bool = True) -> dict:
    """Write the subset's samples as DATA/shards/NNNNN.tar + sizes.json + reshard.json; return the latter."""
    from .env import apply_offline_env
    from .uids import fingerprint, read_subset

    apply_offline_env()
    t0 = time.time()
    lay, data = as_pool(pool), DataLayout(Path(out))
    pool, out = lay.root, data.root
    arr = read_subset(subset)
    fp = fingerprint(arr)
    if shard_size is not None and shard_size < 1:
        raise ReshardError(f"--shard-size must be >= 1, got {shard_size}")
    lay.shard_ids()  # a pool without metadata files: the layout's error, before Spark starts
    shards_out, work = data.shards, data.work
    report_path = data.report
    plan = {"subset_fingerprint": fp, "shard_size": shard_size, "pool": str(pool.resolve())}
    plan_path = work / "plan.json"
    if plan_path.exists():
        old = json.loads(plan_path.read_text())
        if {k: old.get(k) for k in plan} != plan:
            raise ReshardError(f"{out} holds shards of another reshard ({plan_path}: {old}); "
                               "choose another --out or remove it")
    elif any(shards_out.glob("*.tar")):
        raise ReshardError(f"{shards_out} already holds shards not made by this reshard; choose another --out")
    if report_path.exists():
        report = json.loads(report_path.read_text())
        if (report.get("subset_fingerprint") == fp and
                all((shards_out / n).exists() for n in report.get("sizes", {}))):
            print(f"reshard: {out} is complete ({report['found']} samples in {report['shards']} shards)")
            return report
    if len(arr) == 0:
        raise ReshardError(f"{subset}: the subset is empty; nothing to reshard (check the recipe that made it)")
    created = not out.exists()
    with folder_lock(data.lock):
        try:
            return _reshard(lay, data, subset, arr, fp, plan, shard_size, spark, master, progress, t0)
        except BaseException:
            _forget_unstarted(data, created)
            raise


def _forget_unstarted(data: DataLayout, created: bool) -> None:
    """A reshard that fails before its first shard leaves nothing behind (a rerun with a good
    subset must not trip on its plan); one that wrote shards keeps them to resume."""
    import shutil

    if any(data.shards.glob("*.tar")):
        return
    shutil.rmtree(data.work, ignore_errors=True)
    shutil.rmtree(data.shards, ignore_errors=True)
    if created and data.root.is_dir() and all(p == data.lock for p in data.root.iterdir()):
        shutil.rmtree(data.root, ignore_errors=True)


def _reshard(lay: PoolLayout, data: DataLayout, subset, arr, fp: str, plan: dict, shard_size: int | None,
             spark, master: str | None, progress: bool, t0: float) -> dict:
    from .uids import pairs_to_hex

    pool, out = lay.root, data.root
    shards_out, work, report_path, plan_path = data.shards, data.work, data.report, data.work / "plan.json"
    work.mkdir(parents=True, exist_ok=True)
    shards_out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(plan_path, plan)

    startup = None
    if spark is None:
        from .spark import get_spark

        t = time.time()
        spark = get_spark(master, app_name="datacurate-reshard")
        startup = time.time() - t
    subset_hex = pairs_to_hex(arr)
    rows = _select(spark, lay, subset_hex, work)
    seen, items, duplicates = set(), [], 0
    for r in rows:  # a uid in two metadata files: keep its first place in pool order
        if r[2]["uid"] in seen:
            duplicates += 1
            continue
        seen.add(r[2]["uid"])
        items.append(r)
    found, missing = len(items), len(subset_hex) - len(items)
    if found == 0:
        raise ReshardError(f"none of the {len(subset_hex)} uids of {subset} is in {lay.metadata} "
                           "(a subset of another pool?)")
    size = shard_size or default_shard_size(found)
    n_out = math.ceil(found / size)
    todo = []
    sizes = {}
    for i in range(n_out):
        chunk = items[i * size:(i + 1) * size]
        name = f"{shard_name(i)}.tar"
        sizes[name] = len(chunk)
        if not (shards_out / name).exists():
            todo.append((str(shards_out / name), chunk))
    print(f"reshard: {found} of {len(subset_hex)} uids found ({missing} missing) -> {n_out} shard(s) "
          f"of <= {size}; {len(todo)} to write", flush=True)
    if todo:
        from .executor import SparkExecutor

        tasks = [(str(lay.shards), g) for g in group_outputs(todo)]
        # one Spark task per run of output shards (datacurate.executor, every stage's)
        written = SparkExecutor(spark, progress=progress).map(write_shards, tasks, "reshard")
        for name, n in (pair for pairs in written for pair in pairs):
            if sizes[name] != n:
                raise RuntimeError(f"{shards_out / name}: wrote {n} samples, planned {sizes[name]}")
    for stale in sorted(shards_out.glob("*.tar")):
        if stale.name not in sizes:
            raise ReshardError(f"{stale}: not part of this reshard (another shard size?); remove {out}")
    write_json_atomic(data.sizes, sizes)
    write_json_atomic(data.sizes_beside_tars, sizes)  # where open_clip looks: beside the tars
    report = {
        "subset": str(subset), "subset_fingerprint": fp, "subset_size": len(subset_hex),
        "found": found, "missing": missing, "duplicates_in_pool": duplicates,
        "shards": n_out, "shard_size": size, "sizes": sizes, "pool": str(pool),
        "spark_startup_s": None if startup is None else round(startup, 3),
        "wall_time_s": round(time.time() - t0, 3),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_json_atomic(report_path, report)
    (work / "subset_uids.parquet").unlink(missing_ok=True)
    return report


# ----------------------------------------------------------------------------- CLI

def add_parser(sub) -> None:
    p = sub.add_parser(
        "reshard", help="write a subset's samples as new webdataset training shards (Spark)",
        description="Copy the samples whose uids are in SUBSET.npy out of the pool's shards into "
                    "DATA/shards/NNNNN.tar, with DATA/sizes.json (open_clip's format) and "
                    "DATA/reshard.json (subset fingerprint, found / missing counts). Resumable.",
        epilog="examples:\n  datacurate reshard --pool runs/micro/pool --subset runs/micro/basic.npy --out runs/micro/data_basic\n"
               "  datacurate reshard --pool runs/tiny/pool --subset runs/tiny/subsets/basic_offline.npy --out DATA --scale tiny\n"
               "  datacurate reshard --pool POOL --subset S.npy --out DATA --shard-size 500 --master spark://head:7077",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pool", required=True, type=Path, help="downloaded pool folder")
    p.add_argument("--subset", required=True, type=Path, help="upstream subset .npy (sorted u8,u8 uids)")
    p.add_argument("--out", required=True, type=Path, help="output folder DATA")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--shard-size", type=int, default=None,
                      help=f"samples per output shard (default: <= {MAX_SHARD_SIZE}, at least {MIN_SHARDS} shards)")
    size.add_argument("--scale", default=None, choices=list(SCALES),
                      help="use the scale's training shard size (`datacurate scales`: the benchmark's own "
                           "runs reshard this way; tiny: 16 samples per shard)")
    p.add_argument("--master", default=None, help="Spark master URL (default local[*])")
    p.set_defaults(func=_cmd, out_folder="DATA folder")


def _cmd(args) -> int:
    shard_size = args.shard_size if args.scale is None else SCALES[args.scale].train_shard_size
    lay = PoolLayout.find(args.pool)
    if lay.kind != "pool":
        print(lay.describe(), file=sys.stderr)
    r = reshard(lay, args.subset, args.out, shard_size=shard_size, master=args.master)
    print(f"{r['found']} samples in {r['shards']} shard(s) under {args.out}/shards; "
          f"{r['missing']} uid(s) of the subset not found in the pool")
    return 0
