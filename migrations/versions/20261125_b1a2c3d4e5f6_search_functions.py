"""Search folding functions: Arabic letter variants and phone digits (crm/search.py).

Revision ID: b1a2c3d4e5f6
Revises: caaa8d6b179c
Create Date: 2026-11-25 14:05:00
"""
from alembic import op

from crm.search import SQL_FUNCTIONS

revision = "b1a2c3d4e5f6"
down_revision = "caaa8d6b179c"
branch_labels = None
depends_on = None


def upgrade():
    op.execute(SQL_FUNCTIONS)


def downgrade():
    op.execute("DROP FUNCTION IF EXISTS wasl_fold(text)")
    op.execute("DROP FUNCTION IF EXISTS wasl_digits(text)")
