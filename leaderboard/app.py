"""The leaderboard service: an HTTP API to upload and read submissions, and HTML pages.

Everything the pages need (CSS, plots as inline SVG) comes from this server; the
interactive Swagger/ReDoc pages (which load scripts from a CDN) are replaced by a
plain ``/docs`` page rendered from ``/openapi.json``.
"""
from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from .validate import TRACKS, SubmissionError, SubmissionTooLarge

DEFAULT_MAX_UPLOAD = 64 << 20      # bytes of one bundle
DEFAULT_MAX_CHECKPOINT = 512 << 20  # bytes of one checkpoint (tiny's epoch_latest.pt with its optimizer: 92 MB)
PAGE_SIZE = 100                     # entries per board page; the JSON list's default limit
MAX_PAGE_SIZE = 1000
DEFAULT_MAX_UID_BYTES = 1 << 30    # bytes of an uncompressed uid file (filtering: the pool bounds it lower)
TRACK_LABELS = {"filtering": "filtering", "byod": "bring-your-own-data"}
HERE = Path(__file__).parent

# on every response: the pages load nothing but this server's CSS and inline SVG, run no script
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self' data:; "
                               "frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}

_ERRORS = {401: {"description": "missing, unknown or revoked token"},
           413: {"description": "bundle or uid file over the size limit"},
           409: {"description": "a copy of another team's entry (same checkpoint, or same uids and results)"},
           422: {"description": "the submission fails validation; `detail` says which file and field"}}


def _templates():
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    return Environment(loader=FileSystemLoader(str(HERE / "templates")),
                       autoescape=select_autoescape(["html"], default=True))


