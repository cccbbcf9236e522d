"""vault: secrets and their versions

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "vault_secrets",
        sa.Column("vault_key", sa.String(1024), primary_key=True),
        sa.Column("name_key", sa.String(127), primary_key=True),
        sa.Column("name", sa.String(127), nullable=False),
        sa.Column("deleted_at", sa.Float()),
        sa.Column("purge_at", sa.Float()),
    )
    op.create_table(
        "vault_secret_versions",
        sa.Column("vault_key", sa.String(1024), primary_key=True),
        sa.Column("name_key", sa.String(127), primary_key=True),
        sa.Column("version", sa.String(32), primary_key=True),
        sa.Column("sealed_value", sa.LargeBinary(), nullable=False),
        sa.Column("content_type", sa.String(255)),
        sa.Column("tags", sa.Text()),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("not_before", sa.Integer()),
        sa.Column("expires", sa.Integer()),
        sa.Column("created", sa.Float(), nullable=False),
        sa.Column("updated", sa.Float(), nullable=False),
    )
    op.create_index("ix_vault_versions_created", "vault_secret_versions", ["vault_key", "name_key", "created"])


def downgrade() -> None:
    op.drop_table("vault_secret_versions")
    op.drop_table("vault_secrets")
