"""standard errors: submissions.results_se, submissions.aggregates_se (nullable: older rows have none)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""
from alembic import op
import sqlalchemy as sa

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("submissions", sa.Column("results_se", sa.JSON, nullable=True))
    op.add_column("submissions", sa.Column("aggregates_se", sa.JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("submissions") as b:
        b.drop_column("aggregates_se")
        b.drop_column("results_se")
