"""signing keys: when a pending key activates, when a retired key is removed, revocation

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("signing_keys") as batch:
        batch.add_column(sa.Column("activates_at", sa.Float()))
        batch.add_column(sa.Column("retired_at", sa.Float()))
        batch.add_column(sa.Column("removes_at", sa.Float()))
        batch.add_column(sa.Column("revoked_at", sa.Float()))


def downgrade() -> None:
    with op.batch_alter_table("signing_keys") as batch:
        for column in ("revoked_at", "removes_at", "retired_at", "activates_at"):
            batch.drop_column(column)
