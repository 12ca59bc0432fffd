"""`datacurate run --scale micro`: every stage end to end in a subprocess, then a no-op second run."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from datacurate.env import child_env
from datacurate.uids import read_subset


@pytest.mark.slow
def test_run_micro_end_to_end_then_nothing_to_do(tmp_path):
    out = tmp_path / "micro"
    cmd = [sys.executable, "-m", "datacurate", "run", "--scale", "micro", "--out", str(out)]
    first = subprocess.run(cmd, capture_output=True, text=True, env=child_env(), timeout=1500)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]

    # every stage left its final file
    assert (out / "pool" / "download_summary.json").exists()
    assert (out / "fnet" / "info.json").exists()
    rows = json.loads((out / "comparison.json").read_text())
    assert [r["recipe"] for r in rows] == ["no_filter", "dedup_clip"]
    no_filter, best = rows
    # the filtered subset is a strict, non-empty part of the pool
    n_pool = len(read_subset(out / "subsets" / "no_filter.npy"))
    n_best = len(read_subset(out / "subsets" / "dedup_clip.npy"))
    assert 0 < n_best < n_pool == no_filter["size"]
    for r in rows:
        run = out / "runs" / r["recipe"]
        assert (run / "checkpoints" / "epoch_latest.pt").exists()
        lines = (run / "eval_results.jsonl").read_text().splitlines()
        assert len(lines) >= 2
        assert isinstance(json.loads((run / "scores.json").read_text()), dict)
    report = (out / "report.html").read_text()
    for section in ("Pool", "Filter funnel", "Training", "Per-task results", "Recipes compared"):
        assert section in report, section
    assert (out / "report" / "training.png").stat().st_size > 1000
    assert "report:" in first.stdout

    # a second run finds everything complete and does no work
    second = subprocess.run(cmd, capture_output=True, text=True, env=child_env(), timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "nothing to do" in second.stdout
    assert "run  " not in second.stdout
