"""per-key credit limits and policies

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02

Existing keys keep working as before: no credit limit, every model, no expiry, and
their own spend key. Their spend rows start at 0 (holds taken before this migration
carry no key and give back to the tenant alone).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch_op:
        batch_op.add_column(sa.Column("credit_limit", sa.BigInteger(), nullable=True))
        batch_op.add_column(
            sa.Column("limit_period", sa.String(length=8), nullable=False, server_default="total")
        )
        batch_op.add_column(sa.Column("models", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("spend_key_id", sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column("rotated_from_id", sa.String(length=36), nullable=True))
    op.execute("UPDATE api_keys SET spend_key_id = id")
    with op.batch_alter_table("api_keys") as batch_op:
        batch_op.alter_column("spend_key_id", existing_type=sa.String(length=36), nullable=False)
        batch_op.alter_column(
            "limit_period", existing_type=sa.String(length=8), server_default=None
        )
        batch_op.create_check_constraint(
            "ck_api_keys_credit_limit", "credit_limit IS NULL OR credit_limit >= 0"
        )
        batch_op.create_check_constraint(
            "ck_api_keys_limit_period", "limit_period IN ('total', 'day', 'month')"
        )
        batch_op.create_foreign_key(
            "fk_api_keys_rotated_from_id", "api_keys", ["rotated_from_id"], ["id"]
        )
        batch_op.create_index("ix_api_keys_spend_key_id", ["spend_key_id"], unique=False)

    op.create_table(
        "api_key_spend",
        sa.Column("spend_key_id", sa.String(length=36), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("spent", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("spent >= 0", name="ck_api_key_spend_spent"),
        sa.ForeignKeyConstraint(["spend_key_id"], ["api_keys.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("spend_key_id", "period_start"),
    )

    with op.batch_alter_table("credit_holds") as batch_op:
        batch_op.add_column(sa.Column("spend_key_id", sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column("spend_period", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("credit_holds") as batch_op:
        batch_op.drop_column("spend_period")
        batch_op.drop_column("spend_key_id")
    op.drop_table("api_key_spend")
    with op.batch_alter_table("api_keys") as batch_op:
        batch_op.drop_index("ix_api_keys_spend_key_id")
        batch_op.drop_constraint("fk_api_keys_rotated_from_id", type_="foreignkey")
        batch_op.drop_constraint("ck_api_keys_limit_period", type_="check")
        batch_op.drop_constraint("ck_api_keys_credit_limit", type_="check")
        batch_op.drop_column("rotated_from_id")
        batch_op.drop_column("spend_key_id")
        batch_op.drop_column("expires_at")
        batch_op.drop_column("models")
        batch_op.drop_column("limit_period")
        batch_op.drop_column("credit_limit")
