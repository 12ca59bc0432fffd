"""`datacurate submit`: package a run into a bundle, check it as the server will, upload it."""
from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from pathlib import Path

from datacurate.atomic import atomic_path
from datacurate.errors import UserError
from datacurate.layout import RunLayout

DEFAULT_SUITE = "datacomp38"
RETRY_STATUS = {429, 500, 502, 503, 504}

EPILOG = """\
examples:
  datacurate submit --run runs/tiny/run --subset runs/tiny/subset.npy --scale tiny --track filtering \\
      --name "CLIP score top 30%" --to http://127.0.0.1:8000 --token dc_...
  datacurate submit --run RUN --subset SUBSET.npy --scale micro --track filtering --name N --dry-run
  datacurate submit --run RUN --subset SUBSET.npy --scale small --track filtering --name N \\
      --hf-repo my-user/my-datacomp-entry          # bundle + checkpoint to the Hugging Face Hub

The token may also be given as $DATACURATE_TOKEN (keeps it out of the process list)."""


def add_parser(sub) -> None:
    p = sub.add_parser("submit", help="package a run and upload it to a leaderboard",
                       description="Package RUN/eval_results.jsonl, RUN/scores.json, RUN/info.json, the checkpoint's "
                                   "sha256 and the uid file (gzip) into a bundle, validate it with the server's "
                                   "own checks, and upload it (with retries); prints the submission's link.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="training+eval run folder (RUN/)")
    p.add_argument("--subset", help="the uid file the model was trained on (required for --track filtering)")
    p.add_argument("--scale", required=True, help="competition scale (see `datacurate scales`)")
    p.add_argument("--track", required=True, choices=("filtering", "byod"), help="competition track")
    p.add_argument("--name", required=True, help="method name shown on the leaderboard")
    p.add_argument("--description", default="", help="a sentence about the method (shown publicly)")
    p.add_argument("--suite", help=f"evaluation suite (default: scores.json's 'suite', else {DEFAULT_SUITE})")
    p.add_argument("--dataset-size", type=int, help="samples in the training set (byod without --subset)")
    p.add_argument("--to", help="leaderboard URL, e.g. http://127.0.0.1:8000")
    p.add_argument("--token", default=os.environ.get("DATACURATE_TOKEN"), help="team upload token")
    p.add_argument("--bundle-out", help="where to write the bundle (default RUN/submission_SCALE_TRACK.zip)")
    p.add_argument("--dry-run", action="store_true", help="write and check the bundle, upload nothing")
    p.add_argument("--hf-repo", help="also upload bundle + checkpoint to this Hugging Face repo (as upstream)")
    p.add_argument("--retries", type=int, default=5, help="upload attempts (default 5)")
    p.add_argument("--no-checkpoint", action="store_true",
                   help="on a CPU scale, do not send the checkpoint (the entry then stays unverified)")
    p.set_defaults(func=_run)


def _need(path: Path, what: str) -> Path:
    if not path.is_file():
        raise UserError(f"{path}: missing ({what})")
    return path


def _scores_file(run: Path, suite: str | None) -> Path:
    """RUN/scores.json (the run's main suite), or scores.<suite>.json where --suite names another
    suite that `datacurate eval` scored beside it."""
    from eval.results import scored_file

    other = scored_file(run, suite) if suite is not None else None
    return other if other is not None and other.is_file() else RunLayout(run).scores


def build_bundle(run: str | os.PathLike, subset: str | os.PathLike | None, scale: str, track: str, name: str,
                 description: str = "", suite: str | None = None, dataset_size: int | None = None) -> bytes:
    """The bundle bytes for a run; raises UserError naming the file that is missing or wrong."""
    import numpy as np

    from datacurate.uids import read_subset

    from datacurate.clip import sha256_file

    from .bundle import write_bundle

    run = Path(run)
    lay = RunLayout(run)
    results = _need(lay.eval_results, "written by `datacurate eval`").read_text(encoding="utf-8")
    scores_bytes = _need(_scores_file(run, suite), "written by `datacurate eval`").read_bytes()
    info_bytes = _need(lay.info, "written by `datacurate train`").read_bytes()
    ckpt = _need(lay.checkpoint, "written by `datacurate train`")
    try:
        scores, info = json.loads(scores_bytes), json.loads(info_bytes)
    except json.JSONDecodeError as e:
        raise UserError(f"{run}: scores.json or info.json is not valid JSON ({e})") from None
    if isinstance(info, dict) and isinstance(info.get("scale"), str) and info["scale"] != scale:
        raise UserError(f"{lay.info}: the run was trained at scale {info['scale']!r}, not {scale!r}")
    uid_npy = None
    if subset is not None:
        arr = read_subset(subset)
        buf = io.BytesIO()
        np.save(buf, arr)
        uid_npy = buf.getvalue()
        dataset_size = len(arr)
    elif track == "filtering":
        raise UserError("--subset is required for the filtering track")
    if dataset_size is None:
        raise UserError("--dataset-size is required for --track byod without --subset")
    if suite is None:
        suite = scores.get("suite") if isinstance(scores, dict) and isinstance(scores.get("suite"), str) \
            else DEFAULT_SUITE
    results = _suite_results(results, suite)
    manifest = {"name": name, "description": description, "scale": scale, "track": track, "suite": suite,
                "dataset_size": int(dataset_size), "checkpoint_sha256": sha256_file(ckpt)}
    return write_bundle(manifest, results, scores_bytes, info_bytes, uid_npy)


def _suite_results(text: str, suite: str) -> str:
    """The suite's lines of RUN/eval_results.jsonl, which holds every task evaluated for the
    checkpoint (another suite's too); unchanged when nothing is dropped or the suite is unknown
    (the checks then name what is wrong)."""
    from .validate import SubmissionError, suite_tasks

    try:
        s = suite_tasks(suite)
    except SubmissionError:
        return text
    keep = set(s.tasks) | set(s.unscored)
    lines = text.splitlines()
    kept = [ln for ln in lines if _line_key(ln) in keep or _line_key(ln) is None]
    return text if len(kept) == len(lines) else "".join(ln + "\n" for ln in kept)


def _line_key(line: str):
    """A results line's task key; None for a line the checks must see (blank, not JSON, no key)."""
    try:
        row = json.loads(line)
    except ValueError:
        return None
    return row.get("key") if isinstance(row, dict) and isinstance(row.get("key"), str) else None


def check_bundle(data: bytes):
    """The server's checks, run locally (the pool is not known here)."""
    from .bundle import read_bundle
    from .validate import validate_bundle

    bundle = read_bundle(data)
    return bundle, validate_bundle(bundle)


def upload(data: bytes, url: str, token: str, retries: int = 5, timeout: float = 120.0) -> dict:
    """POST the bundle; retry on connection errors and 429/5xx with back-off; return the server's JSON."""
    return _send("POST", url.rstrip("/") + "/api/submissions", lambda: data, "application/zip", token, retries, timeout)


def upload_checkpoint(checkpoint: Path, url: str, submission_id: str, token: str, retries: int = 5,
                      timeout: float = 600.0) -> dict:
    """PUT a CPU-scale entry's checkpoint (streamed from the file), for the board's verification worker."""
    endpoint = f"{url.rstrip('/')}/api/submissions/{submission_id}/checkpoint"

    def body():
        with open(checkpoint, "rb") as f:
            while chunk := f.read(1 << 20):
                yield chunk

    return _send("PUT", endpoint, body, "application/octet-stream", token, retries, timeout)


def _send(method: str, endpoint: str, body, content_type: str, token: str, retries: int, timeout: float) -> dict:
    """One request with retries on connection errors and 429/5xx (back-off); the server's JSON or one line."""
    import httpx

    headers = {"Authorization": f"Bearer {token}", "Content-Type": content_type}
    last = ""
    with httpx.Client(timeout=timeout) as client:
        for attempt in range(max(1, retries)):
            if attempt:
                time.sleep(min(30.0, 0.5 * 2 ** (attempt - 1)))
            try:
                r = client.request(method, endpoint, content=body(), headers=headers)
            except httpx.TransportError as e:
                last = f"{type(e).__name__}: {e}"
                continue
            if r.status_code in RETRY_STATUS:
                last = f"HTTP {r.status_code}"
                continue
            try:
                body = r.json()
            except ValueError:
                body = {"detail": r.text[:500]}
            if r.status_code in (200, 201):
                return body
            raise UserError(f"{endpoint}: refused (HTTP {r.status_code}): {body.get('detail', body)}")
    raise UserError(f"{endpoint}: no answer after {max(1, retries)} attempt(s) ({last})")


def hf_upload(repo: str, bundle_path: Path, run: Path, scale: str, subset: Path | None) -> str:
    """Upload bundle, results and checkpoint to a Hugging Face repo (upstream's layout: SCALE_scale/...)."""
    try:
        from huggingface_hub import CommitOperationAdd, HfApi
    except ImportError:
        raise UserError("--hf-repo needs the huggingface_hub package (pip install huggingface_hub)") from None
    prefix = f"{scale}_scale"
    ops = [CommitOperationAdd(path_in_repo=f"{prefix}/submission.zip", path_or_fileobj=str(bundle_path)),
           CommitOperationAdd(path_in_repo=f"{prefix}/results.jsonl", path_or_fileobj=str(RunLayout(run).eval_results)),
           CommitOperationAdd(path_in_repo=f"{prefix}/checkpoint.pt",
                              path_or_fileobj=str(RunLayout(run).checkpoint))]
    if subset is not None:
        ops.append(CommitOperationAdd(path_in_repo=f"{prefix}/samples/{subset.name}", path_or_fileobj=str(subset)))
    try:
        from huggingface_hub.errors import OfflineModeIsEnabled
    except ImportError:  # older huggingface_hub
        OfflineModeIsEnabled = ConnectionError
    try:
        info = HfApi().create_commit(repo_id=repo, operations=ops, commit_message=f"Upload artifacts ({scale} scale)")
    except OfflineModeIsEnabled:
        raise UserError(f"--hf-repo {repo}: cannot upload, Hugging Face offline mode is on (HF_HUB_OFFLINE=1); "
                        f"upload {bundle_path} and the checkpoint from a machine that can reach the hub") from None
    except Exception as e:  # network, auth, repo missing: one clear line
        first = str(e).splitlines()[0] if str(e) else ""
        raise UserError(f"--hf-repo {repo}: upload failed ({type(e).__name__}: {first})") from None
    return str(getattr(info, "commit_url", repo))


def _run(args) -> int:
    from .bundle import write_bundle  # noqa: F401  (import errors surface before work)

    if not args.dry_run and not args.to and not args.hf_repo:
        raise UserError("give --to URL (and --token), --hf-repo REPO, or --dry-run")
    if args.to and not args.dry_run and not args.token:
        raise UserError("--token (or $DATACURATE_TOKEN) is required to upload")
    run = Path(args.run)
    if not run.is_dir():
        raise UserError(f"--run {run}: no such folder")
    data = build_bundle(run, args.subset, args.scale, args.track, args.name, args.description,
                        args.suite, args.dataset_size)
    bundle, checked = check_bundle(data)
    out = Path(args.bundle_out or run / f"submission_{args.scale}_{args.track}.zip")
    with atomic_path(out) as tmp:
        tmp.write_bytes(data)
    se = checked.aggregates_se or {}
    agg = ", ".join(f"{k} {v:.4f}" + (f" ± {se[k]:.4f}" if se.get(k) is not None else "")
                    for k, v in checked.aggregates.items())
    print(f"bundle {out} ({len(data):,} bytes, id {bundle.content_hash[:16]}): {agg}")
    if args.dry_run:
        return 0
    if args.hf_repo:
        print(f"uploaded to Hugging Face: {hf_upload(args.hf_repo, out, run, args.scale, Path(args.subset) if args.subset else None)}")
    if args.to:
        res = upload(data, args.to, args.token, retries=args.retries)
        state = "already on the leaderboard" if res.get("duplicate") else "accepted"
        print(f"{state}: {res.get('url')}")
        sys.stdout.flush()
        # the server says whether it verifies this entry and has its checkpoint yet ("awaiting checkpoint")
        if res.get("verification") == "awaiting checkpoint" and not args.no_checkpoint:
            ckpt = RunLayout(run).checkpoint
            ck = upload_checkpoint(ckpt, args.to, res["id"], args.token, retries=args.retries)
            print(f"checkpoint sent ({ckpt.stat().st_size:,} bytes): {ck.get('verification')}")
    return 0
