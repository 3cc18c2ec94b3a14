"""Billing: subscriptions, Stripe events, invoices, payment methods and hourly usage.

Every table is a tenant table behind both walls (FORCEd RLS). Stripe events are stamped with
their organization on receipt: the webhook asks a SECURITY DEFINER function which organization
holds the Stripe customer the event names (docs/billing.md says why they are not a platform
table). The recovery job asks others which events wait unprocessed, which closed hours wait to
be reported, and which organizations pay through Stripe (only organizations and ids).

Organizations that exist already start the built-in trial now (new ones count it from their
creation, with no row).

Revision ID: 770be53f0229
Revises: 7e3b9c41d2a5
Create Date: 2026-12-02 15:00:00
"""
import sqlalchemy as sa
from alembic import op
from flask import current_app
from sqlalchemy.dialects import postgresql

from crm.schema import allow_owner_lookups, grant_function, protect_tenant_tables

revision = "770be53f0229"
down_revision = "7e3b9c41d2a5"
branch_labels = None
depends_on = None

TABLES = ("subscriptions", "stripe_events", "invoices", "payment_methods", "usage_records")
FUNCTIONS = ("wasl_billing_organization_by_customer(text)",
             "wasl_stripe_events_unprocessed(timestamptz, integer, integer)",
             "wasl_usage_records_unreported(timestamptz, integer)",
             "wasl_subscriptions_paying(bigint, integer)",
             "wasl_organization_by_slug(text)")


