"""A member changes their email address: the request, confirmed by a link sent to the new one.

Revision ID: a7c3e5d91b02
Revises: a7c3e2f19b04
Create Date: 2026-12-02 19:30:00
"""
import sqlalchemy as sa
from alembic import op

from crm.schema import protect_tenant_tables

revision = "a7c3e5d91b02"
down_revision = "a7c3e2f19b04"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "email_changes",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("old_email", sa.String(length=254), nullable=False),
        sa.Column("new_email", sa.String(length=254), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("confirmed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.Column("organization_id", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["organization_id"], ["organizations.id"],
                                name=op.f("fk_email_changes_organization_id_organizations"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"],
                                name=op.f("fk_email_changes_user_id_users"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_email_changes")),
    )
    op.create_index("uq_email_changes_organization_id_token_hash", "email_changes",
                    ["organization_id", "token_hash"], unique=True)
    op.create_index("ix_email_changes_organization_id_user_id", "email_changes",
                    ["organization_id", "user_id"])
    protect_tenant_tables("email_changes")


def downgrade():
    op.drop_index("ix_email_changes_organization_id_user_id", table_name="email_changes")
    op.drop_index("uq_email_changes_organization_id_token_hash", table_name="email_changes")
    op.drop_table("email_changes")
