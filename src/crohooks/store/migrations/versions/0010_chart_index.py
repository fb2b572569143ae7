"""the portal chart's index: deliveries by (hook, status, creation time)

Revision ID: 0010
Revises: 0008
Create Date: 2026-12-02

The hook page counts a hook's deliveries per hour and outcome over the last 24 hours. With
this index each of those counts is a range of the index alone, where the (hook, created_at)
index made every count read each delivery row of the day for its status.
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # IF NOT EXISTS: an operator with a large table may build it beforehand without
    # blocking writes (CREATE INDEX CONCURRENTLY, docs/decisions.md).
    op.create_index(
        "ix_deliveries_hook_status",
        "deliveries",
        ["hook_id", "status", "created_at"],
        if_not_exists=True,
    )


def downgrade() -> None:
    op.drop_index("ix_deliveries_hook_status", table_name="deliveries")
