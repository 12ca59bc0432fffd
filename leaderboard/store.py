"""Reading and writing submissions and pools: the only place that touches the tables."""
from __future__ import annotations

import gzip
import io

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, defer

from .db import BundleBlob, Pool, Submission, Team


def add_submission(session: Session, team: Team, bundle_bytes: bytes, bundle, checked) -> tuple[Submission, bool]:
    """Store a checked submission once; return (row, created). A concurrent twin wins or loses cleanly."""
    existing = get_submission(session, bundle.content_hash)
    if existing is not None:
        return existing, False
    m = checked.manifest
    fp = None
    if bundle.uids is not None:  # validated sorted: sha256 of its bytes is datacurate.uids.fingerprint
        import hashlib

        fp = hashlib.sha256(np.ascontiguousarray(bundle.uids).tobytes()).hexdigest()
    refuse_copies(session, team, m, fp, checked.results)
    row = Submission(
        content_hash=bundle.content_hash, team_id=team.id, scale=m["scale"], track=m["track"], suite=m["suite"],
        name=m["name"], description=m.get("description", ""), dataset_size=m["dataset_size"],
        checkpoint_sha256=m["checkpoint_sha256"], uid_fingerprint=fp,
        imagenet=checked.aggregates.get("ImageNet"), average=checked.aggregates["Average"],
        aggregates=checked.aggregates, results=checked.results,
        aggregates_se=checked.aggregates_se, results_se=checked.tasks_se)
    session.add(row)
    try:
        session.flush()
        session.add(BundleBlob(submission_id=row.id, data=bundle_bytes))
        session.commit()
    except IntegrityError:
        session.rollback()
        existing = get_submission(session, bundle.content_hash)
        if existing is None:
            raise
        return existing, False
    return row, True


def refuse_copies(session: Session, team: Team, m: dict, uid_fingerprint: str | None, results: dict) -> None:
    """Another team's entry on the board with the same checkpoint, or the same uid set and the same
    per-task results, is the original: a copy is refused (409) and named after it, never ranked anew."""
    from .validate import DuplicateEntry

    q = select(Submission).where(Submission.scale == m["scale"], Submission.team_id != team.id)
    same_ckpt = session.scalar(q.where(Submission.checkpoint_sha256 == m["checkpoint_sha256"]))
    if same_ckpt is not None:
        raise DuplicateEntry(f"manifest.json: checkpoint_sha256 is that of entry {same_ckpt.content_hash[:12]} "
                             f"({same_ckpt.name!r}, another team's): a copy is not a new entry")
    if uid_fingerprint is not None:
        for other in session.scalars(q.where(Submission.uid_fingerprint == uid_fingerprint)):
            if other.results == results:
                raise DuplicateEntry(f"subset.npy.gz and eval_results.jsonl: the same uids and results as entry "
                                     f"{other.content_hash[:12]} ({other.name!r}, another team's): a copy is not a "
                                     "new entry")


def get_submission(session: Session, content_hash: str) -> Submission | None:
    return session.scalar(select(Submission).where(Submission.content_hash == content_hash))


def ranked(session: Session, scale: str | None = None, track: str | None = None) -> list[Submission]:
    """Submissions best first: Average, then ImageNet, then the earliest."""
    q = select(Submission).options(defer(Submission.results), defer(Submission.results_se))  # details page only
    if scale:
        q = q.where(Submission.scale == scale)
    if track:
        q = q.where(Submission.track == track)
    q = q.order_by(Submission.average.desc(), Submission.imagenet.desc().nulls_last(), Submission.id)
    return list(session.scalars(q))


def board_version(session: Session, scale: str, track: str) -> tuple:
    """Changes whenever a submission is added to (scale, track): the page cache's key."""
    q = select(func.count(), func.max(Submission.id)).where(Submission.scale == scale, Submission.track == track)
    return tuple(session.execute(q).one())


def counts(session: Session) -> dict[tuple[str, str], int]:
    q = select(Submission.scale, Submission.track, func.count()).group_by(Submission.scale, Submission.track)
    return {(s, t): n for s, t, n in session.execute(q)}


def team_names(session: Session) -> dict[int, str]:
    return {i: n for i, n in session.execute(select(Team.id, Team.name))}


def bundle_bytes(session: Session, submission_id: int) -> bytes | None:
    return session.scalar(select(BundleBlob.data).where(BundleBlob.submission_id == submission_id))


def register_pool(session: Session, scale: str, uids: np.ndarray) -> str:
    """Record (or replace) the pool of ``scale``; returns its fingerprint."""
    from datacurate.uids import fingerprint

    buf = io.BytesIO()
    np.save(buf, uids)
    fp = fingerprint(uids)
    row = session.get(Pool, scale)
    blob = gzip.compress(buf.getvalue(), mtime=0)
    if row is None:
        session.add(Pool(scale=scale, fingerprint=fp, n=len(uids), uids_gz=blob))
    else:
        row.fingerprint, row.n, row.uids_gz = fp, len(uids), blob
    session.commit()
    return fp


class PoolCache:
    """Registered pools in memory, reloaded when the fingerprint in the database changes."""

    def __init__(self):
        self._cache: dict[str, tuple[str, np.ndarray]] = {}

    def get(self, session: Session, scale: str) -> np.ndarray | None:
        fp = session.scalar(select(Pool.fingerprint).where(Pool.scale == scale))
        if fp is None:
            return None
        hit = self._cache.get(scale)
        if hit is None or hit[0] != fp:
            blob = session.scalar(select(Pool.uids_gz).where(Pool.scale == scale))
            arr = np.load(io.BytesIO(gzip.decompress(blob)), allow_pickle=False)
            self._cache[scale] = hit = (fp, arr)
        return hit[1]


def as_dict(row: Submission, team: str | None = None, full: bool = False) -> dict:
    d = {"id": row.content_hash, "name": row.name, "description": row.description, "team": team,
         "scale": row.scale, "track": row.track, "suite": row.suite, "dataset_size": row.dataset_size,
         "imagenet": row.imagenet, "average": row.average, "aggregates": row.aggregates,
         "aggregates_se": row.aggregates_se,
         "checkpoint_sha256": row.checkpoint_sha256, "uid_fingerprint": row.uid_fingerprint,
         "created_at": row.created_at.isoformat() + "Z"}
    if full:
        d["results"] = row.results
        d["results_se"] = row.results_se
    return d
