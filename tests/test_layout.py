"""datacurate.layout: a pool is found in every form a DataComp participant holds it; paths have one owner."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _parquet(path: Path, uids: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"uid": uids}), path)


def test_pool_found_as_folder_as_its_metadata_folder_and_as_img2dataset_output(tmp_path):
    from datacurate.layout import LayoutError, PoolLayout

    pool = tmp_path / "upstream"
    _parquet(pool / "metadata" / "00000000.parquet", ["a" * 32])
    (pool / "shards").mkdir()
    by_folder, by_metadata = PoolLayout.find(pool), PoolLayout.find(pool / "metadata")
    assert by_folder.kind == "pool" and by_metadata.kind == "metadata"
    for lay in (by_folder, by_metadata):   # the same pool, however it is named
        assert (lay.root, lay.metadata, lay.shards) == (pool, pool / "metadata", pool / "shards")
        assert lay.shard_ids() == ["00000000"] and lay.holdout == pool / "holdout"
    assert "metadata/ folder" in by_metadata.describe()

    i2d = tmp_path / "i2d"             # img2dataset alone: NNNNN.tar + NNNNN.parquet side by side
    _parquet(i2d / "00000.parquet", ["b" * 32])
    (i2d / "00000.tar").write_bytes(b"")
    (i2d / "00000_stats.json").write_text("{}")
    lay = PoolLayout.find(i2d)
    assert lay.kind == "img2dataset" and lay.metadata == lay.shards == i2d
    assert lay.tar("00000") == i2d / "00000.tar" and lay.shard_ids() == ["00000"]

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(LayoutError, match=r"empty: not a pool: expected metadata/\*\.parquet"):
        PoolLayout.find(empty)
    with pytest.raises(LayoutError, match="no such pool folder"):
        PoolLayout.find(tmp_path / "absent")
    (pool / "metadata" / "00000000.parquet").unlink()
    with pytest.raises(LayoutError, match="no metadata parquet files"):
        PoolLayout.find(pool).shard_ids()


def test_filter_takes_upstreams_metadata_folder_and_says_so(tmp_path):
    """`datacurate filter --pool DIR/metadata`, the argument upstream's baselines.py takes, gives the
    same subset as --pool DIR; a folder that is no pool gets the one-line error."""
    from datacurate.uids import make_uid, read_subset

    pool = tmp_path / "pool"
    uids = [make_uid("layout", i) for i in range(10)]
    _parquet(pool / "metadata" / "00000000.parquet", uids[:6])
    _parquet(pool / "metadata" / "00000001.parquet", uids[6:])
    got = {}
    for name, arg in (("folder", pool), ("metadata", pool / "metadata")):
        out = tmp_path / f"{name}.npy"
        r = subprocess.run([sys.executable, "-m", "datacurate", "filter", "--pool", str(arg), "--recipe", "no_filter",
                            "--out", str(out), "--quiet"], cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        got[name] = read_subset(out)
        assert ("pool: a pool's metadata/ folder" in r.stderr) == (name == "metadata")
    assert got["folder"].tobytes() == got["metadata"].tobytes() and len(got["folder"]) == 10
    r = subprocess.run([sys.executable, "-m", "datacurate", "filter", "--pool", str(tmp_path / "folder.npy"),
                        "--recipe", "no_filter", "--out", str(tmp_path / "x.npy")],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert re.search(r"datacurate filter: error: .*folder\.npy: no such pool folder", r.stderr)
    assert not (tmp_path / "x.npy").exists()


def test_no_module_joins_pool_or_run_folder_names_by_hand():
    """The layout module owns the folder and file names (#19): none is joined by hand elsewhere."""
    names = ('"metadata"', '"shards"', '"holdout"', '"evalsets"', '"manifest.json"', '"info.json"', '"sizes.json"',
             '"checkpoints"', '"scores.json"', '"eval_results.jsonl"', '"reshard.json"', '"out.log"',
             '"ground_truth.parquet"', '"urls.parquet"', '"download_summary.json"', '"epoch_latest.pt"')
    join = re.compile(r"/\s*(" + "|".join(re.escape(n) for n in names) + r")")
    offenders = []
    for pkg in ("datacurate", "filters", "training", "eval", "leaderboard", "scripts"):
        for f in sorted((ROOT / pkg).rglob("*.py")):
            if f.name == "layout.py" and f.parent.name == "datacurate":
                continue
            for i, line in enumerate(f.read_text().splitlines(), 1):
                if join.search(line):
                    offenders.append(f"{f.relative_to(ROOT)}:{i}: {line.strip()}")
    assert offenders == []


def test_package_boundaries_hold():
    """pyproject.toml's import-linter contracts: the foundation imports no stage (the pipeline,
    datacurate.run, excepted), filters/training/eval are independent, no stage imports the leaderboard."""
    from datacurate.env import child_env

    # the console script's own entry point, run by this interpreter (no dependence on a script's shebang)
    code = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    res = subprocess.run([sys.executable, "-c", code, "--no-cache"], cwd=ROOT, capture_output=True, text=True,
                         timeout=300, env=child_env({"PYTHONPATH": str(ROOT)}))
    assert res.returncode == 0 and "0 broken" in res.stdout, res.stdout[-3000:] + res.stderr[-2000:]


def test_one_clip_loader_and_one_checkpoint_hash():
    """Loading a CLIP model, registering our configs and hashing a checkpoint have one home, datacurate.clip:
    no other module calls OpenCLIP's loaders or defines its own file hash."""
    import ast

    hits = []
    for pkg in ("datacurate", "filters", "training", "eval", "leaderboard"):
        for f in sorted((ROOT / pkg).rglob("*.py")):
            if f == ROOT / "datacurate" / "clip.py":
                continue
            for node in ast.walk(ast.parse(f.read_text())):
                if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) in (
                        "create_model_and_transforms", "add_model_config", "create_model"):
                    hits.append(f"{f.relative_to(ROOT)}:{node.lineno}: calls {ast.unparse(node.func)}")
                if isinstance(node, ast.FunctionDef) and node.name in ("sha256_file", "register_model_configs", "load_clip"):
                    hits.append(f"{f.relative_to(ROOT)}:{node.lineno}: defines {node.name}")
    assert not hits, hits
