"""The pipeline's value, and what the dashboard counts.

- `organizations.currency`: the currency of amounts (SAR, the default country's).
- `customers.expected_value`: what a customer in the pipeline is expected to bring.
- `pipeline_totals`: customers and value per (stage, owner), kept by statement-level triggers
  on `customers`, so the board's column totals and the dashboard's pipeline read a few rows
  instead of counting the organization (191,216 customers in `crm bench customers`' largest:
  an index-only count took 36 ms). 0 stands for "no stage" and "no owner".
- The dashboard's inbox counts read the conversations that are not resolved through a partial
  index, the Inbox's unread badge those waiting to be read through another, and the first
  responses of the day the day's messages through `ix_messages_day`.

Revision ID: f1ea96597448
Revises: 36e91194e5f4
Create Date: 2026-12-02 17:00:00
"""
import sqlalchemy as sa
from alembic import op

from crm.schema import protect_tenant_tables

revision = "f1ea96597448"
down_revision = "36e91194e5f4"
branch_labels = None
depends_on = None

# The rows a statement added (+1 customer, +value) and took away (-1, -value) per key.
ADDED = ("SELECT organization_id, coalesce(stage_id, 0) AS stage_id, coalesce(owner_id, 0) "
         "AS owner_id, 1 AS n, expected_value AS v FROM new_rows WHERE merged_into_id IS NULL")
REMOVED = ("SELECT organization_id, coalesce(stage_id, 0) AS stage_id, coalesce(owner_id, 0) "
           "AS owner_id, -1 AS n, -expected_value AS v FROM old_rows "
           "WHERE merged_into_id IS NULL")


def _apply(deltas: str) -> str:
    """Add `deltas` to the totals, in key order: two statements that touch the same totals
    lock them in the same order; one that changes no total writes nothing."""
    return f"""
    INSERT INTO pipeline_totals AS t (organization_id, stage_id, owner_id, customers, value)
    SELECT organization_id, stage_id, owner_id, sum(n), sum(v) FROM ({deltas}) d
    GROUP BY organization_id, stage_id, owner_id HAVING sum(n) <> 0 OR sum(v) <> 0
    ORDER BY organization_id, stage_id, owner_id
    ON CONFLICT (organization_id, stage_id, owner_id) DO UPDATE
      SET customers = t.customers + excluded.customers, value = t.value + excluded.value;"""


# Each branch reads only the transition tables its event has (PL/pgSQL plans a statement
# when it first runs it).
TRIGGER_FUNCTION = f"""
CREATE FUNCTION wasl_pipeline_totals() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN {_apply(ADDED)}
  ELSIF TG_OP = 'DELETE' THEN {_apply(REMOVED)}
  ELSE {_apply(ADDED + " UNION ALL " + REMOVED)}
  END IF;
  RETURN NULL;
END $$
"""
TRIGGERS = (("insert", "INSERT", "NEW TABLE AS new_rows"),
            ("update", "UPDATE", "OLD TABLE AS old_rows NEW TABLE AS new_rows"),
            ("delete", "DELETE", "OLD TABLE AS old_rows"))


def upgrade():
    op.add_column("organizations", sa.Column("currency", sa.String(3), nullable=False,
                                             server_default="SAR"))
    op.add_column("customers", sa.Column("expected_value", sa.Numeric(14, 2), nullable=False,
                                         server_default="0"))
    op.create_table(
        "pipeline_totals",
        sa.Column("organization_id", sa.BigInteger(), nullable=False),
        sa.Column("stage_id", sa.BigInteger(), nullable=False),
        sa.Column("owner_id", sa.BigInteger(), nullable=False),
        sa.Column("customers", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("value", sa.Numeric(18, 2), nullable=False, server_default="0"),
        sa.ForeignKeyConstraint(["organization_id"], ["organizations.id"],
                                name=op.f("fk_pipeline_totals_organization_id_organizations"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("organization_id", "stage_id", "owner_id",
                                name=op.f("pk_pipeline_totals")),
    )
    protect_tenant_tables("pipeline_totals")
    op.execute(TRIGGER_FUNCTION)
    for name, event, tables in TRIGGERS:
        op.execute(f"CREATE TRIGGER customers_pipeline_totals_{name} AFTER {event} ON customers "
                   f"REFERENCING {tables} FOR EACH STATEMENT "
                   "EXECUTE FUNCTION wasl_pipeline_totals()")
    _count_existing_customers()
    op.create_index("ix_conversations_active", "conversations",
                    ["organization_id", "assigned_user_id"],
                    postgresql_include=["status", "unread_count"],
                    postgresql_where=sa.text("status <> 'resolved' AND last_message_at IS NOT NULL"))
    op.create_index("ix_conversations_unread", "conversations",
                    ["organization_id", "assigned_user_id"],
                    postgresql_where=sa.text("unread_count > 0 AND status <> 'resolved' "
                                             "AND last_message_at IS NOT NULL"))
    op.create_index("ix_messages_day", "messages", ["organization_id", "created_at"])


def _count_existing_customers():
    """Totals for the customers there are (RLS is lifted for the owner while it counts)."""
    op.execute("ALTER TABLE customers NO FORCE ROW LEVEL SECURITY")
    op.execute("ALTER TABLE pipeline_totals NO FORCE ROW LEVEL SECURITY")
    op.execute("""
        INSERT INTO pipeline_totals (organization_id, stage_id, owner_id, customers, value)
        SELECT organization_id, coalesce(stage_id, 0), coalesce(owner_id, 0), count(*),
               sum(expected_value)
        FROM customers WHERE merged_into_id IS NULL GROUP BY 1, 2, 3""")
    op.execute("ALTER TABLE pipeline_totals FORCE ROW LEVEL SECURITY")
    op.execute("ALTER TABLE customers FORCE ROW LEVEL SECURITY")


def downgrade():
    op.drop_index("ix_messages_day", table_name="messages")
    op.drop_index("ix_conversations_unread", table_name="conversations")
    op.drop_index("ix_conversations_active", table_name="conversations")
    for name, _event, _tables in TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS customers_pipeline_totals_{name} ON customers")
    op.execute("DROP FUNCTION IF EXISTS wasl_pipeline_totals()")
    op.drop_table("pipeline_totals")
    op.drop_column("customers", "expected_value")
    op.drop_column("organizations", "currency")
