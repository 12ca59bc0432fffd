"""verification: checkpoints and the verification queue; near-copy flags on submissions

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""
from alembic import op
import sqlalchemy as sa

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "checkpoints",
        sa.Column("submission_id", sa.Integer, sa.ForeignKey("submissions.id"), primary_key=True),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.DateTime),
    )
    op.create_table(
        "verifications",
        sa.Column("submission_id", sa.Integer, sa.ForeignKey("submissions.id"), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("detail", sa.JSON, nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("claimed_by", sa.String(200), nullable=True),
        sa.Column("claimed_at", sa.DateTime, nullable=True),
        sa.Column("updated_at", sa.DateTime),
    )
    op.add_column("submissions", sa.Column("near_copy_of", sa.String(64), nullable=True))
    op.add_column("submissions", sa.Column("near_copy_jaccard", sa.Float, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("submissions") as b:
        b.drop_column("near_copy_jaccard")
        b.drop_column("near_copy_of")
    op.drop_table("verifications")
    op.drop_table("checkpoints")
