"""Bad input as a careless user gives it: one line `datacurate <cmd>: error: <where>: <what>; <what to do>`,
exit status 2, no traceback, nothing written; and the README's own filter example works as written."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parents[1]
MYFILTERS = '''from filters import Param, filter_function

@filter_function(columns=["text"], params=(Param("max_words", int, 12, "longest caption kept", min=1),))
def short_captions(batch, max_words):
    """Keep captions of at most max_words words."""
    return [len(t.split()) <= max_words for t in batch.texts()]
'''


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    from datacurate.uids import make_uid

    root = tmp_path_factory.mktemp("errors") / "pool"
    (root / "metadata").mkdir(parents=True)
    texts = ["a dog", "a photo of a red fox in the snow by the old barn", "two cats", "a bird on a wire"]
    pq.write_table(pa.table({"uid": [make_uid("errors", i) for i in range(4)], "text": texts}),
                   root / "metadata" / "00000.parquet")
    return root


def datacurate(*args, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env_path = str(ROOT)   # the project is importable from any folder, as once installed
    import os

    env = {**os.environ, "PYTHONPATH": env_path + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "datacurate", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def one_line_error(r: subprocess.CompletedProcess, cmd: str, pattern: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith(f"datacurate {cmd}: error: ")]
    assert len(lines) == 1, r.stderr
    assert re.search(pattern, lines[0]), lines[0]


def test_readme_filter_example_runs_as_written(pool, tmp_path):
    """myfilters.py in the current folder (as the README shows it), or beside the recipe."""
    from datacurate.uids import read_subset

    work = tmp_path / "work"
    work.mkdir()
    (work / "myfilters.py").write_text(MYFILTERS)
    (work / "short.yaml").write_text('steps:\n  - {filter: "myfilters:short_captions", max_words: 3}\n')
    r = datacurate("filter", "--pool", pool, "--recipe", "short.yaml", "--out", "short.npy", "--quiet", cwd=work)
    assert r.returncode == 0, r.stderr
    assert len(read_subset(work / "short.npy")) == 2          # "a dog", "two cats"
    r = datacurate("filter", "--pool", pool, "--recipe", work / "short.yaml", "--out", tmp_path / "b.npy",
                   "--quiet", cwd=tmp_path)                   # run from elsewhere: found beside the recipe
    assert r.returncode == 0, r.stderr
    assert read_subset(tmp_path / "b.npy").tobytes() == read_subset(work / "short.npy").tobytes()


@pytest.mark.parametrize("case, module, pattern", [
    ("syntax error", "def short_captions(batch:\n", r"module 'bad' for filter 'bad:f' fails to import at .*bad\.py:1: "
                                                   r"SyntaxError"),
    ("raises on import", "raise RuntimeError('no GPU here')\n",
     r"module 'bad' for filter 'bad:f' fails to import at .*bad\.py:1: RuntimeError: no GPU here"),
    ("missing module", None, r"cannot import module 'bad' for filter 'bad:f' .*looked on the import path and in"),
    ("raises while filtering", MYFILTERS.replace("short_captions", "f").replace(
        "return [", "raise ZeroDivisionError('boom')\n    return ["),
     r"steps\[0\] \(bad:f\): filter 'f' raised ZeroDivisionError: boom \(shard 00000\)"),
])
def test_a_users_broken_filter_module_is_one_line(pool, tmp_path, case, module, pattern):
    if module is not None:
        (tmp_path / "bad.py").write_text(module)
    (tmp_path / "r.yaml").write_text('steps:\n  - {filter: "bad:f"}\n')
    r = datacurate("filter", "--pool", pool, "--recipe", "r.yaml", "--out", "out.npy", cwd=tmp_path)
    one_line_error(r, "filter", pattern)
    assert not list(tmp_path.glob("out*")) and not list(tmp_path.glob(".out*"))


@pytest.mark.parametrize("step, pattern", [
    ("{filter: clip_score, model: fnet, threshold: .nan}", r"field 'threshold' must be a finite number, got nan"),
    ("{filter: random, fraction: .nan}", r"field 'fraction' must be a finite number, got nan"),
    ("{filter: caption, min_chars: .inf}", r"field 'min_chars' must be int"),
    ("{filter: clip_score, model: fnet, threshold: -.inf}", r"field 'threshold' must be a finite number, got -inf"),
])
def test_non_finite_recipe_numbers_are_refused(pool, tmp_path, step, pattern):
    (tmp_path / "r.yaml").write_text(f"steps:\n  - {step}\n")
    r = datacurate("filter", "--pool", pool, "--recipe", tmp_path / "r.yaml", "--out", tmp_path / "o.npy")
    one_line_error(r, "filter", r"r\.yaml: steps\[0\].*" + pattern)
    assert not (tmp_path / "o.npy").exists()


def _meta_pool(root: Path, **columns) -> Path:
    """A one-shard pool whose metadata holds ``columns`` (defaults: 4 good rows)."""
    from datacurate.uids import make_uid

    n = 4
    cols = {"uid": [make_uid("bad-meta", i) for i in range(n)], "text": ["a photo of a red fox in the snow"] * n,
            "original_width": [256] * n, "original_height": [256] * n,
            "clip_fnet_similarity_score": pa.array([0.3, 0.2, 0.4, 0.1], pa.float32())}
    cols.update(columns)
    (root / "metadata").mkdir(parents=True)
    pq.write_table(pa.table(cols), root / "metadata" / "00000.parquet")
    return root


BAD_METADATA = [
    ("uppercase uid", {"uid": ["ABCDEF0123456789ABCDEF0123456789"] * 4}, "no_filter",
     r"00000\.parquet: row 0: uid 'ABCDEF0123456789ABCDEF0123456789' is not 32 lowercase hex"),
    ("short uid", {"uid": ["abc"] * 4}, "no_filter", r"00000\.parquet: row 0: uid 'abc' is not 32 lowercase hex"),
    ("non-hex uid", {"uid": ["z" * 32] * 4}, "no_filter", r"row 0: uid 'z{32}' is not 32 lowercase hex"),
    ("integer uid", {"uid": [1, 2, 3, 4]}, "no_filter", r"column 'uid' holds int64; expected a string of 32"),
    ("no uid column", {"uid": None}, "no_filter", r"00000\.parquet: no column 'uid'"),
    ("integer text", {"text": [1, 2, 3, 4]}, "caption", r"column 'text' holds int64; expected a string \(or null\)"),
    ("string width", {"original_width": ["256"] * 4}, "basic",
     r"column 'original_width' holds string; expected an integer"),
    ("string score", {"clip_fnet_similarity_score": ["0.3"] * 4}, "clip_score_top30",
     r"column 'clip_fnet_similarity_score' holds string; expected a float"),
]


@pytest.mark.parametrize("case, columns, recipe, pattern", BAD_METADATA, ids=[c[0] for c in BAD_METADATA])
def test_bad_metadata_is_named_not_filtered(tmp_path, capsys, case, columns, recipe, pattern):
    from datacurate.cli import main

    columns = {k: v for k, v in columns.items() if v is not None}
    pool = _meta_pool(tmp_path / "pool", **columns)
    if case == "no uid column":
        t = pq.read_table(pool / "metadata" / "00000.parquet").drop(["uid"])
        pq.write_table(t, pool / "metadata" / "00000.parquet")
    if recipe == "clip_score_top30":
        (tmp_path / "r.yaml").write_text("steps:\n  - {filter: clip_score, model: fnet, top_fraction: 0.3}\n")
        recipe = str(tmp_path / "r.yaml")
    elif recipe == "caption":
        (tmp_path / "r.yaml").write_text("steps:\n  - {filter: caption, english: false}\n")
        recipe = str(tmp_path / "r.yaml")
    elif recipe == "basic":
        (tmp_path / "r.yaml").write_text("steps:\n  - {filter: basic, english: false}\n")
        recipe = str(tmp_path / "r.yaml")
    rc = main(["filter", "--pool", str(pool), "--recipe", recipe, "--out", str(tmp_path / "o.npy"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err, err
    line = [ln for ln in err.splitlines() if ln.startswith("datacurate filter: error: ")]
    assert len(line) == 1 and re.search(pattern, line[0]), err
    assert not list(tmp_path.glob("o*")) and not list(tmp_path.glob(".o*"))


def test_corrupt_parquet_and_npz_are_named(tmp_path, capsys):
    from datacurate.cli import main

    pool = _meta_pool(tmp_path / "pool")
    meta = pool / "metadata" / "00000.parquet"
    meta.write_bytes(meta.read_bytes()[:60])          # truncated
    assert main(["filter", "--pool", str(pool), "--recipe", "no_filter", "--out", str(tmp_path / "o.npy")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and re.search(r"00000\.parquet: not a readable parquet file", err), err
    good = _meta_pool(tmp_path / "pool2")
    (good / "metadata" / "00000.npz").write_bytes(b"PK\x03\x04 truncated")
    (tmp_path / "r.yaml").write_text("steps:\n  - {filter: image_based, model: fnet, target: eval, clusters: 2}\n")
    assert main(["filter", "--pool", str(good), "--recipe", str(tmp_path / "r.yaml"), "--out",
                 str(tmp_path / "o.npy")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and re.search(r"00000\.npz: not a readable npz", err), err
    assert not (tmp_path / "o.npy").exists()


def test_bad_output_paths_are_one_line_before_any_work(pool, tmp_path, capsys):
    from datacurate.cli import main

    (tmp_path / "afile").write_text("x")
    (tmp_path / "adir").mkdir()
    cases = [(tmp_path / "afile" / "o.npy", r"afile: is a file, not a folder; choose another path for the subset"),
             (tmp_path / "adir", r"adir: is a folder; give the subset file's name")]
    for out, pattern in cases:
        rc = main(["filter", "--pool", str(pool), "--recipe", "no_filter", "--out", str(out), "--quiet"])
        err = capsys.readouterr().err
        assert rc == 2 and "Traceback" not in err and re.search(pattern, err), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir", "afile"] and not any((tmp_path / "adir").iterdir())


FOLDER_COMMANDS = [
    ("train", ["train", "--scale", "micro", "--data", "{data}"]),
    ("pool", ["pool", "build", "--scale", "micro"]),
    ("filter-net", ["filter-net", "train", "--pool", "{pool}"]),
    ("run", ["run", "--scale", "micro"]),
    ("reshard", ["reshard", "--pool", "{pool}", "--subset", "{data}/s.npy"]),
]


@pytest.mark.parametrize("cmd, argv", FOLDER_COMMANDS, ids=[c[0] + (" " + c[1][1] if c[0] in ("pool", "filter-net") else "")
                                                         for c in FOLDER_COMMANDS])
def test_a_folder_output_that_is_a_file_or_under_one_is_refused_before_any_work(pool, tmp_path, capsys, cmd, argv):
    """train, pool build, filter-net train, run and reshard write a folder: --out naming a file, or a path
    under a file, is one line before anything runs, and nothing is created."""
    from datacurate.cli import main

    (tmp_path / "afile").write_text("x")
    argv = [a.format(pool=pool, data=tmp_path) for a in argv]
    for out, pattern in ((tmp_path / "afile", r"afile: is a file; the .* must be a folder"),
                         (tmp_path / "afile" / "sub" / "out", r"afile: is a file, not a folder; choose another path")):
        before = sorted(p.name for p in tmp_path.iterdir())
        rc = main([*argv, "--out", str(out)])
        err = capsys.readouterr().err
        assert rc == 2 and "Traceback" not in err, err
        assert re.search(rf"^datacurate {cmd}: error: .*{pattern}", err, re.M), err
        assert sorted(p.name for p in tmp_path.iterdir()) == before and (tmp_path / "afile").read_text() == "x"


def test_writable_folder_check_probes_without_creating(tmp_path):
    from datacurate.atomic import check_writable_folder

    deep = tmp_path / "a" / "b" / "c"
    assert check_writable_folder(deep) == deep and not (tmp_path / "a").exists()
    assert list(tmp_path.iterdir()) == []          # the probe is gone too
    (tmp_path / "run").mkdir()
    assert check_writable_folder(tmp_path / "run") == tmp_path / "run" and list((tmp_path / "run").iterdir()) == []


def test_debug_shows_the_traceback(pool, tmp_path):
    r = datacurate("--debug", "filter", "--pool", pool, "--recipe", "nope", "--out", tmp_path / "o.npy")
    assert r.returncode != 0 and "Traceback" in r.stderr and "no built-in recipe" in r.stderr


def test_an_error_inside_a_spark_task_is_the_same_one_line(tmp_path, capsys, spark):
    """The uid check runs in the executors: Spark wraps the PoolDataError; the user sees its own line."""
    from datacurate.cli import main

    pool = _meta_pool(tmp_path / "pool", uid=["ABCDEF0123456789ABCDEF0123456789"] * 4)
    rc = main(["filter", "--pool", str(pool), "--recipe", "no_filter", "--out", str(tmp_path / "o.npy"),
               "--runner", "spark", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and "Py4J" not in err, err
    assert re.search(r"^datacurate filter: error: .*00000\.parquet: row 0: uid 'ABCDEF0123456789ABCDEF0123456789' "
                     r"is not 32 lowercase hex characters .*\(in a Spark task\)$", err, re.M), err
    assert not (tmp_path / "o.npy").exists()


@pytest.fixture
def full_disk(tmp_path):
    """``full_disk(size)``: a small tmpfs, a disk that fills up while a command writes (root only; skipped
    with the reason otherwise)."""
    import os

    mounted = []

    def mount(size: str) -> Path:
        mnt = tmp_path / f"full{len(mounted)}"
        mnt.mkdir()
        if os.geteuid() != 0:
            pytest.skip("mounting a small tmpfs needs root")
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)],
                           capture_output=True, text=True)
        if r.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
        mounted.append(mnt)
        return mnt

    yield mount
    for mnt in mounted:                        # a mount left behind outlives pytest's clean-up of tmp_path
        r = subprocess.run(["umount", str(mnt)], capture_output=True, text=True)
        if r.returncode:
            r = subprocess.run(["umount", "-l", str(mnt)], capture_output=True, text=True)
        assert r.returncode == 0, f"cannot unmount {mnt}: {r.stderr.strip()}"


# filter writes its subset on the driver; reshard with 16 KiB fails on the driver (its uid list), with
# 300 KiB inside a Spark task writing a shard
@pytest.mark.parametrize("cmd, size", [("filter", "16k"), ("reshard", "16k"), ("reshard", "300k")])
def test_a_full_disk_is_one_line_naming_the_file_and_leaves_nothing(micro_pool, full_disk, tmp_path, capsys,
                                                                     cmd, size):
    """Either way the user sees one line naming the file and "No space left on device", no temporary
    file is left on the full disk, and the same command with room to write then succeeds."""
    from datacurate.cli import main

    disk = full_disk(size)
    subset = tmp_path / "subset.npy"
    assert main(["filter", "--pool", str(micro_pool), "--recipe", "no_filter", "--out", str(subset), "--quiet"]) == 0
    capsys.readouterr()
    argv = {"filter": ["filter", "--pool", str(micro_pool), "--recipe", "no_filter", "--quiet", "--out"],
            "reshard": ["reshard", "--pool", str(micro_pool), "--subset", str(subset), "--out"]}[cmd]
    target = disk / ("s.npy" if cmd == "filter" else "data")
    rc = main(argv + [str(target)])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err, err
    line = [ln for ln in err.splitlines() if ln.startswith(f"datacurate {cmd}: error: ")]
    assert len(line) == 1 and re.search(rf"error: {re.escape(str(disk))}/\S+: No space left on device"
                                        r"( \(in a Spark task\))?; free some space", line[0]), err
    if size == "300k":
        assert "(in a Spark task)" in line[0] and "/shards/" in line[0]
    assert [p.name for p in disk.rglob("*") if p.is_file()] == []       # nothing half-written
    assert main(argv + [str(tmp_path / "room" / target.name)]) == 0     # with room, it works
