"""Reading and writing submissions and pools: the only place that touches the tables."""
from __future__ import annotations

import datetime as dt
import gzip
import io

import numpy as np
from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, defer

from .db import BundleBlob, Checkpoint, Pool, Submission, Team, Verification, utcnow

NEAR_COPY = 0.99          # uid Jaccard with another team's entry at or above which an entry is flagged
VERIFY_LEASE_S = 3600     # a claimed verification not finished within this is queued again
# what the board shows for each verification state
VERIFICATION_LABELS = {None: "awaiting checkpoint", "queued": "verifying", "running": "verifying",
                       "verified": "verified", "failed": "failed verification"}


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
    near = near_copy(session, team, m["scale"], bundle.uids)
    row = Submission(
        content_hash=bundle.content_hash, team_id=team.id, scale=m["scale"], track=m["track"], suite=m["suite"],
        name=m["name"], description=m.get("description", ""), dataset_size=m["dataset_size"],
        checkpoint_sha256=m["checkpoint_sha256"], uid_fingerprint=fp,
        imagenet=checked.aggregates.get("ImageNet"), average=checked.aggregates["Average"],
        aggregates=checked.aggregates, results=checked.results,
        aggregates_se=checked.aggregates_se, results_se=checked.tasks_se,
        near_copy_of=near[0] if near else None, near_copy_jaccard=near[1] if near else None)
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


def submission_uids(session: Session, submission_id: int) -> np.ndarray | None:
    """The sorted uid array a stored filtering bundle carries (None for bring-your-own-data)."""
    from .bundle import read_bundle

    data = bundle_bytes(session, submission_id)
    return None if data is None else read_bundle(data).uids


def near_copy(session: Session, team: Team, scale: str, uids: np.ndarray | None) -> tuple[str, float] | None:
    """(content hash, Jaccard) of another team's entry whose uid set is nearly this one's (>= NEAR_COPY).

    Jaccard >= t needs t|A| <= |B| <= |A|/t, so only entries of about the same size are read."""
    if uids is None or not len(uids):
        return None
    n = len(uids)
    q = select(Submission.id, Submission.content_hash).where(
        Submission.scale == scale, Submission.team_id != team.id, Submission.uid_fingerprint.is_not(None),
        Submission.dataset_size >= int(NEAR_COPY * n), Submission.dataset_size <= int(n / NEAR_COPY) + 1)
    best = None
    for sid, content_hash in session.execute(q).all():
        other = submission_uids(session, sid)
        if other is None:
            continue
        both = len(np.intersect1d(uids, other, assume_unique=True))
        jaccard = both / (n + len(other) - both)
        if jaccard >= NEAR_COPY and (best is None or jaccard > best[1]):
            best = (content_hash, round(jaccard, 6))
    return best


def get_submission(session: Session, content_hash: str) -> Submission | None:
    return session.scalar(select(Submission).where(Submission.content_hash == content_hash))


def _board_query(q, scale: str | None, track: str | None, verified: bool):
    if scale:
        q = q.where(Submission.scale == scale)
    if track:
        q = q.where(Submission.track == track)
    if verified:
        q = q.join(Verification, Verification.submission_id == Submission.id).where(Verification.status == "verified")
    return q


def ranked(session: Session, scale: str | None = None, track: str | None = None, *, verified: bool = False,
           limit: int | None = None, offset: int = 0) -> list[Submission]:
    """Submissions best first: Average, then ImageNet, then the earliest; ``verified``: only verified ones;
    ``limit``/``offset``: one page of them."""
    q = select(Submission).options(defer(Submission.results), defer(Submission.results_se))  # details page only
    q = _board_query(q, scale, track, verified)
    q = q.order_by(Submission.average.desc(), Submission.imagenet.desc().nulls_last(), Submission.id)
    if offset:
        q = q.offset(offset)
    if limit is not None:
        q = q.limit(limit)
    return list(session.scalars(q))


def count_ranked(session: Session, scale: str | None = None, track: str | None = None, *,
                 verified: bool = False) -> int:
    """How many entries ``ranked`` would give without a page limit."""
    return session.scalar(_board_query(select(func.count(Submission.id)), scale, track, verified))


# --- verification: the checkpoint of a CPU-scale entry re-evaluated by a worker ---------------------------

def verifications(session: Session, submission_ids) -> dict[int, Verification]:
    ids = list(submission_ids)
    if not ids:
        return {}
    return {v.submission_id: v for v in session.scalars(select(Verification).where(Verification.submission_id.in_(ids)))}


