"""the audit trail: append-only, hash-chained records

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("chain", sa.String(64), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("principal", sa.String(64)),
        sa.Column("app_id", sa.String(64)),
        sa.Column("resource", sa.String(1200)),
        sa.Column("host", sa.String(64)),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("prev_sha256", sa.String(64), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_audit_chain_seq", "audit", ["chain", "seq"], unique=True)
    op.create_index("ix_audit_at", "audit", ["at"])
    op.create_index("ix_audit_principal", "audit", ["principal"])


def downgrade() -> None:
    op.drop_table("audit")
