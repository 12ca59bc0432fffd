"""`pool download`: real img2dataset on Spark local[2] from a real loopback HTTP server."""
from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from download_pool_maker import URL_BASE, make_download_pool

ROOT = Path(__file__).resolve().parents[1]
SPS = 16  # samples per shard for the hand-made pool: 37 samples -> 3 shards


def read_all_metadata(pool: Path) -> pa.Table:
    return pa.concat_tables([pq.read_table(p) for p in sorted((pool / "metadata").glob("*.parquet"))])


def tar_samples(pool: Path) -> dict[str, dict]:
    """key -> {ext: bytes} over every pool shard; fails on a key seen twice."""
    out: dict[str, dict] = {}
    for path in sorted((pool / "shards").glob("*.tar")):
        with tarfile.open(path) as tf:
            for m in tf:
                key, _, ext = m.name.partition(".")
                out.setdefault(key, {})
                assert ext not in out[key], f"{m.name} twice"
                out[key][ext] = tf.extractfile(m).read()
    return out


@pytest.fixture(scope="module")
def handmade(tmp_path_factory, spark):
    from datacurate.pool.download import download_pool

    pool = tmp_path_factory.mktemp("dl") / "pool"
    truth = make_download_pool(pool)
    summary = download_pool(pool, spark=spark, samples_per_shard=SPS, progress=False)
    return pool, truth, summary


def test_every_good_sample_arrives_once_intact(handmade):
    from PIL import Image

    from datacurate.schema import read_metadata

    pool, truth, summary = handmade
    for p in sorted((pool / "metadata").glob("*.parquet")):
        read_metadata(p)  # upstream schema, valid unique uids
    meta = read_all_metadata(pool)
    uids = meta.column("uid").to_pylist()
    assert len(uids) == len(set(uids)) == len(truth["good"])
    assert set(uids) == set(truth["good"])
    assert meta.column_names == ["uid", "url", "text", "original_width", "original_height", "sha256", "key"]
    samples = tar_samples(pool)
    assert len(samples) == len(truth["good"])  # only successes in the tars
    for row in meta.to_pylist():
        url, text, w, h = truth["good"][row["uid"]]
        assert row["url"] == url and row["url"].startswith(URL_BASE)  # canonical, not the loopback one
        assert row["text"] == text
        assert (row["original_width"], row["original_height"]) == (w, h)
        rel = url[len(URL_BASE):]
        assert row["sha256"] == hashlib.sha256((pool / "www" / rel).read_bytes()).hexdigest()
        s = samples[row["key"]]
        assert s["txt"].decode() == text
        assert json.loads(s["json"])["uid"] == row["uid"]
        img = Image.open(io.BytesIO(s["jpg"]))
        scale = min(1.0, 256 / max(w, h))  # longest side to 256 only when bigger, ratio kept
        assert abs(img.size[0] - w * scale) <= 1 and abs(img.size[1] - h * scale) <= 1
    assert summary["succeeded"] == len(truth["good"])


def test_broken_urls_and_undecodable_images_counted_with_reason(handmade):
    pool, truth, summary = handmade
    assert summary["tried"] == len(truth["good"]) + len(truth["missing"]) + len(truth["garbage"])
    assert summary["failed"] == len(truth["missing"]) + len(truth["garbage"])
    assert summary["failed_by_reason"] == {"http_404": len(truth["missing"]),
                                           "undecodable_image": len(truth["garbage"])}
    assert summary["shards"] == 3 and summary["samples_per_shard"] == SPS
    assert sum(c["tried"] for c in summary["per_shard"].values()) == summary["tried"]
    # per sample: img2dataset's own parquet says why each one failed
    from datacurate.pool.download import failure_reason

    rows = pa.concat_tables([pq.read_table(p) for p in sorted((pool / "shards").glob("*.parquet"))]).to_pylist()
    why = {r["uid"]: failure_reason(r["status"], r["error_message"]) for r in rows if r["status"] != "success"}
    assert why == {**{u: "http_404" for u in truth["missing"]}, **{u: "undecodable_image" for u in truth["garbage"]}}
    on_disk = json.loads((pool / "download_summary.json").read_text())
    assert on_disk["succeeded"] == summary["succeeded"] and on_disk["master"] == "local[2]"
    assert not (pool / "shards" / "_tmp").exists()


