"""redirect URIs of registered applications, forced password change, SSO sessions

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("applications") as batch:
        batch.add_column(sa.Column("redirect_uris", sa.Text(), nullable=False, server_default="{}"))
        batch.add_column(sa.Column("fallback_public_client", sa.Boolean()))
    with op.batch_alter_table("users") as batch:
        batch.add_column(
            sa.Column("force_change_password", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    op.create_table(
        "sso_sessions",
        sa.Column("id_hash", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.String(36), nullable=False),
        sa.Column("tenant_id", sa.String(36), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("last_seen_at", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
    )
    op.create_index("ix_sso_sessions_user_id", "sso_sessions", ["user_id"])
    op.create_index("ix_sso_sessions_expires_at", "sso_sessions", ["expires_at"])


def downgrade() -> None:
    op.drop_table("sso_sessions")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("force_change_password")
    with op.batch_alter_table("applications") as batch:
        batch.drop_column("fallback_public_client")
        batch.drop_column("redirect_uris")
