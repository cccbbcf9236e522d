"""users, groups, group membership and sign-in grants (codes, device codes, refresh tokens)

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("object_id", sa.String(36), primary_key=True),
        sa.Column("tenant_id", sa.String(36), sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("user_principal_name", sa.String(256), nullable=False),
        sa.Column("upn_key", sa.String(256), nullable=False, unique=True),
        sa.Column("display_name", sa.String(256), nullable=False),
        sa.Column("mail_nickname", sa.String(64), nullable=False),
        sa.Column("account_enabled", sa.Boolean(), nullable=False),
        sa.Column("password_hash", sa.String(256), nullable=False),
        sa.Column("tokens_valid_from", sa.Float(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
    )
    op.create_index("ix_users_tenant_id", "users", ["tenant_id"])
    op.create_index("ix_users_display_name", "users", ["display_name"])
    op.create_table(
        "groups",
        sa.Column("object_id", sa.String(36), primary_key=True),
        sa.Column("tenant_id", sa.String(36), sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("display_name", sa.String(256), nullable=False),
        sa.Column("mail_nickname", sa.String(64), nullable=False),
        sa.Column("description", sa.Text()),
        sa.Column("created_at", sa.Float(), nullable=False),
    )
    op.create_index("ix_groups_tenant_id", "groups", ["tenant_id"])
    op.create_index("ix_groups_display_name", "groups", ["display_name"])
    op.create_table(
        "group_members",
        sa.Column(
            "group_id", sa.String(36), sa.ForeignKey("groups.object_id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("member_id", sa.String(36), primary_key=True),
        sa.Column("member_type", sa.String(32), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
    )
    op.create_index("ix_group_members_member_id", "group_members", ["member_id"])
    op.create_table(
        "sign_in_grants",
        sa.Column("id_hash", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("family", sa.String(36), nullable=False),
        sa.Column("client_id", sa.String(36), nullable=False),
        sa.Column("user_id", sa.String(36)),
        sa.Column("tenant_id", sa.String(36), nullable=False),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("user_code", sa.String(16), unique=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
    )
    op.create_index("ix_sign_in_grants_family", "sign_in_grants", ["family"])
    op.create_index("ix_sign_in_grants_user_id", "sign_in_grants", ["user_id"])
    op.create_index("ix_sign_in_grants_expires_at", "sign_in_grants", ["expires_at"])


def downgrade() -> None:
    op.drop_table("sign_in_grants")
    op.drop_table("group_members")
    op.drop_table("groups")
    op.drop_table("users")
