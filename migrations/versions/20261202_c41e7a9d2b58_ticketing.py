"""Ticketing with SLAs: tickets and their timeline, the business calendar, teams, notifications.

Every table is a tenant table (organization_id leading its indexes, FORCEd RLS). Two indexes do
not lead with it, on purpose: `ix_tickets_due` and `ix_ticket_settings_holidays_filled_through`
serve SECURITY DEFINER functions that look across organizations and return only (organization,
id) pairs — the SLA timer (what is due next, whoever it belongs to) and the yearly top-up of
holidays. Ticket search runs in a SECURITY DEFINER function too, as the CRM's and the inbox's
do (crm/search.py explains why).

Revision ID: c41e7a9d2b58
Revises: 770be53f0229
Create Date: 2026-12-02 15:00:00
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from crm.schema import allow_owner_lookups, grant_function, protect_tenant_tables
from crm.tenancy import current_organization_sql

revision = "c41e7a9d2b58"
down_revision = "770be53f0229"
branch_labels = None
depends_on = None

TABLES = ("teams", "team_members", "notifications", "ticket_types", "ticket_settings",
          "tickets", "ticket_comments", "ticket_attachments", "ticket_events", "sla_policies",
          "business_hours", "holidays", "escalation_rules", "support_keywords",
          "ticket_suggestions")
FUNCTIONS = ("wasl_tickets_due(timestamptz, integer)", "wasl_tickets_next_deadline()",
             "wasl_ticket_holidays_due(date, integer)", "wasl_matching_tickets(text, integer)")
UNSOLVED = sa.text("status IN ('open', 'pending', 'on_hold')")
ORG = current_organization_sql()


def _id():
    return sa.Column("id", sa.BigInteger(), nullable=False)


def _org(table: str):
    return (sa.Column("organization_id", sa.BigInteger(), nullable=False),
            sa.ForeignKeyConstraint(["organization_id"], ["organizations.id"],
                                    name=f"fk_{table}_organization_id_organizations",
                                    ondelete="CASCADE"),
            sa.PrimaryKeyConstraint("id", name=f"pk_{table}"))


def _fk(table: str, column: str, target: str, ondelete: str):
    return sa.ForeignKeyConstraint([column], [f"{target}.id"],
                                   name=f"fk_{table}_{column}_{target}", ondelete=ondelete)


def _created():
    return sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                     nullable=False)


def _moment(name: str):
    return sa.Column(name, sa.DateTime(timezone=True), nullable=True)


def upgrade():
    op.create_table(
        "teams", _id(), *_org("teams"),
        sa.Column("name", sa.String(80), nullable=False),
        sa.Column("manager_id", sa.BigInteger(), nullable=True),
        sa.Column("last_assigned_user_id", sa.BigInteger(), nullable=True),
        _created(),
        _fk("teams", "manager_id", "users", "SET NULL"),
        _fk("teams", "last_assigned_user_id", "users", "SET NULL"),
    )
    op.create_index("uq_teams_organization_id_name", "teams", ["organization_id", "name"],
                    unique=True)
    op.create_table(
        "team_members", _id(), *_org("team_members"),
        sa.Column("team_id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        _created(),
        _fk("team_members", "team_id", "teams", "CASCADE"),
        _fk("team_members", "user_id", "users", "CASCADE"),
    )
    op.create_index("uq_team_members_organization_id_team_id_user_id", "team_members",
                    ["organization_id", "team_id", "user_id"], unique=True)
    op.create_index("ix_team_members_organization_id_user_id", "team_members",
                    ["organization_id", "user_id"])
    op.create_table(
        "notifications", _id(), *_org("notifications"),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("params", postgresql.JSONB(), server_default=sa.text("'{}'::jsonb"),
                  nullable=False),
        sa.Column("link", sa.String(300), nullable=True),
        _moment("read_at"),
        _created(),
        _fk("notifications", "user_id", "users", "CASCADE"),
    )
    op.create_index("ix_notifications_organization_id_user_id_id", "notifications",
                    ["organization_id", "user_id", sa.text("id DESC")])
    op.create_index("ix_notifications_unread", "notifications", ["organization_id", "user_id"],
                    postgresql_where=sa.text("read_at IS NULL"))

    op.create_table(
        "ticket_types", _id(), *_org("ticket_types"),
        sa.Column("key", sa.String(32), nullable=True),
        sa.Column("name_ar", sa.String(80), nullable=False),
        sa.Column("name_en", sa.String(80), nullable=False),
        sa.Column("position", sa.Integer(), server_default="0", nullable=False),
        _created(),
    )
    op.create_index("ix_ticket_types_organization_id_position", "ticket_types",
                    ["organization_id", "position"])
    op.create_index("uq_ticket_types_organization_id_key", "ticket_types",
                    ["organization_id", "key"], unique=True,
                    postgresql_where=sa.text("key IS NOT NULL"))
    op.create_table(
        "ticket_settings", _id(), *_org("ticket_settings"),
        sa.Column("auto_close_days", sa.Integer(), server_default="4", nullable=False),
        sa.Column("round_robin", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("last_number", sa.Integer(), server_default="0", nullable=False),
        sa.Column("holidays_filled_through", sa.Date(), nullable=True),
        _created(),
        sa.CheckConstraint("auto_close_days BETWEEN 1 AND 365",
                           name="ck_ticket_settings_auto_close_days"),
    )
    op.create_index("uq_ticket_settings_organization_id", "ticket_settings",
                    ["organization_id"], unique=True)
    op.create_index("ix_ticket_settings_holidays_filled_through", "ticket_settings",
                    ["holidays_filled_through"])

    op.create_table(
        "tickets", _id(), *_org("tickets"),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("description", sa.Text(), server_default="", nullable=False),
        sa.Column("type_id", sa.BigInteger(), nullable=True),
        sa.Column("priority", sa.String(8), server_default="normal", nullable=False),
        sa.Column("status", sa.String(16), server_default="open", nullable=False),
        sa.Column("customer_id", sa.BigInteger(), nullable=True),
        sa.Column("conversation_id", sa.BigInteger(), nullable=True),
        sa.Column("assignee_id", sa.BigInteger(), nullable=True),
        sa.Column("team_id", sa.BigInteger(), nullable=True),
        sa.Column("tags", postgresql.ARRAY(sa.Text()), server_default=sa.text("'{}'::text[]"),
                  nullable=False),
        sa.Column("source", sa.String(16), server_default="manual", nullable=False),
        sa.Column("created_by_id", sa.BigInteger(), nullable=True),
        sa.Column("search_subject", sa.Text(),
                  sa.Computed("wasl_fold(subject)", persisted=True), nullable=True),
        _created(),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        _moment("first_responded_at"), _moment("solved_at"), _moment("closed_at"),
        _moment("first_response_due_at"), _moment("first_response_warned_at"),
        _moment("first_response_breached_at"),
        _moment("next_response_started_at"),
        sa.Column("next_response_pause_base", sa.Integer(), server_default="0", nullable=False),
        _moment("next_response_due_at"), _moment("next_response_warned_at"),
        _moment("next_response_breached_at"),
        _moment("resolution_due_at"), _moment("resolution_warned_at"),
        _moment("resolution_breached_at"),
        _moment("sla_paused_at"),
        sa.Column("sla_paused_seconds", sa.Integer(), server_default="0", nullable=False),
        sa.Column("sla_status", sa.String(8), nullable=True),
        _moment("sla_due_at"),
        _moment("next_deadline_at"),
        sa.Column("escalated_rule_ids", postgresql.ARRAY(sa.BigInteger()),
                  server_default=sa.text("'{}'::bigint[]"), nullable=False),
        sa.Column("version", sa.Integer(), server_default="1", nullable=False),
        _moment("edited_at"),
        sa.Column("edited_by_id", sa.BigInteger(), nullable=True),
        _fk("tickets", "type_id", "ticket_types", "SET NULL"),
        _fk("tickets", "customer_id", "customers", "SET NULL"),
        _fk("tickets", "conversation_id", "conversations", "SET NULL"),
        _fk("tickets", "assignee_id", "users", "SET NULL"),
        _fk("tickets", "team_id", "teams", "SET NULL"),
        _fk("tickets", "created_by_id", "users", "SET NULL"),
        _fk("tickets", "edited_by_id", "users", "SET NULL"),
        sa.CheckConstraint("priority IN ('low', 'normal', 'high', 'urgent')",
                           name="ck_tickets_priority"),
        sa.CheckConstraint("status IN ('open', 'pending', 'on_hold', 'solved', 'closed')",
                           name="ck_tickets_status"),
        sa.CheckConstraint("source IN ('manual', 'whatsapp', 'api')", name="ck_tickets_source"),
    )
    op.create_index("uq_tickets_organization_id_number", "tickets",
                    ["organization_id", "number"], unique=True)
    op.create_index("ix_tickets_recent", "tickets", ["organization_id", sa.text("id DESC")])
    for name, column in (("assignee", "assignee_id"), ("status", "status"),
                         ("priority", "priority"), ("type", "type_id"), ("team", "team_id"),
                         ("customer", "customer_id")):
        op.create_index(f"ix_tickets_{name}", "tickets",
                        ["organization_id", column, sa.text("id DESC")])
    op.create_index("ix_tickets_assignee_unsolved", "tickets",
                    ["organization_id", "assignee_id", sa.text("id DESC")],
                    postgresql_where=UNSOLVED)
    op.create_index("ix_tickets_conversation", "tickets", ["organization_id", "conversation_id"],
                    postgresql_where=sa.text("conversation_id IS NOT NULL"))
    op.create_index("ix_tickets_tags", "tickets", ["organization_id", "tags"],
                    postgresql_using="gin")
    op.create_index("ix_tickets_search_subject", "tickets", ["organization_id", "search_subject"],
                    postgresql_using="gin", postgresql_ops={"search_subject": "gin_trgm_ops"})
    op.create_index("ix_tickets_breaching", "tickets", ["organization_id", "sla_due_at", "id"],
                    postgresql_where=sa.text("sla_status = 'warning'"))
    op.create_index("ix_tickets_breached", "tickets", ["organization_id", sa.text("id DESC")],
                    postgresql_where=sa.text("sla_status = 'breached'"))
    op.create_index("ix_tickets_next_deadline", "tickets",
                    ["organization_id", "next_deadline_at"],
                    postgresql_where=sa.text("next_deadline_at IS NOT NULL"))
    op.create_index("ix_tickets_due", "tickets", ["next_deadline_at"],
                    postgresql_where=sa.text("next_deadline_at IS NOT NULL"))

    op.create_table(
        "ticket_comments", _id(), *_org("ticket_comments"),
        sa.Column("ticket_id", sa.BigInteger(), nullable=False),
        sa.Column("author_id", sa.BigInteger(), nullable=True),
        sa.Column("is_public", sa.Boolean(), nullable=False),
        sa.Column("body", sa.Text(), server_default="", nullable=False),
        sa.Column("message_id", sa.BigInteger(), nullable=True),
        _created(),
        _fk("ticket_comments", "ticket_id", "tickets", "CASCADE"),
        _fk("ticket_comments", "author_id", "users", "SET NULL"),
    )
    op.create_index("ix_ticket_comments_thread", "ticket_comments",
                    ["organization_id", "ticket_id", "id"])
    op.create_table(
        "ticket_attachments", _id(), *_org("ticket_attachments"),
        sa.Column("ticket_id", sa.BigInteger(), nullable=False),
        sa.Column("comment_id", sa.BigInteger(), nullable=True),
        sa.Column("filename", sa.String(200), nullable=False),
        sa.Column("mime_type", sa.String(100), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("path", sa.String(300), server_default="", nullable=False),
        sa.Column("uploaded_by_id", sa.BigInteger(), nullable=True),
        _created(),
        _fk("ticket_attachments", "ticket_id", "tickets", "CASCADE"),
        _fk("ticket_attachments", "comment_id", "ticket_comments", "SET NULL"),
        _fk("ticket_attachments", "uploaded_by_id", "users", "SET NULL"),
    )
    op.create_index("ix_ticket_attachments_ticket", "ticket_attachments",
                    ["organization_id", "ticket_id", "id"])
    op.create_table(
        "ticket_events", _id(), *_org("ticket_events"),
        sa.Column("ticket_id", sa.BigInteger(), nullable=False),
        sa.Column("actor_id", sa.BigInteger(), nullable=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("details", postgresql.JSONB(), server_default=sa.text("'{}'::jsonb"),
                  nullable=False),
        sa.Column("source_key", sa.String(80), nullable=True),
        _created(),
        _fk("ticket_events", "ticket_id", "tickets", "CASCADE"),
        _fk("ticket_events", "actor_id", "users", "SET NULL"),
    )
    op.create_index("ix_ticket_events_timeline", "ticket_events",
                    ["organization_id", "ticket_id", sa.text("id DESC")])
    op.create_index("uq_ticket_events_source_key", "ticket_events",
                    ["organization_id", "source_key"], unique=True,
                    postgresql_where=sa.text("source_key IS NOT NULL"))

    op.create_table(
        "sla_policies", _id(), *_org("sla_policies"),
        sa.Column("priority", sa.String(8), nullable=False),
        sa.Column("type_id", sa.BigInteger(), nullable=True),
        sa.Column("first_response_minutes", sa.Integer(), nullable=False),
        sa.Column("next_response_minutes", sa.Integer(), nullable=False),
        sa.Column("resolution_minutes", sa.Integer(), nullable=False),
        _created(),
        _fk("sla_policies", "type_id", "ticket_types", "CASCADE"),
        sa.CheckConstraint("first_response_minutes > 0 AND next_response_minutes > 0 "
                           "AND resolution_minutes > 0", name="ck_sla_policies_targets"),
    )
    op.create_index("uq_sla_policies_priority", "sla_policies", ["organization_id", "priority"],
                    unique=True, postgresql_where=sa.text("type_id IS NULL"))
    op.create_index("uq_sla_policies_priority_type", "sla_policies",
                    ["organization_id", "priority", "type_id"], unique=True,
                    postgresql_where=sa.text("type_id IS NOT NULL"))
    op.create_table(
        "business_hours", _id(), *_org("business_hours"),
        sa.Column("weekday", sa.SmallInteger(), nullable=False),
        sa.Column("start_minute", sa.SmallInteger(), nullable=False),
        sa.Column("end_minute", sa.SmallInteger(), nullable=False),
        sa.CheckConstraint("weekday BETWEEN 0 AND 6", name="ck_business_hours_weekday"),
        sa.CheckConstraint("start_minute >= 0 AND end_minute <= 1440 "
                           "AND start_minute < end_minute", name="ck_business_hours_interval"),
    )
    op.create_index("ix_business_hours_organization_id_weekday", "business_hours",
                    ["organization_id", "weekday"])
    op.create_table(
        "holidays", _id(), *_org("holidays"),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("name", sa.String(120), nullable=False),
        sa.Column("source", sa.String(8), nullable=False),
        _moment("removed_at"),
        _created(),
        sa.CheckConstraint("source IN ('country', 'custom')", name="ck_holidays_source"),
    )
    op.create_index("uq_holidays_organization_id_day", "holidays", ["organization_id", "day"],
                    unique=True)
    op.create_table(
        "escalation_rules", _id(), *_org("escalation_rules"),
        sa.Column("metric", sa.String(16), nullable=False),
        sa.Column("minutes_after", sa.Integer(), nullable=False),
        sa.Column("raise_priority", sa.Boolean(), server_default=sa.text("false"),
                  nullable=False),
        sa.Column("assignee_id", sa.BigInteger(), nullable=True),
        sa.Column("team_id", sa.BigInteger(), nullable=True),
        sa.Column("notify", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        _created(),
        _fk("escalation_rules", "assignee_id", "users", "SET NULL"),
        _fk("escalation_rules", "team_id", "teams", "SET NULL"),
        sa.CheckConstraint("metric IN ('first_response', 'next_response', 'resolution')",
                           name="ck_escalation_rules_metric"),
        sa.CheckConstraint("minutes_after >= 0", name="ck_escalation_rules_minutes_after"),
    )
    op.create_index("ix_escalation_rules_organization_id_id", "escalation_rules",
                    ["organization_id", "id"])
    op.create_table(
        "support_keywords", _id(), *_org("support_keywords"),
        sa.Column("keyword", sa.String(60), nullable=False),
        sa.Column("folded", sa.String(60), nullable=False),
        _created(),
    )
    op.create_index("uq_support_keywords_organization_id_folded", "support_keywords",
                    ["organization_id", "folded"], unique=True)
    op.create_table(
        "ticket_suggestions", _id(), *_org("ticket_suggestions"),
        sa.Column("conversation_id", sa.BigInteger(), nullable=False),
        sa.Column("message_id", sa.BigInteger(), nullable=True),
        sa.Column("customer_id", sa.BigInteger(), nullable=True),
        sa.Column("keyword", sa.String(60), nullable=False),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("description", sa.Text(), server_default="", nullable=False),
        sa.Column("type_id", sa.BigInteger(), nullable=True),
        _moment("dismissed_at"),
        _created(),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        _fk("ticket_suggestions", "conversation_id", "conversations", "CASCADE"),
        _fk("ticket_suggestions", "type_id", "ticket_types", "SET NULL"),
    )
    op.create_index("uq_ticket_suggestions_organization_id_conversation_id",
                    "ticket_suggestions", ["organization_id", "conversation_id"], unique=True)

    protect_tenant_tables(*TABLES)
    allow_owner_lookups("tickets")
    allow_owner_lookups("ticket_settings")
    _create_functions()


def _create_functions() -> None:
    definer = "SECURITY DEFINER SET search_path = public, pg_temp"
    op.execute(f"""
        CREATE FUNCTION wasl_tickets_due(p_now timestamptz, p_limit integer)
        RETURNS TABLE (organization_id bigint, id bigint)
        LANGUAGE sql STABLE {definer} AS $$
            SELECT organization_id, id FROM tickets
            WHERE next_deadline_at IS NOT NULL AND next_deadline_at <= p_now
            ORDER BY next_deadline_at LIMIT p_limit
        $$""")
    op.execute(f"""
        CREATE FUNCTION wasl_tickets_next_deadline() RETURNS timestamptz
        LANGUAGE sql STABLE {definer} AS $$
            SELECT min(next_deadline_at) FROM tickets WHERE next_deadline_at IS NOT NULL
        $$""")
    op.execute(f"""
        CREATE FUNCTION wasl_ticket_holidays_due(p_until date, p_limit integer)
        RETURNS TABLE (organization_id bigint, id bigint)
        LANGUAGE sql STABLE {definer} AS $$
            SELECT organization_id, id FROM ticket_settings
            WHERE holidays_filled_through < p_until
            ORDER BY holidays_filled_through LIMIT p_limit
        $$""")
    # Subject (trigram), customer name (the CRM's trigram index), or number.
    op.execute(f"""
        CREATE FUNCTION wasl_matching_tickets(p_pattern text, p_number integer)
        RETURNS SETOF bigint LANGUAGE sql STABLE {definer} AS $$
            SELECT id FROM tickets WHERE organization_id = {ORG}
                AND search_subject LIKE p_pattern
            UNION
            SELECT t.id FROM customers c
                JOIN tickets t ON t.organization_id = c.organization_id AND t.customer_id = c.id
                WHERE c.organization_id = {ORG} AND c.search_name LIKE p_pattern
            UNION
            SELECT id FROM tickets WHERE organization_id = {ORG} AND number = p_number
        $$""")
    for signature in FUNCTIONS:
        grant_function(signature)


def downgrade():
    for signature in FUNCTIONS:
        op.execute(f"DROP FUNCTION IF EXISTS {signature}")
    for table in reversed(TABLES):
        op.drop_table(table)
