"""Tickets, what happens on them, and the settings their SLA clocks run by."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Computed,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column, relationship

from crm.extensions import db
from crm.foundation.models import Team, User
from crm.models import created_at_column, id_column, utcnow
from crm.tenancy import TenantMixin
from crm.versions import VersionedMixin

PRIORITIES = ("low", "normal", "high", "urgent")  # in rising order: escalation raises one step
STATUSES = ("open", "pending", "on_hold", "solved", "closed")
# pending waits on the customer, on_hold on a third party: the SLA clocks pause in both, and
# while solved (a reopened ticket resumes them).
PAUSED_STATUSES = ("pending", "on_hold", "solved")
UNSOLVED_STATUSES = ("open", "pending", "on_hold")
SOURCES = ("manual", "whatsapp", "api")
# The clocks a ticket runs, each with a target in its SLA policy.
CLOCKS = ("first_response", "next_response", "resolution")
# A ticket's SLA as the lists show it: a clock of it breached, one past its warning, all in
# time, or stopped while the ticket waits; None when no clock runs (solved, closed).
SLA_STATES = ("ok", "warning", "breached", "paused")
DEFAULT_TYPES = (  # (key, Arabic, English)
    ("support", "دعم فني", "Support"),
    ("sales", "مبيعات", "Sales"),
    ("question", "استفسار", "Question"),
    ("complaint", "شكوى", "Complaint"),
)
_UNSOLVED = "status IN ('open', 'pending', 'on_hold')"


class TicketType(TenantMixin, db.Model):
    """What a ticket is about; the four defaults have a `key`, those admins add have none."""

    __tablename__ = "ticket_types"
    __table_args__ = (
        Index("ix_ticket_types_organization_id_position", "organization_id", "position"),
        Index("uq_ticket_types_organization_id_key", "organization_id", "key", unique=True,
              postgresql_where=text("key IS NOT NULL")),
    )

    id: Mapped[int] = id_column()
    key: Mapped[str | None] = mapped_column(String(32))
    name_ar: Mapped[str] = mapped_column(String(80), nullable=False)
    name_en: Mapped[str] = mapped_column(String(80), nullable=False)
    position: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    created_at: Mapped[datetime] = created_at_column()

    def name_in(self, language: str) -> str:
        return self.name_ar if language == "ar" else self.name_en

    def __repr__(self) -> str:
        return f"<TicketType {self.id} {self.name_en}>"


class Ticket(VersionedMixin, TenantMixin, db.Model):
    """A support or sales case; people's edits are versioned (crm/versions.py).

    The SLA columns are kept by crm/tickets/sla.py: each clock's due moment, when its warning
    fired and when it was breached; the business time the ticket spent paused; and
    `next_deadline_at`, the earliest moment the timer has something to do for it (a warning,
    a breach, an escalation, closing a solved ticket), which an index serves across
    organizations.
    """

    __tablename__ = "tickets"
    __table_args__ = (
        Index("uq_tickets_organization_id_number", "organization_id", "number", unique=True),
        Index("ix_tickets_recent", "organization_id", text("id DESC")),
        Index("ix_tickets_assignee", "organization_id", "assignee_id", text("id DESC")),
        # "mine" and "unassigned" list unsolved tickets.
        Index("ix_tickets_assignee_unsolved", "organization_id", "assignee_id", text("id DESC"),
              postgresql_where=text(_UNSOLVED)),
        Index("ix_tickets_status", "organization_id", "status", text("id DESC")),
        Index("ix_tickets_priority", "organization_id", "priority", text("id DESC")),
        Index("ix_tickets_type", "organization_id", "type_id", text("id DESC")),
        Index("ix_tickets_team", "organization_id", "team_id", text("id DESC")),
        Index("ix_tickets_customer", "organization_id", "customer_id", text("id DESC")),
        Index("ix_tickets_conversation", "organization_id", "conversation_id",
              postgresql_where=text("conversation_id IS NOT NULL")),
        Index("ix_tickets_tags", "organization_id", "tags", postgresql_using="gin"),
        Index("ix_tickets_search_subject", "organization_id", "search_subject",
              postgresql_using="gin", postgresql_ops={"search_subject": "gin_trgm_ops"}),
        Index("ix_tickets_breaching", "organization_id", "sla_due_at", "id",
              postgresql_where=text("sla_status = 'warning'")),
        Index("ix_tickets_breached", "organization_id", text("id DESC"),
              postgresql_where=text("sla_status = 'breached'")),
        Index("ix_tickets_next_deadline", "organization_id", "next_deadline_at",
              postgresql_where=text("next_deadline_at IS NOT NULL")),
        # Across organizations, for the timer's SECURITY DEFINER lookups only: what is due
        # next, whoever it belongs to (crm/tickets/jobs.py).
        Index("ix_tickets_due", "next_deadline_at",
              postgresql_where=text("next_deadline_at IS NOT NULL")),
        CheckConstraint("priority IN ('low', 'normal', 'high', 'urgent')", name="priority"),
        CheckConstraint("status IN ('open', 'pending', 'on_hold', 'solved', 'closed')",
                        name="status"),
        CheckConstraint("source IN ('manual', 'whatsapp', 'api')", name="source"),
    )

    id: Mapped[int] = id_column()
    number: Mapped[int] = mapped_column(Integer, nullable=False)
    subject: Mapped[str] = mapped_column(String(200), nullable=False)
    description: Mapped[str] = mapped_column(Text, nullable=False, default="", server_default="")
    type_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("ticket_types.id", ondelete="SET NULL"))
    priority: Mapped[str] = mapped_column(String(8), nullable=False, default="normal",
                                          server_default="normal")
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="open",
                                        server_default="open")
    customer_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("customers.id", ondelete="SET NULL"))
    conversation_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("conversations.id", ondelete="SET NULL"))
    assignee_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="SET NULL"))
    team_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("teams.id", ondelete="SET NULL"))
    tags: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False, default=list,
                                            server_default=text("'{}'::text[]"))
    source: Mapped[str] = mapped_column(String(16), nullable=False, default="manual",
                                        server_default="manual")
    created_by_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="SET NULL"))
    search_subject: Mapped[str] = mapped_column(
        Text, Computed("wasl_fold(subject)", persisted=True))
    created_at: Mapped[datetime] = created_at_column()
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False,
                                                 default=utcnow, onupdate=utcnow,
                                                 server_default=text("now()"))
    first_responded_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    solved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    # -- SLA (crm/tickets/sla.py) --
    first_response_due_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    first_response_warned_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    first_response_breached_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Runs from a customer's message after the first response until the next public reply.
    next_response_started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # sla_paused_seconds when it started: pauses before it are not its own.
    next_response_pause_base: Mapped[int] = mapped_column(Integer, nullable=False, default=0,
                                                          server_default="0")
    next_response_due_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    next_response_warned_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    next_response_breached_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    resolution_due_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    resolution_warned_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    resolution_breached_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    sla_paused_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Business time spent in pauses that ended (seconds of the calendar at the time).
    sla_paused_seconds: Mapped[int] = mapped_column(Integer, nullable=False, default=0,
                                                    server_default="0")
    sla_status: Mapped[str | None] = mapped_column(String(8))
    # The earliest due moment of a running clock not yet breached ("breaching soon" order).
    sla_due_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    next_deadline_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    escalated_rule_ids: Mapped[list[int]] = mapped_column(
        ARRAY(BigInteger), nullable=False, default=list, server_default=text("'{}'::bigint[]"))

    type: Mapped[TicketType | None] = relationship()
    assignee: Mapped[User | None] = relationship(foreign_keys=[assignee_id])
    team: Mapped[Team | None] = relationship()

    @property
    def is_paused(self) -> bool:
        return self.sla_paused_at is not None

    def __repr__(self) -> str:
        return f"<Ticket {self.id} #{self.number}>"


class TicketComment(TenantMixin, db.Model):
    """A public reply (the customer sees it; on WhatsApp when the ticket has a conversation)
    or an internal note."""

    __tablename__ = "ticket_comments"
    __table_args__ = (Index("ix_ticket_comments_thread", "organization_id", "ticket_id", "id"),)

    id: Mapped[int] = id_column()
    ticket_id: Mapped[int] = mapped_column(BigInteger,
                                           ForeignKey("tickets.id", ondelete="CASCADE"),
                                           nullable=False)
    author_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="SET NULL"))
    is_public: Mapped[bool] = mapped_column(Boolean, nullable=False)
    body: Mapped[str] = mapped_column(Text, nullable=False, default="", server_default="")
    # The WhatsApp message a public reply went out as (the outbox row; no constraint, so
    # tickets never depend on the WhatsApp tables' lifecycle).
    message_id: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = created_at_column()

    author: Mapped[User | None] = relationship()
    attachments: Mapped[list[TicketAttachment]] = relationship(
        order_by="TicketAttachment.id", viewonly=True)


class TicketAttachment(TenantMixin, db.Model):
    """A file on a ticket, stored under `<media root>/<organization>/tickets/`
    (crm/storage.py) and served only to those who may see the ticket."""

    __tablename__ = "ticket_attachments"
    __table_args__ = (Index("ix_ticket_attachments_ticket", "organization_id", "ticket_id",
                            "id"),)

    id: Mapped[int] = id_column()
    ticket_id: Mapped[int] = mapped_column(BigInteger,
                                           ForeignKey("tickets.id", ondelete="CASCADE"),
                                           nullable=False)
    comment_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("ticket_comments.id", ondelete="SET NULL"))
    filename: Mapped[str] = mapped_column(String(200), nullable=False)
    mime_type: Mapped[str] = mapped_column(String(100), nullable=False)
    size: Mapped[int] = mapped_column(Integer, nullable=False)
    path: Mapped[str] = mapped_column(String(300), nullable=False, default="",
                                      server_default="")
    uploaded_by_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = created_at_column()


class TicketEvent(TenantMixin, db.Model):
    """The ticket's timeline: who did what, when (`details` says what changed)."""

    __tablename__ = "ticket_events"
    __table_args__ = (
        Index("ix_ticket_events_timeline", "organization_id", "ticket_id", text("id DESC")),
        # What came from elsewhere (a customer's WhatsApp message) is logged once however
        # often its event is delivered.
        Index("uq_ticket_events_source_key", "organization_id", "source_key", unique=True,
              postgresql_where=text("source_key IS NOT NULL")),
    )

    id: Mapped[int] = id_column()
    ticket_id: Mapped[int] = mapped_column(BigInteger,
                                           ForeignKey("tickets.id", ondelete="CASCADE"),
                                           nullable=False)
    actor_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="SET NULL"))
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    details: Mapped[dict] = mapped_column(JSONB, nullable=False, default=dict,
                                          server_default=text("'{}'::jsonb"))
    source_key: Mapped[str | None] = mapped_column(String(80))
    created_at: Mapped[datetime] = created_at_column()

    actor: Mapped[User | None] = relationship()


