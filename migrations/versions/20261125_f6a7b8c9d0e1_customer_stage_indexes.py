"""Customers by stage: the stage filter, the board's column counts, and the planner's estimate.

Measured by `crm bench customers` (docs/PERFORMANCE.md): the stage filter skipped every newer
customer of other stages, the board counted by scanning the organization, and the planner,
taking organization and stage as independent, misjudged a column by a hundred times.

Revision ID: f6a7b8c9d0e1
Revises: e5f6a7b8c9d0
Create Date: 2026-11-25 15:35:00
"""
import sqlalchemy as sa
from alembic import op

revision = "f6a7b8c9d0e1"
down_revision = "e5f6a7b8c9d0"
branch_labels = None
depends_on = None


def upgrade():
    op.create_index("ix_customers_stage_recent", "customers",
                    ["organization_id", "stage_id", sa.literal_column("id DESC")])
    op.create_index("ix_customers_stage_counts", "customers", ["organization_id", "stage_id"],
                    postgresql_where=sa.text("merged_into_id IS NULL"))
    op.execute("CREATE STATISTICS st_customers_organization_stage (dependencies) "
               "ON organization_id, stage_id FROM customers")


def downgrade():
    op.execute("DROP STATISTICS IF EXISTS st_customers_organization_stage")
    op.drop_index("ix_customers_stage_counts", table_name="customers")
    op.drop_index("ix_customers_stage_recent", table_name="customers")
