"""trace context per delivery

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02

With OpenTelemetry on, the intake that queues a delivery stores its W3C ``traceparent``
with it, so the worker's claim and attempt spans continue the publisher's trace in another
process. NULL when tracing is off.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("deliveries", sa.Column("trace_context", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("deliveries", "trace_context")
