"""scripts/bench/sharpened_score.py: a study folder whose filter score is as good as a better network's."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts" / "bench"))

import sharpened_score as S  # noqa: E402

DEFECTS = ["none"] * 120 + ["swapped_caption"] * 60 + ["boilerplate"] * 20 + ["exact_duplicate"] * 20


def _study(root: Path) -> Path:
    """A finished study as far as the script reads one: two metadata shards with a weak score and the
    ground truth, fnet/ and embed.json, two recipes' subsets and runs."""
    from datacurate.layout import NetLayout
    from datacurate.uids import make_uid
    from filters import run_recipe

    rng = np.random.default_rng(0)
    defects = np.array(DEFECTS)
    rng.shuffle(defects)
    uids = [make_uid("s", i) for i in range(len(defects))]
    score = (rng.normal(0.3, 0.1, len(defects)) + 0.05 * (defects == "none")).astype(np.float32)
    meta = root / "pool" / "metadata"
    meta.mkdir(parents=True)
    for i, part in enumerate((slice(0, 100), slice(100, None))):
        pq.write_table(pa.table({"uid": uids[part], "text": [f"caption {j}" for j in range(len(uids))][part],
                                 S.SCORE: pa.array(score[part], pa.float32())}), meta / f"{i:05d}.parquet")
        (meta / f"{i:05d}.npz").write_bytes(b"embeddings")
    (root / "pool" / "shards").mkdir()
    pq.write_table(pa.table({"uid": uids, "defect": list(defects)}), root / "pool" / "ground_truth.parquet")
    net = NetLayout(root / "fnet")
    (root / "fnet").mkdir()
    net.info.write_text("{}")
    net.checkpoint.write_bytes(b"weights")
    (root / "embed.json").write_text("{}")
    for r in ("no_filter", "clip_score_top30"):
        run_recipe(root / "pool", r, root / "subsets" / f"{r}.npy", progress=False)
        (root / "data" / r).mkdir(parents=True)
        for run in (r, f"{r}-seed1"):
            (root / "runs" / run).mkdir(parents=True)
    return root


def test_the_score_gains_k_stds_on_own_captions_only_and_reaches_the_auc(tmp_path):
    src = _study(tmp_path / "src")
    files, before, defects = S.read_scores(src / "pool")
    assert S.main(["--source", str(src), "--out", str(tmp_path / "out"), "--auc", "0.95"]) == 0
    out_files = [tmp_path / "out" / "pool" / "metadata" / f.name for f in files]
    after = np.concatenate([pq.read_table(f).column(S.SCORE).to_numpy() for f in out_files]).astype(np.float64)
    assert S.auc(before, defects) < 0.8 and S.auc(after, defects) == pytest.approx(0.95, abs=0.002)
    gain = after - before
    own = ~np.isin(defects, S.NOT_ITS_OWN)
    assert np.allclose(gain[~own], 0, atol=1e-6) and np.ptp(gain[own]) < 1e-5 and gain[own].min() > 0
    # everything else in the rows is the source's, and the source pool is untouched
    assert pq.read_table(out_files[1]).column("text").to_pylist() == pq.read_table(files[1]).column("text").to_pylist()
    assert np.array_equal(S.read_scores(src / "pool")[1], before)
    assert (tmp_path / "out" / "pool" / "metadata" / "00000.npz").resolve() == (files[0].with_suffix(".npz")).resolve()


def test_only_recipes_whose_subset_is_unchanged_are_linked(tmp_path, capsys):
    src = _study(tmp_path / "src")
    out = tmp_path / "out"
    S.main(["--source", str(src), "--out", str(out), "--k", "1.5"])
    said = json.loads(capsys.readouterr().out)
    assert said["linked"] == ["no_filter"] and said["to_train"] == ["clip_score_top30"]
    assert (out / "runs" / "no_filter-seed1").resolve() == (src / "runs" / "no_filter-seed1").resolve()
    assert (out / "data" / "no_filter").is_symlink()
    assert not (out / "runs" / "clip_score_top30").exists() and not (out / "data" / "clip_score_top30").exists()
    # the changed recipe's new subset is written, for the study to train
    new = json.loads((out / "subsets" / "clip_score_top30.json").read_text())["subset_fingerprint"]
    assert new != json.loads((src / "subsets" / "clip_score_top30.json").read_text())["subset_fingerprint"]


def test_bad_requests_say_what_to_do(tmp_path):
    src = _study(tmp_path / "src")
    with pytest.raises(SystemExit, match="between the network's own"):
        S.main(["--source", str(src), "--out", str(tmp_path / "a"), "--auc", "0.5"])
    (tmp_path / "plain").mkdir()
    with pytest.raises(SystemExit, match="plain: not a finished study folder"):
        S.main(["--source", str(tmp_path / "plain"), "--out", str(tmp_path / "a"), "--k", "1"])
    (tmp_path / "b").mkdir()
    with pytest.raises(SystemExit, match="exists; give a new --out"):
        S.main(["--source", str(src), "--out", str(tmp_path / "b"), "--k", "1"])
    pq.write_table(pa.table({"uid": ["0" * 32], "defect": ["none"]}), src / "pool" / "ground_truth.parquet")
    with pytest.raises(SystemExit, match=r"ground_truth.parquet: no row for uid .* give the pool it was built with"):
        S.main(["--source", str(src), "--out", str(tmp_path / "c"), "--k", "1"])


def test_a_failure_halfway_leaves_no_study_folder_and_the_source_whole(tmp_path, monkeypatch):
    src = _study(tmp_path / "src")

    def broken(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(S, "link_unchanged", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        S.main(["--source", str(src), "--out", str(tmp_path / "out"), "--k", "1"])
    assert not (tmp_path / "out").exists()
    assert (src / "runs" / "no_filter").is_dir() and (src / "pool" / "metadata" / "00000.parquet").is_file()
