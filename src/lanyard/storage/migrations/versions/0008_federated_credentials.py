"""federated identity credentials on user-assigned identities and applications

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "federated_credentials",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("app_id", sa.String(36), nullable=False),
        sa.Column("owner_kind", sa.String(16), nullable=False),
        sa.Column("owner_key", sa.String(1024), nullable=False),
        sa.Column("name", sa.String(120), nullable=False),
        sa.Column("issuer", sa.String(600), nullable=False),
        sa.Column("subject", sa.String(600)),
        sa.Column("claims_expression", sa.Text()),
        sa.Column("language_version", sa.Integer()),
        sa.Column("audiences", sa.Text(), nullable=False),
        sa.Column("description", sa.String(600)),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
    )
    op.create_index("ix_federated_credentials_app_id", "federated_credentials", ["app_id"])
    op.create_index("ix_federated_credentials_owner_key", "federated_credentials", ["owner_key"])
    op.create_index("ix_federated_owner_name", "federated_credentials", ["owner_key", "name"], unique=True)


def downgrade() -> None:
    op.drop_table("federated_credentials")
