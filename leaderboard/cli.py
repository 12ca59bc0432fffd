"""`datacurate leaderboard serve|export|token|pool`: run and administer the leaderboard."""
from __future__ import annotations

import argparse

from datacurate.atomic import write_text_atomic
from datacurate.errors import UserError

DEFAULT_DB = "leaderboard.sqlite"

EPILOG = """\
examples:
  datacurate leaderboard token --db lb.sqlite --team my-lab        # prints the team's new token
  datacurate leaderboard pool --db lb.sqlite --scale micro --pool runs/micro/pool
  datacurate leaderboard serve --db lb.sqlite --port 8000          # http://127.0.0.1:8000/
  datacurate leaderboard serve --db postgresql+psycopg://u:p@host/lb --host 0.0.0.0
  datacurate leaderboard serve --db lb.sqlite --verify-workers 1 --pool tiny=runs/tiny/pool
  datacurate leaderboard verify --db lb.sqlite --pool tiny=runs/tiny/pool --once   # verify what is queued
  datacurate leaderboard export --db lb.sqlite --out exported/     # leaderboard.csv + leaderboard.json"""


def add_parser(sub) -> None:
    p = sub.add_parser("leaderboard", help="run the leaderboard service, export it, manage tokens and pools",
                       description="The leaderboard service (FastAPI on uvicorn) and its admin commands. "
                                   "--db is a SQLite file path or a SQLAlchemy URL (PostgreSQL).",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    lsub = p.add_subparsers(dest="lb_command", metavar="ACTION", required=True)

    def action(name: str, **kw) -> argparse.ArgumentParser:
        """An ACTION's parser: its examples shown as written, and the --db every action reads."""
        a = lsub.add_parser(name, formatter_class=argparse.RawDescriptionHelpFormatter, **kw)
        a.add_argument("--db", default=DEFAULT_DB, help=f"SQLite file or SQLAlchemy URL (default {DEFAULT_DB})")
        return a

    s = action("serve", help="serve the HTTP API and HTML pages",
               description="Serve the API (/api/submissions, /openapi.json, /docs) and the pages.",
               epilog="example:\n  datacurate leaderboard serve --db lb.sqlite --port 8000")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    s.add_argument("--max-upload-mb", type=float, default=64, help="largest bundle accepted, MiB (default 64)")
    s.add_argument("--max-checkpoint-mb", type=float, default=512,
                   help="largest checkpoint accepted for verification, MiB (default 512)")
    s.add_argument("--verify-workers", type=int, default=0, metavar="N",
                   help="also start N verification workers (`leaderboard verify`) beside the server")
    s.add_argument("--pool", action="append", default=[], metavar="SCALE=POOL",
                   help="with --verify-workers: the pool a CPU board was built on (repeatable)")
    s.set_defaults(func=_serve)

    v = action("verify", help="re-run the offline evaluation of queued entries on their checkpoints",
               description="A verification worker: claims entries whose checkpoint was uploaded, evaluates "
                           "the checkpoint on the board's pool (the offline suite) and marks the entry "
                           "verified when every task matches the submitted score, failed verification "
                           "otherwise. Run as many as you like; a killed one loses nothing.",
               epilog="example:\n  datacurate leaderboard verify --db lb.sqlite --pool tiny=runs/tiny/pool")
    v.add_argument("--pool", action="append", default=[], metavar="SCALE=POOL", required=True,
                   help="the pool a CPU board was built on, e.g. tiny=runs/tiny/pool (repeatable)")
    v.add_argument("--once", action="store_true", help="stop when the queue is empty")
    v.add_argument("--poll", type=float, default=5.0, help="seconds between looks at an empty queue (default 5)")
    v.set_defaults(func=_verify)

    e = action("export", help="write the tables as CSV and JSON",
               description="Write every submission, ranked per scale, track and suite, "
                           "as OUT/leaderboard.csv and OUT/leaderboard.json.",
               epilog="example:\n  datacurate leaderboard export --db lb.sqlite --out exported/")
    e.add_argument("--out", required=True, help="folder for leaderboard.csv and leaderboard.json")
    e.add_argument("--scale", help="only this scale")
    e.add_argument("--track", choices=("filtering", "byod"), help="only this track")
    e.set_defaults(func=_export)

    t = action("token", help="create (or revoke) a team's upload token",
               description="Create a team's upload token and print it once; the database keeps only "
                           "its sha256. Creating a token again replaces the old one.",
               epilog="example:\n  datacurate leaderboard token --db lb.sqlite --team my-lab")
    t.add_argument("--team", required=True, help="team name (shown on the leaderboard)")
    t.add_argument("--revoke", action="store_true", help="revoke the team's token instead")
    t.set_defaults(func=_token)

    o = action("pool", help="register a scale's pool uids (filtering subsets must lie inside it)",
               description="Register the pool of a scale, from an upstream uid .npy file or from "
                           "a pool folder (POOL/metadata/*.parquet uid column).",
               epilog="examples:\n  datacurate leaderboard pool --db lb.sqlite --scale micro --pool runs/micro/pool\n"
                      "  datacurate leaderboard pool --db lb.sqlite --scale small --uids small_pool.npy")
    o.add_argument("--scale", required=True, help="scale name (see `datacurate scales`)")
    src = o.add_mutually_exclusive_group(required=True)
    src.add_argument("--uids", help="upstream uid .npy of the whole pool")
    src.add_argument("--pool", help="a pool folder made by `datacurate pool download`")
    o.set_defaults(func=_pool)


def _serve(args) -> int:
    import subprocess
    import sys

    import uvicorn

    from .app import create_app

    workers = []
    if args.verify_workers:
        from .verify import parse_pools

        parse_pools(args.pool)              # a bad --pool fails now, not in the workers
        cmd = [sys.executable, "-m", "datacurate", "leaderboard", "verify", "--db", str(args.db)]
        for spec in args.pool:
            cmd += ["--pool", spec]
        workers = [subprocess.Popen(cmd) for _ in range(args.verify_workers)]
    elif args.pool:
        raise UserError("--pool is for the verification workers: give --verify-workers N too")
    app = create_app(args.db, max_upload_bytes=int(args.max_upload_mb * (1 << 20)),
                     max_checkpoint_bytes=int(args.max_checkpoint_mb * (1 << 20)))
    print(f"leaderboard on http://{args.host}:{args.port}/ (database {args.db})"
          + (f", {len(workers)} verification worker(s)" if workers else ""), flush=True)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning", server_header=False)
    finally:
        for w in workers:
            w.terminate()
        for w in workers:
            w.wait(timeout=30)
    return 0


def _verify(args) -> int:
    from .verify import parse_pools, run_worker

    pools = parse_pools(args.pool)
    n = run_worker(args.db, pools, once=args.once, poll_s=args.poll,
                   log=lambda m: print(m, flush=True))
    print(f"verified {n} entr{'y' if n == 1 else 'ies'}")
    return 0


def _token(args) -> int:
    from sqlalchemy import select

    from .db import Team, create_team_token, open_db

    _, Session = open_db(args.db)
    with Session() as s:
        if args.revoke:
            team = s.scalar(select(Team).where(Team.name == args.team))
            if team is None:
                raise UserError(f"--team {args.team!r}: no such team")
            team.revoked = True
            s.commit()
            print(f"revoked the token of team {args.team!r}")
        else:
            print(create_team_token(s, args.team))
    return 0


def pool_uids(pool_dir: str):
    """All uids of a downloaded pool (POOL/metadata/*.parquet), sorted as upstream."""
    import pyarrow.parquet as pq

    from datacurate.layout import PoolLayout
    from datacurate.uids import hex_to_pairs, sort_pairs

    files = PoolLayout.find(pool_dir).metadata_files()
    uids: list[str] = []
    for f in files:
        uids += pq.read_table(f, columns=["uid"]).column("uid").to_pylist()
    import numpy as np

    return np.unique(sort_pairs(hex_to_pairs(uids, str(pool_dir))))


def _pool(args) -> int:
    from datacurate.scales import get_scale
    from datacurate.uids import read_subset

    from . import store
    from .db import open_db

    try:
        scale = get_scale(args.scale)
    except ValueError as e:
        raise UserError(f"--scale: {e}") from None
    arr = read_subset(args.uids) if args.uids else pool_uids(args.pool)
    if len(arr) > scale.pool_size:
        raise UserError(f"{args.uids or args.pool}: {len(arr):,} uids, more than the {scale.name!r} pool size "
                        f"{scale.pool_size:,}")
    _, Session = open_db(args.db)
    with Session() as s:
        fp = store.register_pool(s, scale.name, arr)
    print(f"registered the {scale.name!r} pool: {len(arr):,} uids, fingerprint {fp}")
    return 0


def export_rows(session, scale: str | None = None, track: str | None = None) -> list[dict]:
    """Every submission as a flat row, ranked within its (scale, track, suite)."""
    from . import store

    from .app import cpu_scales

    teams = store.team_names(session)
    rows, rank = [], {}
    ranked = store.ranked(session, scale, track)
    verifs, verifiable = store.verifications(session, [r.id for r in ranked]), cpu_scales()
    for r in ranked:
        key = (r.scale, r.track, r.suite)
        rank[key] = rank.get(key, 0) + 1
        d = store.as_dict(r, teams.get(r.team_id),
                          verification=store.verification_label(r, verifs.get(r.id), verifiable))
        d["rank"] = rank[key]
        rows.append(d)
    rows.sort(key=lambda d: (d["scale"], d["track"], d["suite"], d["rank"]))
    return rows


def _export(args) -> int:
    import csv
    import io
    import json
    from pathlib import Path

    from .db import open_db

    _, Session = open_db(args.db)
    with Session() as s:
        rows = export_rows(s, args.scale, args.track)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    aggs = list(dict.fromkeys(a for r in rows for a in r["aggregates"]))
    ses = [f"{a} se" for a in aggs]   # bootstrap standard errors; empty where not submitted
    fields = ["scale", "track", "suite", "rank", "name", "team", "verification", *aggs, *ses, "dataset_size", "id",
              "checkpoint_sha256", "uid_fingerprint", "near_copy_of", "created_at", "description"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({**r, **r["aggregates"], **{f"{a} se": v for a, v in (r["aggregates_se"] or {}).items()}})
    for name, text in (("leaderboard.csv", buf.getvalue()), ("leaderboard.json", json.dumps(rows, indent=1))):
        write_text_atomic(out / name, text)
    print(f"wrote {len(rows)} submission(s) to {out / 'leaderboard.csv'} and {out / 'leaderboard.json'}")
    return 0
