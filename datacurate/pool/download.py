"""`datacurate pool download`: img2dataset on Spark -> POOL/shards + POOL/metadata.

The offline pool's images are served from ``POOL/www`` on loopback and fetched by
real img2dataset through its pyspark distributor, exactly as a web crawl is
fetched; a pool whose url list holds real web urls (or ``--input`` of a real
crawl's url+text parquet) takes the same path without the server.

Resumable at the shard level: img2dataset's incremental mode keeps every shard
whose ``NNNNN_stats.json`` exists, a half-written shard is redone, and metadata
is converted only for shards not converted yet. ``POOL/download_summary.json``
is written last: its presence means "downloaded".

img2dataset writes into a folder of its own run (``POOL/.download/run-*``), and each
shard it finishes is moved into ``POOL/shards`` (tar and parquet, then the stats) by
the driver. A killed run's Spark workers can outlive it (PySpark's daemon puts them in
a process group of their own, so killing the job's group misses them); they can only
finish shards into their own run folder, which no later run reads.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import threading
import time
from pathlib import Path

from ..atomic import write_json_atomic
from ..errors import UserError
from ..layout import SHARD_DIGITS, PoolLayout, shard_name
from ..uids import check_uid_column

# Upstream download_upstream.py: image_size=512, resize_mode="keep_ratio_largest",
# resize_only_if_bigger=True, encode jpg. We keep the mode and the "only if bigger"
# rule but store at 256 px on the longest side: the CPU scales train at 64 px and
# embed at <= 224 px, so 512 px would only cost disk and decode time.
IMAGE_SIZE = 256
RESIZE_MODE = "keep_ratio_largest"
USER_AGENT_TOKEN = "datacurate"
STATE_DIR = ".download"  # POOL/.download: the rewritten input and the settings of the first run


FACE_BOXES = "face_bboxes"   # upstream's column of face boxes to blur
CHECKSUM = "sha256"          # upstream's metadata: the sha256 of each image's bytes as it was crawled


class DownloadError(UserError):
    """The url list or the pool cannot be downloaded as given."""


# ----------------------------------------------------------------------------- inputs

def read_manifest(pool: Path) -> dict:
    path = PoolLayout.at(pool).manifest_path
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DownloadError(f"{path}: not valid JSON ({e})") from None


def read_url_list(path: Path, add_missing_uids: bool = False):
    """Read and check a url+text parquet (uid, url, text), or a folder of them in name order (upstream's
    metadata as it ships: NNNNNNNN.parquet with more columns); errors name the file, row and field."""
    import pyarrow as pa

    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.glob("*.parquet") if not p.name.startswith("."))
        if not files:
            raise DownloadError(f"{path}: a folder without *.parquet files (expected upstream's metadata "
                                "parquets or one url list with columns uid, url, text)")
        parts = [_read_one_url_list(f, add_missing_uids) for f in files]
        table = pa.concat_tables(parts, promote_options="default")   # face_bboxes in some files only: null
        check_uid_column(table.column("uid"), f"{path} (its files in name order)", error=DownloadError)
        return table
    table = _read_one_url_list(path, add_missing_uids)
    return table


def _read_one_url_list(path: Path, add_missing_uids: bool = False):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ..schema import OPTIONAL, URL_LIST, check_schema

    if not path.exists():
        raise DownloadError(f"{path}: no such url list (expected a parquet with columns uid, url, text)")
    try:
        pf = pq.ParquetFile(path)
    except Exception as e:
        raise DownloadError(f"{path}: not a readable parquet file ({e})") from None
    required = dict(URL_LIST)
    if add_missing_uids and "uid" not in pf.schema_arrow.names:
        required.pop("uid")
    optional = {FACE_BOXES: OPTIONAL[FACE_BOXES]} if FACE_BOXES in pf.schema_arrow.names else {}
    if CHECKSUM in pf.schema_arrow.names:   # kept for --verify-sha256
        optional[CHECKSUM] = pa.string()
    check_schema(pf.schema_arrow, str(path), required=required, optional=optional)
    table = pf.read(columns=[c for c in ("uid", "url", "text", *optional) if c in pf.schema_arrow.names])
    if "uid" not in table.column_names:
        table = _with_uids(table)
    # upstream's face_bboxes ([[x0, y0, x1, y1], ...] relative to the image) travel with the urls: img2dataset
    # blurs them while downloading, as upstream's download_upstream.py has it do
    table = table.select(["uid", "url", "text", *optional]).cast(
        pa.schema([("uid", pa.string()), ("url", pa.string()), ("text", pa.string()), *optional.items()]))
    import pyarrow.compute as pc

    for col in ("url", "uid"):
        nulls = table.column(col).is_null()
        if pc.any(nulls).as_py():
            row = pc.index(nulls, True).as_py()
            raise DownloadError(f"{path}: row {row}: column {col!r} is empty")
    check_uid_column(table.column("uid"), str(path), error=DownloadError)
    return table


def _with_uids(table):
    """A crawl's url+text list without uids: a deterministic uid per (url, text, occurrence)."""
    import pyarrow as pa

    from ..uids import make_uid

    seen: dict[tuple, int] = {}
    uids = []
    for url, text in zip(table.column("url").to_pylist(), table.column("text").to_pylist()):
        n = seen.get((url, text), 0)
        seen[(url, text)] = n + 1
        uids.append(make_uid("datacurate-url", url, text, n))
    return table.append_column("uid", pa.array(uids, pa.string()))


