"""The recipients of one campaign in sending order, whatever their state.

The results list (`GET /api/campaigns/<id>/results`, the campaign's recipients page) and its
CSV export page along (organization_id, campaign_id, id) when no state is asked for.
`ix_campaign_recipients_state` leads with the state after the campaign, so without a state the
planner walked the primary key and skipped every other campaign's rows by filter: the latest
of several large campaigns would read all the older ones' first.

Revision ID: 7d49abe04918
Revises: 5be1d2a0c7f3
Create Date: 2026-12-02 08:00:00
"""
from alembic import op

revision = "7d49abe04918"
down_revision = "5be1d2a0c7f3"
branch_labels = None
depends_on = None


def upgrade():
    op.create_index("ix_campaign_recipients_campaign", "campaign_recipients",
                    ["organization_id", "campaign_id", "id"])


def downgrade():
    op.drop_index("ix_campaign_recipients_campaign", table_name="campaign_recipients")
