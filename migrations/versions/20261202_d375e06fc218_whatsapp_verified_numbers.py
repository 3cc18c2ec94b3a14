"""WhatsApp: cloud numbers proven by the Graph API; webhook deliveries behind the tenant walls.

A phone number id was first come, first served: anyone could register another business's id
and receive its messages through the platform webhook, or block its onboarding. A cloud number
now holds its id (the unique index) and is routed to only once the Graph API answered for it
with its token (`verified_at`); `webhook_verified_at` records that Meta reached its webhook.
Numbers connected before this have proven nothing: they are left unverified (`pending`) until
an admin checks them again.

Webhook deliveries held every tenant's raw messages with no organization and no RLS: they get
`organization_id` (cascading with the organization), FORCEd RLS, and SECURITY DEFINER functions
for the one thing the drain does before any organization is known: which organizations have
deliveries due, when the next lease ends, which hold dead ones. Deliveries kept by the old
webhook are stamped with their organization here; a platform delivery naming several
organizations is split, as the webhook now does on receipt.

Revision ID: d375e06fc218
Revises: b0c4d3e8658e
Create Date: 2026-12-02 09:00:00
"""
import json

import sqlalchemy as sa
from alembic import op

from crm.schema import allow_owner_lookups, grant_function, protect_tenant_tables

revision = "d375e06fc218"
down_revision = "48cc3f6cc195"
branch_labels = None
depends_on = None

DELIVERIES = "whatsapp_webhook_deliveries"
ROUTING = "wasl_whatsapp_profile_by_phone_number_id(text)"
QUEUE_FUNCTIONS = ("wasl_whatsapp_deliveries_due(integer)",
                   "wasl_whatsapp_deliveries_next_lease(integer)",
                   "wasl_whatsapp_deliveries_dead(integer)")


def upgrade():
    _verified_numbers()
    _deliveries_behind_the_walls()