class SlaPolicy(TenantMixin, db.Model):
    """Targets in business minutes for a priority, optionally for one type only (which then
    wins over the priority's general policy)."""

    __tablename__ = "sla_policies"
    __table_args__ = (
        Index("uq_sla_policies_priority", "organization_id", "priority", unique=True,
              postgresql_where=text("type_id IS NULL")),
        Index("uq_sla_policies_priority_type", "organization_id", "priority", "type_id",
              unique=True, postgresql_where=text("type_id IS NOT NULL")),
        CheckConstraint("first_response_minutes > 0 AND next_response_minutes > 0 "
                        "AND resolution_minutes > 0", name="targets"),
    )

    id: Mapped[int] = id_column()
    priority: Mapped[str] = mapped_column(String(8), nullable=False)
    type_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("ticket_types.id", ondelete="CASCADE"))
    first_response_minutes: Mapped[int] = mapped_column(Integer, nullable=False)
    next_response_minutes: Mapped[int] = mapped_column(Integer, nullable=False)
    resolution_minutes: Mapped[int] = mapped_column(Integer, nullable=False)
    created_at: Mapped[datetime] = created_at_column()


class BusinessHours(TenantMixin, db.Model):
    """One working interval of a weekday (Monday 0 ... Sunday 6), in minutes from midnight of
    the organization's time zone; a day may have several (a split shift)."""

    __tablename__ = "business_hours"
    __table_args__ = (
        Index("ix_business_hours_organization_id_weekday", "organization_id", "weekday"),
        CheckConstraint("weekday BETWEEN 0 AND 6", name="weekday"),
        CheckConstraint("start_minute >= 0 AND end_minute <= 1440 AND start_minute < end_minute",
                        name="interval"),
    )

    id: Mapped[int] = id_column()
    weekday: Mapped[int] = mapped_column(SmallInteger, nullable=False)
    start_minute: Mapped[int] = mapped_column(SmallInteger, nullable=False)
    end_minute: Mapped[int] = mapped_column(SmallInteger, nullable=False)


