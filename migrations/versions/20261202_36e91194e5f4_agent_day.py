"""An agent's day in the inbox: private notes, labels, canned replies and the inbox settings.

- `conversation_notes`: the team's private notes in a conversation (never sent).
- `conversations.labels`: the team's labels on a conversation.
- `canned_replies`: an organization's saved replies, per shortcut and language.
- `inbox_settings`: the organization's inbox rules (agents take from the unassigned queue).
- `inbox_preferences`: a member's composer preference (Enter sends, or adds a line).
- New numbers auto-assign by default.

Revision ID: 36e91194e5f4
Revises: cf1f259e44ce
Create Date: 2026-12-02 14:00:00
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from crm.schema import protect_tenant_tables

revision = "36e91194e5f4"
down_revision = "cf1f259e44ce"
branch_labels = None
depends_on = None

TABLES = ("conversation_notes", "canned_replies", "inbox_settings", "inbox_preferences")


def _organization() -> list:
    return [sa.Column("organization_id", sa.BigInteger(),
                      sa.ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False)]


def upgrade():
    op.add_column("conversations", sa.Column("labels", postgresql.ARRAY(sa.Text()),
                                             server_default=sa.text("'{}'::text[]"),
                                             nullable=False))
    op.alter_column("whatsapp_profiles", "auto_assign", server_default=sa.text("true"))
    op.create_table(
        "conversation_notes",
        sa.Column("id", sa.BigInteger(), primary_key=True),
        sa.Column("conversation_id", sa.BigInteger(),
                  sa.ForeignKey("conversations.id", ondelete="CASCADE"), nullable=False),
        sa.Column("author_id", sa.BigInteger(), sa.ForeignKey("users.id", ondelete="SET NULL"),
                  nullable=True),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        *_organization())
    op.create_index("ix_conversation_notes_conversation", "conversation_notes",
                    ["organization_id", "conversation_id", sa.text("id DESC")])
    op.create_table(
        "canned_replies",
        sa.Column("id", sa.BigInteger(), primary_key=True),
        sa.Column("shortcut", sa.String(length=40), nullable=False),
        sa.Column("language", sa.String(length=2), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        *_organization())
    op.create_index("uq_canned_replies_shortcut", "canned_replies",
                    ["organization_id", "shortcut", "language"], unique=True)
    op.create_table(
        "inbox_settings",
        sa.Column("id", sa.BigInteger(), primary_key=True),
        sa.Column("agents_take_unassigned", sa.Boolean(), server_default=sa.text("true"),
                  nullable=False),
        *_organization())
    op.create_index("uq_inbox_settings_organization", "inbox_settings", ["organization_id"],
                    unique=True)
    op.create_table(
        "inbox_preferences",
        sa.Column("id", sa.BigInteger(), primary_key=True),
        sa.Column("user_id", sa.BigInteger(), sa.ForeignKey("users.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("enter_sends", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        *_organization())
    op.create_index("uq_inbox_preferences_user", "inbox_preferences",
                    ["organization_id", "user_id"], unique=True)
    protect_tenant_tables(*TABLES)


def downgrade():
    for table in reversed(TABLES):
        op.drop_table(table)
    op.alter_column("whatsapp_profiles", "auto_assign", server_default=sa.text("false"))
    op.drop_column("conversations", "labels")