def _verified_numbers():
    op.add_column("whatsapp_profiles",
                  sa.Column("verified_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("whatsapp_profiles", sa.Column("verified_name", sa.String(200), nullable=True))
    op.add_column("whatsapp_profiles",
                  sa.Column("webhook_verified_at", sa.DateTime(timezone=True), nullable=True))
    # The owner is held by FORCEd RLS too, and this update is for every organization.
    op.execute("ALTER TABLE whatsapp_profiles NO FORCE ROW LEVEL SECURITY")
    op.execute("UPDATE whatsapp_profiles SET state = 'pending' "
               "WHERE provider = 'cloud' AND state = 'connected'")
    op.execute("ALTER TABLE whatsapp_profiles FORCE ROW LEVEL SECURITY")
    op.drop_index("uq_whatsapp_profiles_phone_number_id", table_name="whatsapp_profiles")
    op.create_index("uq_whatsapp_profiles_phone_number_id", "whatsapp_profiles",
                    ["phone_number_id"], unique=True,
                    postgresql_where=sa.text("phone_number_id IS NOT NULL "
                                             "AND verified_at IS NOT NULL"))
    op.execute(f"DROP FUNCTION {ROUTING}")
    op.execute("""
        CREATE FUNCTION wasl_whatsapp_profile_by_phone_number_id(p_phone_number_id text)
        RETURNS TABLE (organization_id bigint, profile_id bigint, webhook_verified boolean)
        LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
            SELECT organization_id, id, webhook_verified_at IS NOT NULL FROM whatsapp_profiles
            WHERE phone_number_id = p_phone_number_id AND verified_at IS NOT NULL
              AND provider = 'cloud' AND NOT is_deleted
        $$""")
    grant_function(ROUTING)


def _deliveries_behind_the_walls():
    op.add_column(DELIVERIES, sa.Column("organization_id", sa.BigInteger(), nullable=True))
    _stamp_kept_deliveries()
    op.alter_column(DELIVERIES, "organization_id", nullable=False)
    # Checking the rows already there reads organizations as the owner, whom FORCEd RLS
    # would show none of them.
    op.execute("ALTER TABLE organizations NO FORCE ROW LEVEL SECURITY")
    op.create_foreign_key(op.f("fk_whatsapp_webhook_deliveries_organization_id_organizations"),
                          DELIVERIES, "organizations", ["organization_id"], ["id"],
                          ondelete="CASCADE")
    op.execute("ALTER TABLE organizations FORCE ROW LEVEL SECURITY")
    op.create_index("ix_whatsapp_webhook_deliveries_organization_id_id", DELIVERIES,
                    ["organization_id", "id"])
    protect_tenant_tables(DELIVERIES)
    allow_owner_lookups(DELIVERIES)
    op.execute(f"""
        CREATE FUNCTION wasl_whatsapp_deliveries_due(p_max_attempts integer)
        RETURNS TABLE (organization_id bigint)
        LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
            SELECT organization_id FROM {DELIVERIES}
            WHERE attempts < p_max_attempts AND (claimed_until IS NULL OR claimed_until < now())
            GROUP BY organization_id ORDER BY min(id)
        $$""")
    op.execute(f"""
        CREATE FUNCTION wasl_whatsapp_deliveries_next_lease(p_max_attempts integer)
        RETURNS timestamptz
        LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
            SELECT min(claimed_until) FROM {DELIVERIES} WHERE attempts < p_max_attempts
        $$""")
    op.execute(f"""
        CREATE FUNCTION wasl_whatsapp_deliveries_dead(p_max_attempts integer)
        RETURNS TABLE (organization_id bigint, oldest timestamptz)
        LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
            SELECT organization_id, min(received_at) FROM {DELIVERIES}
            WHERE attempts >= p_max_attempts GROUP BY organization_id
        $$""")
    for function in QUEUE_FUNCTIONS:
        grant_function(function)


def _stamp_kept_deliveries():
    """Give each kept delivery its organization: a per-profile one its profile's, a platform
    one (split when it names several) the organizations of the numbers it names. What routes
    nowhere (its number gone) is dropped, as the drain would have dropped it."""
    from crm.whatsapp.ingest import split_delivery

    connection = op.get_bind()
    connection.execute(sa.text(f"""
        UPDATE {DELIVERIES} d SET organization_id = p.organization_id
        FROM whatsapp_profiles p WHERE p.id = d.profile_id AND NOT p.is_deleted"""))
    organization_of = dict(connection.execute(sa.text(
        "SELECT phone_number_id, organization_id FROM whatsapp_profiles "
        "WHERE phone_number_id IS NOT NULL AND provider = 'cloud' AND NOT is_deleted")).all())
    platform = connection.execute(sa.text(
        f"SELECT id, body, received_at, attempts, claimed_until, last_error FROM {DELIVERIES} "
        "WHERE profile_id IS NULL")).all()
    for row in platform:
        try:
            parts = split_delivery(json.loads(row.body), organization_of.get)
        except (ValueError, UnicodeDecodeError, KeyError, TypeError, AttributeError):
            parts = {}
        for org_id, part in parts.items():
            connection.execute(sa.text(
                f"INSERT INTO {DELIVERIES} (organization_id, body, received_at, attempts, "
                "claimed_until, last_error) VALUES (:org, :body, :received_at, :attempts, "
                ":claimed_until, :last_error)"),
                {"org": org_id, "body": json.dumps(part, ensure_ascii=False).encode(),
                 "received_at": row.received_at, "attempts": row.attempts,
                 "claimed_until": row.claimed_until, "last_error": row.last_error})
    op.execute(f"DELETE FROM {DELIVERIES} WHERE organization_id IS NULL")


def downgrade():
    for function in QUEUE_FUNCTIONS:
        op.execute(f"DROP FUNCTION IF EXISTS {function}")
    op.execute(f"DROP POLICY IF EXISTS owner_lookup ON {DELIVERIES}")
    op.execute(f"DROP POLICY IF EXISTS tenant_isolation ON {DELIVERIES}")
    op.execute(f"ALTER TABLE {DELIVERIES} NO FORCE ROW LEVEL SECURITY")
    op.execute(f"ALTER TABLE {DELIVERIES} DISABLE ROW LEVEL SECURITY")
    op.drop_index("ix_whatsapp_webhook_deliveries_organization_id_id", table_name=DELIVERIES)
    op.drop_constraint(op.f("fk_whatsapp_webhook_deliveries_organization_id_organizations"),
                       DELIVERIES, type_="foreignkey")
    op.drop_column(DELIVERIES, "organization_id")
    op.execute(f"DROP FUNCTION {ROUTING}")
    op.execute("""
        CREATE FUNCTION wasl_whatsapp_profile_by_phone_number_id(p_phone_number_id text)
        RETURNS TABLE (organization_id bigint, profile_id bigint)
        LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
            SELECT organization_id, id FROM whatsapp_profiles
            WHERE phone_number_id = p_phone_number_id AND NOT is_deleted
        $$""")
    grant_function(ROUTING)
    op.drop_index("uq_whatsapp_profiles_phone_number_id", table_name="whatsapp_profiles")
    op.create_index("uq_whatsapp_profiles_phone_number_id", "whatsapp_profiles",
                    ["phone_number_id"], unique=True,
                    postgresql_where=sa.text("phone_number_id IS NOT NULL"))
    op.execute("ALTER TABLE whatsapp_profiles NO FORCE ROW LEVEL SECURITY")
    op.execute("UPDATE whatsapp_profiles SET state = 'connected' "
               "WHERE provider = 'cloud' AND state = 'pending'")
    op.execute("ALTER TABLE whatsapp_profiles FORCE ROW LEVEL SECURITY")
    op.drop_column("whatsapp_profiles", "webhook_verified_at")
    op.drop_column("whatsapp_profiles", "verified_name")
    op.drop_column("whatsapp_profiles", "verified_at")
