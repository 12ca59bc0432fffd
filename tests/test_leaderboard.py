"""Leaderboard without a server: validation, aggregates, bundles, the submit CLI offline."""
from __future__ import annotations

import gzip
import io
import json
import zipfile

import numpy as np
import pytest

from datacurate.cli import main
from leaderboard.bundle import read_bundle, write_bundle
from leaderboard.submit import build_bundle, check_bundle
from leaderboard.validate import (SubmissionError, SubmissionTooLarge, compute_aggregates, parse_results,
                                  suite_tasks, validate_bundle)
from test_leaderboard_helpers import make_run, make_subset, pool_uids, suite


def test_suite_is_upstreams_38_tasks():
    s = suite()
    assert len(s.tasks) == 38
    assert s.imagenet == "ImageNet 1k"
    assert set(s.groups) == {"ImageNet dist. shifts", "VTAB", "Retrieval"}
    assert all(n in s.tasks.values() for names in s.groups.values() for n in names)
    with pytest.raises(SubmissionError, match="unknown suite"):
        suite_tasks("no-such-suite")


def test_aggregates_follow_upstream():
    s = suite()
    results = {n: 0.5 for n in s.tasks.values()}
    results["ImageNet 1k"] = 0.88
    results["Flickr"] = 0.2
    agg = compute_aggregates(s, results)
    assert agg["ImageNet"] == 0.88
    assert agg["Retrieval"] == pytest.approx((0.2 + 0.5 + 0.5) / 3)
    assert agg["VTAB"] == pytest.approx(0.5)
    assert agg["ImageNet dist. shifts"] == pytest.approx(0.5)
    assert agg["Average"] == pytest.approx((36 * 0.5 + 0.88 + 0.2) / 38)


def test_results_parsing_refuses_gaps_and_bad_values(tmp_path):
    run = make_run(tmp_path / "run")
    text = (run / "eval_results.jsonl").read_text()
    assert len(parse_results(text, suite())) == 38  # the unscored FairFace/UTKFace lines are ignored
    lines = text.splitlines()
    missing = "\n".join(l for l in lines if '"key": "vtab/svhn"' not in l)
    with pytest.raises(SubmissionError, match="missing: vtab/svhn"):
        parse_results(missing, suite())
    with pytest.raises(SubmissionError, match="appears twice"):
        parse_results(text + lines[0], suite())
    bad = text.replace('"main_metric": ' + str(json.loads(lines[0])["metrics"]["main_metric"]), '"main_metric": 1.5', 1)
    with pytest.raises(SubmissionError, match=r"line 1: .*not a number in \[0, 1\]"):
        parse_results(bad, suite())
    with pytest.raises(SubmissionError, match="line 3: not JSON"):
        parse_results("\n".join(lines[:2] + ["{oops"] + lines[2:]), suite())


def test_bundle_is_deterministic_and_validates(tmp_path):
    run = make_run(tmp_path / "run", seed=3)
    sub = make_subset(tmp_path / "s.npy", pool_uids()[:200])
    a = build_bundle(run, sub, "micro", "filtering", "m")
    b = build_bundle(run, sub, "micro", "filtering", "m")
    assert a == b
    bundle, checked = check_bundle(a)
    assert checked.manifest["dataset_size"] == 200
    assert len(bundle.uids) == 200
    assert checked.aggregates["Average"] == pytest.approx(json.loads((run / "scores.json").read_text())["aggregates"]["Average"])
    c = build_bundle(run, sub, "micro", "filtering", "another name")
    assert read_bundle(c).content_hash != bundle.content_hash