class Holiday(TenantMixin, db.Model):
    """A day off: from the organization's country (the `holidays` package) or added by an
    admin. A removed country holiday stays as a tombstone (`removed_at`), so topping up the
    year ahead does not bring it back."""

    __tablename__ = "holidays"
    __table_args__ = (
        Index("uq_holidays_organization_id_day", "organization_id", "day", unique=True),
        CheckConstraint("source IN ('country', 'custom')", name="source"),
    )

    id: Mapped[int] = id_column()
    day: Mapped[date] = mapped_column(Date, nullable=False)
    name: Mapped[str] = mapped_column(String(120), nullable=False)
    source: Mapped[str] = mapped_column(String(8), nullable=False)
    removed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = created_at_column()

    def __repr__(self) -> str:
        return f"<Holiday {self.day} {self.name}>"


class EscalationRule(TenantMixin, db.Model):
    """After `minutes_after` business minutes past a breach of `metric`: raise the priority,
    reassign to a person or a team, notify."""

    __tablename__ = "escalation_rules"
    __table_args__ = (
        Index("ix_escalation_rules_organization_id_id", "organization_id", "id"),
        CheckConstraint("metric IN ('first_response', 'next_response', 'resolution')",
                        name="metric"),
        CheckConstraint("minutes_after >= 0", name="minutes_after"),
    )

    id: Mapped[int] = id_column()
    metric: Mapped[str] = mapped_column(String(16), nullable=False)
    minutes_after: Mapped[int] = mapped_column(Integer, nullable=False)
    raise_priority: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False,
                                                 server_default=text("false"))
    assignee_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="SET NULL"))
    team_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("teams.id", ondelete="SET NULL"))
    notify: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True,
                                         server_default=text("true"))
    created_at: Mapped[datetime] = created_at_column()