def test_second_run_redoes_nothing(handmade, spark):
    from datacurate.pool.download import download_pool

    pool, truth, summary = handmade
    files = sorted(p for d in ("shards", "metadata") for p in (pool / d).iterdir())
    before = {p: p.stat().st_mtime_ns for p in files + [pool / "download_summary.json"]}
    again = download_pool(pool, spark=spark, samples_per_shard=SPS, progress=False)
    assert again == summary
    assert {p: p.stat().st_mtime_ns for p in before} == before
    assert sorted(p for d in ("shards", "metadata") for p in (pool / d).iterdir()) == files


def test_pool_summary_lists_sources_licences_and_failures(handmade, capsys):
    from datacurate.cli import main

    pool, truth, _ = handmade
    assert main(["pool", "summary", "--pool", str(pool)]) == 0
    out = capsys.readouterr().out
    assert "hand-drawn rectangles" in out and "CC0-1.0" in out
    assert f"{len(truth['good'])} of {len(truth['good']) + 7} samples" in out
    assert f"http_404 {len(truth['missing'])}" in out and f"undecodable_image {len(truth['garbage'])}" in out


def test_killed_download_resumes_to_the_same_samples(tmp_path, spark, handmade):
    """Kill `datacurate pool download` once its first shard is written; the rerun loses and doubles nothing."""
    from datacurate.env import child_env
    from datacurate.pool.download import download_pool

    pool = tmp_path / "pool"
    truth = make_download_pool(pool)  # same seed: the same uids as the uninterrupted `handmade` run
    sps, n_shards = 6, 7
    cmd = [sys.executable, "-m", "datacurate", "pool", "download", "--pool", str(pool), "--master", "local[2]",
           "--samples-per-shard", str(sps), "--delay", "0.4", "--threads", "2", "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=child_env(), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 360  # Spark start-up in a fresh process, on a busy machine
        while not list((pool / "shards").glob("*_stats.json")):
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.time() < deadline, "no shard finished in time"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the job, its JVM and Python workers: one process group
        proc.wait()
        proc.stderr.close()
    done_at_kill = len(list((pool / "shards").glob("*_stats.json")))
    assert 1 <= done_at_kill < n_shards
    assert not (pool / "download_summary.json").exists()

    summary = download_pool(pool, spark=spark, samples_per_shard=sps, progress=False)
    assert summary["shards"] == n_shards and summary["shards_fetched_now"] <= n_shards - done_at_kill + 1
    meta = read_all_metadata(pool)
    uids = meta.column("uid").to_pylist()
    assert len(uids) == len(set(uids))
    assert set(uids) == set(truth["good"]) == set(read_all_metadata(handmade[0]).column("uid").to_pylist())
    assert len(tar_samples(pool)) == len(uids)
    assert summary["failed_by_reason"] == handmade[2]["failed_by_reason"]


def test_a_killed_runs_stray_workers_cannot_touch_the_rerun(tmp_path, spark, handmade):
    """A killed run's Spark workers outlive it (PySpark's daemon has its own process group) and
    finish shards into that run's folder; the rerun neither reads those nor lets them into shards/."""
    import threading

    from datacurate.pool.download import STATE_DIR, download_pool

    pool = tmp_path / "pool"
    truth = make_download_pool(pool)
    stale = pool / STATE_DIR / "run-killed"
    stop = threading.Event()

    def stray_worker():  # keeps "finishing" a junk shard 00001 in the killed run's folder
        while not stop.wait(0.02):
            try:
                stale.mkdir(parents=True, exist_ok=True)
                for name, data in (("00001.tar", b"junk"), ("00001.parquet", b"junk"), ("00001_stats.json", b"{}")):
                    (stale / name).write_bytes(data)
            except OSError:  # its folder removed under it: a stray worker's write fails
                pass

    t = threading.Thread(target=stray_worker, daemon=True)
    t.start()
    try:
        summary = download_pool(pool, spark=spark, samples_per_shard=SPS, progress=False)
    finally:
        stop.set()
        t.join()
    meta = read_all_metadata(pool)
    assert set(meta.column("uid").to_pylist()) == set(truth["good"])
    assert len(tar_samples(pool)) == len(truth["good"])
    assert summary["failed_by_reason"] == handmade[2]["failed_by_reason"]
    assert [p.name for p in (pool / STATE_DIR).glob("run-*")] in ([], ["run-killed"])  # ours is gone


def _write(path: Path, cols: dict) -> Path:
    pq.write_table(pa.table(cols), path)
    return path


def test_bad_url_lists_refused_with_clear_errors(tmp_path):
    from datacurate.cli import main
    from datacurate.errors import UserError
    from datacurate.pool.download import download_pool

    pool = tmp_path / "pool"
    pool.mkdir()
    with pytest.raises(UserError, match=r"urls\.parquet: no such url list"):
        download_pool(pool)
    good_uid, other = "0" * 31 + "1", "0" * 31 + "2"
    cases = [
        ({"uid": [good_uid], "url": ["http://x/a.jpg"]}, r"urls\.parquet: missing column\(s\) text"),
        ({"uid": [good_uid, "NOT-A-UID"], "url": ["a", "b"], "text": ["x", "y"]}, r"urls\.parquet: row 1: .*not 32 lowercase hex"),
        ({"uid": [good_uid, good_uid], "url": ["a", "b"], "text": ["x", "y"]}, r"row 1: duplicate uid"),
        ({"uid": [good_uid, other], "url": ["a", None], "text": ["x", "y"]}, r"row 1: column 'url' is empty"),
        ({"uid": [1, 2], "url": ["a", "b"], "text": ["x", "y"]}, r"column 'uid' has type int64"),
    ]
    for cols, pattern in cases:
        _write(pool / "urls.parquet", cols)
        with pytest.raises(UserError, match=pattern):
            download_pool(pool)
    (pool / "urls.parquet").write_bytes(b"not parquet")
    with pytest.raises(UserError, match="not a readable parquet"):
        download_pool(pool)
    assert not (pool / "shards").exists() or not any((pool / "shards").iterdir())
    # the CLI prints one line naming the file and exits 2
    r = subprocess.run([sys.executable, "-m", "datacurate", "pool", "download", "--pool", str(tmp_path / "nope")],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "no such pool folder" in r.stderr and "Traceback" not in r.stderr


def test_input_without_uids_takes_the_web_path(tmp_path, spark):
    """A crawl's url+text parquet (no uid, no server): uids are added, dead hosts counted as failures."""
    from datacurate.pool.download import download_pool

    crawl = _write(tmp_path / "crawl.parquet", {"url": [f"http://127.0.0.1:9/img{i}.jpg" for i in range(5)] * 2,
                                                 "text": [f"caption {i}" for i in range(5)] * 2})
    pool = tmp_path / "crawl_pool"
    s = download_pool(pool, spark=spark, input=crawl, progress=False)
    urls = pq.read_table(pool / "urls.parquet")
    assert urls.num_rows == 10 and len(set(urls.column("uid").to_pylist())) == 10  # repeated pairs: distinct uids
    assert s["served_from"] == "web" and s["tried"] == 10 and s["succeeded"] == 0
    assert s["failed_by_reason"] == {"connection_refused": 10}
    assert read_all_metadata(pool).num_rows == 0


def test_micro_pool_download_matches_ground_truth(micro_pool):
    """The builder's `micro` pool: broken urls and undecodable files fail for that reason, the rest arrive."""
    gt = pq.read_table(micro_pool / "ground_truth.parquet").to_pylist()
    summary = json.loads((micro_pool / "download_summary.json").read_text())
    defects = {r["uid"]: r["defect"] for r in gt}
    uids = read_all_metadata(micro_pool).column("uid").to_pylist()
    assert len(uids) == len(set(uids))
    assert summary["failed_by_reason"].get("http_404", 0) == sum(d == "broken_url" for d in defects.values())
    assert summary["failed_by_reason"].get("undecodable_image", 0) == sum(d == "undecodable" for d in defects.values())
    assert set(uids) == {u for u, d in defects.items() if d not in ("broken_url", "undecodable")}


def test_input_folder_of_upstream_metadata_parquets(tmp_path):
    """Upstream ships its url lists as a folder of parquets with more columns: read in name order, the
    other columns left aside; a uid in two files is refused naming it."""
    from datacurate.errors import UserError
    from datacurate.pool.download import read_url_list
    from datacurate.uids import make_uid

    meta = tmp_path / "metadata"
    meta.mkdir()
    uids = [make_uid("upstream-meta", i) for i in range(6)]
    for n, sl in (("00000001", slice(3, 6)), ("00000000", slice(0, 3))):   # written out of order
        _write(meta / f"{n}.parquet", {"uid": uids[sl], "url": [f"http://x/{u}.jpg" for u in uids[sl]],
                                       "text": ["t"] * 3, "original_width": [256] * 3,
                                       "clip_b32_similarity_score": [0.3] * 3})
    table = read_url_list(meta)
    assert table.column_names == ["uid", "url", "text"] and table.column("uid").to_pylist() == uids
    _write(meta / "00000002.parquet", {"uid": uids[:1], "url": ["http://x/again.jpg"], "text": ["t"]})
    with pytest.raises(UserError, match=rf"metadata \(its files in name order\): row 6: duplicate uid {uids[0]} \(first at row 0\)"):
        read_url_list(meta)
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(UserError, match=r"empty_dir: a folder without \*\.parquet files"):
        read_url_list(tmp_path / "empty_dir")


def test_face_boxes_are_blurred_as_upstreams_download_does(tmp_path, spark):
    """A url list with upstream's face_bboxes: img2dataset blurs the boxes (bbox_col), the metadata keeps the
    column; --skip-bbox-blurring (upstream's --skip_bbox_blurring) leaves the pixels alone."""
    import numpy as np
    from PIL import Image

    from datacurate.pool.download import download_pool
    from datacurate.uids import make_uid

    rng = np.random.default_rng(0)
    noise = (rng.random((64, 64, 3)) * 255).astype(np.uint8)          # sharp: a blur shows as lost variance
    pools = {}
    for blur in (True, False):
        pool = tmp_path / f"pool_{blur}"
        make_download_pool(pool, n_good=2, n_missing=0, n_garbage=0)
        urls = pq.read_table(pool / "urls.parquet")
        for rel in ("img/face.png", "img/plain.png"):
            Image.fromarray(noise).save(pool / "www" / rel)
        rows = {"uid": [make_uid("faces", 0), make_uid("faces", 1)], "url": [URL_BASE + "img/face.png",
                URL_BASE + "img/plain.png"], "text": ["a face", "no face"],
                "face_bboxes": [[[0.0, 0.0, 1.0, 1.0]], []]}
        pq.write_table(pa.table(rows), pool / "urls.parquet")
        assert urls.num_rows == 2
        s = download_pool(pool, spark=spark, samples_per_shard=4, progress=False, blur_faces=blur)
        assert s["succeeded"] == 2 and s["bbox_blurring"] == ("face_bboxes" if blur else None)
        pools[blur] = pool
    for blur, pool in pools.items():
        meta = read_all_metadata(pool)
        assert meta.column("face_bboxes").to_pylist() == [[[0.0, 0.0, 1.0, 1.0]], []] or \
            sorted(map(str, meta.column("face_bboxes").to_pylist())) == sorted(["[[0.0, 0.0, 1.0, 1.0]]", "[]"])
        by_text = {json.loads(v["json"])["caption"]: np.asarray(Image.open(io.BytesIO(v["jpg"])), dtype=float)
                   for v in tar_samples(pool).values()}
        face, plain = by_text["a face"], by_text["no face"]
        if blur:
            assert face.std() < 0.6 * plain.std(), (face.std(), plain.std())
        else:
            assert abs(face.std() - plain.std()) < 1e-6 and np.array_equal(face, plain)
    with pytest.raises(Exception, match="bbox_blurring"):             # the same shards, now asked unblurred
        download_pool(pools[True], spark=spark, samples_per_shard=4, progress=False, blur_faces=False)


def test_verify_sha256_keeps_only_images_whose_bytes_match_the_url_list(tmp_path, spark):
    """--verify-sha256: upstream's metadata ships each image's sha256; an image whose bytes changed since
    the crawl is a failure (hash_mismatch), the others arrive with that very hash in the metadata."""
    import hashlib

    from datacurate.pool.download import DownloadError, download_pool

    pool = tmp_path / "pool"
    truth = make_download_pool(pool, n_good=4, n_missing=0, n_garbage=0)
    urls = pq.read_table(pool / "urls.parquet")
    sums = [hashlib.sha256((pool / "www" / u[len(URL_BASE):]).read_bytes()).hexdigest()
            for u in urls.column("url").to_pylist()]
    changed = urls.column("uid")[1].as_py()
    sums[1] = hashlib.sha256(b"the picture as it was crawled").hexdigest()
    pq.write_table(urls.append_column("sha256", pa.array(sums, pa.string())), pool / "urls.parquet")
    s = download_pool(pool, spark=spark, samples_per_shard=8, progress=False, verify_sha256=True)
    assert (s["succeeded"], s["failed"], s["failed_by_reason"]) == (3, 1, {"hash_mismatch": 1})
    meta = read_all_metadata(pool)
    want = dict(zip(urls.column("uid").to_pylist(), sums))
    assert changed not in meta.column("uid").to_pylist() and len(truth["good"]) == 4
    assert {u: h for u, h in zip(meta.column("uid").to_pylist(), meta.column("sha256").to_pylist())} == \
        {u: h for u, h in want.items() if u != changed}
    with pytest.raises(DownloadError, match="verify_sha256"):         # the same shards, now unchecked
        download_pool(pool, spark=spark, samples_per_shard=8, progress=False)
    plain = tmp_path / "plain"                                         # without sha256 there is nothing to check
    make_download_pool(plain, n_good=2, n_missing=0, n_garbage=0)
    with pytest.raises(DownloadError, match="no 'sha256' column"):
        download_pool(plain, spark=spark, samples_per_shard=8, progress=False, verify_sha256=True)
    assert not (plain / "shards").exists() or not any((plain / "shards").iterdir())


def _counting_server(png: bytes, hold: float):
    """A loopback 'site' that records how many of its requests were in flight at once and when each began."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    seen = {"inflight": 0, "max": 0, "starts": []}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            with lock:
                seen["inflight"] += 1
                seen["max"] = max(seen["max"], seen["inflight"])
                seen["starts"].append(time.monotonic())
            time.sleep(hold)
            with lock:
                seen["inflight"] -= 1
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(png)))
            self.end_headers()
            self.wfile.write(png)

        def log_message(self, *a):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, seen


def test_per_host_limit_holds_a_sites_requests_in_flight(tmp_path, spark):
    """img2dataset alone sends one host as many requests as it has threads; --per-host caps what is in
    flight to one host per download process, --host-interval spaces their starts; all images still arrive."""
    from PIL import Image

    from datacurate.pool.download import download_pool

    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 30, 30)).save(buf, "PNG")
    server, seen = _counting_server(buf.getvalue(), hold=0.15)
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        crawl = _write(tmp_path / "crawl.parquet", {"url": [f"{base}/img{i}.png" for i in range(12)],
                                                     "text": [f"red square {i}" for i in range(12)]})
        runs = {}
        for name, kw in (("free", {"per_host": 0}), ("one", {"per_host": 1}),
                         ("spaced", {"per_host": 0, "host_interval": 0.1})):
            seen.update(inflight=0, max=0, starts=[])
            s = download_pool(tmp_path / name, spark=spark, input=crawl, samples_per_shard=12, threads=8,
                              progress=False, **kw)
            assert s["succeeded"] == 12 and s["per_host"] == kw["per_host"]
            runs[name] = (seen["max"], sorted(seen["starts"]))
    finally:
        server.shutdown()
        server.server_close()
    assert runs["free"][0] >= 4                # img2dataset's 8 threads at once on one site
    assert runs["one"][0] == 1                 # one shard, one process: one request at a time
    starts = runs["spaced"][1]                 # 12 starts booked 0.1 s apart (the server's clock adds jitter)
    assert starts[-1] - starts[0] >= 11 * 0.1 * 0.9 and runs["spaced"][0] <= 3, starts
    free = runs["free"][1]                     # without the interval two requests may start back to back
    assert min(b - a for a, b in zip(free, free[1:])) < 0.1 * 0.9, free


def test_upstream_metadata_folder_downloads_end_to_end(tmp_path, spark):
    """Upstream's url lists as they ship, 2,000 rows in four NNNNNNNN.parquet files with all of upstream's
    columns, fetched from a loopback site with --verify-sha256: every row tried once, dead links and changed
    images failed by reason, the rest in the metadata under their own uid with upstream's columns kept."""
    import numpy as np
    from PIL import Image

    from datacurate.pool.download import download_pool
    from datacurate.pool.serve import serve_directory
    from datacurate.uids import make_uid

    www = tmp_path / "www"
    www.mkdir()
    rng = np.random.default_rng(0)
    digests = []
    for k in range(10):
        buf = io.BytesIO()
        Image.fromarray((rng.random((48, 64, 3)) * 255).astype(np.uint8)).save(buf, "PNG")
        (www / f"img{k}.png").write_bytes(buf.getvalue())
        digests.append(hashlib.sha256(buf.getvalue()).hexdigest())
    n, dead, changed = 2000, set(range(7, 2000, 97)), set(range(11, 2000, 131))
    meta = tmp_path / "metadata"
    meta.mkdir()
    uids = [make_uid("upstream-download", i) for i in range(n)]
    with serve_directory(www) as base:
        for f, start in enumerate(range(0, n, 500)):
            rows = range(start, start + 500)
            pq.write_table(pa.table({
                "uid": [uids[i] for i in rows],
                "url": [base + (f"gone{i}.png" if i in dead else f"img{i % 10}.png") for i in rows],
                "text": [f"a noisy picture number {i}" for i in rows],
                "original_width": pa.array([64] * 500, pa.int64()),
                "original_height": pa.array([48] * 500, pa.int64()),
                "clip_b32_similarity_score": pa.array(rng.random(500), pa.float32()),
                "clip_l14_similarity_score": pa.array(rng.random(500), pa.float32()),
                "face_bboxes": pa.array([[] for _ in rows], pa.list_(pa.list_(pa.float64()))),
                "sha256": ["0" * 64 if i in changed else digests[i % 10] for i in rows],
            }), meta / f"{f:08d}.parquet")
        s = download_pool(tmp_path / "pool", spark=spark, input=meta, samples_per_shard=500, verify_sha256=True,
                          threads=16, progress=False)
    bad = dead | changed
    assert s["tried"] == n and s["succeeded"] == n - len(bad) and s["per_host"] == 8
    assert s["failed_by_reason"] == {"http_404": len(dead), "hash_mismatch": len(changed - dead)}
    got = read_all_metadata(tmp_path / "pool")
    assert sorted(got.column("uid").to_pylist()) == sorted(uids[i] for i in range(n) if i not in bad)
    assert {"face_bboxes", "sha256", "original_width", "original_height"} <= set(got.column_names)
    by_uid = dict(zip(got.column("uid").to_pylist(), got.column("sha256").to_pylist()))
    assert all(by_uid[uids[i]] == digests[i % 10] for i in range(0, n, 50) if i not in bad)
    samples = tar_samples(tmp_path / "pool")
    assert sorted(json.loads(v["json"])["uid"] for v in samples.values()) == sorted(by_uid)
