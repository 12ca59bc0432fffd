"""initial schema: teams, submissions, bundles, pools

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""
from alembic import op
import sqlalchemy as sa

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "teams",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("revoked", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_teams_token_hash", "teams", ["token_hash"])
    op.create_table(
        "submissions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("content_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("team_id", sa.Integer, sa.ForeignKey("teams.id"), nullable=False),
        sa.Column("scale", sa.String(32), nullable=False),
        sa.Column("track", sa.String(16), nullable=False),
        sa.Column("suite", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("dataset_size", sa.BigInteger, nullable=False),
        sa.Column("checkpoint_sha256", sa.String(64), nullable=False),
        sa.Column("uid_fingerprint", sa.String(64), nullable=True),
        sa.Column("imagenet", sa.Float, nullable=True),
        sa.Column("average", sa.Float, nullable=False),
        sa.Column("aggregates", sa.JSON, nullable=False),
        sa.Column("results", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_submissions_content_hash", "submissions", ["content_hash"])
    op.create_index("ix_submissions_scale", "submissions", ["scale"])
    op.create_index("ix_submissions_track", "submissions", ["track"])
    op.create_table(
        "bundles",
        sa.Column("submission_id", sa.Integer, sa.ForeignKey("submissions.id"), primary_key=True),
        sa.Column("data", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "pools",
        sa.Column("scale", sa.String(32), primary_key=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("n", sa.BigInteger, nullable=False),
        sa.Column("uids_gz", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )


def downgrade() -> None:
    for t in ("pools", "bundles", "submissions", "teams"):
        op.drop_table(t)