class SupportKeyword(TenantMixin, db.Model):
    """A word that makes a customer's message suggest a ticket; matched folded
    (crm/search.fold_text), so «مشكله» finds «مشكلة»."""

    __tablename__ = "support_keywords"
    __table_args__ = (Index("uq_support_keywords_organization_id_folded", "organization_id",
                            "folded", unique=True),)

    id: Mapped[int] = id_column()
    keyword: Mapped[str] = mapped_column(String(60), nullable=False)
    folded: Mapped[str] = mapped_column(String(60), nullable=False)
    created_at: Mapped[datetime] = created_at_column()


class TicketSettings(TenantMixin, db.Model):
    """The organization's ticketing settings, and the counter that numbers its tickets.

    Its row is also the mark that the defaults (types, policies, hours, holidays, keywords)
    were made; tickets are numbered by incrementing `last_number`, which locks the row until
    the creating transaction ends, so numbers never repeat and rarely skip.
    """

    __tablename__ = "ticket_settings"
    __table_args__ = (
        Index("uq_ticket_settings_organization_id", "organization_id", unique=True),
        # Across organizations, for the SECURITY DEFINER lookup of whose holidays need
        # topping up.
        Index("ix_ticket_settings_holidays_filled_through", "holidays_filled_through"),
        CheckConstraint("auto_close_days BETWEEN 1 AND 365", name="auto_close_days"),
    )

    id: Mapped[int] = id_column()
    auto_close_days: Mapped[int] = mapped_column(Integer, nullable=False, default=4,
                                                 server_default="4")
    round_robin: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False,
                                              server_default=text("false"))
    last_number: Mapped[int] = mapped_column(Integer, nullable=False, default=0,
                                             server_default="0")
    holidays_filled_through: Mapped[date | None] = mapped_column(Date)
    created_at: Mapped[datetime] = created_at_column()


class TicketSuggestion(TenantMixin, db.Model):
    """A "create a ticket?" for a conversation whose customer wrote a support keyword, with
    the fields filled in: never a ticket made automatically. One per conversation, the latest."""

    __tablename__ = "ticket_suggestions"
    __table_args__ = (Index("uq_ticket_suggestions_organization_id_conversation_id",
                            "organization_id", "conversation_id", unique=True),)

    id: Mapped[int] = id_column()
    conversation_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("conversations.id", ondelete="CASCADE"), nullable=False)
    message_id: Mapped[int | None] = mapped_column(BigInteger)
    customer_id: Mapped[int | None] = mapped_column(BigInteger)
    keyword: Mapped[str] = mapped_column(String(60), nullable=False)
    subject: Mapped[str] = mapped_column(String(200), nullable=False)
    description: Mapped[str] = mapped_column(Text, nullable=False, default="", server_default="")
    type_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("ticket_types.id", ondelete="SET NULL"))
    dismissed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = created_at_column()
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False,
                                                 default=utcnow, onupdate=utcnow,
                                                 server_default=text("now()"))


class TicketCount(TenantMixin, db.Model):
    """Tickets per assignee (0: nobody), status and SLA status ('': none), kept by triggers on
    `tickets` (migration eb7087627e79): the dashboard reads a few rows. Never written by the
    application."""

    __tablename__ = "ticket_counts"

    assignee_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    status: Mapped[str] = mapped_column(String(16), primary_key=True)
    sla_status: Mapped[str] = mapped_column(String(8), primary_key=True)
    n: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