def _table_fingerprint(table) -> str:
    import hashlib

    h = hashlib.sha256()
    for col in ("uid", "url", "text"):
        for v in table.column(col).to_pylist():
            h.update((v or "").encode("utf-8"))
            h.update(b"\x00")
    return h.hexdigest()


def samples_per_shard_for(manifest: dict, n_rows: int) -> int:
    """The pool's scale's shard size; for a url list of no known scale, by its length."""
    from ..scales import SCALES

    if manifest.get("scale") in SCALES:
        return SCALES[manifest["scale"]].shard_size
    if n_rows <= 5_000:
        return SCALES["micro"].shard_size
    if n_rows <= 200_000:
        return SCALES["tiny"].shard_size
    return SCALES["small"].shard_size


# ----------------------------------------------------------------------------- failures

_REASONS = [
    (re.compile(r"HTTP Error 404"), "http_404"),
    (re.compile(r"HTTP Error (\d{3})"), None),  # http_<code>
    (re.compile(r"timed out|timeout", re.I), "timeout"),
    (re.compile(r"Connection refused"), "connection_refused"),
    (re.compile(r"Connection reset|RemoteDisconnected|IncompleteRead", re.I), "connection_broken"),
    (re.compile(r"Name or service not known|getaddrinfo|nodename nor servname", re.I), "dns"),
    (re.compile(r"CERTIFICATE|SSL", re.I), "ssl"),
    (re.compile(r"unknown url type|no host given", re.I), "bad_url"),
    (re.compile(r"X-Robots-Tag"), "disallowed_by_robots_tag"),
    (re.compile(r"hash mismatch"), "hash_mismatch"),
    (re.compile(r"decod", re.I), "undecodable_image"),
    (re.compile(r"image too small"), "image_too_small"),
    (re.compile(r"area too large"), "image_too_large"),
    (re.compile(r"aspect ratio"), "aspect_ratio"),
]


def failure_reason(status: str | None, error_message: str | None) -> str:
    """img2dataset's status + error_message -> a short reason (http_404, undecodable_image, ...)."""
    msg = error_message or ""
    for pattern, reason in _REASONS:
        m = pattern.search(msg)
        if m:
            return reason or f"http_{m.group(1)}"
    if status == "failed_to_resize":
        return "image_processing_error"
    return "other_download_error" if msg else "unknown"


# ----------------------------------------------------------------------------- shard state

def _shard_complete(shards: Path, name: str) -> bool:
    """A shard is complete when img2dataset's stats, parquet and tar all exist and are readable."""
    import pyarrow.parquet as pq

    stats, parquet, tar = (shards / f"{name}_stats.json", shards / f"{name}.parquet", shards / f"{name}.tar")
    if not (stats.exists() and parquet.exists() and tar.exists()):
        return False
    try:
        json.loads(stats.read_text())
        pq.ParquetFile(parquet)
    except Exception:
        return False
    return True


def _repair(pool: Path, n_shards: int) -> None:
    """Forget shards whose files are missing or damaged (a killed run), so img2dataset redoes
    them, and their metadata, which would be stale."""
    lay = PoolLayout.at(pool)
    for i in range(n_shards):
        name = shard_name(i)
        if not _shard_complete(lay.shards, name):
            lay.download_stats(name).unlink(missing_ok=True)
            lay.parquet(name).unlink(missing_ok=True)