def create_app(db: str | os.PathLike, max_upload_bytes: int = DEFAULT_MAX_UPLOAD,
               max_uid_bytes: int = DEFAULT_MAX_UID_BYTES, max_checkpoint_bytes: int = DEFAULT_MAX_CHECKPOINT) -> FastAPI:
    """The ASGI app on database ``db`` (path of a SQLite file, or a SQLAlchemy URL)."""
    from markupsafe import Markup

    from . import store
    from .bundle import read_bundle
    from .db import Team, open_db, team_for_token
    from .validate import validate_bundle

    engine, Session = open_db(db)
    pools = store.PoolCache()
    verifiable = cpu_scales()            # scales whose entries a worker re-evaluates
    page_cache: dict[tuple, tuple] = {}  # (scale, track, root) -> (board version, rendered page)
    env = _templates()
    app = FastAPI(title="datacurate leaderboard", version="1", docs_url=None, redoc_url=None,
                  description="Submissions per scale and track, validated and recomputed on upload.")
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    app.state.engine = engine

    @app.middleware("http")
    async def _security_headers(request: Request, call_next):
        response = await call_next(request)
        for k, v in SECURITY_HEADERS.items():
            response.headers.setdefault(k, v)
        return response

    @app.exception_handler(SubmissionError)
    async def _refused(request: Request, exc: SubmissionError):
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    def html(name: str, request: Request, status: int = 200, **ctx) -> HTMLResponse:
        root = request.scope.get("root_path", "") + "/"
        return HTMLResponse(env.get_template(name).render(root=root, **ctx), status_code=status)

    def _team_id(request: Request) -> int:
        auth = request.headers.get("authorization", "")
        if not auth.lower().startswith("bearer ") or not auth[7:].strip():
            raise HTTPException(401, "missing token: send 'Authorization: Bearer TOKEN' "
                                     "(an admin creates one with `datacurate leaderboard token`)")
        with Session() as s:
            team = team_for_token(s, auth[7:].strip())
            if team is None:
                raise HTTPException(401, "unknown or revoked token")
            return team.id

    def _accept(data: bytes, team_id: int, base: str) -> tuple[dict, bool]:
        bundle = read_bundle(data, max_uid_bytes=max_uid_bytes)
        with Session() as s:
            m = bundle.manifest
            pool = pools.get(s, m["scale"]) if m.get("track") == "filtering" and isinstance(m.get("scale"), str) else None
            checked = validate_bundle(bundle, pool)
            team = s.get(Team, team_id)
            row, created = store.add_submission(s, team, data, bundle, checked)
            out = _dict(s, row, team=team.name if row.team_id == team.id else None)
        out["url"] = f"{base}submissions/{out['id']}"
        out["duplicate"] = not created
        return out, created

    @app.post("/api/submissions", status_code=201, summary="Upload a submission bundle",
              description="Body: the bundle zip written by `datacurate submit`. 201 when stored, 200 when the "
                          "same bundle content was stored before (it is stored once).",
              responses={200: {"description": "already stored (same content hash)"}, **_ERRORS},
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/zip": {"schema": {"type": "string", "format": "binary"}}}}})
    async def upload(request: Request):
        team_id = await run_in_threadpool(_team_id, request)
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > max_upload_bytes:
            raise SubmissionTooLarge(f"bundle of {int(declared):,} bytes is over the {max_upload_bytes:,}-byte limit")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_upload_bytes:
                raise SubmissionTooLarge(f"bundle is over the {max_upload_bytes:,}-byte limit")
        out, created = await run_in_threadpool(_accept, bytes(body), team_id, str(request.base_url))
        return JSONResponse(out, status_code=201 if created else 200)

    def _dict(s, row, team=None, full=False, v=None):
        """A submission as the API and pages show it, with its verification state."""
        v = v if v is not None else store.verifications(s, [row.id]).get(row.id)
        return store.as_dict(row, team, full=full, verification=store.verification_label(row, v, verifiable),
                             verification_detail=(v.detail if v is not None else None) if full else None)

    def _rows(s, scale, track, verified, limit, offset) -> list[dict]:
        teams = store.team_names(s)
        rows = store.ranked(s, scale, track, verified=verified, limit=limit, offset=offset)
        vs = store.verifications(s, [r.id for r in rows])
        out = [_dict(s, r, teams.get(r.team_id), v=vs.get(r.id)) for r in rows]
        for i, d in enumerate(out):
            d["rank"] = offset + i + 1
        return out

    @app.get("/api/submissions", summary="List submissions, best first, one page at a time",
             description="`limit` entries (default 100, at most 1,000) from `offset`; the header X-Total-Count "
                         "gives how many there are. `verified=true`: only entries whose checkpoint re-evaluated "
                         "to the submitted scores.")
    def list_submissions(scale: str | None = Query(None), track: str | None = Query(None),
                         verified: bool = Query(False), limit: int = Query(PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE),
                         offset: int = Query(0, ge=0)):
        with Session() as s:
            total = store.count_ranked(s, scale, track, verified=verified)
            rows = _rows(s, scale, track, verified, limit, offset)
        return JSONResponse(rows, headers={"X-Total-Count": str(total)})

    @app.put("/api/submissions/{sid}/checkpoint", status_code=201, summary="Upload an entry's checkpoint for verification",
             description="Body: the run's checkpoint file (RUN/checkpoints/epoch_latest.pt) as it is; its sha256 must "
                         "be the manifest's checkpoint_sha256. Only the team that submitted the entry may send it, "
                         "and only on the CPU scales, where a worker re-runs the offline evaluation on it. 201 when "
                         "queued, 200 when it was sent before.",
             responses={403: {"description": "the entry is another team's"}, 404: {"description": "unknown id"},
                        **_ERRORS},
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}})
    async def upload_checkpoint(sid: str, request: Request):
        import hashlib

        team_id = await run_in_threadpool(_team_id, request)
        with Session() as s:
            row = _one(s, sid)
            scale, suite, want, owner = row.scale, row.suite, row.checkpoint_sha256, row.team_id
            ok = store.is_verifiable(row, verifiable)
        if owner != team_id:
            raise HTTPException(403, f"entry {sid[:12]} is another team's: only its team sends its checkpoint")
        if not ok:
            raise SubmissionError(f"checkpoint: entry {sid[:12]} (scale {scale}, suite {suite}) is not verified here: "
                                  f"only entries of {', '.join(sorted(verifiable))} scored on the offline suite are "
                                  "(their evaluation runs on a CPU); keep the checkpoint where others can fetch it "
                                  "(datacurate submit --hf-repo)")
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > max_checkpoint_bytes:
            raise SubmissionTooLarge(f"checkpoint of {int(declared):,} bytes is over the {max_checkpoint_bytes:,}-byte limit")
        body, h = bytearray(), hashlib.sha256()
        async for chunk in request.stream():
            body += chunk
            h.update(chunk)
            if len(body) > max_checkpoint_bytes:
                raise SubmissionTooLarge(f"checkpoint is over the {max_checkpoint_bytes:,}-byte limit")
        got = h.hexdigest()
        if got != want:
            raise SubmissionError(f"checkpoint: sha256 {got} is not the manifest's checkpoint_sha256 {want}; send "
                                  "the checkpoint the entry was evaluated with")

        def _store():
            with Session() as s:
                v, created = store.store_checkpoint(s, _one(s, sid), got, bytes(body))
                return {"id": sid, "verification": store.VERIFICATION_LABELS[v.status]}, created

        out, created = await run_in_threadpool(_store)
        return JSONResponse(out, status_code=201 if created else 200)

    def _one(s, sid: str):
        row = store.get_submission(s, sid)
        if row is None:
            raise HTTPException(404, f"no submission {sid!r}")
        return row

    @app.get("/api/submissions/{sid}", summary="One submission with its per-task results",
             responses={404: {"description": "unknown id"}})
    def get_one(sid: str) -> dict:
        with Session() as s:
            row = _one(s, sid)
            return _dict(s, row, store.team_names(s).get(row.team_id), full=True)

    @app.get("/api/submissions/{sid}/bundle", summary="The stored bundle zip",
             responses={404: {"description": "unknown id"}})
    def get_bundle(sid: str):
        with Session() as s:
            row = _one(s, sid)
            data = store.bundle_bytes(s, row.id)
        return Response(data, media_type="application/zip",
                        headers={"Content-Disposition": f'attachment; filename="{sid[:16]}.zip"'})

    @app.get("/healthz", summary="Liveness probe")
    def healthz() -> dict:
        return {"ok": True}

    @app.get("/", response_class=HTMLResponse, summary="Index of scales and tracks")
    def index(request: Request):
        from datacurate.scales import SCALES

        with Session() as s:
            counts = store.counts(s)
        return html("index.html", request, scales=list(SCALES.values()), tracks=TRACKS, counts=counts)

    @app.get("/leaderboard/{scale}/{track}", response_class=HTMLResponse, summary="Ranked table and plots")
    def board(request: Request, scale: str, track: str, verified: bool = Query(False),
              page: int = Query(1, ge=1, le=1_000_000)):
        from datacurate.scales import SCALES

        if scale not in SCALES or track not in TRACKS:
            return html("missing.html", request, status=404,
                        message=f"No leaderboard for scale {scale!r} and track {track!r}: scales are "
                                f"{', '.join(SCALES)}; tracks are {', '.join(TRACKS)}.")
        with Session() as s:
            version = store.board_version(s, scale, track)
            key = (scale, track, verified, page, request.scope.get("root_path", ""))
            hit = page_cache.get(key)
            if hit is not None and hit[0] == version:
                return HTMLResponse(hit[1])
            total = store.count_ranked(s, scale, track, verified=verified)
            pages = max(1, -(-total // PAGE_SIZE))
            rows = _rows(s, scale, track, verified, PAGE_SIZE, (min(page, pages) - 1) * PAGE_SIZE)
        intervals = scale in cpu_scales()
        sections = [_section(suite, [r for r in rows if r["suite"] == suite], Markup, intervals)
                    for suite in dict.fromkeys(r["suite"] for r in rows)]
        if len(page_cache) > 512:
            page_cache.clear()
        resp = html("board.html", request, scale=scale, track=track, track_label=TRACK_LABELS[track],
                    sections=sections, intervals=intervals, verified=verified, page=min(page, pages), pages=pages,
                    total=total, verifiable=scale in verifiable)
        page_cache[key] = (version, resp.body)
        return resp

    @app.get("/submissions/{sid}", response_class=HTMLResponse, summary="Details of one submission")
    def details(request: Request, sid: str):
        with Session() as s:
            row = _one(s, sid)
            d = _dict(s, row, store.team_names(s).get(row.team_id), full=True)
        return html("submission.html", request, s=d)

    @app.get("/docs", response_class=HTMLResponse, summary="This API, as a page without external assets")
    def docs(request: Request):
        return html("docs.html", request, spec=app.openapi())

    return app


def cpu_scales() -> set[str]:
    """The scales trained here on CPU (micro, tiny, ...): small eval sets and few samples seen, so
    their boards show each score's interval and mark entries not separated by it."""
    from datacurate.scales import offline_scales

    return set(offline_scales())


def within_noise(above: dict, row: dict, column: str = "Average") -> bool | None:
    """Whether ``row``'s score is not separated from the entry above it: the gap is not larger than
    both standard errors (a win needs it outside both). None when either has no se."""
    a, b = (above.get("aggregates_se") or {}).get(column), (row.get("aggregates_se") or {}).get(column)
    va, vb = above["aggregates"].get(column), row["aggregates"].get(column)
    if a is None or b is None or va is None or vb is None:
        return None
    gap = abs(va - vb)
    return not (gap > a and gap > b)


def _section(suite: str, rows: list[dict], Markup, intervals: bool = False) -> dict:
    """One suite's table columns and plots; on interval boards each row says whether it is tied
    with the entry above (``tie``) and whether its Average has no standard error (``no_se``)."""
    from .svgplot import scatter_svg
    from .validate import suite_tasks

    try:
        columns = suite_tasks(suite).aggregate_names()
    except SubmissionError:
        columns = list(rows[0]["aggregates"])
    columns = ["ImageNet", "Average"] + [c for c in columns if c not in ("ImageNet", "Average")] \
        if "ImageNet" in columns else ["Average"] + [c for c in columns if c != "Average"]
    plots = []
    if "ImageNet" in columns:
        plots.append(scatter_svg([(r["imagenet"], r["average"], r["name"]) for r in rows], "ImageNet accuracy",
                                 "Average (suite)", title="ImageNet vs average", css_class="plot imagenet-vs-average"))
    plots.append(scatter_svg([(r["dataset_size"], r["average"], r["name"]) for r in rows], "dataset size (log)",
                             "Average (suite)", title="dataset size vs average", log_x=True,
                             css_class="plot size-vs-average"))
    for i, r in enumerate(rows):
        r["no_se"] = intervals and (r.get("aggregates_se") or {}).get("Average") is None
        r["tie"] = intervals and i > 0 and bool(within_noise(rows[i - 1], r))
    return {"suite": suite, "rows": rows, "columns": columns, "plots": [Markup(p) for p in plots]}
