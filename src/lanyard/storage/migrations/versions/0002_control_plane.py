"""control plane: resource groups, resources, user-assigned identity links, role assignments

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "resource_groups",
        sa.Column("key", sa.String(300), primary_key=True),
        sa.Column("id", sa.String(300), nullable=False),
        sa.Column("subscription_id", sa.String(36), sa.ForeignKey("subscriptions.id"), nullable=False, index=True),
        sa.Column("name", sa.String(90), nullable=False),
        sa.Column("location", sa.String(64), nullable=False),
        sa.Column("tags", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
    )
    op.create_table(
        "resources",
        sa.Column("key", sa.String(1024), primary_key=True),
        sa.Column("id", sa.String(1024), nullable=False),
        sa.Column("subscription_id", sa.String(36), nullable=False, index=True),
        sa.Column("group_key", sa.String(300), sa.ForeignKey("resource_groups.key"), nullable=False, index=True),
        sa.Column("type", sa.String(200), nullable=False, index=True),
        sa.Column("name", sa.String(260), nullable=False),
        sa.Column("parent_key", sa.String(1024), index=True),
        sa.Column("kind", sa.String(64)),
        sa.Column("location", sa.String(64), nullable=False),
        sa.Column("tags", sa.Text(), nullable=False),
        sa.Column("properties", sa.Text(), nullable=False),
        sa.Column("identity_type", sa.String(40), nullable=False),
        sa.Column("system_principal_id", sa.String(36), index=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
    )
    op.create_table(
        "resource_identities",
        sa.Column(
            "resource_key", sa.String(1024), sa.ForeignKey("resources.key", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("identity_key", sa.String(1024), sa.ForeignKey("resources.key"), primary_key=True, index=True),
    )
    op.create_table(
        "role_assignments",
        sa.Column("name", sa.String(36), primary_key=True),
        sa.Column("scope", sa.String(1024), nullable=False),
        sa.Column("scope_key", sa.String(1024), nullable=False, index=True),
        sa.Column("role_definition_id", sa.String(36), nullable=False),
        sa.Column("principal_id", sa.String(36), nullable=False, index=True),
        sa.Column("principal_type", sa.String(32), nullable=False),
        sa.Column("description", sa.Text()),
        sa.Column("created_by", sa.String(36)),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
    )


def downgrade() -> None:
    for table in ("role_assignments", "resource_identities", "resources", "resource_groups"):
        op.drop_table(table)