def _check_settings(pool: Path, settings: dict) -> None:
    """The shards already on disk must come from the same url list cut the same way."""
    path = pool / STATE_DIR / "settings.json"
    if path.exists():
        old = json.loads(path.read_text())
        for k in ("samples_per_shard", "url_list_sha256", "bbox_blurring", "verify_sha256"):
            if old.get(k) != settings.get(k):
                raise DownloadError(
                    f"{pool}/shards was started with {k}={old.get(k)!r}, now {settings.get(k)!r}; "
                    f"rerun with the same settings or remove {pool}/shards, {pool}/metadata and {path}")
    elif any(PoolLayout.at(pool).shards.glob("*_stats.json")):
        raise DownloadError(f"{pool}/shards holds shards from an unknown run ({path} is missing); "
                            "remove the shards folder to download again")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, settings)


class _Poller:
    """Calls ``poll`` every ``interval`` seconds in a thread while its ``with`` block runs, and
    once more as the block ends (what happened since the last look), then ``close``."""

    interval = 0.5

    def poll(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.poll()

    def __enter__(self):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name=f"datacurate-{type(self).__name__}")
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.poll()
        self.close()


class FileCountProgress(_Poller):
    """A tqdm over shards, fed by counting the files a distributed job leaves as each shard ends
    (img2dataset's ``*_stats.json``, reshard's ``*.tar``): Spark's own progress is per job."""

    def __init__(self, folder: Path, pattern: str, total: int, desc: str, enabled: bool = True):
        self.folder, self.pattern, self.total, self.desc, self.enabled = folder, pattern, total, desc, enabled

    def _count(self) -> int:
        return min(self.total, sum(1 for _ in self.folder.glob(self.pattern)))

    def __enter__(self):
        from tqdm import tqdm

        self.bar = tqdm(total=self.total, initial=self._count(), unit="shard", desc=self.desc,
                        disable=not self.enabled, dynamic_ncols=True)
        return super().__enter__()

    def poll(self) -> None:
        n = self._count()
        if n != self.bar.n:
            self.bar.update(n - self.bar.n)

    def close(self) -> None:
        self.bar.close()


class ShardCollector(_Poller):
    """Moves each shard img2dataset finishes in ``run`` into ``shards`` while the job runs.

    A shard is finished when its ``NNNNN_stats.json`` exists (img2dataset writes it after
    closing the tar and parquet); the tar and parquet are moved first and the stats last, so
    ``shards`` never holds stats for a shard whose files are not all there.
    """

    interval = 0.2

    def __init__(self, run: Path, shards: Path, skip: set[str]):
        self.run, self.shards, self.skip = run, shards, set(skip)

    def poll(self) -> None:
        for stats in sorted(self.run.glob("*_stats.json")):
            name = stats.name[:-len("_stats.json")]
            if name in self.skip:
                continue
            for part in (f"{name}.tar", f"{name}.parquet"):
                if (self.run / part).exists():
                    os.replace(self.run / part, self.shards / part)
            os.replace(stats, self.shards / stats.name)
            self.skip.add(name)


# ----------------------------------------------------------------------------- img2dataset

def _ensure_active_session(spark) -> None:
    """img2dataset's pyspark distributor uses SparkSession.getActiveSession() (per thread);
    without one it starts its own 16 GB session and stops it. Make ``spark`` the active one."""
    from pyspark.sql import SparkSession

    if SparkSession.getActiveSession() is not None:
        return
    try:
        SparkSession._get_j_spark_session_class(spark._jvm).setActiveSession(spark._jsparkSession)
    except Exception:
        pass
    if SparkSession.getActiveSession() is None:
        raise RuntimeError("could not make the given SparkSession active in this thread; "
                           "call download_pool from the thread that created the session")


