"""`reshard`: a subset of a downloaded pool -> webdataset training shards, on Spark local[2]."""
from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from download_pool_maker import make_download_pool

ROOT = Path(__file__).resolve().parents[1]


def read_tar(path: Path) -> list[tuple[str, bytes]]:
    with tarfile.open(path) as tf:
        return [(m.name, tf.extractfile(m).read()) for m in tf]


def pool_samples(pool: Path) -> dict[str, dict]:
    """uid -> {ext: bytes} over the pool's shards."""
    by_key: dict[str, dict] = {}
    for p in sorted((pool / "shards").glob("*.tar")):
        for name, data in read_tar(p):
            key, _, ext = name.partition(".")
            by_key.setdefault(key, {})[ext] = data
    return {json.loads(v["json"])["uid"]: v for v in by_key.values()}


@pytest.fixture(scope="module")
def pool(tmp_path_factory, spark):
    from datacurate.pool.download import download_pool

    pool = tmp_path_factory.mktemp("rs") / "pool"
    truth = make_download_pool(pool, seed=1)
    download_pool(pool, spark=spark, samples_per_shard=8, progress=False)  # 37 samples -> 5 shards
    return pool, truth


@pytest.fixture(scope="module")
def subset(pool, tmp_path_factory):
    from datacurate.uids import make_uid, write_subset

    pool_dir, truth = pool
    good = sorted(truth["good"])
    chosen = good[::2]  # every other downloaded sample
    absent = [make_uid("not in the pool", i) for i in range(3)] + truth["missing"][:1]  # + one that failed
    path = tmp_path_factory.mktemp("subset") / "half.npy"
    write_subset(path, chosen + absent)
    return path, chosen, absent


@pytest.fixture(scope="module")
def data(pool, subset, spark, tmp_path_factory):
    from datacurate.reshard import reshard

    out = tmp_path_factory.mktemp("data") / "DATA"
    report = reshard(pool[0], subset[0], out, shard_size=4, spark=spark, progress=False)
    return out, report


