"""Searches that use their trigram indexes under Row Level Security (crm/search.py).

Revision ID: e5f6a7b8c9d0
Revises: d3c4e5f6a7b8
Create Date: 2026-11-25 15:05:00
"""
from alembic import op

from crm.schema import allow_owner_lookups, grant_function
from crm.search import SEARCH_FUNCTIONS, search_function_sql

revision = "e5f6a7b8c9d0"
down_revision = "d3c4e5f6a7b8"
branch_labels = None
depends_on = None


def upgrade():
    for table in ("conversations", "messages", "customers"):
        allow_owner_lookups(table)
    for signature in SEARCH_FUNCTIONS:
        op.execute(search_function_sql(signature))
        grant_function(signature)


def downgrade():
    for signature in SEARCH_FUNCTIONS:
        op.execute(f"DROP FUNCTION IF EXISTS {signature}")
    for table in ("conversations", "messages", "customers"):
        op.execute(f"DROP POLICY IF EXISTS owner_lookup ON {table}")