def _tenant_columns(table: str) -> list:
    return [
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("organization_id", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["organization_id"], ["organizations.id"],
                                name=op.f(f"fk_{table}_organization_id_organizations"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{table}")),
    ]


def _moment(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _created_at() -> sa.Column:
    return sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                     nullable=False)


def upgrade():
    _create_tables()
    _start_trials()
    protect_tenant_tables(*TABLES)
    for table in ("subscriptions", "stripe_events", "usage_records"):
        allow_owner_lookups(table)
    _create_functions()


def _create_tables():
    op.create_table(
        "subscriptions", *_tenant_columns("subscriptions"),
        sa.Column("plan", sa.String(16), nullable=False),
        sa.Column("interval", sa.String(8), nullable=True),
        sa.Column("status", sa.String(24), nullable=False),
        sa.Column("stripe_customer_id", sa.String(64), nullable=True),
        sa.Column("stripe_subscription_id", sa.String(64), nullable=True),
        _moment("trial_ends_at"), _moment("current_period_end"),
        sa.Column("cancel_at_period_end", sa.Boolean(), server_default=sa.text("false"),
                  nullable=False),
        sa.Column("scheduled_plan", sa.String(16), nullable=True),
        sa.Column("scheduled_interval", sa.String(8), nullable=True),
        _moment("past_due_since"), _moment("last_event_at"),
        sa.Column("custom_limits", postgresql.JSONB(), server_default=sa.text("'{}'::jsonb"),
                  nullable=False),
        _created_at(), _moment("updated_at"),
    )
    op.create_index("uq_subscriptions_organization_id", "subscriptions", ["organization_id"],
                    unique=True)
    op.create_index("uq_subscriptions_stripe_customer_id", "subscriptions",
                    ["stripe_customer_id"], unique=True,
                    postgresql_where=sa.text("stripe_customer_id IS NOT NULL"))
    op.create_table(
        "stripe_events", *_tenant_columns("stripe_events"),
        sa.Column("stripe_event_id", sa.String(64), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        _moment("stripe_created_at", nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        _moment("processed_at"),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_error", sa.String(500), nullable=True),
    )
    op.create_index("uq_stripe_events_organization_id_stripe_event_id", "stripe_events",
                    ["organization_id", "stripe_event_id"], unique=True)
    op.create_index("ix_stripe_events_unprocessed", "stripe_events", ["organization_id", "id"],
                    postgresql_where=sa.text("processed_at IS NULL"))
    op.create_table(
        "invoices", *_tenant_columns("invoices"),
        sa.Column("stripe_invoice_id", sa.String(64), nullable=False),
        sa.Column("number", sa.String(64), nullable=True),
        _moment("issued_at", nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("hosted_invoice_url", sa.String(1000), nullable=True),
        sa.Column("invoice_pdf", sa.String(1000), nullable=True),
        _created_at(),
    )
    op.create_index("uq_invoices_organization_id_stripe_invoice_id", "invoices",
                    ["organization_id", "stripe_invoice_id"], unique=True)
    op.create_index("ix_invoices_organization_id_issued_at", "invoices",
                    ["organization_id", sa.text("issued_at DESC"), sa.text("id DESC")])
    op.create_table(
        "payment_methods", *_tenant_columns("payment_methods"),
        sa.Column("stripe_payment_method_id", sa.String(64), nullable=False),
        sa.Column("brand", sa.String(32), nullable=True),
        sa.Column("last4", sa.String(4), nullable=True),
        sa.Column("exp_month", sa.Integer(), nullable=True),
        sa.Column("exp_year", sa.Integer(), nullable=True),
        sa.Column("is_default", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        _created_at(),
    )
    op.create_index("uq_payment_methods_organization_id_stripe_payment_method_id",
                    "payment_methods", ["organization_id", "stripe_payment_method_id"],
                    unique=True)
    op.create_table(
        "usage_records", *_tenant_columns("usage_records"),
        _moment("hour", nullable=False),
        sa.Column("campaign_messages", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("whatsapp_numbers", sa.Integer(), nullable=True),
        _moment("reported_at"),
    )
    op.create_index("uq_usage_records_organization_id_hour", "usage_records",
                    ["organization_id", "hour"], unique=True)
    op.create_index("ix_usage_records_unreported", "usage_records", ["organization_id", "hour"],
                    postgresql_where=sa.text("reported_at IS NULL"))


def _start_trials():
    """The organizations there already start the trial now, as billing starts now."""
    days = int(current_app.config["BILLING_TRIAL_DAYS"])
    # The owner is held by organizations' FORCEd RLS too, and this reads every organization.
    op.execute("ALTER TABLE organizations NO FORCE ROW LEVEL SECURITY")
    op.execute(f"""
        INSERT INTO subscriptions (organization_id, plan, status, trial_ends_at)
        SELECT id, 'pro', 'trialing', now() + interval '{days} days' FROM organizations""")
    op.execute("ALTER TABLE organizations FORCE ROW LEVEL SECURITY")


def _create_functions():
    op.execute("""
        CREATE FUNCTION wasl_billing_organization_by_customer(p_customer text)
        RETURNS bigint
        LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
            SELECT organization_id FROM subscriptions WHERE stripe_customer_id = p_customer
        $$""")
    op.execute("""
        CREATE FUNCTION wasl_stripe_events_unprocessed(p_before timestamptz,
                                                       p_max_attempts integer, p_limit integer)
        RETURNS TABLE (organization_id bigint, id bigint)
        LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
            SELECT organization_id, id FROM stripe_events
            WHERE processed_at IS NULL AND received_at < p_before AND attempts < p_max_attempts
            ORDER BY id LIMIT p_limit
        $$""")
    op.execute("""
        CREATE FUNCTION wasl_usage_records_unreported(p_before timestamptz, p_limit integer)
        RETURNS TABLE (organization_id bigint, id bigint)
        LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
            SELECT organization_id, id FROM usage_records
            WHERE reported_at IS NULL AND hour < p_before ORDER BY hour, id LIMIT p_limit
        $$""")
    op.execute("""
        CREATE FUNCTION wasl_subscriptions_paying(p_after bigint, p_limit integer)
        RETURNS TABLE (organization_id bigint, id bigint)
        LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
            SELECT organization_id, id FROM subscriptions
            WHERE id > p_after AND stripe_subscription_id IS NOT NULL
              AND status IN ('active', 'trialing', 'past_due')
            ORDER BY id LIMIT p_limit
        $$""")
    # `crm billing set-limits ORG` names the organization by its workspace slug.
    allow_owner_lookups("organizations")
    op.execute("""
        CREATE FUNCTION wasl_organization_by_slug(p_slug text)
        RETURNS bigint
        LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
            SELECT id FROM organizations WHERE slug = p_slug
        $$""")
    for function in FUNCTIONS:
        grant_function(function)


def downgrade():
    for function in FUNCTIONS:
        op.execute(f"DROP FUNCTION IF EXISTS {function}")
    op.execute("DROP POLICY IF EXISTS owner_lookup ON organizations")
    for table in reversed(TABLES):
        op.drop_table(table)