def _members(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def _rezip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for n, d in members.items():
            zf.writestr(n, d)
    return buf.getvalue()


def test_bundle_defects_are_refused(tmp_path):
    run = make_run(tmp_path / "run")
    sub = make_subset(tmp_path / "s.npy", pool_uids()[:50])
    good = _members(build_bundle(run, sub, "micro", "filtering", "m"))
    with pytest.raises(SubmissionError, match="unexpected member"):
        read_bundle(_rezip({**good, "evil.sh": b"rm -rf /"}))
    with pytest.raises(SubmissionError, match="missing member.*scores.json"):
        read_bundle(_rezip({k: v for k, v in good.items() if k != "scores.json"}))
    with pytest.raises(SubmissionError, match="not a zip"):
        read_bundle(b"hello")
    # a gzip bomb: 64 MiB of zeros is far over what the micro pool (4,096 uids) allows
    bomb = gzip.compress(b"\0" * (64 << 20))
    with pytest.raises(SubmissionTooLarge, match="more uids than"):
        read_bundle(_rezip({**good, "subset.npy.gz": bomb}))
    # wrong dtype: plain uint64 instead of upstream's (u8,u8) pairs
    buf = io.BytesIO()
    np.save(buf, np.arange(10, dtype=np.uint64))
    with pytest.raises(SubmissionError, match="wrong dtype"):
        validate_bundle(read_bundle(_rezip({**good, "subset.npy.gz": gzip.compress(buf.getvalue())})))
    # a scale that does not exist
    m = json.loads(good["manifest.json"])
    m["scale"] = "galactic"
    with pytest.raises(SubmissionError, match="unknown scale 'galactic'"):
        validate_bundle(read_bundle(_rezip({**good, "manifest.json": json.dumps(m).encode()})))
    # the pool: a subset with uids outside the registered pool
    outside = read_bundle(_rezip(good))
    pool = np.sort(outside.uids[10:])
    with pytest.raises(SubmissionError, match="10 of 50 uids are not in the registered 'micro' pool"):
        validate_bundle(outside, pool=pool)
    # the server reads info.json itself: a micro run sent to the tiny board, and a checkpoint hash of nothing
    m = json.loads(good["manifest.json"])
    with pytest.raises(SubmissionError, match="info.json: the run was trained at scale 'micro'; this entry is for "
                                              "the 'tiny' board"):
        validate_bundle(read_bundle(_rezip({**good, "manifest.json": json.dumps({**m, "scale": "tiny"}).encode()})))
    for nothing in ("0" * 64, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"):
        bad = json.dumps({**m, "checkpoint_sha256": nothing}).encode()
        with pytest.raises(SubmissionError, match="'checkpoint_sha256' is the hash of nothing"):
            validate_bundle(read_bundle(_rezip({**good, "manifest.json": bad})))
    with pytest.raises(SubmissionError, match="info.json: expected a JSON object"):
        validate_bundle(read_bundle(_rezip({**good, "info.json": b"[1, 2]"})))


def test_tampered_scores_refused(tmp_path):
    run = make_run(tmp_path / "run")
    scores = json.loads((run / "scores.json").read_text())
    scores["aggregates"]["VTAB"] += 0.01
    (run / "scores.json").write_text(json.dumps(scores))
    sub = make_subset(tmp_path / "s.npy", pool_uids()[:50])
    with pytest.raises(SubmissionError, match="aggregate 'VTAB' is .* per-task results give"):
        check_bundle(build_bundle(run, sub, "micro", "filtering", "m"))


def _with_scores(good: dict[str, bytes], edit) -> bytes:
    scores = json.loads(good["scores.json"])
    edit(scores)
    return _rezip({**good, "scores.json": json.dumps(scores).encode()})


def test_standard_errors_are_optional_shape_checked_and_recomputed(tmp_path):
    sub = make_subset(tmp_path / "s.npy", pool_uids()[:50])
    plain = check_bundle(build_bundle(make_run(tmp_path / "plain"), sub, "micro", "filtering", "m"))[1]
    assert plain.tasks_se is None and plain.aggregates_se is None          # older submissions still pass
    run = make_run(tmp_path / "se", se=0.03)
    good = _members(build_bundle(run, sub, "micro", "filtering", "m"))
    checked = validate_bundle(read_bundle(_rezip(good)))
    assert set(checked.tasks_se) == set(checked.results) and set(checked.tasks_se.values()) == {0.03}
    assert checked.aggregates_se["Average"] == pytest.approx(0.03 / np.sqrt(38), abs=1e-15)
    assert checked.aggregates_se["ImageNet"] == 0.03
    vtab = len(suite().groups["VTAB"])
    assert checked.aggregates_se["VTAB"] == pytest.approx(0.03 / np.sqrt(vtab), abs=1e-15)

    def null_one(s):                                    # an unknown task se: its groups' se unknown too
        s["tasks_se"]["Flickr"] = None
        s["aggregates_se"]["Retrieval"] = s["aggregates_se"]["Average"] = None
    ok = validate_bundle(read_bundle(_with_scores(good, null_one)))
    assert ok.aggregates_se["Retrieval"] is None and ok.aggregates_se["VTAB"] is not None

    def zero_for_unknown(s):                            # an unknown se claimed as 0: refused
        null_one(s)
        s["aggregates_se"]["Average"] = 0.0

    def setter(field, key, value):
        return lambda s: s[field].__setitem__(key, value)
    bad = {
        "aggregates_se as a list": (lambda s: s.__setitem__("aggregates_se", [0.01]),
                                    "field 'aggregates_se' must be an object"),
        "negative": (setter("aggregates_se", "Average", -0.01), r"field 'aggregates_se': aggregate 'Average': -0.01"),
        "a string": (setter("tasks_se", "MNIST", "0.1"), r"field 'tasks_se': task 'MNIST': '0.1' is not a number"),
        "unknown aggregate": (setter("aggregates_se", "Bogus", 0.1), r"field 'aggregates_se': unknown aggregate"),
        "unknown task": (setter("tasks_se", "Bogus", 0.1), r"field 'tasks_se': unknown task"),
        "missing task": (lambda s: s["tasks_se"].pop("MNIST"), r"field 'tasks_se': task\(s\) missing: 'MNIST'"),
        "inconsistent": (setter("aggregates_se", "VTAB", 0.03), r"field 'aggregates_se': 'VTAB' is 0.03 but"),
        "zero for unknown": (zero_for_unknown, r"field 'aggregates_se': 'Average' is 0.0 but .* give null"),
        "no tasks_se": (lambda s: s.pop("tasks_se"), "'aggregates_se' is given without 'tasks_se'"),
    }
    for what, (edit, msg) in bad.items():
        with pytest.raises(SubmissionError, match=msg):
            validate_bundle(read_bundle(_with_scores(good, edit)))


def test_submit_dry_run_and_errors(tmp_path, capsys):
    run = make_run(tmp_path / "run", seed=1)
    sub = make_subset(tmp_path / "s.npy", pool_uids()[:300])
    out = tmp_path / "b.zip"
    rc = main(["submit", "--run", str(run), "--subset", str(sub), "--scale", "micro", "--track", "filtering",
               "--name", "dry", "--dry-run", "--bundle-out", str(out)])
    assert rc == 0 and out.is_file()
    assert "Average" in capsys.readouterr().out
    assert read_bundle(out.read_bytes()).manifest["dataset_size"] == 300
    # a run trained at another scale
    rc = main(["submit", "--run", str(run), "--subset", str(sub), "--scale", "tiny", "--track", "filtering",
               "--name", "x", "--dry-run"])
    assert rc == 2 and "trained at scale 'micro'" in capsys.readouterr().err
    # no checkpoint
    (run / "checkpoints" / "epoch_latest.pt").unlink()
    rc = main(["submit", "--run", str(run), "--subset", str(sub), "--scale", "micro", "--track", "filtering",
               "--name", "x", "--dry-run"])
    assert rc == 2 and "epoch_latest.pt: missing" in capsys.readouterr().err


def test_submit_hf_repo_offline_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    run = make_run(tmp_path / "run")
    sub = make_subset(tmp_path / "s.npy", pool_uids()[:30])
    rc = main(["submit", "--run", str(run), "--subset", str(sub), "--scale", "micro", "--track", "filtering",
               "--name", "hf", "--hf-repo", "someone/entry"])
    err = capsys.readouterr().err
    assert rc == 2 and "--hf-repo someone/entry: cannot upload, Hugging Face offline mode is on" in err
    assert (run / "submission_micro_filtering.zip").is_file()  # the bundle stays for a later upload


def test_write_bundle_roundtrip_byod(tmp_path):
    run = make_run(tmp_path / "run")
    data = build_bundle(run, None, "micro", "byod", "own data", dataset_size=5_000_000)
    bundle, checked = check_bundle(data)
    assert bundle.uids is None and checked.manifest["dataset_size"] == 5_000_000
    with pytest.raises(Exception, match="--subset is required"):
        build_bundle(run, None, "micro", "filtering", "x")
    assert write_bundle  # public API stays importable


def test_pool_membership_matches_set_semantics():
    from datacurate.uids import fingerprint
    from leaderboard.validate import in_sorted_pool

    rng = np.random.default_rng(0)
    # few distinct high halves, so many pool uids share one (the slow path is exercised too)
    pool = np.unique(np.array([(rng.integers(0, 50), rng.integers(0, 1 << 62)) for _ in range(3000)], dtype="u8,u8"))
    probe = np.unique(np.concatenate([pool[rng.choice(len(pool), 400, replace=False)],
                                      np.array([(rng.integers(0, 60), rng.integers(0, 1 << 62)) for _ in range(300)],
                                               dtype="u8,u8")]))
    expect = np.isin(np.array([f"{a}:{b}" for a, b in probe]), np.array([f"{a}:{b}" for a, b in pool]))
    assert np.array_equal(in_sorted_pool(probe, pool), expect) and 350 < expect.sum() <= 700
    assert fingerprint(probe) == __import__("hashlib").sha256(np.ascontiguousarray(probe).tobytes()).hexdigest()


def test_a_database_from_before_standard_errors_is_upgraded_and_its_rows_have_none(tmp_path):
    from pathlib import Path

    import sqlalchemy as sa
    from alembic import command
    from alembic.config import Config

    import leaderboard.db
    from leaderboard import store
    from leaderboard.db import make_engine, open_db

    db = tmp_path / "old.sqlite"
    engine = make_engine(db)
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(leaderboard.db.__file__).with_name("migrations")))
    with engine.begin() as conn:                     # the schema as it was at revision 0001
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
        conn.execute(sa.text("insert into teams (id, name, token_hash, revoked, created_at) "
                             "values (1, 't', 'h', 0, '2026-11-22 00:00:00')"))
        conn.execute(sa.text(
            "insert into submissions (content_hash, team_id, scale, track, suite, name, description, dataset_size, "
            "checkpoint_sha256, average, aggregates, results, created_at) values ('c', 1, 'tiny', 'filtering', "
            "'offline', 'old', '', 10, 'x', 0.1, '{\"Average\": 0.1}', '{}', '2026-11-22 00:00:00')"))
    engine.dispose()
    _, Session = open_db(db)                         # upgrades to the newest revision
    with Session() as s:
        row = store.as_dict(store.ranked(s, "tiny")[0], full=True)
    assert row["name"] == "old" and row["aggregates_se"] is None and row["results_se"] is None


