"""portal sessions in the database (any node serves any session)

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "portal_sessions",
        sa.Column("id_hash", sa.String(64), primary_key=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("last_seen_at", sa.Float(), nullable=False),
        sa.Column("user", sa.String(200), nullable=False, server_default=""),
        sa.Column("subscription", sa.String(64), nullable=False, server_default=""),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
    )
    op.create_index("ix_portal_sessions_created_at", "portal_sessions", ["created_at"])
    op.create_index("ix_portal_sessions_last_seen_at", "portal_sessions", ["last_seen_at"])


def downgrade() -> None:
    op.drop_table("portal_sessions")
