"""Versions of customers and conversations, so that two people's edits never silently
overwrite each other.

`version` counts the edits people make (starting at 1 for what exists); `edited_by_id` and
`edited_at` say who made the last one and when, for "changed by سارة a moment ago"
(crm/versions.py). Adding a column with a constant default rewrites no table.

Revision ID: b476c704c726
Revises: dcc698b833ed
Create Date: 2026-12-02 12:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = "b476c704c726"
down_revision = "dcc698b833ed"
branch_labels = None
depends_on = None

TABLES = ("customers", "conversations")


def upgrade():
    for table in TABLES:
        op.add_column(table, sa.Column("version", sa.Integer(), server_default="1",
                                       nullable=False))
        op.add_column(table, sa.Column("edited_at", sa.DateTime(timezone=True), nullable=True))
        op.add_column(table, sa.Column("edited_by_id", sa.BigInteger(), nullable=True))
        op.create_foreign_key(op.f(f"fk_{table}_edited_by_id_users"), table, "users",
                              ["edited_by_id"], ["id"], ondelete="SET NULL")


def downgrade():
    for table in TABLES:
        op.drop_constraint(op.f(f"fk_{table}_edited_by_id_users"), table, type_="foreignkey")
        op.drop_column(table, "edited_by_id")
        op.drop_column(table, "edited_at")
        op.drop_column(table, "version")