def test_offline_results_scored_by_an_older_suite_are_refused():
    """The offline suite's main metric is the rank percentile: a line whose main_metric is its top-1
    (the suite before 2026-12-03) would rank beside today's entries on another scale."""
    off = suite_tasks("offline")
    assert set(off.metrics.values()) == {"mean_rank_percentile"}

    def lines(main: str) -> str:
        out = []
        for key, name in off.tasks.items():
            m = {"acc1": 0.05, "mean_recall@1": 0.01, "mean_rank_percentile": 0.6}
            out.append(json.dumps({"key": key, "dataset": name, "metrics": {**m, "main_metric": m[main]}}))
        return "\n".join(out)

    assert parse_results(lines("mean_rank_percentile"), off) == {n: 0.6 for n in off.tasks.values()}
    with pytest.raises(SubmissionError, match=r"main_metric is not its mean_rank_percentile .*older offline suite"):
        parse_results(lines("acc1"), off)
    older = lines("acc1").replace(', "mean_rank_percentile": 0.6', "")
    with pytest.raises(SubmissionError, match=r"\(None\): scored by an older offline suite"):
        parse_results(older, off)
    # the four-task suite of before 2026-12-05: its group-task line is named and the way out given
    group = json.dumps({"key": "emoji_group", "dataset": "Emoji group",
                        "metrics": {"mean_rank_percentile": 0.6, "main_metric": 0.6}})
    assert list(off.tasks) == ["emoji_subgroup", "emoji_concept", "emoji_name"]
    with pytest.raises(SubmissionError, match=r"line 1: task 'emoji_group' is not in suite 'offline'; .*score the run "
                                              r"again"):
        parse_results(group + "\n" + lines("mean_rank_percentile"), off)