def _run_img2dataset(input_parquet: Path, shards: Path, *, samples_per_shard: int, image_size: int,
                     threads: int, distributor: str, processes: int, timeout: int, bbox_col: str | None = None,
                     politeness, verify_sha256: bool = False) -> None:
    import signal

    import img2dataset

    from .politeness import polite

    previous = signal.getsignal(signal.SIGINT)
    try:
        with polite(politeness):   # at most per_host requests in flight to one host per process
            img2dataset.download(
                url_list=str(input_parquet),
                input_format="parquet",
                url_col="url",
                caption_col="text",
                save_additional_columns=["uid"],
                output_folder=str(shards),
                output_format="webdataset",
                incremental_mode="incremental",
                number_sample_per_shard=samples_per_shard,
                oom_shard_count=SHARD_DIGITS,  # NNNNN.tar (docs/formats.md); upstream DataComp uses 8
                image_size=image_size,
                resize_mode=RESIZE_MODE,
                resize_only_if_bigger=True,
                encode_format="jpg",
                compute_hash="sha256",
                # the bytes fetched must hash to the url list's sha256 (else "hash mismatch", not kept)
                verify_hash=[CHECKSUM, "sha256"] if verify_sha256 else None,
                distributor=distributor,
                processes_count=processes,
                thread_count=threads,
                timeout=timeout,
                retries=0,
                max_shard_retry=1,
                enable_wandb=False,
                # the User-Agent names the project ("(compatible; datacurate; ...)"), and a site's
                # X-Robots-Tag noai/noimageai (img2dataset's default directives) for it or for all is obeyed
                user_agent_token=USER_AGENT_TOKEN,
                bbox_col=bbox_col,         # upstream: "face_bboxes" unless --skip_bbox_blurring
            )
    except SystemExit:  # img2dataset's SIGINT handler exits with status 0
        raise KeyboardInterrupt from None
    finally:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, previous)


# ----------------------------------------------------------------------------- metadata

