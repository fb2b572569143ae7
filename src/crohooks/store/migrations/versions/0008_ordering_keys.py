"""ordering keys: per-(hook, key) sequence numbers and the ordering mode of a hook

Revision ID: 0008
Revises: 0005
Create Date: 2026-12-02

An event may carry an ordering key; each delivery of it gets the key and a sequence number
per (hook, key), counted in ``ordering_keys``. A keyed delivery waits (pending, with no
``next_attempt_at``) until it is the oldest pending delivery of its (hook, key). A hook's
``ordering`` is ``all`` (every update is delivered) or ``latest`` (waiting updates that a
newer one supersedes are marked ``superseded``).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_PENDING_KEYED = "status = 'pending' AND ordering_key IS NOT NULL"


def upgrade() -> None:
    op.add_column(
        "hooks",
        sa.Column("ordering", sa.String(8), nullable=False, server_default=sa.text("'all'")),
    )
    op.add_column("deliveries", sa.Column("ordering_key", sa.String(256), nullable=True))
    op.add_column(
        "deliveries",
        sa.Column("sequence", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
    )
    op.add_column(
        "deliveries",
        sa.Column("redelivered", sa.Boolean(), nullable=False, server_default=sa.text("false")),
    )
    op.create_index(
        "ix_deliveries_ordering",
        "deliveries",
        ["hook_id", "ordering_key", "sequence"],
        sqlite_where=sa.text(_PENDING_KEYED),
        postgresql_where=sa.text(_PENDING_KEYED),
    )
    op.create_table(
        "ordering_keys",
        sa.Column(
            "hook_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=False,
            nullable=False,
        ),
        sa.Column("ordering_key", sa.String(256), nullable=False),
        sa.Column("last_sequence", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("hook_id", "ordering_key"),
    )


def downgrade() -> None:
    op.drop_table("ordering_keys")
    op.drop_index("ix_deliveries_ordering", table_name="deliveries")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("redelivered")
        batch.drop_column("sequence")
        batch.drop_column("ordering_key")
    with op.batch_alter_table("hooks") as batch:
        batch.drop_column("ordering")
