"""host agents: hosts, one-time join tokens, workload placements

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hosts",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("principal_id", sa.String(36), nullable=False, unique=True),
        sa.Column("created_at", sa.Float(), nullable=False),
    )
    op.create_table(
        "join_tokens",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("host_name", sa.String(256)),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.Column("used_at", sa.Float()),
        sa.Column("created_by", sa.String(36)),
    )
    op.create_table(
        "placements",
        sa.Column("host_id", sa.String(36), sa.ForeignKey("hosts.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("resource_key", sa.String(1024), primary_key=True, index=True),
        sa.Column("created_at", sa.Float(), nullable=False),
    )


def downgrade() -> None:
    for table in ("placements", "join_tokens", "hosts"):
        op.drop_table(table)
