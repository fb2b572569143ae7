"""hook controls: disable/enable, headers and receiver auth, caps, rate limit, filter

Revision ID: 0007
Revises: 0005
Create Date: 2026-12-02

crohooks' own settings of a hook (``GET``/``PATCH /hooks/{id}/settings``), one column
each beside CRO's fields. A disabled hook keeps its queued deliveries (the claim passes
over it); auto-deactivation disables instead of soft-deleting. The partial index keeps the
claim's look-up of disabled hooks as small as the set of disabled hooks.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("hooks") as batch:
        batch.add_column(sa.Column("disabled_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("disabled_reason", sa.String(200), nullable=True))
        batch.add_column(sa.Column("disabled_by", sa.String(255), nullable=True))
        batch.add_column(sa.Column("headers", sa.Text(), nullable=True))
        batch.add_column(sa.Column("auth", sa.Text(), nullable=True))
        batch.add_column(sa.Column("max_in_flight", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("filter", sa.Text(), nullable=True))
        batch.add_column(sa.Column("rate_per_second", sa.Float(), nullable=True))
        batch.add_column(sa.Column("rate_burst", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("rate_next_at", sa.DateTime(), nullable=True))
    op.create_index(
        "ix_hooks_disabled",
        "hooks",
        ["id"],
        sqlite_where=sa.text("disabled_at IS NOT NULL"),
        postgresql_where=sa.text("disabled_at IS NOT NULL"),
    )


_COLUMNS = (
    "disabled_at",
    "disabled_reason",
    "disabled_by",
    "headers",
    "auth",
    "max_in_flight",
    "filter",
    "rate_per_second",
    "rate_burst",
    "rate_next_at",
)


def downgrade() -> None:
    op.drop_index("ix_hooks_disabled", table_name="hooks")
    with op.batch_alter_table("hooks") as batch:
        for column in _COLUMNS:
            batch.drop_column(column)