def is_verifiable(row: Submission, cpu_scales) -> bool:
    """Entries a worker can re-evaluate: a CPU scale's, scored on the offline suite (its eval data is the
    board's pool's); a GPU scale's 38 tasks are not re-run here."""
    from eval.tasks import OFFLINE

    return row.scale in cpu_scales and row.suite == OFFLINE


def verification_label(row: Submission, v: Verification | None, cpu_scales) -> str:
    """What the board says of an entry: verified, failed verification, verifying, awaiting checkpoint,
    or unverified (not re-evaluated here: a GPU scale, or another suite than the offline one)."""
    if not is_verifiable(row, cpu_scales):
        return "unverified"
    return VERIFICATION_LABELS[v.status if v is not None else None]


def store_checkpoint(session: Session, row: Submission, sha256: str, data: bytes) -> tuple[Verification, bool]:
    """Keep the entry's checkpoint and queue its verification, once; (row, created)."""
    existing = session.get(Verification, row.id)
    if existing is not None:
        return existing, False
    session.add(Checkpoint(submission_id=row.id, sha256=sha256, data=data))
    v = Verification(submission_id=row.id, status="queued", attempts=0, updated_at=utcnow())
    session.add(v)
    try:
        session.commit()
    except IntegrityError:      # a concurrent upload of the same checkpoint won
        session.rollback()
        return session.get(Verification, row.id), False
    return v, True


def claim_verification(session: Session, worker: str, scales, lease_s: float = VERIFY_LEASE_S) -> int | None:
    """Claim the oldest queued verification (or one whose claim ran out) of ``scales``; its submission id.

    The claim is one conditional UPDATE: two workers never run the same job."""
    now = utcnow()
    stale = now - dt.timedelta(seconds=lease_s)
    free = or_(Verification.status == "queued", and_(Verification.status == "running", Verification.claimed_at < stale))
    q = (select(Verification.submission_id).join(Submission, Submission.id == Verification.submission_id)
         .where(free, Submission.scale.in_(list(scales))).order_by(Verification.updated_at, Verification.submission_id)
         .limit(8))
    for sid in session.scalars(q).all():
        res = session.execute(update(Verification).where(Verification.submission_id == sid, free)
                              .values(status="running", claimed_by=worker, claimed_at=now,
                                      attempts=Verification.attempts + 1, updated_at=now))
        session.commit()
        if res.rowcount == 1:
            return sid
    return None


def finish_verification(session: Session, submission_id: int, status: str, detail: dict) -> None:
    """Record a verdict (``verified``/``failed``) or put the job back (``queued``) with why."""
    session.execute(update(Verification).where(Verification.submission_id == submission_id)
                    .values(status=status, detail=detail, claimed_by=None, claimed_at=None, updated_at=utcnow()))
    session.commit()


def checkpoint_bytes(session: Session, submission_id: int) -> bytes | None:
    return session.scalar(select(Checkpoint.data).where(Checkpoint.submission_id == submission_id))


def board_version(session: Session, scale: str, track: str) -> tuple:
    """Changes whenever a submission is added to (scale, track) or one of its verifications moves: the page
    cache's key."""
    q = select(func.count(), func.max(Submission.id)).where(Submission.scale == scale, Submission.track == track)
    v = (select(func.count(), func.max(Verification.updated_at))
         .join(Submission, Submission.id == Verification.submission_id)
         .where(Submission.scale == scale, Submission.track == track))
    return tuple(session.execute(q).one()) + tuple(session.execute(v).one())


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


def as_dict(row: Submission, team: str | None = None, full: bool = False, verification: str | None = None,
            verification_detail: dict | None = None) -> dict:
    d = {"id": row.content_hash, "name": row.name, "description": row.description, "team": team,
         "scale": row.scale, "track": row.track, "suite": row.suite, "dataset_size": row.dataset_size,
         "imagenet": row.imagenet, "average": row.average, "aggregates": row.aggregates,
         "aggregates_se": row.aggregates_se,
         "checkpoint_sha256": row.checkpoint_sha256, "uid_fingerprint": row.uid_fingerprint,
         "verification": verification, "near_copy_of": row.near_copy_of, "near_copy_jaccard": row.near_copy_jaccard,
         "created_at": row.created_at.isoformat() + "Z"}
    if full:
        d["results"] = row.results
        d["results_se"] = row.results_se
        d["verification_detail"] = verification_detail
    return d
