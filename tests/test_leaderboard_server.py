"""The real leaderboard server (uvicorn subprocess, SQLite file) on 127.0.0.1."""
from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from datacurate.cli import main
from datacurate.uids import make_uid
from test_leaderboard_helpers import Server, bundle_for, make_run, make_subset, new_token, pool_uids, suite


@pytest.fixture(scope="module")
def lb(tmp_path_factory):
    """One server for the module, with a team token and the micro pool registered."""
    tmp = tmp_path_factory.mktemp("lb")
    db = tmp / "lb.sqlite"
    token = new_token(db, "team-a")
    pool = make_subset(tmp / "pool.npy", pool_uids())
    assert main(["leaderboard", "pool", "--db", str(db), "--scale", "micro", "--uids", str(pool)]) == 0
    server = Server(db).start()
    yield {"url": server.url, "token": token, "tmp": tmp, "db": db, "server": server}
    server.stop()


@pytest.fixture(scope="module")
def lb_pg(tmp_path_factory):
    """The same server on a throwaway PostgreSQL database (skipped, with the reason, without one)."""
    from postgres_server import Postgres

    tmp = tmp_path_factory.mktemp("lb_pg")
    with Postgres() as pg:
        token = new_token(pg.url, "team-a")
        pool = make_subset(tmp / "pool.npy", pool_uids())
        assert main(["leaderboard", "pool", "--db", pg.url, "--scale", "micro", "--uids", str(pool)]) == 0
        server = Server(pg.url, log=tmp / "server.log").start()
        yield {"url": server.url, "token": token, "tmp": tmp, "db": pg.url, "server": server}
        server.stop()


def post(lb, data: bytes, token: str | None = "default", client=httpx):
    headers = {"Content-Type": "application/zip"}
    tok = lb["token"] if token == "default" else token
    if tok:
        headers["Authorization"] = f"Bearer {tok}"
    return client.post(lb["url"] + "/api/submissions", content=data, headers=headers, timeout=60)


def test_upload_list_page_and_dedup(lb, capsys):
    tmp = lb["tmp"]
    run = make_run(tmp / "run_cli", seed=11)
    sub = make_subset(tmp / "sub_cli.npy", pool_uids()[:400])
    rc = main(["submit", "--run", str(run), "--subset", str(sub), "--scale", "micro", "--track", "filtering",
               "--name", "CLI entry", "--description", "top 40%", "--to", lb["url"], "--token", lb["token"]])
    out = capsys.readouterr().out
    assert rc == 0 and "accepted: " + lb["url"] + "/submissions/" in out
    link = out.strip().splitlines()[-1].split("accepted: ")[1]
    sid = link.rsplit("/", 1)[1]
    # the same bundle again: stored once
    data = (run / "submission_micro_filtering.zip").read_bytes()
    r = post(lb, data)
    assert r.status_code == 200 and r.json()["duplicate"] is True and r.json()["id"] == sid
    rows = httpx.get(lb["url"] + "/api/submissions", params={"scale": "micro", "track": "filtering"}).json()
    assert [x["id"] for x in rows].count(sid) == 1
    one = httpx.get(lb["url"] + f"/api/submissions/{sid}").json()
    scores = json.loads((run / "scores.json").read_text())
    assert one["average"] == pytest.approx(scores["aggregates"]["Average"]) and one["dataset_size"] == 400
    assert one["team"] == "team-a" and len(one["results"]) == 38
    assert httpx.get(lb["url"] + f"/api/submissions/{sid}/bundle").content == data
    page = httpx.get(link)
    assert page.status_code == 200 and "CLI entry" in page.text and "top 40%" in page.text
    board = httpx.get(lb["url"] + "/leaderboard/micro/filtering")
    assert board.status_code == 200 and "CLI entry" in board.text and "<svg" in board.text
    assert httpx.get(lb["url"] + "/leaderboard/galactic/filtering").status_code == 404


@pytest.mark.parametrize("token,status", [(None, 401), ("dc_not-a-real-token", 401)])
def test_bad_token_refused(lb, token, status):
    r = post(lb, bundle_for(lb["tmp"], f"tok{status}{token}"), token=token)
    assert r.status_code == status and "token" in r.json()["detail"]


