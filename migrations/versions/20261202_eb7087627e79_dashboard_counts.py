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
  tasks card sums the UTC days before the one in which the organization's today begins and
  counts the rest, to the end of today, from `ix_customer_activities_tasks_due` (days in UTC,
  not in the organization's zone, so a change of zone leaves every count right).
- `pipeline_totals`' trigger function written again by the same helper, which leaves out the
  rows deleted with their organization (deleting an organization with customers failed).

Revision ID: eb7087627e79
Revises: 7d49abe04918
Create Date: 2026-12-02 18:00:00
"""
from importlib.util import module_from_spec, spec_from_file_location
from pathlib import Path

import sqlalchemy as sa
from alembic import op

from crm.schema import Counter, counter_function, drop_counts, keep_counts, protect_tenant_tables

revision = "eb7087627e79"
down_revision = "7d49abe04918"
branch_labels = None
depends_on = None

COUNTERS = (
    Counter("inbox_counts", "conversations",
            {"assignee_id": "coalesce(assigned_user_id, 0)", "status": "status",
             "unread": "unread_count > 0"},
            "status <> 'resolved' AND last_message_at IS NOT NULL"),
    Counter("ticket_counts", "tickets",
            {"assignee_id": "coalesce(assignee_id, 0)", "status": "status",
             "sla_status": "coalesce(sla_status, '')"},
            "true"),
    Counter("task_counts", "customer_activities",
            {"assignee_id": "coalesce(assignee_id, 0)",
             "due_day": "(due_at AT TIME ZONE 'UTC')::date"},
            "type = 'task' AND done_at IS NULL AND due_at IS NOT NULL"),
)
KEY_TYPES = {"assignee_id": sa.BigInteger(), "status": sa.String(16),
             "unread": sa.Boolean(), "sla_status": sa.String(8), "due_day": sa.Date()}
# `pipeline_totals`' function, the same one written by `keep_counts`, which also leaves out
# the customers deleted with their organization (its totals went first: the cascade failed on
# their foreign key).
PIPELINE = Counter("pipeline_totals", "customers",
                   {"stage_id": "coalesce(stage_id, 0)", "owner_id": "coalesce(owner_id, 0)"},
                   "merged_into_id IS NULL", {"customers": "1", "value": "expected_value"})


def upgrade():
    for counter in COUNTERS:
        op.create_table(
            counter.table,
            sa.Column("organization_id", sa.BigInteger(), nullable=False),
            *(sa.Column(key, KEY_TYPES[key], nullable=False) for key in counter.keys),
            sa.Column("n", sa.BigInteger(), nullable=False, server_default="0"),
            sa.ForeignKeyConstraint(
                ["organization_id"], ["organizations.id"],
                name=op.f(f"fk_{counter.table}_organization_id_organizations"),
                ondelete="CASCADE"),
            sa.PrimaryKeyConstraint("organization_id", *counter.keys,
                                    name=op.f(f"pk_{counter.table}")),
        )
        protect_tenant_tables(counter.table)
        keep_counts(counter)
    op.execute(counter_function(PIPELINE))


def downgrade():
    path = Path(__file__).with_name("20261202_f1ea96597448_pipeline_value.py")
    spec = spec_from_file_location("pipeline_value", path)
    previous = module_from_spec(spec)
    spec.loader.exec_module(previous)
    op.execute(previous.TRIGGER_FUNCTION.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION"))
    for counter in COUNTERS:
        drop_counts(counter)
        op.drop_table(counter.table)
