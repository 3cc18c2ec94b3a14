"""Campaigns: campaigns, their frozen recipients and counts, the consent ledger, message
templates synced from the Graph API, and each number's sending settings.

Every table is a tenant table (organization_id leading its indexes, FORCEd RLS). The recovery
job starts with no organization, so SECURITY DEFINER functions tell it, as (organization, id)
pairs only, which campaigns should be running or starting, which recipients a dead runner left
`sending` past their lease, and which cloud numbers' templates are due for their daily sync.

Revision ID: cf1f259e44ce
Revises: c41e7a9d2b58
Create Date: 2026-12-02 15:00:00
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from crm.schema import allow_owner_lookups, grant_function, protect_tenant_tables

revision = "cf1f259e44ce"
down_revision = "c41e7a9d2b58"
branch_labels = None
depends_on = None

TABLES = ("campaigns", "campaign_recipients", "campaign_results", "consent_events",
          "campaign_opt_outs", "campaign_settings", "campaign_number_settings",
          "whatsapp_templates")
FUNCTIONS = ("wasl_campaigns_due(integer)", "wasl_campaign_recipients_lease_over(integer)",
             "wasl_template_syncs_due(timestamptz, integer)")


def _organization() -> sa.Column:
    return sa.Column("organization_id", sa.BigInteger(), sa.ForeignKey(
        "organizations.id", ondelete="CASCADE"), nullable=False)


def _created_at(name: str = "created_at") -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), server_default=sa.text("now()"),
                     nullable=False)


def _count(name: str) -> sa.Column:
    return sa.Column(name, sa.Integer(), server_default="0", nullable=False)


def _jsonb(name: str, default: str | None) -> sa.Column:
    return sa.Column(name, postgresql.JSONB(astext_type=sa.Text()),
                     server_default=sa.text(default) if default else None,
                     nullable=default is None)


def upgrade():
    _campaigns()
    _consent()
    _numbers()
    protect_tenant_tables(*TABLES)
    _recovery_lookups()


def _campaigns():
    op.create_table(
        "campaigns",
        sa.Column("id", sa.BigInteger(), primary_key=True),
        sa.Column("name", sa.String(120), nullable=False),
        sa.Column("profile_id", sa.BigInteger(),
                  sa.ForeignKey("whatsapp_profiles.id", ondelete="CASCADE"), nullable=False),
        _jsonb("audience", "'{}'::jsonb"),
        _jsonb("message", "'{}'::jsonb"),
        sa.Column("scheduled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("quiet_start", sa.Time(), nullable=True),
        sa.Column("quiet_end", sa.Time(), nullable=True),
        sa.Column("rate_per_minute", sa.Integer(), nullable=True),
        sa.Column("delay_min_seconds", sa.Integer(), nullable=True),
        sa.Column("delay_max_seconds", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(16), server_default="draft", nullable=False),
        sa.Column("pause_reason", sa.String(32), nullable=True),
        sa.Column("pause_detail", sa.String(500), nullable=True),
        sa.Column("created_by_id", sa.BigInteger(),
                  sa.ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
        _created_at(),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("frozen_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("version", sa.Integer(), server_default="1", nullable=False),
        sa.Column("edited_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("edited_by_id", sa.BigInteger(),
                  sa.ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
        _organization(),
    )
    op.create_index("ix_campaigns_recent", "campaigns",
                    ["organization_id", sa.literal_column("id DESC")])
    op.create_index("ix_campaigns_active", "campaigns", ["organization_id", "status"],
                    postgresql_where=sa.text("status IN ('scheduled', 'running')"))
    op.create_table(
        "campaign_recipients",
        sa.Column("id", sa.BigInteger(), primary_key=True),
        sa.Column("campaign_id", sa.BigInteger(),
                  sa.ForeignKey("campaigns.id", ondelete="CASCADE"), nullable=False),
        sa.Column("phone", sa.String(20), nullable=True),
        sa.Column("raw_phone", sa.String(64), nullable=True),
        sa.Column("customer_id", sa.BigInteger(), nullable=True),
        _jsonb("variables", "'{}'::jsonb"),
        sa.Column("state", sa.String(16), server_default="queued", nullable=False),
        _count("attempts"),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("message_id", sa.BigInteger(),
                  sa.ForeignKey("messages.id", ondelete="SET NULL"), nullable=True),
        sa.Column("provider_message_id", sa.String(128), nullable=True),
        sa.Column("error_code", sa.String(32), nullable=True),
        sa.Column("error_reason", sa.String(500), nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("read_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("failed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("replied_at", sa.DateTime(timezone=True), nullable=True),
        _created_at(),
        _organization(),
        sa.UniqueConstraint("organization_id", "campaign_id", "phone",
                            name="uq_campaign_recipients_phone"),
    )
    op.create_index("ix_campaign_recipients_state", "campaign_recipients",
                    ["organization_id", "campaign_id", "state", "id"])
    op.create_index("ix_campaign_recipients_message", "campaign_recipients",
                    ["organization_id", "message_id"],
                    postgresql_where=sa.text("message_id IS NOT NULL"))
    op.create_index("ix_campaign_recipients_phone", "campaign_recipients",
                    ["organization_id", "phone", "sent_at"])
    op.create_index("ix_campaign_recipients_attempted", "campaign_recipients",
                    ["organization_id", "campaign_id", "attempted_at"],
                    postgresql_where=sa.text("attempted_at IS NOT NULL"))
    op.create_index("ix_campaign_recipients_sending", "campaign_recipients",
                    ["organization_id", "claimed_until"],
                    postgresql_where=sa.text("state = 'sending'"))
    op.create_table(
        "campaign_results",
        sa.Column("campaign_id", sa.BigInteger(),
                  sa.ForeignKey("campaigns.id", ondelete="CASCADE"), primary_key=True),
        *(_count(name) for name in ("total", "queued", "sent", "delivered", "read", "replied",
                                    "failed", "skipped", "unknown")),
        _created_at("updated_at"),
        _organization(),
    )
    op.create_index("uq_campaign_results_campaign", "campaign_results",
                    ["organization_id", "campaign_id"], unique=True)


def _consent():
    op.create_table(
        "consent_events",
        sa.Column("id", sa.BigInteger(), primary_key=True),
        sa.Column("phone", sa.String(20), nullable=False),
        sa.Column("customer_id", sa.BigInteger(), nullable=True),
        sa.Column("action", sa.String(8), nullable=False),
        sa.Column("method", sa.String(16), nullable=False),
        sa.Column("message_id", sa.BigInteger(),
                  sa.ForeignKey("messages.id", ondelete="SET NULL"), nullable=True),
        sa.Column("text", sa.String(200), server_default="", nullable=False),
        sa.Column("actor_id", sa.BigInteger(), sa.ForeignKey("users.id", ondelete="SET NULL"),
                  nullable=True),
        _created_at(),
        _organization(),
    )
    op.create_index("ix_consent_events_recent", "consent_events",
                    ["organization_id", sa.literal_column("id DESC")])
    op.create_index("ix_consent_events_phone", "consent_events",
                    ["organization_id", "phone", sa.literal_column("id DESC")])
    op.create_index("ix_consent_events_customer", "consent_events",
                    ["organization_id", "customer_id", sa.literal_column("id DESC")],
                    postgresql_where=sa.text("customer_id IS NOT NULL"))
    op.create_index("uq_consent_events_message", "consent_events",
                    ["organization_id", "message_id"], unique=True,
                    postgresql_where=sa.text("message_id IS NOT NULL"))
    op.create_table(
        "campaign_opt_outs",
        sa.Column("id", sa.BigInteger(), primary_key=True),
        sa.Column("phone", sa.String(20), nullable=False),
        sa.Column("customer_id", sa.BigInteger(), nullable=True),
        sa.Column("event_id", sa.BigInteger(),
                  sa.ForeignKey("consent_events.id", ondelete="CASCADE"), nullable=False),
        _created_at(),
        _organization(),
        sa.UniqueConstraint("organization_id", "phone", name="uq_campaign_opt_outs_phone"),
    )
    op.create_table(
        "campaign_settings",
        sa.Column("id", sa.BigInteger(), primary_key=True),
        _jsonb("opt_out_keywords", None),
        _jsonb("opt_in_keywords", None),
        _organization(),
        sa.UniqueConstraint("organization_id", name="uq_campaign_settings_organization"),
    )


def _numbers():
    op.create_table(
        "campaign_number_settings",
        sa.Column("id", sa.BigInteger(), primary_key=True),
        sa.Column("profile_id", sa.BigInteger(),
                  sa.ForeignKey("whatsapp_profiles.id", ondelete="CASCADE"), nullable=False),
        sa.Column("throughput_per_second", sa.Integer(), server_default="80", nullable=False),
        sa.Column("messaging_limit", sa.Integer(), server_default="250", nullable=True),
        sa.Column("web_delay_min_seconds", sa.Integer(), server_default="8", nullable=False),
        sa.Column("web_delay_max_seconds", sa.Integer(), server_default="20", nullable=False),
        sa.Column("web_daily_cap", sa.Integer(), server_default="200", nullable=False),
        sa.Column("templates_synced_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("templates_error", sa.String(500), nullable=True),
        _organization(),
        sa.UniqueConstraint("organization_id", "profile_id",
                            name="uq_campaign_number_settings"),
    )
    op.create_table(
        "whatsapp_templates",
        sa.Column("id", sa.BigInteger(), primary_key=True),
        sa.Column("profile_id", sa.BigInteger(),
                  sa.ForeignKey("whatsapp_profiles.id", ondelete="CASCADE"), nullable=False),
        sa.Column("meta_id", sa.String(64), nullable=True),
        sa.Column("name", sa.String(512), nullable=False),
        sa.Column("language", sa.String(16), nullable=False),
        sa.Column("category", sa.String(32), server_default="", nullable=False),
        sa.Column("status", sa.String(32), server_default="", nullable=False),
        _jsonb("components", "'[]'::jsonb"),
        _created_at("synced_at"),
        _organization(),
        sa.UniqueConstraint("organization_id", "profile_id", "name", "language",
                            name="uq_whatsapp_templates_name_language"),
    )


def _recovery_lookups():
    for table in ("campaigns", "campaign_recipients", "campaign_number_settings"):
        allow_owner_lookups(table)
    op.execute("""
        CREATE FUNCTION wasl_campaigns_due(p_limit integer)
        RETURNS TABLE (organization_id bigint, id bigint)
        LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
            SELECT organization_id, id FROM campaigns
            WHERE status = 'running'
               OR (status = 'scheduled' AND scheduled_at <= statement_timestamp())
            ORDER BY id LIMIT p_limit
        $$""")
    op.execute("""
        CREATE FUNCTION wasl_campaign_recipients_lease_over(p_limit integer)
        RETURNS TABLE (organization_id bigint, id bigint)
        LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
            SELECT organization_id, id FROM campaign_recipients
            WHERE state = 'sending' AND claimed_until < statement_timestamp()
            ORDER BY claimed_until LIMIT p_limit
        $$""")
    op.execute("""
        CREATE FUNCTION wasl_template_syncs_due(p_before timestamptz, p_limit integer)
        RETURNS TABLE (organization_id bigint, id bigint)
        LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
            SELECT p.organization_id, p.id FROM whatsapp_profiles p
            LEFT JOIN campaign_number_settings s
                   ON s.organization_id = p.organization_id AND s.profile_id = p.id
            WHERE p.provider = 'cloud' AND NOT p.is_deleted AND p.verified_at IS NOT NULL
              AND p.business_account_id IS NOT NULL
              AND (s.templates_synced_at IS NULL OR s.templates_synced_at < p_before)
            ORDER BY p.id LIMIT p_limit
        $$""")
    for function in FUNCTIONS:
        grant_function(function)


def downgrade():
    for function in FUNCTIONS:
        op.execute(f"DROP FUNCTION IF EXISTS {function}")
    for table in reversed(TABLES):
        op.drop_table(table)
