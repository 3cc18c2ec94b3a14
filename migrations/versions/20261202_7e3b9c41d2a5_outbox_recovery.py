"""The outboxes heal after outages: leases on what is being sent, and the recovery's lookups.

A message or an email marked `sending` now holds a lease (`claimed_until`): a worker that died
with it leaves it `sending` only until the lease is up, then the recovery job (crm/recovery.py)
settles it. The recovery job starts with no organization, so SECURITY DEFINER functions tell it
which rows of which organization need it (only their organization and id): rows `queued` for
longer than a cutoff (their job may have been lost with Redis) and rows `sending` past their
lease. The outbox indexes cover exactly the rows in flight, with their time.

Revision ID: 7e3b9c41d2a5
Revises: dcc698b833ed
Create Date: 2026-12-02 12:00:00
"""
import sqlalchemy as sa
from alembic import op

from crm.schema import allow_owner_lookups, grant_function

revision = "7e3b9c41d2a5"
down_revision = "b476c704c726"
branch_labels = None
depends_on = None

OUTBOXES = ("messages", "outbound_emails")
IN_FLIGHT = sa.text("status IN ('queued', 'sending')")


def _functions(table: str) -> tuple[str, str]:
    return (f"wasl_{table}_unsent(timestamptz, integer)",
            f"wasl_{table}_lease_over(integer)")


def upgrade():
    for table in OUTBOXES:
        op.add_column(table, sa.Column("claimed_until", sa.DateTime(timezone=True),
                                       nullable=True))
    op.drop_index("ix_messages_outbox", table_name="messages", postgresql_where=IN_FLIGHT)
    op.create_index("ix_messages_outbox", "messages", ["organization_id", "status", "created_at"],
                    postgresql_where=IN_FLIGHT)
    op.create_index("ix_outbound_emails_outbox", "outbound_emails",
                    ["organization_id", "status", "created_at"], postgresql_where=IN_FLIGHT)
    allow_owner_lookups("outbound_emails")  # messages has its lookup policy already
    for table in OUTBOXES:
        unsent, lease_over = _functions(table)
        op.execute(f"""
            CREATE FUNCTION wasl_{table}_unsent(p_before timestamptz, p_limit integer)
            RETURNS TABLE (organization_id bigint, id bigint)
            LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
                SELECT organization_id, id FROM {table}
                WHERE status = 'queued' AND created_at < p_before ORDER BY id LIMIT p_limit
            $$""")
        op.execute(f"""
            CREATE FUNCTION wasl_{table}_lease_over(p_limit integer)
            RETURNS TABLE (organization_id bigint, id bigint)
            LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
                SELECT organization_id, id FROM {table}
                WHERE status = 'sending'
                  AND (claimed_until IS NULL OR claimed_until < statement_timestamp())
                ORDER BY id LIMIT p_limit
            $$""")
        grant_function(unsent)
        grant_function(lease_over)


def downgrade():
    for table in OUTBOXES:
        for function in _functions(table):
            op.execute(f"DROP FUNCTION IF EXISTS {function}")
    op.execute("DROP POLICY IF EXISTS owner_lookup ON outbound_emails")
    op.drop_index("ix_outbound_emails_outbox", table_name="outbound_emails",
                  postgresql_where=IN_FLIGHT)
    op.drop_index("ix_messages_outbox", table_name="messages", postgresql_where=IN_FLIGHT)
    op.create_index("ix_messages_outbox", "messages", ["organization_id", "status"],
                    postgresql_where=IN_FLIGHT)
    for table in OUTBOXES:
        op.drop_column(table, "claimed_until")
