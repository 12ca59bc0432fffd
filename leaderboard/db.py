"""The leaderboard's database: SQLAlchemy models, engine and migrations.

A SQLite file by default (WAL, synchronous=FULL: a submission the server answered 201
for survives a crash), any SQLAlchemy URL (PostgreSQL: ``postgresql+psycopg://...``)
otherwise. The schema is created and upgraded by alembic at start-up.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import os
import secrets
from pathlib import Path

from sqlalchemy import (JSON, BigInteger, Boolean, DateTime, Float, ForeignKey, Integer, LargeBinary, String,
                        Text, create_engine, event, select)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from datacurate.errors import UserError


class Base(DeclarativeBase):
    pass


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


class Team(Base):
    __tablename__ = "teams"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class Submission(Base):
    __tablename__ = "submissions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    content_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id"))
    scale: Mapped[str] = mapped_column(String(32), index=True)
    track: Mapped[str] = mapped_column(String(16), index=True)
    suite: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    dataset_size: Mapped[int] = mapped_column(BigInteger)
    checkpoint_sha256: Mapped[str] = mapped_column(String(64))
    uid_fingerprint: Mapped[str | None] = mapped_column(String(64), nullable=True)
    imagenet: Mapped[float | None] = mapped_column(Float, nullable=True)
    average: Mapped[float] = mapped_column(Float)
    aggregates: Mapped[dict] = mapped_column(JSON)
    results: Mapped[dict] = mapped_column(JSON)
    # bootstrap standard errors (scores.json tasks_se, recomputed aggregates_se); NULL: submitted without
    results_se: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    aggregates_se: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    # another team's entry whose uid set this one nearly equals (Jaccard >= NEAR_COPY), flagged on the page
    near_copy_of: Mapped[str | None] = mapped_column(String(64), nullable=True)
    near_copy_jaccard: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class BundleBlob(Base):
    __tablename__ = "bundles"
    submission_id: Mapped[int] = mapped_column(ForeignKey("submissions.id"), primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class Checkpoint(Base):
    """The submitted model of a CPU-scale entry (its sha256 is the manifest's): what verification re-evaluates."""

    __tablename__ = "checkpoints"
    submission_id: Mapped[int] = mapped_column(ForeignKey("submissions.id"), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64))
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class Verification(Base):
    """The verification queue and its verdicts: one row per entry with a checkpoint.

    ``status``: queued -> running (claimed by a worker, ``claimed_at``) -> verified | failed. A
    running job whose claim is older than the lease is queued again (a killed worker loses nothing)."""

    __tablename__ = "verifications"
    submission_id: Mapped[int] = mapped_column(ForeignKey("submissions.id"), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    detail: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    claimed_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    claimed_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class Pool(Base):
    """A scale's pool uids, registered by an admin: filtering subsets must lie inside it."""

    __tablename__ = "pools"
    scale: Mapped[str] = mapped_column(String(32), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    n: Mapped[int] = mapped_column(BigInteger)
    uids_gz: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


def db_url(db: str | os.PathLike) -> str:
    """A path means a SQLite file; anything with '://' is a SQLAlchemy URL."""
    s = str(db)
    if "://" in s:
        return s
    return f"sqlite:///{Path(s).expanduser().resolve()}"


def make_engine(db: str | os.PathLike):
    url = db_url(db)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 60},
                               pool_size=8, max_overflow=8)

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()
    else:
        engine = create_engine(url, pool_pre_ping=True)
    return engine


def upgrade(engine) -> None:
    """Create or upgrade the schema to the newest alembic revision."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def open_db(db: str | os.PathLike):
    """Engine + session factory on an up-to-date schema."""
    if "://" not in str(db):
        parent = Path(db).expanduser().resolve().parent
        if not parent.is_dir():
            raise UserError(f"--db {db}: folder {parent} does not exist")
    engine = make_engine(db)
    upgrade(engine)
    return engine, sessionmaker(engine, expire_on_commit=False)


def hash_token(token: str) -> str:
    """Tokens are 256-bit random strings; their sha256 is what the database keeps."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_team_token(session: Session, team: str) -> str:
    """A new token for ``team`` (created if new; an existing team's old token stops working)."""
    token = "dc_" + secrets.token_urlsafe(32)
    row = session.scalar(select(Team).where(Team.name == team))
    if row is None:
        session.add(Team(name=team, token_hash=hash_token(token)))
    else:
        row.token_hash, row.revoked = hash_token(token), False
    session.commit()
    return token


def team_for_token(session: Session, token: str) -> Team | None:
    row = session.scalar(select(Team).where(Team.token_hash == hash_token(token)))
    return None if row is None or row.revoked else row
