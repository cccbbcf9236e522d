"""initial schema: tenants, subscriptions, applications, principals, credentials, signing keys

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "platform_state",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text()),
        sa.Column("sealed", sa.LargeBinary()),
    )
    op.create_table(
        "tenants",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("display_name", sa.String(256), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
    )
    op.create_table(
        "subscriptions",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("tenant_id", sa.String(36), sa.ForeignKey("tenants.id"), nullable=False, index=True),
        sa.Column("display_name", sa.String(256), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
    )
    op.create_table(
        "applications",
        sa.Column("object_id", sa.String(36), primary_key=True),
        sa.Column("app_id", sa.String(36), nullable=False, unique=True),
        sa.Column("tenant_id", sa.String(36), sa.ForeignKey("tenants.id"), nullable=False, index=True),
        sa.Column("display_name", sa.String(256), nullable=False, index=True),
        sa.Column("created_at", sa.Float(), nullable=False),
    )
    op.create_table(
        "service_principals",
        sa.Column("object_id", sa.String(36), primary_key=True),
        sa.Column("app_id", sa.String(36), nullable=False, unique=True),
        sa.Column("tenant_id", sa.String(36), sa.ForeignKey("tenants.id"), nullable=False, index=True),
        sa.Column("display_name", sa.String(256), nullable=False, index=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("resource_id", sa.String(1024)),
        sa.Column("created_at", sa.Float(), nullable=False),
    )
    op.create_table(
        "credentials",
        sa.Column("key_id", sa.String(36), primary_key=True),
        sa.Column("app_id", sa.String(36), nullable=False, index=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("display_name", sa.String(256)),
        sa.Column("secret_hash", sa.String(64)),
        sa.Column("hint", sa.String(8)),
        sa.Column("thumbprint_sha1", sa.String(40), index=True),
        sa.Column("thumbprint_sha256", sa.String(64), index=True),
        sa.Column("cert_der", sa.LargeBinary()),
        sa.Column("sealed_private_key", sa.LargeBinary()),
        sa.Column("start_at", sa.Float(), nullable=False),
        sa.Column("end_at", sa.Float(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
    )
    op.create_index("ix_credentials_app_kind", "credentials", ["app_id", "kind"])
    op.create_table(
        "signing_keys",
        sa.Column("kid", sa.String(64), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("sealed_private_key", sa.LargeBinary(), nullable=False),
        sa.Column("cert_der", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("activated_at", sa.Float()),
    )


def downgrade() -> None:
    for table in (
        "signing_keys",
        "credentials",
        "service_principals",
        "applications",
        "subscriptions",
        "tenants",
        "platform_state",
    ):
        op.drop_table(table)