def _edited(lb, tag, edit_run=None, uids=None, scale="micro"):
    from leaderboard.submit import build_bundle

    tmp = lb["tmp"]
    run = make_run(tmp / f"run_{tag}", seed=5, scale=scale)
    if edit_run:
        edit_run(run)
    sub = tmp / f"sub_{tag}.npy"
    if uids is None:
        make_subset(sub, pool_uids()[:60])
    else:
        np.save(sub, uids)
    from leaderboard.bundle import read_bundle, write_bundle
    # build with valid pieces, then swap in the raw uid file (the client would refuse a bad one)
    good = read_bundle(build_bundle(run, tmp / "sub_ok.npy" if uids is not None else sub, scale, "filtering", tag))
    if uids is None:
        return build_bundle(run, sub, scale, "filtering", tag)
    m = dict(good.manifest, dataset_size=len(uids))
    return write_bundle(m, (run / "eval_results.jsonl").read_text(), (run / "scores.json").read_bytes(),
                        (run / "info.json").read_bytes(), sub.read_bytes())


def test_refusals(lb):
    make_subset(lb["tmp"] / "sub_ok.npy", pool_uids()[:60])

    def drop_task(run):
        p = run / "eval_results.jsonl"
        p.write_text("\n".join(l for l in p.read_text().splitlines() if '"imagenet-r"' not in l) + "\n")

    def tamper(run):
        p = run / "scores.json"
        s = json.loads(p.read_text())
        s["aggregates"]["Average"] = min(1.0, s["aggregates"]["Average"] + 0.05)
        p.write_text(json.dumps(s))

    def malformed_se(run):
        p = run / "scores.json"
        s = json.loads(p.read_text())
        s["tasks_se"] = {name: 0.01 for name in suite().tasks.values()}
        s["aggregates_se"] = [0.01]
        p.write_text(json.dumps(s))

    cases = {
        "missing task": (_edited(lb, "missing", drop_task), 422, "missing: imagenet-r"),
        "malformed aggregates_se": (_edited(lb, "badse", malformed_se), 422,
                                    "scores.json: field 'aggregates_se' must be an object"),
        "tampered aggregate": (_edited(lb, "tamper", tamper), 422, "aggregate 'Average'"),
        "unknown scale": (_edited(lb, "scale", scale="galactic"), 422, "unknown scale 'galactic'"),
    }
    pool = np.load(lb["tmp"] / "pool.npy")
    cases["unsorted uids"] = (_edited(lb, "unsorted", uids=pool[:60][::-1].copy()), 422, "not sorted")
    cases["uids outside the pool"] = (
        _edited(lb, "outside", uids=np.unique(np.array([(i, i) for i in range(60)], dtype="u8,u8"))), 422,
        "not in the registered 'micro' pool")
    from datacurate.scales import get_scale
    over = get_scale("micro").pool_size + 1                  # one uid more than the scale's pool holds
    big = np.unique(np.array([(int(make_uid("x", i)[:16], 16), i) for i in range(over)], dtype="u8,u8"))
    cases["oversized uid file"] = (_edited(lb, "big", uids=big), 413, "more than the 'micro' pool")
    before = len(httpx.get(lb["url"] + "/api/submissions").json())
    for what, (data, status, msg) in cases.items():
        r = post(lb, data)
        assert r.status_code == status, (what, r.text)
        assert msg in r.json()["detail"], (what, r.json())
    # a bundle over the server's upload limit (1 MiB in these tests)
    r = post(lb, b"PK" + b"\0" * (2 << 20))
    assert r.status_code == 413 and "limit" in r.json()["detail"]
    # the same without a Content-Length (chunked): the server counts while reading
    r = post(lb, (b"\0" * (256 << 10) for _ in range(8)))
    assert r.status_code == 413 and "over the 1,048,576-byte limit" in r.json()["detail"]
    assert len(httpx.get(lb["url"] + "/api/submissions").json()) == before


def test_html_in_names_is_escaped(lb):
    evil = '<script>alert("x")</script><b onmouseover=1>bold</b>'
    data = bundle_for(lb["tmp"], "evil", name=evil, description="<img src=x onerror=alert(1)>")
    r = post(lb, data)
    assert r.status_code == 201
    for url in (r.json()["url"], lb["url"] + "/leaderboard/micro/filtering"):
        text = httpx.get(url).text
        assert "<script>alert" not in text and "<b onmouseover" not in text and "<img src=x" not in text
        assert "&lt;script&gt;alert(" in text


