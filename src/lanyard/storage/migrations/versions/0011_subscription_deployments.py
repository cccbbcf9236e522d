"""subscription-scope template deployments

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "subscription_deployments",
        sa.Column("key", sa.String(1024), primary_key=True),
        sa.Column("id", sa.String(1024), nullable=False),
        sa.Column("subscription_id", sa.String(36), sa.ForeignKey("subscriptions.id"), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("location", sa.String(64), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
    )
    op.create_index("ix_subscription_deployments_subscription_id", "subscription_deployments", ["subscription_id"])


def downgrade() -> None:
    op.drop_index("ix_subscription_deployments_subscription_id", "subscription_deployments")
    op.drop_table("subscription_deployments")