def test_selected_samples_land_exactly_once(pool, subset, data):
    pool_dir, _ = pool
    _, chosen, absent = subset
    out, report = data
    src = pool_samples(pool_dir)
    tars = sorted((out / "shards").glob("*.tar"))
    sizes = json.loads((out / "sizes.json").read_text())
    assert sizes == json.loads((out / "shards" / "sizes.json").read_text())
    assert list(sizes) == [f"{i:05d}.tar" for i in range(len(tars))] == [t.name for t in tars]
    assert len(tars) == -(-len(chosen) // 4) and all(n == 4 for n in list(sizes.values())[:-1])
    seen = []
    for t in tars:
        members = read_tar(t)
        assert len(members) == 3 * sizes[t.name]
        for i in range(0, len(members), 3):  # KEY.jpg, KEY.json, KEY.txt together
            (img_name, img), (json_name, meta), (txt_name, txt) = members[i:i + 3]
            key = img_name.split(".")[0]
            assert (img_name, json_name, txt_name) == (f"{key}.jpg", f"{key}.json", f"{key}.txt")
            uid = json.loads(meta)["uid"]
            assert img == src[uid]["jpg"] and txt == src[uid]["txt"]
            seen.append(uid)
    assert len(seen) == len(set(seen)) and set(seen) == set(chosen)
    assert report["found"] == len(chosen) and report["missing"] == len(absent)
    on_disk = json.loads((out / "reshard.json").read_text())
    assert on_disk["found"] == len(chosen) and on_disk["missing"] == len(absent)
    from datacurate.uids import fingerprint, read_subset

    assert on_disk["subset_fingerprint"] == fingerprint(read_subset(subset[0]))


def test_webdataset_reads_the_shards(data):
    import webdataset as wds

    out, report = data
    n = 0
    for img, txt, meta in wds.WebDataset(str(out / "shards") + "/{00000..%05d}.tar" % (report["shards"] - 1),
                                         shardshuffle=False).decode("pil").to_tuple("jpg", "txt", "json"):
        assert img.size[0] > 0 and txt and len(meta["uid"]) == 32
        n += 1
    assert n == report["found"]


def test_same_subset_gives_identical_bytes_and_rerun_does_nothing(pool, subset, data, spark, tmp_path):
    from datacurate.reshard import reshard

    out, report = data
    tars = sorted((out / "shards").glob("*.tar"))
    mtimes = {p: p.stat().st_mtime_ns for p in tars + [out / "reshard.json"]}
    assert reshard(pool[0], subset[0], out, shard_size=4, spark=spark, progress=False) == report
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes

    other = tmp_path / "DATA2"
    reshard(pool[0], subset[0], other, shard_size=4, spark=spark, progress=False)
    assert [p.read_bytes() for p in tars] == [p.read_bytes() for p in sorted((other / "shards").glob("*.tar"))]

    # an interrupted reshard: a shard and the report gone -> only that shard is written again
    lost = other / "shards" / "00001.tar"
    keep = {p: p.stat().st_mtime_ns for p in sorted((other / "shards").glob("*.tar")) if p != lost}
    lost.unlink()
    (other / "reshard.json").unlink()
    again = reshard(pool[0], subset[0], other, shard_size=4, spark=spark, progress=False)
    assert lost.read_bytes() == (out / "shards" / "00001.tar").read_bytes()
    assert {p: p.stat().st_mtime_ns for p in keep} == keep
    assert again["found"] == report["found"]


def test_bad_subsets_refused(pool, subset, tmp_path):
    from datacurate.errors import UserError
    from datacurate.reshard import reshard

    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.arange(10, dtype=np.int64))
    with pytest.raises(UserError, match=r"wrong\.npy: wrong dtype int64"):
        reshard(pool[0], wrong, tmp_path / "D")
    r = subprocess.run([sys.executable, "-m", "datacurate", "reshard", "--pool", str(pool[0]), "--subset", str(wrong),
                        "--out", str(tmp_path / "D")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "wrong dtype" in r.stderr and "Traceback" not in r.stderr
    with pytest.raises(UserError, match="not a pool: expected metadata"):
        reshard(tmp_path, subset[0], tmp_path / "D")


def test_another_subset_into_the_same_out_refused(pool, data, spark, tmp_path):
    from datacurate.errors import UserError
    from datacurate.reshard import reshard
    from datacurate.uids import write_subset

    other = tmp_path / "other.npy"
    write_subset(other, sorted(pool[1]["good"])[:3])
    with pytest.raises(UserError, match="another reshard"):
        reshard(pool[0], other, data[0], shard_size=4, spark=spark)


def test_reshard_of_the_micro_pool(micro_pool, spark, tmp_path):
    """The builder's downloaded `micro` pool: every sample of a random half lands once, in >= 4 shards."""
    import random

    from datacurate.reshard import reshard
    from datacurate.uids import write_subset

    uids = pa.concat_tables([pq.read_table(p, columns=["uid"]) for p in sorted((micro_pool / "metadata").glob("*.parquet"))])
    uids = uids.column("uid").to_pylist()
    half = sorted(random.Random(0).sample(uids, len(uids) // 2))
    write_subset(tmp_path / "half.npy", half)
    report = reshard(micro_pool, tmp_path / "half.npy", tmp_path / "DATA", spark=spark, progress=False)
    assert report["found"] == len(half) and report["missing"] == 0 and report["shards"] >= 4
    got = [json.loads(data)["uid"] for t in sorted((tmp_path / "DATA" / "shards").glob("*.tar"))
           for name, data in read_tar(t) if name.endswith(".json")]
    assert sorted(got) == half


def test_fine_shards_share_spark_tasks_and_keep_the_samples_in_order(pool, subset, data, spark, tmp_path):
    """One-sample shards (a CPU scale's grain) hold the same samples, in the same order and bytes, as 4-sample ones."""
    from datacurate.reshard import group_outputs, reshard

    out, report = data
    fine = reshard(pool[0], subset[0], tmp_path / "FINE", shard_size=1, spark=spark, progress=False)
    assert fine["shards"] == fine["found"] == report["found"]
    members = lambda d: [m for t in sorted((d / "shards").glob("*.tar")) for m in read_tar(t)]
    assert members(tmp_path / "FINE") == members(out)
    assert all(n == 1 for n in fine["sizes"].values())

    outs = [("a", [1, 2]), ("b", [3]), ("c", [4, 5, 6]), ("d", [7])]
    assert group_outputs(outs, task_samples=3) == [outs[:2], outs[2:3], outs[3:]]
    assert group_outputs(outs, task_samples=100) == [outs]


def test_reshard_cli_takes_the_scale_training_shard_size(pool, subset, tmp_path):
    from datacurate.scales import SCALES

    r = subprocess.run([sys.executable, "-m", "datacurate", "reshard", "--pool", str(pool[0]), "--subset",
                        str(subset[0]), "--out", str(tmp_path / "D"), "--scale", "micro"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "D" / "reshard.json").read_text())
    assert report["shard_size"] == SCALES["micro"].train_shard_size
    assert max(report["sizes"].values()) == SCALES["micro"].train_shard_size


def test_a_failed_reshard_leaves_nothing_and_a_second_writer_is_refused(pool, subset, data, spark, tmp_path):
    """An empty subset or one outside the pool: refused, no DATA/.reshard left to trip the good rerun;
    a reshard into a folder another one is writing: refused with the holder's pid."""
    import os

    from datacurate.atomic import folder_lock
    from datacurate.errors import UserError
    from datacurate.layout import DataLayout
    from datacurate.reshard import reshard
    from datacurate.uids import make_uid, write_subset

    out = tmp_path / "DATA"
    write_subset(tmp_path / "empty.npy", [])
    with pytest.raises(UserError, match=r"empty\.npy: the subset is empty"):
        reshard(pool[0], tmp_path / "empty.npy", out, shard_size=4, spark=spark, progress=False)
    assert not out.exists()
    write_subset(tmp_path / "elsewhere.npy", [make_uid("another pool", i) for i in range(5)])
    with pytest.raises(UserError, match="none of the 5 uids .* is in"):
        reshard(pool[0], tmp_path / "elsewhere.npy", out, shard_size=4, spark=spark, progress=False)
    assert not out.exists()
    good = reshard(pool[0], subset[0], out, shard_size=4, spark=spark, progress=False)   # the rerun works
    assert good["found"] == data[1]["found"]

    busy = tmp_path / "BUSY"
    with folder_lock(DataLayout(busy).lock):
        with pytest.raises(UserError, match=rf"BUSY: in use by another run \(pid {os.getpid()}\)"):
            reshard(pool[0], subset[0], busy, shard_size=4, spark=spark, progress=False)
    assert not any((busy / "shards").glob("*.tar")) if (busy / "shards").exists() else True
