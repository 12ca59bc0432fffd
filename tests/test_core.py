"""uids, subset files, metadata schema, scales, CLI basics."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datacurate import schema, uids
from datacurate.scales import SCALES, format_table, get_scale


def _rand_uids(n, seed=0):
    rng = np.random.default_rng(seed)
    return [f"{int(a):016x}{int(b):016x}" for a, b in rng.integers(0, 2**63, size=(n, 2), dtype=np.uint64)]


def test_hex_roundtrip_and_upstream_layout(tmp_path):
    hexes = _rand_uids(100) + ["ffffffffffffffff0000000000000001"]
    path = tmp_path / "s.npy"
    assert uids.write_subset(path, hexes) == len(set(hexes))
    arr = np.load(path)
    # exactly upstream's on-disk form: structured u8,u8, sorted
    assert arr.dtype == np.dtype("u8,u8")
    assert arr.tolist() == sorted(arr.tolist())
    assert sorted(uids.read_subset_hex(path)) == sorted(hexes)
    assert uids.pairs_to_hex(arr[-1:]) == ["ffffffffffffffff0000000000000001"]
    # the high half is the first 16 hex characters
    one = uids.hex_to_pairs(["00000000000000010000000000000002"])
    assert one["f0"][0] == 1 and one["f1"][0] == 2


def test_write_subset_dedups_and_sorts(tmp_path):
    hexes = _rand_uids(10)
    n = uids.write_subset(tmp_path / "s.npy", hexes[::-1] + hexes[:3])
    assert n == 10
    uids.read_subset(tmp_path / "s.npy")  # valid


@pytest.mark.parametrize("bad,msg", [
    (np.arange(5, dtype=np.int64), "wrong dtype"),
    (np.array(["a" * 32], dtype="<U32"), "wrong dtype"),
])
def test_read_subset_rejects_wrong_dtype(tmp_path, bad, msg):
    p = tmp_path / "bad.npy"
    np.save(p, bad)
    with pytest.raises(uids.UidFileError, match=msg) as e:
        uids.read_subset(p)
    assert str(p) in str(e.value)


def test_read_subset_rejects_unsorted_and_duplicates(tmp_path):
    arr = uids.hex_to_pairs(_rand_uids(5))
    arr = np.sort(arr, order=["f0", "f1"])[::-1].copy()
    np.save(tmp_path / "u.npy", arr)
    with pytest.raises(uids.UidFileError, match="not sorted"):
        uids.read_subset(tmp_path / "u.npy")
    arr = np.sort(arr, order=["f0", "f1"])
    arr = np.concatenate([arr[:3], arr[2:3], arr[3:]])
    np.save(tmp_path / "d.npy", arr)
    with pytest.raises(uids.UidFileError, match="duplicate uid"):
        uids.read_subset(tmp_path / "d.npy")
    (tmp_path / "x.npy").write_bytes(b"not numpy")
    with pytest.raises(uids.UidFileError, match="not a numpy"):
        uids.read_subset(tmp_path / "x.npy")


def test_set_operations_and_fingerprint():
    a = np.sort(uids.hex_to_pairs(_rand_uids(20, 1)), order=["f0", "f1"])
    b = np.sort(uids.hex_to_pairs(_rand_uids(20, 1)[10:] + _rand_uids(5, 2)), order=["f0", "f1"])
    assert len(uids.intersect(a, b)) == 10
    assert len(uids.union(a, b)) == 25
    assert len(uids.difference(a, b)) == 10
    assert uids.fingerprint(a) == uids.fingerprint(a[::-1].copy())
    assert uids.fingerprint(a) != uids.fingerprint(b)


def test_make_uid_deterministic():
    assert uids.make_uid("x", 1) == uids.make_uid("x", 1)
    assert uids.make_uid("x", 1) != uids.make_uid("x1")
    assert uids.is_uid(uids.make_uid("x"))


def _meta(n=3, **override):
    cols = {
        "uid": _rand_uids(n),
        "url": [f"http://x/{i}.jpg" for i in range(n)],
        "text": ["a cat"] * n,
        "original_width": pa.array([10] * n, pa.int64()),
        "original_height": pa.array([10] * n, pa.int64()),
        "sha256": ["0" * 64] * n,
    }
    cols.update(override)
    return pa.table(cols)


def test_metadata_roundtrip(tmp_path):
    p = tmp_path / "m.parquet"
    schema.write_table_atomic(_meta(), p)
    t = schema.read_metadata(p)
    assert t.num_rows == 3
    assert not list(tmp_path.glob(".*tmp"))


def test_metadata_errors_name_file_row_and_field(tmp_path):
    p = tmp_path / "m.parquet"
    pq.write_table(_meta().drop(["sha256"]), p)
    with pytest.raises(schema.SchemaError, match=r"m.parquet: missing column\(s\) sha256"):
        schema.read_metadata(p)
    pq.write_table(_meta(original_width=pa.array(["10"] * 3)), p)
    with pytest.raises(schema.SchemaError, match="column 'original_width' has type string"):
        schema.read_metadata(p)
    bad = _rand_uids(3)
    bad[2] = "XYZ"
    pq.write_table(_meta(uid=bad), p)
    with pytest.raises(schema.SchemaError, match="row 2"):
        schema.read_metadata(p)
    dup = _rand_uids(3)
    dup[2] = dup[0]
    pq.write_table(_meta(uid=dup), p)
    with pytest.raises(schema.SchemaError, match=r"row 2: duplicate uid [0-9a-f]{32} \(first at row 0\)"):
        schema.read_metadata(p)
    (tmp_path / "junk.parquet").write_text("hello")
    with pytest.raises(schema.SchemaError, match="junk.parquet: not a readable parquet"):
        schema.read_metadata(tmp_path / "junk.parquet")


def test_cast_to_upstream():
    t = _meta(original_width=pa.array([1, 2, 3], pa.int32()))
    assert schema.cast_to_upstream(t).schema.field("original_width").type == pa.int64()


def test_scales_table():
    assert {"micro", "tiny", "small", "medium", "large", "xlarge"} <= set(SCALES)
    # upstream numbers (datacomp scale_configs.py)
    assert get_scale("small").batch_size == 4096 and get_scale("small").samples_seen == 12_800_000
    assert get_scale("xlarge").beta2 == 0.95 and get_scale("xlarge").model == "ViT-L-14"
    assert get_scale("large").model == "ViT-B-16"
    with pytest.raises(ValueError, match="unknown scale 'huge'"):
        get_scale("huge")
    assert "12,800,000,000" in format_table()


def test_every_scale_keeps_datacomps_economics():
    """samples seen = pool size at every scale, ours included: a 30% subset is seen ~3.3 times."""
    from datacurate.scales import offline_scales

    for s in SCALES.values():
        assert s.samples_seen == s.pool_size, s.name
    assert offline_scales() == ["micro", "tiny", "base"]
    small, tiny, base = get_scale("small"), get_scale("tiny"), get_scale("base")
    assert tiny.pool_size < base.pool_size < small.pool_size          # base sits between tiny and small
    for name in offline_scales():
        s = get_scale(name)
        assert s.filter_net_steps > 0 and s.filter_net_batch > 0 and s.batch_size <= s.pool_size // 16
        # the resampled shard draw's grain: over 1,000 training shards per pool, as upstream small's 1,280
        assert s.pool_size // s.train_shard_size >= 1_000, name
    assert small.pool_size // small.train_shard_size == 1_280   # upstream resharder's 10,000 per shard
    table = format_table()
    assert "seen/pool" in table and "samples seen = pool size" in table and "depart" in table
    assert [ln.split()[3] for ln in table.splitlines()[2:9]] == ["1.00"] * 7


def test_cli_help_lists_subcommands_and_is_fast():
    out = subprocess.run([sys.executable, "-m", "datacurate", "--help"], capture_output=True, text=True, check=True)
    assert "scales" in out.stdout and "pool" in out.stdout
    # no heavy import at start-up
    code = "import sys, datacurate.cli as c; c.build_parser(); print(sorted(m for m in ('torch','pyspark','faiss','open_clip') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_cli_scales_runs():
    out = subprocess.run([sys.executable, "-m", "datacurate", "scales", "--json"], capture_output=True, text=True, check=True)
    import json

    got = json.loads(out.stdout)
    assert (got["micro"]["model"], got["tiny"]["model"], got["base"]["model"]) == \
        ("TinyCLIP-ViT-64", "TinyCLIP-ViT-64-l4", "TinyCLIP-ViT-64")


@pytest.mark.parametrize("bad", ["0x" + "a" * 30, "+" + "a" * 31, "a" * 15 + "_" + "a" * 16, "A" * 32, "a" * 31,
                                 " " + "a" * 31, "a" * 31 + "\n"])
def test_a_uid_is_exactly_32_lowercase_hex_characters(bad):
    """int(s, 16) takes "0x", "+", "_" and surrounding spaces: the one uid rule does not."""
    assert not uids.is_uid(bad)
    column = pa.chunked_array([["b" * 32], ["c" * 32, bad]])       # the bad one in a later chunk
    with pytest.raises(uids.UidFileError, match=r"f\.parquet: row 12: uid .* is not 32 lowercase hex"):
        uids.check_uid_column(column, "f.parquet", start=10)
    assert uids.is_uid("0123456789abcdef" * 2)


def test_uid_column_check_names_the_duplicate_and_both_rows():
    many = _rand_uids(1000)
    uids.check_uid_column(pa.chunked_array([many[:500], many[500:]]), "f")        # distinct: passes
    uids.check_uid_column(pa.array(many + many[:1]), "f", unique=False)            # duplicates allowed when asked
    with pytest.raises(uids.UidFileError, match=rf"f: row 1000: duplicate uid {many[7]} \(first at row 7\)"):
        uids.check_uid_column(pa.array(many + many[7:8]), "f")
    with pytest.raises(uids.UidFileError, match="holds int64"):
        uids.check_uid_column(pa.array([1, 2]), "f")