def test_concurrent_uploads_none_lost_or_doubled(lb):
    tmp = lb["tmp"]
    bundles = [bundle_for(tmp, f"conc{i}", seed=100 + i) for i in range(50)]
    before = {x["id"] for x in httpx.get(lb["url"] + "/api/submissions").json()}
    lock = threading.Lock()
    results = []

    def client(k):
        with httpx.Client(timeout=120) as c:
            for data in bundles[k::10]:
                r = post(lb, data, client=c)
                with lock:
                    results.append((r.status_code, r.json().get("id")))

    with ThreadPoolExecutor(10) as ex:
        list(ex.map(client, range(10)))
    assert [s for s, _ in results] == [201] * 50
    ids = {i for _, i in results}
    assert len(ids) == 50
    after = [x["id"] for x in httpx.get(lb["url"] + "/api/submissions").json()]
    assert len(after) == len(set(after)) == len(before) + 50
    assert ids <= set(after)


def test_docs_and_openapi_without_cdn(lb):
    spec = httpx.get(lb["url"] + "/openapi.json").json()
    assert "/api/submissions" in spec["paths"] and "post" in spec["paths"]["/api/submissions"]
    docs = httpx.get(lb["url"] + "/docs").text
    assert "/api/submissions" in docs and "cdn" not in docs.lower() and "<script" not in docs
    for page in ("/", "/leaderboard/micro/filtering"):
        text = httpx.get(lb["url"] + page).text
        assert "<script" not in text and "http://" not in text.replace(lb["url"], "").replace(
            "http://www.w3.org/2000/svg", "")


