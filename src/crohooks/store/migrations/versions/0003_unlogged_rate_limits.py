"""rate limit counters unlogged on PostgreSQL

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29

Every API request bumps a counter. In an ordinary table each bump is a WAL record and a
commit that waits for its flush; an UNLOGGED table skips both. Its rows are emptied after
a server crash, which for one-minute rate-limit windows only means a fresh window.
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE rate_limits SET UNLOGGED")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE rate_limits SET LOGGED")
