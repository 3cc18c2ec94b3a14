"""Sessions of their own: one row per browser login, API token and API key.

One nonce per user made logging out in one browser sign the user out everywhere and kill
every API token. Each way in is now a `user_sessions` row that ends on its own, so the nonce
goes. Sessions and tokens issued before this migration name a nonce and stop working: everyone
logs in once more.

Revision ID: dcc698b833ed
Revises: b0c4d3e8658e
Create Date: 2026-12-02 10:00:00
"""
import sqlalchemy as sa
from alembic import op

from crm.schema import protect_tenant_tables

revision = "dcc698b833ed"
down_revision = "5057a4a5852b"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "user_sessions",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=120), nullable=True),
        sa.Column("created_by_id", sa.BigInteger(), nullable=True),
        sa.Column("ip_address", sa.String(length=64), nullable=True),
        sa.Column("user_agent", sa.String(length=255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("organization_id", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("kind IN ('browser', 'api_token', 'api_key')",
                           name=op.f("ck_user_sessions_kind")),
        sa.ForeignKeyConstraint(["created_by_id"], ["users.id"],
                                name=op.f("fk_user_sessions_created_by_id_users"),
                                ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["organization_id"], ["organizations.id"],
                                name=op.f("fk_user_sessions_organization_id_organizations"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"],
                                name=op.f("fk_user_sessions_user_id_users"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_user_sessions")),
    )
    op.create_index("uq_user_sessions_organization_id_token_hash", "user_sessions",
                    ["organization_id", "token_hash"], unique=True)
    op.create_index("ix_user_sessions_organization_id_kind_user_id", "user_sessions",
                    ["organization_id", "kind", "user_id"],
                    postgresql_where=sa.text("ended_at IS NULL"))
    protect_tenant_tables("user_sessions")
    op.drop_column("users", "session_nonce")


def downgrade():
    op.add_column("users", sa.Column("session_nonce", sa.String(length=32), nullable=False,
                                     server_default=sa.text("md5(random()::text)")))
    op.alter_column("users", "session_nonce", server_default=None)
    op.drop_index("ix_user_sessions_organization_id_kind_user_id", table_name="user_sessions")
    op.drop_index("uq_user_sessions_organization_id_token_hash", table_name="user_sessions")
    op.drop_table("user_sessions")
