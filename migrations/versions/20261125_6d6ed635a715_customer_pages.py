"""Customer lists page every sort, search and tag filter through an index.

`wasl_customer_page` (crm/search.py) returns the page itself, in the list's order after its
cursor, instead of every match: a search for a common fragment cost all its matches (16,219 for
«عبد», 148 ms p95 in `crm bench customers`), and the tag filter could not use its GIN index under
RLS. It replaces `wasl_matching_customers`. The name and last-contacted orders get the indexes
the other orders had: without them a list so sorted sorted the whole organization (190 ms for
191,216 customers).

Revision ID: 6d6ed635a715
Revises: a7b8c9d0e1f2
Create Date: 2026-11-25 16:30:00
"""
import sqlalchemy as sa
from alembic import op

from crm.schema import grant_function
from crm.search import (
    CONTACTED_ORDER,
    CUSTOMER_PAGE_SIGNATURE,
    CUSTOMER_PAGE_SQL,
    search_function_sql,
)

revision = "6d6ed635a715"
down_revision = "a7b8c9d0e1f2"
branch_labels = None
depends_on = None

REPLACED = "wasl_matching_customers(text, text[])"


def upgrade():
    op.create_index("ix_customers_name", "customers", ["organization_id", "name", "id"])
    op.create_index("ix_customers_contacted", "customers", [
        "organization_id", sa.literal_column(f"{CONTACTED_ORDER} DESC"),
        sa.literal_column("id DESC")])
    op.execute(CUSTOMER_PAGE_SQL)
    grant_function(CUSTOMER_PAGE_SIGNATURE)
    op.execute(f"DROP FUNCTION IF EXISTS {REPLACED}")


def downgrade():
    op.execute(search_function_sql(REPLACED))
    grant_function(REPLACED)
    op.execute(f"DROP FUNCTION IF EXISTS {CUSTOMER_PAGE_SIGNATURE}")
    op.drop_index("ix_customers_contacted", table_name="customers")
    op.drop_index("ix_customers_name", table_name="customers")
