"""Verified entries: a CPU-scale entry's checkpoint is re-evaluated by a worker beside the server."""
from __future__ import annotations

import json
import shutil

import httpx
import pytest

from datacurate.cli import main
from test_eval_helpers import make_tiny_run, write_eval_parquet
from test_leaderboard_helpers import Server, new_token


def _quiet(*a, **k):
    pass


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    """A server, two teams, an offline pool, and two evaluated micro runs (random-init models)."""
    from eval import evaluate_run

    tmp = tmp_path_factory.mktemp("verify")
    pool = tmp / "pool"
    write_eval_parquet(pool)
    runs = {}
    for name, seed in (("a", 0), ("b", 3)):
        runs[name] = make_tiny_run(tmp / name, seed=seed)
        evaluate_run(runs[name], suite="offline", pool=pool, device="cpu", log=_quiet)
    a, b = (json.loads((runs[n] / "scores.json").read_text())["tasks"] for n in "ab")
    assert a != b, "the two models must score differently for the liar to be caught"
    # a liar: run a's scores with run b's checkpoint (the manifest hashes the checkpoint it ships)
    liar = tmp / "liar"
    shutil.copytree(runs["a"], liar)
    shutil.copy(runs["b"] / "checkpoints" / "epoch_latest.pt", liar / "checkpoints" / "epoch_latest.pt")
    runs["liar"] = liar
    # the honest run's bundle with one task's score moved by 0.02, aggregates recomputed so it validates
    tweaked = tmp / "tweaked"
    shutil.copytree(runs["a"], tweaked)
    _move_one_score(tweaked, pool, "emoji_subgroup", 0.02)
    runs["tweaked"] = tweaked
    db = tmp / "lb.sqlite"
    tokens = {"t1": new_token(db, "team-1"), "t2": new_token(db, "team-2")}
    server = Server(db).start()
    yield {"url": server.url, "db": db, "pool": pool, "runs": runs, "tokens": tokens, "tmp": tmp}
    server.stop()


