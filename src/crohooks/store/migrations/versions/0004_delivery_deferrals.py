"""deferrals per delivery

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02

A 429 or 503 whose Retry-After asks for less than the retry schedule's next step is a
deferral: it is an attempt (``attempts`` counts it, the log shows it) that uses no step of
the schedule. The step a delivery is at is ``attempts - deferrals``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "deliveries",
        sa.Column("deferrals", sa.Integer(), server_default=sa.text("0"), nullable=False),
    )


def downgrade() -> None:
    op.drop_column("deliveries", "deferrals")
