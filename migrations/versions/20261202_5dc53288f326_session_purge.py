"""Sessions over for long are deleted: the recovery's lookup of them across organizations.

A session that ended (logout, revoked key), expired (an API token) or went idle (a browser,
SESSION_IDLE_LIFETIME) is never read again, yet its row was kept forever. The recovery job's
task crm.foundation.jobs:purge_sessions deletes those over for more than 30 days; it starts
with no organization, so this SECURITY DEFINER function tells it which rows of which
organization (only their organization and id), oldest first.

Revision ID: 5dc53288f326
Revises: eb7087627e79
Create Date: 2026-12-02 19:40:00
"""
from alembic import op

from crm.schema import allow_owner_lookups, grant_function

revision = "5dc53288f326"
down_revision = "eb7087627e79"
branch_labels = None
depends_on = None

FUNCTION = "wasl_user_sessions_over(timestamptz, timestamptz, integer)"


def upgrade():
    allow_owner_lookups("user_sessions")
    # p_over_before: ended or expired before it; p_seen_before: a browser last seen before it.
    op.execute("""
        CREATE FUNCTION wasl_user_sessions_over(p_over_before timestamptz,
                                                p_seen_before timestamptz, p_limit integer)
        RETURNS TABLE (organization_id bigint, id bigint)
        LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
            SELECT organization_id, id FROM user_sessions
            WHERE ended_at < p_over_before OR expires_at < p_over_before
               OR (kind = 'browser' AND last_seen_at < p_seen_before)
            ORDER BY id LIMIT p_limit
        $$""")
    grant_function(FUNCTION)


def downgrade():
    op.execute(f"DROP FUNCTION IF EXISTS {FUNCTION}")
    op.execute("DROP POLICY IF EXISTS owner_lookup ON user_sessions")