def test_export_csv_and_json(lb, tmp_path):
    import csv

    out = tmp_path / "export"
    assert main(["leaderboard", "export", "--db", str(lb["db"]), "--out", str(out)]) == 0
    rows = json.loads((out / "leaderboard.json").read_text())
    api = httpx.get(lb["url"] + "/api/submissions").json()
    assert {r["id"] for r in rows} == {r["id"] for r in api}
    with open(out / "leaderboard.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(rows)
    assert [int(r["rank"]) for r in table[:3]] == [1, 2, 3]
    for board in {(r["scale"], r["track"], r["suite"]) for r in table}:   # ranked within each board
        avgs = [float(r["Average"]) for r in table if (r["scale"], r["track"], r["suite"]) == board]
        assert avgs == sorted(avgs, reverse=True)
    assert "Average se" in table[0]
    for r, j in zip(table, rows):
        assert r["Average se"] == ("" if j["aggregates_se"] is None else str(j["aggregates_se"]["Average"]))


def test_killed_server_loses_no_accepted_submission(tmp_path):
    db = tmp_path / "crash.sqlite"
    token = new_token(db, "crash-team")
    bundles = [bundle_for(tmp_path, f"k{i}", seed=200 + i) for i in range(40)]
    server = Server(db).start()
    lb = {"url": server.url, "token": token}
    accepted, stop = [], threading.Event()

    def uploader(k):
        with httpx.Client(timeout=30) as c:
            for data in bundles[k::4]:
                if stop.is_set():
                    return
                try:
                    r = post(lb, data, client=c)
                except httpx.TransportError:
                    return
                if r.status_code == 201:
                    accepted.append(r.json()["id"])

    threads = [threading.Thread(target=uploader, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    import time

    deadline = time.time() + 60
    while len(accepted) < 8 and time.time() < deadline:
        time.sleep(0.01)
    server.kill()  # SIGKILL while uploads are in flight
    stop.set()
    for t in threads:
        t.join(60)
    assert 8 <= len(accepted) < len(bundles)  # killed mid-run, with uploads still to come
    server.start()
    try:
        stored = {x["id"] for x in httpx.get(server.url + "/api/submissions").json()}
        assert set(accepted) <= stored
        # and the server takes uploads again after the crash
        r = post(lb, bundle_for(tmp_path, "after", seed=999))
        assert r.status_code == 201
    finally:
        server.stop()


def test_token_command_stores_hash_and_revokes(lb, capsys):
    import sqlite3

    from leaderboard.db import hash_token

    assert main(["leaderboard", "token", "--db", str(lb["db"]), "--team", "team-b"]) == 0
    tok = capsys.readouterr().out.strip()
    assert tok.startswith("dc_") and len(tok) > 40
    r = post(lb, bundle_for(lb["tmp"], "teamb", seed=7), token=tok)
    assert r.status_code == 201 and r.json()["team"] == "team-b"
    with sqlite3.connect(lb["db"]) as con:
        stored = con.execute("select token_hash from teams where name='team-b'").fetchone()[0]
        dump = "\n".join(con.iterdump())
    assert stored == hash_token(tok) and tok not in dump
    assert main(["leaderboard", "token", "--db", str(lb["db"]), "--team", "team-b", "--revoke"]) == 0
    r = post(lb, bundle_for(lb["tmp"], "teamb2", seed=8), token=tok)
    assert r.status_code == 401 and "revoked" in r.json()["detail"]


def test_client_retries_until_the_server_is_up(tmp_path):
    from datacurate.errors import UserError
    from leaderboard.submit import upload
    from test_leaderboard_helpers import free_port

    db = tmp_path / "late.sqlite"
    token = new_token(db, "late-team")
    data = bundle_for(tmp_path, "late")
    port = free_port()
    with pytest.raises(UserError, match=r"no answer after 2 attempt\(s\) \(ConnectError"):
        upload(data, f"http://127.0.0.1:{port}", token, retries=2)
    server = Server(db, port=port)
    starter = threading.Timer(0.3, server.start)
    starter.start()
    try:
        res = upload(data, server.url, token, retries=8)  # connection refused first, then accepted
        assert res["url"].startswith(server.url + "/submissions/") and res["duplicate"] is False
    finally:
        starter.join()
        server.stop()


def test_pool_command_reads_pool_metadata(tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from leaderboard.store import PoolCache
    from leaderboard.db import open_db

    pool = tmp_path / "pool"
    (pool / "metadata").mkdir(parents=True)
    uids = pool_uids(300, seed="meta")
    pq.write_table(pa.table({"uid": uids[:200]}), pool / "metadata" / "00000.parquet")
    pq.write_table(pa.table({"uid": uids[200:]}), pool / "metadata" / "00001.parquet")
    db = tmp_path / "p.sqlite"
    assert main(["leaderboard", "pool", "--db", str(db), "--scale", "micro", "--pool", str(pool)]) == 0
    assert "300 uids" in capsys.readouterr().out
    _, Session = open_db(db)
    with Session() as s:
        arr = PoolCache().get(s, "micro")
    from datacurate.uids import hex_to_pairs, sort_pairs

    assert np.array_equal(arr, np.unique(sort_pairs(hex_to_pairs(uids))))
    assert main(["leaderboard", "pool", "--db", str(db), "--scale", "micro", "--pool", str(tmp_path)]) == 2
    assert "not a pool" in capsys.readouterr().err


def _board_rows(html: str) -> dict[str, str]:
    """method name -> its table row's HTML, for the one suite on a board."""
    import re

    body = html.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    rows = re.findall(r"<tr>.*?</tr>", body, flags=re.S)
    return {re.search(r'<td class="name method">(.*?)</td>', r).group(1): r for r in rows}


def test_cpu_board_shows_intervals_and_marks_entries_within_noise(lb):
    """tiny: every score with its ± se; ≈ where the gap to the entry above is not outside both
    standard errors; † for a submission without them (shown, never compared)."""
    from leaderboard.submit import build_bundle

    tmp, names = lb["tmp"], list(suite().tasks)
    sub = make_subset(tmp / "sub_se.npy", pool_uids()[:100])
    se_avg = 0.06 / np.sqrt(len(names))                        # every task se 0.06: Average se 0.0097
    entries = [("A lead", 0.50, 0.06), ("B close", 0.495, 0.06), ("C far", 0.40, 0.06),
               ("D plain", 0.30, None), ("E plain", 0.2999, None)]
    for name, v, se in entries:
        run = make_run(tmp / f"run_se_{name[0]}", values={k: v for k in names}, scale="tiny", se=se)
        assert post(lb, build_bundle(run, sub, "tiny", "filtering", name)).status_code == 201
    page = httpx.get(lb["url"] + "/leaderboard/tiny/filtering").text
    rows = _board_rows(page)
    assert list(rows) == [n for n, _, _ in entries]
    assert f"0.5000<span class=\"se\"> ± {se_avg:.4f}</span>" in rows["A lead"]
    assert 'class="tie"' not in rows["A lead"] and 'class="tie"' in rows["B close"]   # 0.005 < 0.0097
    assert 'class="tie"' not in rows["C far"]                                          # 0.095 > both
    for plain in ("D plain", "E plain"):                       # no se: no ±, marked †, never called a tie
        assert "±" not in rows[plain] and 'class="nose"' in rows[plain] and 'class="tie"' not in rows[plain]
    assert "±" in rows["C far"] and 'class="nose"' not in rows["C far"]
    assert "within noise" in page and "submitted without standard errors" in page
    one = [x for x in httpx.get(lb["url"] + "/api/submissions", params={"scale": "tiny"}).json()
           if x["name"] == "B close"][0]
    assert one["aggregates_se"]["Average"] == pytest.approx(se_avg, abs=1e-12)
    details = httpx.get(lb["url"] + f"/submissions/{one['id']}").text
    aggregates, per_task = details.split("<h2>Per task", 1)
    assert per_task.count("± 0.0600") == len(names)            # each task with its se
    assert f"± {se_avg:.4f}" in aggregates and "± 0.0600" in aggregates   # Average; ImageNet is one task


def test_upstream_board_shows_no_intervals(lb):
    from leaderboard.submit import build_bundle

    run = make_run(lb["tmp"] / "run_small_se", seed=4, scale="small", se=0.01)
    sub = make_subset(lb["tmp"] / "sub_small.npy", pool_uids()[:100])
    assert post(lb, build_bundle(run, sub, "small", "filtering", "small entry")).status_code == 201
    page = httpx.get(lb["url"] + "/leaderboard/small/filtering").text
    assert "small entry" in page and "±" not in page and 'class="nose"' not in page


def test_another_teams_copy_is_refused_as_a_copy(lb):
    """Team b uploads team a's entry under its own name: same checkpoint -> 409; same uids and results with
    another checkpoint file -> 409; a real entry of its own -> 201."""
    from leaderboard.submit import build_bundle

    tmp = lb["tmp"]
    token_b = new_token(lb["db"], "team-b")
    run = make_run(tmp / "run_original", seed=31)
    sub = make_subset(tmp / "sub_original.npy", pool_uids()[:222])
    assert post(lb, build_bundle(run, sub, "micro", "filtering", "original")).status_code == 201
    r = post(lb, build_bundle(run, sub, "micro", "filtering", "our own method"), token=token_b)
    assert r.status_code == 409 and "checkpoint_sha256 is that of entry" in r.json()["detail"]
    (run / "checkpoints" / "epoch_latest.pt").write_bytes(b"re-saved weights")
    r = post(lb, build_bundle(run, sub, "micro", "filtering", "our own method"), token=token_b)
    assert r.status_code == 409 and "the same uids and results as entry" in r.json()["detail"]
    assert "'original', another team's" in r.json()["detail"]
    mine = post(lb, bundle_for(tmp, "team_b_own", seed=32), token=token_b)
    assert mine.status_code == 201
    rows = httpx.get(lb["url"] + "/api/submissions", params={"scale": "micro", "track": "filtering"}).json()
    assert [x["name"] for x in rows].count("our own method") == 0


def test_every_response_carries_the_security_headers_and_no_server_version(lb):
    for path, status in (("/", 200), ("/leaderboard/micro/filtering", 200), ("/api/submissions", 200),
                         ("/static/style.css", 200), ("/no/such/page", 404)):
        r = httpx.get(lb["url"] + path)
        assert r.status_code == status or path.startswith("/static"), (path, r.status_code)
        h = r.headers
        assert "default-src 'none'" in h["content-security-policy"] and "frame-ancestors 'none'" in \
            h["content-security-policy"], path
        assert h["x-content-type-options"] == "nosniff" and h["x-frame-options"] == "DENY"
        assert h["referrer-policy"] == "no-referrer" and "server" not in h, (path, dict(h))
    r = post(lb, b"not a zip")
    assert r.status_code == 422 and r.headers["x-frame-options"] == "DENY"


def test_near_copies_of_another_teams_uids_are_flagged(lb):
    """Jaccard >= 0.99 with another team's entry is flagged on the page and in the JSON, never for the
    original, and not at 0.95."""
    from leaderboard.submit import build_bundle

    tmp = lb["tmp"]
    token_c = new_token(lb["db"], "team-c")
    uids = pool_uids()
    run = make_run(tmp / "run_near_orig", seed=41)
    orig = post(lb, build_bundle(run, make_subset(tmp / "near_orig.npy", uids[500:900]), "micro", "filtering",
                                 "near original"))
    assert orig.status_code == 201 and orig.json()["near_copy_of"] is None
    near = uids[500:899] + uids[950:951]                      # 399 shared of 401: Jaccard 0.995
    r = post(lb, build_bundle(make_run(tmp / "run_near_copy", seed=42), make_subset(tmp / "near.npy", near),
                              "micro", "filtering", "near copy"), token=token_c)
    assert r.status_code == 201
    assert r.json()["near_copy_of"] == orig.json()["id"] and r.json()["near_copy_jaccard"] == pytest.approx(399 / 401)
    far = uids[500:880] + uids[950:970]                       # 380 shared of 420: 0.905
    r = post(lb, build_bundle(make_run(tmp / "run_near_far", seed=43), make_subset(tmp / "far.npy", far),
                              "micro", "filtering", "not a copy"), token=token_c)
    assert r.status_code == 201 and r.json()["near_copy_of"] is None
    page = httpx.get(lb["url"] + "/leaderboard/micro/filtering").text
    rows = _board_rows(page)
    assert f"near copy of {orig.json()['id'][:8]}" in rows["near copy"]
    assert "near copy of" not in rows["near original"] and "near copy of" not in rows["not a copy"]


def test_list_and_board_are_paginated(tmp_path):
    """1,000-entry boards came as one 700 kB page: the JSON list and the page now come 100 at a time."""
    from leaderboard import app as lbapp
    from leaderboard.db import Submission, Team, open_db

    db = tmp_path / "many.sqlite"
    _, Session = open_db(db)
    with Session() as s:
        team = Team(name="bulk", token_hash="0" * 64)
        s.add(team)
        s.flush()
        for i in range(250):
            s.add(Submission(content_hash=f"{i:064x}", team_id=team.id, scale="micro", track="byod", suite="offline",
                             name=f"entry {i:03d}", dataset_size=100, checkpoint_sha256=f"{i + 1:064x}",
                             average=i / 1000, aggregates={"Average": i / 1000}, results={}))
        s.commit()
    server = Server(db).start()
    try:
        r = httpx.get(server.url + "/api/submissions", params={"scale": "micro"})
        assert r.status_code == 200 and len(r.json()) == lbapp.PAGE_SIZE and r.headers["x-total-count"] == "250"
        assert r.json()[0]["name"] == "entry 249" and r.json()[0]["rank"] == 1
        r = httpx.get(server.url + "/api/submissions", params={"scale": "micro", "offset": 240, "limit": 50})
        assert [x["rank"] for x in r.json()] == list(range(241, 251)) and r.json()[-1]["name"] == "entry 000"
        assert httpx.get(server.url + "/api/submissions", params={"limit": 5000}).status_code == 422
        page = httpx.get(server.url + "/leaderboard/micro/byod", params={"page": 3})
        rows = _board_rows(page.text)
        assert len(rows) == 50 and "entry 000" in rows and "page 3 of 3" in page.text
        first = httpx.get(server.url + "/leaderboard/micro/byod").text
        assert len(_board_rows(first)) == 100 and ">next<" in first and len(first) < 150_000
    finally:
        server.stop()


# --- malformed uploads: one class per case, each a 4xx with a one-line reason and nothing stored ---------

def _good_members(lb) -> dict[str, bytes]:
    import io
    import zipfile

    data = bundle_for(lb["tmp"], "malformed_base", seed=77)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def _json_member(members: dict[str, bytes], name: str, change) -> dict[str, bytes]:
    """Members with one JSON member rewritten by ``change(dict) -> dict``."""
    return {**members, name: json.dumps(change(json.loads(members[name]))).encode()}


def _zip(members, *, flag=None, method=None, dup=None) -> bytes:
    """A bundle zip from members; ``flag``/``method``: (member, value) for one member's header; ``dup``: a
    member written twice."""
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for n, d in members.items():
            zi = zipfile.ZipInfo(n, date_time=(1980, 1, 1, 0, 0, 0))
            zi.compress_type = zipfile.ZIP_DEFLATED
            if method and method[0] == n:
                zi.compress_type = method[1]
            zf.writestr(zi, d)
        if dup:
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")          # zipfile warns about the duplicate name
                zf.writestr(dup, members[dup])
    data = buf.getvalue()
    if flag:       # zipfile resets the flags it writes: set the bit in both headers of the member
        import struct

        name, bit = flag[0].encode(), flag[1]
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            local = zf.getinfo(flag[0]).header_offset
        out = bytearray(data)
        struct.pack_into("<H", out, local + 6, struct.unpack_from("<H", out, local + 6)[0] | bit)
        central = out.find(b"PK\x01\x02" + bytes(24) [:0])
        while central != -1:
            n = struct.unpack_from("<H", out, central + 28)[0]
            if out[central + 46:central + 46 + n] == name:
                struct.pack_into("<H", out, central + 8, struct.unpack_from("<H", out, central + 8)[0] | bit)
            central = out.find(b"PK\x01\x02", central + 4)
        data = bytes(out)
    return data


def _raw_manifest(members, field, raw_json_value) -> dict:
    """The manifest with one field's JSON text replaced as is (lone surrogates, NUL escapes, huge numbers)."""
    m = json.loads(members["manifest.json"])
    m[field] = "__X__"
    return {**members, "manifest.json": json.dumps(m).replace('"__X__"', raw_json_value).encode()}


def _corrupt(members, name, *, keep_length=True) -> bytes:
    """A bundle whose member ``name`` (stored) has one byte changed: its CRC no longer matches."""
    import zipfile

    data = _zip(members, method=(name, zipfile.ZIP_STORED))
    i = data.index(members[name]) + len(members[name]) // 2
    return data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:]


MALFORMED = {
    "huge integer": (lambda g: _zip(_raw_manifest(g, "dataset_size", "1" * 60)), 422, "a number of 60 characters"),
    "5,000-digit number": (lambda g: _zip(_raw_manifest(g, "dataset_size", "0." + "1" * 5000)), 422,
                           "a number of 5,002 characters"),
    "NaN": (lambda g: _zip(_raw_manifest(g, "dataset_size", "NaN")), 422, "NaN is not a JSON number"),
    "lone surrogate": (lambda g: _zip(_raw_manifest(g, "description", '"a\\ud800b"')), 422, "lone surrogate"),
    "NUL in text": (lambda g: _zip(_raw_manifest(g, "name", '"a\\u0000b"')), 422, "NUL character"),
    "encrypted member": (lambda g: _zip(g, flag=("scores.json", 0x1)), 422, "scores.json is encrypted"),
    "unsupported compression": (lambda g: _zip(g, method=("info.json", 12)), 422, "compression method 12"),
    "bad CRC": (lambda g: _corrupt(g, "eval_results.jsonl"), 422, "eval_results.jsonl cannot be read"),
    "corrupt gzip": (lambda g: _zip({**g, "subset.npy.gz": b"\x1f\x8b" + b"not gzip" * 10}), 422, "is not gzip data"),
    "deeply nested JSON": (lambda g: _zip({**g, "info.json": b"[" * 100 + b"]" * 100}), 422,
                           "nested deeper than 32 levels"),
    "very deeply nested JSON": (lambda g: _zip({**g, "info.json": b"[" * 200_000 + b"]" * 200_000}), 422,
                                "nested deeper than 32 levels"),
    "duplicate member": (lambda g: _zip(g, dup="manifest.json"), 422, "manifest.json appears more than once"),
    "invisible name": (lambda g: _zip(_raw_manifest(g, "name", '"\\u200b\\u200d \\u2066"')), 422,
                       "field 'name' must be a non-empty string with a visible character"),
    "unknown manifest field": (lambda g: _zip(_raw_manifest(g, "evil", '{"a": 1}')), 422,
                               "manifest.json: unknown field(s) 'evil'"),
    "unknown info.json field": (lambda g: _zip(_json_member(g, "info.json", lambda d: {**d, "note": "x" * 100})),
                                422, "info.json: unknown field(s) 'note'"),
    "unknown scores.json field": (lambda g: _zip(_json_member(g, "scores.json", lambda d: {**d, "ads": [1]})),
                                  422, "scores.json: unknown field(s) 'ads'"),
    "extra aggregate": (lambda g: _zip(_json_member(g, "scores.json", lambda d: {
                            **d, "aggregates": {**d["aggregates"], "Best ever": 1.0}})),
                        422, "scores.json: field 'aggregates': unknown aggregate(s) 'Best ever'"),
    "task score not the results'": (lambda g: _zip(_json_member(g, "scores.json", lambda d: {
                                        **d, "tasks": {k: v + 0.5 for k, v in d["tasks"].items()}})),
                                    422, "scores.json: field 'tasks': "),
    "task not in the results": (lambda g: _zip(_json_member(g, "scores.json", lambda d: {
                                    **d, "tasks": {**d["tasks"], "Made up": 0.9}})),
                                422, "'Made up' has no line in eval_results.jsonl"),
    "huge number in a results line": (
        lambda g: _zip({**g, "eval_results.jsonl": g["eval_results.jsonl"].replace(b'"main_metric": ',
                                                                                   b'"main_metric": 1' + b"0" * 80 + b", \"x\": ", 1)}),
        422, "eval_results.jsonl: line 1: a number of"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_upload_is_a_4xx_with_one_line_and_stores_nothing(lb, case):
    _refused_and_nothing_stored(lb, case)


@pytest.mark.parametrize("case", ["NaN", "lone surrogate", "NUL in text", "invisible name", "unknown info.json field",
                                  "huge integer", "deeply nested JSON"])
def test_malformed_upload_on_postgresql(lb_pg, case):
    """The refusals that concern text and numbers, on PostgreSQL: it refuses NUL and lone surrogates
    in text itself, so they must be caught before the database (a 422, not a 500)."""
    _refused_and_nothing_stored(lb_pg, case)


def test_entries_are_stored_and_ranked_on_postgresql(lb_pg):
    """An honest upload with non-ASCII text round-trips through PostgreSQL and is listed and ranked."""
    a = bundle_for(lb_pg["tmp"], "pg_a", name="méthode 🍄 α", seed=1, base=0.3)
    b = bundle_for(lb_pg["tmp"], "pg_b", name="plain", seed=2, base=0.5)
    for data in (a, b):
        r = post(lb_pg, data)
        assert r.status_code == 201, r.text[:500]
    r = httpx.get(lb_pg["url"] + "/api/submissions", params={"scale": "micro", "track": "filtering"})
    rows = r.json()
    assert r.headers["x-total-count"] == "2"
    assert [x["name"] for x in rows] == ["plain", "méthode 🍄 α"] and [x["rank"] for x in rows] == [1, 2]
    assert post(lb_pg, a).json()["duplicate"] is True                   # the same bundle again: not a new entry
    page = httpx.get(lb_pg["url"] + "/leaderboard/micro/filtering")
    assert page.status_code == 200 and "méthode 🍄 α" in page.text


def _refused_and_nothing_stored(lb, case):
    make_bundle, status, reason = MALFORMED[case]
    total = lambda: int(httpx.get(lb["url"] + "/api/submissions").headers["x-total-count"])  # noqa: E731
    before = total()
    r = post(lb, make_bundle(_good_members(lb)))
    assert r.status_code == status, (case, r.status_code, r.text[:500])
    detail = r.json()["detail"]
    assert reason in detail and "\n" not in detail, (case, detail)
    assert total() == before


def test_a_lying_zip_header_cannot_make_the_server_inflate_past_its_cap(lb):
    """A deflated member whose header claims 10 bytes but inflates to 64 MiB: the stream stops at the declared
    size (checked against the cap, 4 MiB for JSON members, before inflating), the member's CRC then fails, the
    answer is a 422, and reading it allocates a small multiple of the cap, never the 64 MiB."""
    import io
    import tracemalloc
    import zipfile
    import zlib

    from leaderboard.bundle import MAX_TEXT_MEMBER, read_bundle
    from leaderboard.validate import SubmissionError

    g = _good_members(lb)
    payload = b"[" + b" " * (64 << 20) + b"]"
    data = _zip({**g, "info.json": payload})
    assert len(data) < (1 << 20)                                      # a small upload
    # patch the member's uncompressed size in both headers to 10 bytes
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        info = zf.getinfo("info.json")
    size = len(payload).to_bytes(4, "little")
    data = data.replace(zlib.crc32(payload).to_bytes(4, "little") + info.compress_size.to_bytes(4, "little") + size,
                        zlib.crc32(payload).to_bytes(4, "little") + info.compress_size.to_bytes(4, "little")
                        + (10).to_bytes(4, "little"))
    tracemalloc.start()
    with pytest.raises(SubmissionError, match="info.json cannot be read"):
        read_bundle(data)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 4 * MAX_TEXT_MEMBER, peak
    r = post(lb, data)
    assert r.status_code == 422 and "info.json cannot be read" in r.json()["detail"]
    honest = _zip({**g, "info.json": payload})                          # the true size is refused before inflating
    r = post(lb, honest)
    assert r.status_code == 413 and "info.json is 67,108,866 bytes, over the 4,194,304-byte limit" in r.json()["detail"]