def convert_shard(pool: Path, name: str, canonical: dict) -> dict:
    """img2dataset's NNNNN.parquet -> POOL/metadata/NNNNN.parquet (successes, upstream schema).

    Returns the shard's counts (tried, succeeded, failed by reason). The metadata is
    written once; a shard already converted is only counted.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from ..schema import OPTIONAL, cast_to_upstream, write_table_atomic

    lay = PoolLayout.at(pool)
    t = pq.read_table(lay.download_parquet(name))
    status = t.column("status").to_pylist()
    errors = t.column("error_message").to_pylist()
    reasons: dict[str, int] = {}
    messages: dict[str, int] = {}
    for s, e in zip(status, errors):
        if s != "success":
            r = failure_reason(s, e)
            reasons[r] = reasons.get(r, 0) + 1
            messages[e or s or "?"] = messages.get(e or s or "?", 0) + 1
    ok = t.filter(pc.equal(t.column("status"), "success"))
    out = lay.parquet(name)
    if not out.exists():
        ok = ok.sort_by("key")
        uids = ok.column("uid").to_pylist()
        missing = [u for u in uids if u not in canonical]
        if missing:
            raise DownloadError(f"{pool}/shards/{name}.parquet: uid {missing[0]} is not in the url list "
                                "(the shards come from another url list)")
        meta = pa.table({
            "uid": pa.array(uids, pa.string()),
            "url": pa.array([canonical[u][0] for u in uids], pa.string()),
            "text": pa.array([canonical[u][1] for u in uids], pa.string()),
            "original_width": ok.column("original_width").cast(pa.int64()),
            "original_height": ok.column("original_height").cast(pa.int64()),
            "sha256": ok.column("sha256").cast(pa.string()),
            "key": ok.column("key").cast(pa.string()),
        })
        if uids and len(canonical[uids[0]]) > 2:   # the url list's face boxes, kept as upstream's metadata has them
            meta = meta.append_column(FACE_BOXES, pa.array([canonical[u][2] for u in uids], OPTIONAL[FACE_BOXES]))
        write_table_atomic(cast_to_upstream(meta), out)
    return {"tried": t.num_rows, "succeeded": ok.num_rows, "failed": t.num_rows - ok.num_rows,
            "failed_by_reason": reasons, "error_messages": messages}


# ----------------------------------------------------------------------------- the job

def download_pool(pool: str | os.PathLike, master: str | None = None, spark=None, *,
                  input: str | os.PathLike | None = None, samples_per_shard: int | None = None,
                  image_size: int = IMAGE_SIZE, threads: int = 32, delay: float = 0.0,
                  distributor: str = "pyspark", processes: int | None = None, timeout: int = 10,
                  progress: bool = True, blur_faces: bool = True, verify_sha256: bool = False,
                  per_host: int | None = None, host_interval: float = 0.0) -> dict:
    """Download POOL's url list into POOL/shards and POOL/metadata; return the summary.

    ``spark``: an existing SparkSession (else one from ``datacurate.spark.get_spark(master)``).
    ``input``: a url+text parquet (uid optional) to download instead of POOL/urls.parquet;
    it is copied to POOL/urls.parquet. ``delay``: per-request latency of the loopback server.
    ``distributor``: "pyspark" (the job) or "multiprocessing" (img2dataset's own, for benchmarks).
    ``blur_faces``: a url list with upstream's ``face_bboxes`` has those boxes blurred in the images, as
    upstream's download does (False: its ``--skip_bbox_blurring``). ``verify_sha256``: each image's
    bytes must hash to the url list's ``sha256`` column (upstream's metadata has it); one that does
    not is a failure, reason ``hash_mismatch`` (the page changed since it was crawled).
    ``per_host`` / ``host_interval``: at most that many requests in flight to one host, started at
    least that many seconds apart, per download process (``datacurate.pool.politeness``; default
    8 and 0; ``per_host=0``: no limit); the offline pool's own loopback server is not limited.
    """
    from ..env import apply_offline_env
    from ..schema import write_table_atomic
    from .politeness import DEFAULT_PER_HOST, Politeness

    apply_offline_env()
    t_start = time.time()
    pool = Path(pool)
    per_host = DEFAULT_PER_HOST if per_host is None else int(per_host)
    if per_host < 0 or host_interval < 0:
        raise DownloadError(f"--per-host ({per_host}) and --host-interval ({host_interval}) must be >= 0")
    if distributor not in ("pyspark", "multiprocessing"):
        raise DownloadError(f"unknown distributor {distributor!r}; use pyspark or multiprocessing")
    urls_path = PoolLayout.at(pool).urls
    if input is not None:
        table = read_url_list(Path(input), add_missing_uids=True)
        if urls_path.exists():
            if _table_fingerprint(read_url_list(urls_path)) != _table_fingerprint(table):
                raise DownloadError(f"{urls_path} exists and differs from --input {input}; "
                                    "use another --pool folder")
        else:
            write_table_atomic(table, urls_path)
    elif not pool.is_dir():
        raise DownloadError(f"{pool}: no such pool folder (make one with `datacurate pool build`)")
    table = read_url_list(urls_path)
    if table.num_rows == 0:
        raise DownloadError(f"{urls_path}: the url list is empty")
    manifest = read_manifest(pool)
    sps = int(samples_per_shard or samples_per_shard_for(manifest, table.num_rows))
    if sps < 1:
        raise DownloadError(f"samples per shard must be >= 1, got {sps}")
    n_shards = math.ceil(table.num_rows / sps)
    lay = PoolLayout.at(pool)
    shards, metadata = lay.shards, lay.metadata
    shards.mkdir(parents=True, exist_ok=True)
    metadata.mkdir(parents=True, exist_ok=True)
    bbox_col = FACE_BOXES if blur_faces and FACE_BOXES in table.column_names else None
    settings = {"samples_per_shard": sps, "url_list_sha256": _table_fingerprint(table),
                "shards": n_shards, "image_size": image_size, "resize_mode": RESIZE_MODE}
    if FACE_BOXES in table.column_names:
        settings["bbox_blurring"] = bbox_col is not None
    if verify_sha256:
        if CHECKSUM not in table.column_names:
            raise DownloadError(f"{urls_path}: no {CHECKSUM!r} column to verify the images against; "
                                "drop --verify-sha256 or give the url list its checksums")
        settings["verify_sha256"] = True
    _check_settings(pool, settings)
    _repair(pool, n_shards)
    names = [shard_name(i) for i in range(n_shards)]
    todo = [n for n in names if not _shard_complete(shards, n)]
    summary_path = lay.download_summary_path
    if not todo and summary_path.exists() and all(lay.parquet(n).exists() for n in names):
        print(f"pool download: all {n_shards} shard(s) already downloaded ({summary_path})", flush=True)
        return json.loads(summary_path.read_text())
    url_base = manifest.get("url_base")
    www = PoolLayout.at(pool).www
    served = bool(url_base) and www.is_dir()
    spark_startup = None
    download_s = 0.0
    master_used = None
    if todo:
        print(f"pool download: {len(todo)} of {n_shards} shard(s) to fetch "
              f"({table.num_rows} samples, {sps} per shard, {'loopback server' if served else 'web'})",
              flush=True)
        if distributor == "pyspark":
            if spark is None:
                from ..spark import get_spark

                t = time.time()
                spark = get_spark(master, app_name="datacurate-pool-download")
                spark.range(1).count()  # start executors now, so start-up is timed apart
                spark_startup = time.time() - t
            _ensure_active_session(spark)
            master_used = spark.sparkContext.master
            processes = processes or spark.sparkContext.defaultParallelism
        else:
            processes = processes or os.cpu_count() or 1
        t = time.time()
        remote = master_used is not None and not master_used.startswith("local")
        # executors on other machines reach the driver's server by its host name
        bind = ("0.0.0.0", spark.conf.get("spark.driver.host", None)) if remote else ("127.0.0.1", None)
        _download(pool, table, url_base if served else None, delay, bind, shards, n_shards, set(names) - set(todo),
                  progress, samples_per_shard=sps, image_size=image_size,
                  threads=threads, distributor=distributor, processes=processes, timeout=timeout, bbox_col=bbox_col,
                  verify_sha256=verify_sha256, politeness=Politeness(per_host=per_host, interval=host_interval))
        download_s = time.time() - t
        still = [n for n in names if not _shard_complete(shards, n)]
        if still:
            raise RuntimeError(f"{len(still)} shard(s) failed to download ({', '.join(still[:5])}...); "
                               "run the same command again to retry them")
    cols = [table.column(c).to_pylist() for c in ("uid", "url", "text", FACE_BOXES) if c in table.column_names]
    canonical = {row[0]: tuple(row[1:]) for row in zip(*cols)}   # uid -> (url, text[, face boxes])
    per_shard = {}
    reasons: dict[str, int] = {}
    messages: dict[str, int] = {}
    for name in names:
        c = convert_shard(pool, name, canonical)
        for k, v in c.pop("failed_by_reason").items():
            reasons[k] = reasons.get(k, 0) + v
        for k, v in c.pop("error_messages").items():
            messages[k] = messages.get(k, 0) + v
        per_shard[name] = c
    from importlib.metadata import version

    summary = {
        "pool": str(pool),
        "input": str(urls_path),
        "served_from": "loopback" if served else "web",
        "samples_per_shard": sps,
        "shards": n_shards,
        "shards_fetched_now": len(todo),
        "tried": sum(c["tried"] for c in per_shard.values()),
        "succeeded": sum(c["succeeded"] for c in per_shard.values()),
        "failed": sum(c["failed"] for c in per_shard.values()),
        "failed_by_reason": dict(sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))),
        "error_messages": dict(sorted(messages.items(), key=lambda kv: (-kv[1], kv[0]))[:20]),
        "per_shard": per_shard,
        "distributor": distributor,
        "master": master_used,
        "processes": processes,
        "threads": threads,
        "per_host": per_host,
        "host_interval_s": host_interval,
        "image_size": image_size,
        "resize_mode": RESIZE_MODE,
        "bbox_blurring": bbox_col,
        "verify_sha256": verify_sha256,
        "img2dataset": version("img2dataset"),
        "spark_startup_s": None if spark_startup is None else round(spark_startup, 3),
        "download_s": round(download_s, 3),
        "wall_time_s": round(time.time() - t_start, 3),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if summary["tried"] != table.num_rows:
        raise RuntimeError(f"{pool}/shards hold {summary['tried']} samples but {urls_path} has "
                           f"{table.num_rows}; remove {pool}/shards and {pool}/metadata and download again")
    write_json_atomic(summary_path, summary)
    return summary


def _download(pool: Path, table, url_base: str | None, delay: float, bind: tuple, shards: Path,
              n_shards: int, done: set[str], progress: bool, **kw) -> None:
    """Write the input img2dataset reads (urls rewritten to the server) and run it; ``done``: the
    shards already complete in ``shards``."""
    import contextlib
    import dataclasses
    from urllib.parse import urlsplit

    import pyarrow as pa

    from ..schema import write_table_atomic
    from .serve import serve_directory

    state = pool / STATE_DIR
    state.mkdir(parents=True, exist_ok=True)
    for old in state.glob("run-*"):  # a killed run's: its stray workers may still write there
        shutil.rmtree(old, ignore_errors=True)
    run = state / f"run-{os.getpid()}-{time.time_ns()}"
    run.mkdir()
    for name in done:  # img2dataset skips the shards whose stats its output folder holds
        shutil.copyfile(shards / f"{name}_stats.json", run / f"{name}_stats.json")
    input_parquet = state / "input.parquet"
    with contextlib.ExitStack() as stack:
        if url_base is not None:
            base = stack.enter_context(serve_directory(PoolLayout.at(pool).www, host=bind[0], advertise=bind[1],
                                                       delay=delay))
            urls = [base + u[len(url_base):] if u.startswith(url_base) else u
                    for u in table.column("url").to_pylist()]
            table = table.set_column(table.column_names.index("url"), "url", pa.array(urls, pa.string()))
            # our own server, not a site to be polite to
            kw["politeness"] = dataclasses.replace(kw["politeness"], exempt=(urlsplit(base).netloc.lower(),))
        write_table_atomic(table, input_parquet)
        with FileCountProgress(shards, "*_stats.json", n_shards, "pool download", enabled=progress), \
                ShardCollector(run, shards, skip=done):
            _run_img2dataset(input_parquet, run, **kw)
    input_parquet.unlink(missing_ok=True)
    shutil.rmtree(run, ignore_errors=True)


# ----------------------------------------------------------------------------- CLI

EPILOG = """\
examples:
  datacurate pool download --pool runs/micro/pool
  datacurate pool download --pool runs/tiny/pool --master spark://head:7077
  datacurate pool download --pool crawl --input crawl_urls.parquet   # a real crawl (needs the web)