def _move_one_score(run, pool, key, delta):
    """eval_results.jsonl with ``key``'s main metric moved by ``delta``; scores.json remade from the lines
    as eval writes it (aggregates and their se consistent), so only re-evaluation can tell."""
    from eval.results import parse_lines
    from eval.runner import make_scores
    from eval.tasks import resolve_suite

    lines = {row["key"]: row for _, row in parse_lines((run / "eval_results.jsonl").read_text(), "x")}
    m = lines[key]["metrics"]
    from eval.offline import OFFLINE_TASKS

    m["main_metric"] = m[OFFLINE_TASKS[key]["main_metric"]] = m["main_metric"] + delta   # a consistent liar
    (run / "eval_results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines.values()))
    old = json.loads((run / "scores.json").read_text())
    name, tasks = resolve_suite("offline", pool=pool)
    new = make_scores(name, tasks, lines, {}, old["checkpoint_sha256"])
    new["offline_fingerprint"] = old["offline_fingerprint"]
    (run / "scores.json").write_text(json.dumps(new))


def _submit(board, run, name, token, capsys, *extra):
    rc = main(["submit", "--run", str(run), "--scale", "micro", "--track", "byod", "--dataset-size", "1000",
               "--name", name, "--to", board["url"], "--token", token, *extra])
    out = capsys.readouterr().out
    assert rc == 0, out
    sid = next(line for line in out.splitlines() if "accepted: " in line).rsplit("/", 1)[1]
    return sid, out


def _rows(board, **params) -> dict[str, dict]:
    r = httpx.get(board["url"] + "/api/submissions", params={"scale": "micro", **params})
    return {x["name"]: x for x in r.json()}


def test_honest_entry_verified_and_liar_failed_with_the_differing_tasks(board, capsys):
    honest, out = _submit(board, board["runs"]["a"], "honest", board["tokens"]["t1"], capsys)
    assert "checkpoint sent" in out and "verifying" in out
    liar, out = _submit(board, board["runs"]["liar"], "liar", board["tokens"]["t2"], capsys)
    assert "verifying" in out
    silent, out = _submit(board, board["runs"]["b"], "no checkpoint", board["tokens"]["t2"], capsys, "--no-checkpoint")
    assert "checkpoint sent" not in out
    # the honest checkpoint with one task's score raised by 0.02 (aggregates consistent): validates, then fails
    tweaked, out = _submit(board, board["runs"]["tweaked"], "tweaked", board["tokens"]["t1"], capsys,
                           "--description", "one task +0.02")
    assert "verifying" in out
    rows = _rows(board)
    assert rows["honest"]["verification"] == rows["liar"]["verification"] == "verifying"
    assert rows["no checkpoint"]["verification"] == "awaiting checkpoint"
    page = httpx.get(board["url"] + "/leaderboard/micro/byod").text
    assert page.count(">verifying<") == 3

    assert main(["leaderboard", "verify", "--db", str(board["db"]), "--pool", f"micro={board['pool']}", "--once"]) == 0
    assert "verified 3 entries" in capsys.readouterr().out
    rows = _rows(board)
    assert rows["honest"]["verification"] == "verified"
    assert rows["liar"]["verification"] == "failed verification"
    assert rows["tweaked"]["verification"] == "failed verification"
    moved = httpx.get(board["url"] + f"/api/submissions/{tweaked}").json()["verification_detail"]
    assert [k for k, t in moved["tasks"].items() if t["differs"]] == ["Emoji subgroup"]
    assert moved["tasks"]["Emoji subgroup"]["submitted"] - moved["tasks"]["Emoji subgroup"]["recomputed"] == \
        pytest.approx(0.02)
    detail = httpx.get(board["url"] + f"/api/submissions/{liar}").json()["verification_detail"]
    differing = [k for k, t in detail["tasks"].items() if t["differs"]]
    assert differing and detail["message"].startswith(f"{len(differing)} of 3 task(s) differ")
    ok = httpx.get(board["url"] + f"/api/submissions/{honest}").json()["verification_detail"]
    assert not any(t["differs"] for t in ok["tasks"].values()) and len(ok["tasks"]) == 3
    # the verified-only views
    assert list(_rows(board, verified="true")) == ["honest"]
    page = httpx.get(board["url"] + "/leaderboard/micro/byod", params={"verified": "true"}).text
    assert "honest" in page and "liar" not in page and ">verified<" in page
    page = httpx.get(board["url"] + f"/submissions/{liar}").text
    assert "failed verification" in page and "✗" in page
    # nothing left queued: a second worker finds no work
    assert main(["leaderboard", "verify", "--db", str(board["db"]), "--pool", f"micro={board['pool']}", "--once"]) == 0
    assert "verified 0 entries" in capsys.readouterr().out


def test_checkpoint_upload_refusals(board, capsys):
    from eval import evaluate_run

    run = make_tiny_run(board["tmp"] / "c", seed=5)
    evaluate_run(run, suite="offline", pool=board["pool"], device="cpu", log=_quiet)
    sid, _ = _submit(board, run, "refusals", board["tokens"]["t1"], capsys, "--no-checkpoint")
    url = board["url"] + f"/api/submissions/{sid}/checkpoint"
    ck = (run / "checkpoints" / "epoch_latest.pt").read_bytes()

    def put(data, token):
        return httpx.put(url, content=data, headers={"Authorization": f"Bearer {token}"}, timeout=60)

    r = put(ck[:-1] + b"x", board["tokens"]["t1"])                  # not the checkpoint the entry names
    assert r.status_code == 422 and "is not the manifest's checkpoint_sha256" in r.json()["detail"]
    assert put(ck, board["tokens"]["t2"]).status_code == 403         # another team's entry
    assert put(ck, "dc_nobody").status_code == 401
    assert _rows(board)["refusals"]["verification"] == "awaiting checkpoint"   # nothing stored
    r = put(ck, board["tokens"]["t1"])
    assert r.status_code == 201 and r.json()["verification"] == "verifying"
    assert put(ck, board["tokens"]["t1"]).status_code == 200                    # sent twice: stored once
    assert httpx.put(board["url"] + "/api/submissions/nope/checkpoint", content=b"x",
                     headers={"Authorization": f"Bearer {board['tokens']['t1']}"}).status_code == 404


def test_a_killed_workers_claim_is_taken_over_after_its_lease(board, tmp_path):
    """A worker that died mid-job leaves the entry 'running'; after the lease another worker takes it."""
    from leaderboard import store
    from leaderboard.db import Submission, Verification, open_db
    from leaderboard.verify import run_worker
    from sqlalchemy import select

    _, Session = open_db(board["db"])
    with Session() as s:
        sid = s.scalar(select(Submission.id).where(Submission.name == "refusals"))
        assert s.get(Verification, sid).status == "queued"
        assert store.claim_verification(s, "dead-worker", ["micro"]) == sid   # claimed, then the worker dies
        assert store.claim_verification(s, "other", ["micro"]) is None         # within the lease: not taken
    logs = []
    assert run_worker(str(board["db"]), {"micro": board["pool"]}, once=True, lease_s=0, log=logs.append) == 1
    with Session() as s:
        v = s.get(Verification, sid)
        assert v.status == "verified" and v.attempts == 2 and v.claimed_by is None, logs


def test_gpu_scale_entries_are_unverified_and_say_why(board):
    from leaderboard.db import Submission
    from leaderboard.store import is_verifiable, verification_label

    row = Submission(scale="small", suite="datacomp38")
    assert not is_verifiable(row, {"micro", "tiny"}) and verification_label(row, None, {"micro"}) == "unverified"
    page = httpx.get(board["url"] + "/leaderboard/small/filtering").text
    assert "needs a GPU" in page


def test_verify_command_refuses_a_bad_pool(tmp_path, capsys):
    assert main(["leaderboard", "verify", "--db", str(tmp_path / "x.sqlite"), "--pool", "small=/x"]) == 2
    assert "scale small is not verified here" in capsys.readouterr().err
    assert main(["leaderboard", "verify", "--db", str(tmp_path / "x.sqlite"), "--pool", "micro"]) == 2
    assert "expected SCALE=POOL_FOLDER" in capsys.readouterr().err
