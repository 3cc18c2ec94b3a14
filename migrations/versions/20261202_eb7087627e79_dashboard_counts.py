"""What the dashboard counts, kept by triggers instead of counted on each visit.

Each table holds how many rows of its source there are per key, kept by statement-level
triggers with transition tables (crm/schema.py `keep_counts`, the way of `pipeline_totals`), so
the dashboard's cards sum a few rows whatever the size of the inbox, the tickets or the tasks
(in `crm bench dashboard` the counts took 3.5–12.9 ms each and grew with what is open). 0 stands
for "nobody".

- `inbox_counts`: active conversations (not resolved, with a message) per assignee, status and
  unread or not: the inbox card and the Inbox's unread badge.
- `ticket_counts`: tickets per assignee, status and SLA status ('' for none): the tickets card.
- `task_counts`: open tasks with a due moment per assignee and UTC day of that moment: the
  tasks card sums the days before the organization's today and counts the rest from
  `ix_customer_activities_tasks_due` (a day in UTC, not in the organization's zone, so a
  change of zone leaves every count right).

Revision ID: eb7087627e79
Revises: 7d49abe04918
Create Date: 2026-12-02 18:00:00
"""
import sqlalchemy as sa
from alembic import op

from crm.schema import drop_counts, keep_counts, protect_tenant_tables

revision = "eb7087627e79"
down_revision = "7d49abe04918"
branch_labels = None
depends_on = None

COUNTS = {
    "inbox_counts": ("conversations",
                     {"assignee_id": "coalesce(assigned_user_id, 0)", "status": "status",
                      "unread": "unread_count > 0"},
                     "status <> 'resolved' AND last_message_at IS NOT NULL"),
    "ticket_counts": ("tickets",
                      {"assignee_id": "coalesce(assignee_id, 0)", "status": "status",
                       "sla_status": "coalesce(sla_status, '')"},
                      "true"),
    "task_counts": ("customer_activities",
                    {"assignee_id": "coalesce(assignee_id, 0)",
                     "due_day": "(due_at AT TIME ZONE 'UTC')::date"},
                    "type = 'task' AND done_at IS NULL AND due_at IS NOT NULL"),
}
KEY_TYPES = {"assignee_id": sa.BigInteger(), "status": sa.String(16),
             "unread": sa.Boolean(), "sla_status": sa.String(8), "due_day": sa.Date()}


def upgrade():
    for counts, (source, keys, counted) in COUNTS.items():
        op.create_table(
            counts,
            sa.Column("organization_id", sa.BigInteger(), nullable=False),
            *(sa.Column(key, KEY_TYPES[key], nullable=False) for key in keys),
            sa.Column("n", sa.BigInteger(), nullable=False, server_default="0"),
            sa.ForeignKeyConstraint(["organization_id"], ["organizations.id"],
                                    name=op.f(f"fk_{counts}_organization_id_organizations"),
                                    ondelete="CASCADE"),
            sa.PrimaryKeyConstraint("organization_id", *keys, name=op.f(f"pk_{counts}")),
        )
        protect_tenant_tables(counts)
        keep_counts(counts, source, keys, counted)


def downgrade():
    for counts, (source, _keys, _counted) in COUNTS.items():
        drop_counts(counts, source)
        op.drop_table(counts)