The job is resumable: run it again after an interruption and only the missing
shards are fetched. POOL/download_summary.json is written when everything is done."""


def add_parser(psub) -> None:
    p = psub.add_parser(
        "download", help="download a pool's url list with img2dataset on Spark",
        description="Fetch POOL/urls.parquet (uid, url, text) with img2dataset's pyspark distributor "
                    "into POOL/shards (webdataset) and POOL/metadata (upstream schema). The offline "
                    "pool's POOL/www is served on 127.0.0.1 while the job runs.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pool", required=True, type=Path, help="pool folder")
    p.add_argument("--input", type=Path, default=None,
                   help="url+text parquet to download instead of POOL/urls.parquet (uid column optional), or a "
                        "folder of them (upstream's metadata as it ships: NNNNNNNN.parquet, read in name order)")
    p.add_argument("--master", default=None, help="Spark master URL (default local[*])")
    p.add_argument("--samples-per-shard", type=int, default=None,
                   help="samples per shard (default: 256 micro, 1000 tiny, 10000 upstream)")
    p.add_argument("--image-size", type=int, default=IMAGE_SIZE,
                   help=f"longest side kept, images are only shrunk (default {IMAGE_SIZE})")
    p.add_argument("--threads", type=int, default=32, help="download threads per shard (default 32)")
    p.add_argument("--per-host", type=int, default=None,
                   help="requests in flight to one host at most, per download process (default 8; 0: no limit)")
    p.add_argument("--host-interval", type=float, default=0.0,
                   help="seconds between two request starts to one host, per download process (default 0)")
    p.add_argument("--delay", type=float, default=0.0,
                   help="per-request latency of the loopback server in seconds (imitates the web)")
    p.add_argument("--distributor", choices=["pyspark", "multiprocessing"], default="pyspark",
                   help="img2dataset distributor (default pyspark)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--skip-bbox-blurring", action="store_true",
                   help="keep the faces of a url list with upstream's face_bboxes column unblurred (upstream's "
                        "--skip_bbox_blurring); by default img2dataset blurs them while downloading")
    p.add_argument("--verify-sha256", action="store_true",
                   help="check each image's bytes against the url list's sha256 column (upstream's metadata "
                        "ships it); a mismatch is counted as failed, reason hash_mismatch")
    p.set_defaults(func=_cmd)


def _cmd(args) -> int:
    from .summary import print_summary, pool_summary

    download_pool(args.pool, master=args.master, input=args.input, samples_per_shard=args.samples_per_shard,
                  image_size=args.image_size, threads=args.threads, delay=args.delay,
                  distributor=args.distributor, progress=not args.no_progress,
                  blur_faces=not args.skip_bbox_blurring, verify_sha256=args.verify_sha256,
                  per_host=args.per_host, host_interval=args.host_interval)
    print_summary(pool_summary(args.pool))
    return 0
