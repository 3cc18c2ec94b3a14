"""Campaigns, their frozen recipients and counts, consent, templates and per-number pacing."""

from __future__ import annotations

from datetime import datetime, time

from sqlalchemy import (
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Time,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column, relationship

from crm.extensions import db
from crm.foundation.models import User
from crm.models import created_at_column, id_column, utcnow
from crm.tenancy import TenantMixin
from crm.versions import VersionedMixin
from crm.whatsapp.models import WhatsAppProfile

STATUSES = ("draft", "scheduled", "running", "paused", "completed", "cancelled", "failed")
# Statuses a campaign leaves no more.
FINISHED = ("completed", "cancelled", "failed")
# Where a campaign whose recipients are not frozen yet stands, by status (Campaign.list_pending).
LIST_PENDING = {"draft": "at_start", "scheduled": "at_start", "running": "preparing",
                "paused": "at_resume", "cancelled": "never", "failed": "never"}
# queued → sending → sent → delivered → read; failed; skipped (never sent: opted out, no
# valid phone, cancelled); unknown (the send was cut off: WhatsApp's status settles it).
RECIPIENT_STATES = ("queued", "sending", "sent", "delivered", "read", "failed", "unknown",
                    "skipped")
# How far each state is along the way: a recipient never moves backwards (the runner alone
# puts one back in the queue, when WhatsApp refused its message for a moment).
STATE_RANK = {"queued": 0, "sending": 1, "unknown": 1, "sent": 2, "delivered": 3, "read": 4,
              "failed": 5, "skipped": 5}
# The counts of campaign_results each state adds to: a funnel, so a read message counts as
# sent and delivered too; `queued` holds what is still to go (sending included).
COUNTED_IN = {"queued": ("queued",), "sending": ("queued",), "unknown": ("unknown",),
              "sent": ("sent",), "delivered": ("sent", "delivered"),
              "read": ("sent", "delivered", "read"), "failed": ("failed",),
              "skipped": ("skipped",)}
COUNTS = ("total", "queued", "sent", "delivered", "read", "replied", "failed", "skipped",
          "unknown")
CONSENT_ACTIONS = ("opt_out", "opt_in")
CONSENT_METHODS = ("keyword", "button", "manual", "import")
# Meta's messaging limit tiers: unique customers a business may start conversations with in
# a rolling 24 hours (None: unlimited).
MESSAGING_LIMITS = (250, 2000, 10000, 100000, None)
# A number's sending settings until an admin changes them (NumberSettings).
NUMBER_DEFAULTS = {"throughput_per_second": 80, "messaging_limit": 250,
                   "web_delay_min_seconds": 8, "web_delay_max_seconds": 20, "web_daily_cap": 200}


class Campaign(VersionedMixin, TenantMixin, db.Model):
    """One bulk send from one WhatsApp number to an audience; edited only while a draft.

    `audience`: {"segment_id"} | {"tag"} | {"customer_ids"} | {"csv": {file, columns, rows}}.
    `message`: {"text", "media"?} (web and sandbox numbers) | {"template": {"name",
    "language", "parameters"}} (cloud numbers). Pacing left empty follows the number's
    settings (NumberSettings).
    """

    __tablename__ = "campaigns"
    __table_args__ = (
        Index("ix_campaigns_recent", "organization_id", text("id DESC")),
        # What the recovery job looks for: campaigns that should be running or starting.
        Index("ix_campaigns_active", "organization_id", "status",
              postgresql_where=text("status IN ('scheduled', 'running')")),
    )

    id: Mapped[int] = id_column()
    name: Mapped[str] = mapped_column(String(120), nullable=False)
    profile_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("whatsapp_profiles.id", ondelete="CASCADE"), nullable=False)
    audience: Mapped[dict] = mapped_column(JSONB, nullable=False, default=dict,
                                           server_default=text("'{}'::jsonb"))
    message: Mapped[dict] = mapped_column(JSONB, nullable=False, default=dict,
                                          server_default=text("'{}'::jsonb"))
    scheduled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # No sends between these local times (the organization's time zone); both or neither.
    quiet_start: Mapped[time | None] = mapped_column(Time)
    quiet_end: Mapped[time | None] = mapped_column(Time)
    rate_per_minute: Mapped[int | None] = mapped_column(Integer)
    delay_min_seconds: Mapped[int | None] = mapped_column(Integer)  # web numbers
    delay_max_seconds: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="draft",
                                        server_default="draft")
    # Why it paused: "manual", "failure_rate" or a Graph error code; its words in pause_detail.
    pause_reason: Mapped[str | None] = mapped_column(String(32))
    pause_detail: Mapped[str | None] = mapped_column(String(500))
    created_by_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = created_at_column()
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    frozen_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    profile: Mapped[WhatsAppProfile] = relationship()
    created_by: Mapped[User | None] = relationship(foreign_keys=[created_by_id])

    @property
    def paused_before_its_time(self) -> bool:
        """Paused while scheduled, its time still to come: resuming it waits for that time."""
        return (self.status == "paused" and self.started_at is None
                and self.scheduled_at is not None and self.scheduled_at > utcnow())

    @property
    def list_pending(self) -> str | None:
        """Why its counts still read 0: its list of recipients is not frozen (LIST_PENDING:
        being frozen now that it runs, frozen when it starts or when it resumes, or never,
        having stopped before; "at_time" when paused before its time, which resuming waits
        for again); None once frozen."""
        if self.frozen_at is not None:
            return None
        if self.paused_before_its_time:
            return "at_time"
        return LIST_PENDING.get(self.status)

    def __repr__(self) -> str:
        return f"<Campaign {self.id} {self.status}>"


class CampaignRecipient(TenantMixin, db.Model):
    """One person of a campaign's frozen audience, and what became of their message."""

    __tablename__ = "campaign_recipients"
    __table_args__ = (
        UniqueConstraint("organization_id", "campaign_id", "phone",
                         name="uq_campaign_recipients_phone"),
        # The runner's claims (queued, by id) and the results list filtered by state.
        Index("ix_campaign_recipients_state", "organization_id", "campaign_id", "state", "id"),
        # The results list and its export without a state: one campaign's rows in id order.
        Index("ix_campaign_recipients_campaign", "organization_id", "campaign_id", "id"),
        # Status updates find their recipient by our outbox message.
        Index("ix_campaign_recipients_message", "organization_id", "message_id",
              postgresql_where=text("message_id IS NOT NULL")),
        # Replies find the campaign message they answer.
        Index("ix_campaign_recipients_phone", "organization_id", "phone", "sent_at"),
        # The last sends of a campaign (its failure rate).
        Index("ix_campaign_recipients_attempted", "organization_id", "campaign_id",
              "attempted_at", postgresql_where=text("attempted_at IS NOT NULL")),
        # The recovery job: recipients whose runner died mid-send.
        Index("ix_campaign_recipients_sending", "organization_id", "claimed_until",
              postgresql_where=text("state = 'sending'")),
    )

    id: Mapped[int] = id_column()
    campaign_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("campaigns.id", ondelete="CASCADE"), nullable=False)
    phone: Mapped[str | None] = mapped_column(String(20))  # E.164; None: no valid number
    raw_phone: Mapped[str | None] = mapped_column(String(64))  # as listed, when not valid
    customer_id: Mapped[int | None] = mapped_column(BigInteger)  # the CRM's, when known
    # What the message's variables become for this person, frozen with the list.
    variables: Mapped[dict] = mapped_column(JSONB, nullable=False, default=dict,
                                            server_default=text("'{}'::jsonb"))
    state: Mapped[str] = mapped_column(String(16), nullable=False, default="queued",
                                       server_default="queued")
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0,
                                          server_default="0")
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # A runner's claim on a queued recipient, then its lease while `sending`.
    claimed_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    attempted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    message_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("messages.id", ondelete="SET NULL"))
    provider_message_id: Mapped[str | None] = mapped_column(String(128))
    # Graph's error code, or ours: opted_out, no_phone, invalid_phone, cancelled.
    error_code: Mapped[str | None] = mapped_column(String(32))
    error_reason: Mapped[str | None] = mapped_column(String(500))
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    read_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    failed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    replied_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = created_at_column()

    def __repr__(self) -> str:
        return f"<CampaignRecipient {self.id} {self.phone} {self.state}>"


class CampaignResult(TenantMixin, db.Model):
    """A campaign's counts, kept by the send and status paths (COUNTED_IN), never recounted
    per request."""

    __tablename__ = "campaign_results"
    __table_args__ = (
        Index("uq_campaign_results_campaign", "organization_id", "campaign_id", unique=True),
    )

    campaign_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("campaigns.id", ondelete="CASCADE"), primary_key=True)
    total: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    queued: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    sent: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    delivered: Mapped[int] = mapped_column(Integer, nullable=False, default=0,
                                           server_default="0")
    read: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    replied: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    failed: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    skipped: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    unknown: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False,
                                                 default=utcnow, onupdate=utcnow,
                                                 server_default=text("now()"))

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in COUNTS}

    def __repr__(self) -> str:
        return f"<CampaignResult {self.campaign_id} {self.as_dict()}>"


class ConsentEvent(TenantMixin, db.Model):
    """The consent ledger: every opt-out and opt-in, when, how and with which words."""

    __tablename__ = "consent_events"
    __table_args__ = (
        Index("ix_consent_events_recent", "organization_id", text("id DESC")),
        Index("ix_consent_events_phone", "organization_id", "phone", text("id DESC")),
        Index("ix_consent_events_customer", "organization_id", "customer_id", text("id DESC"),
              postgresql_where=text("customer_id IS NOT NULL")),
        # A redelivered message is recorded once.
        Index("uq_consent_events_message", "organization_id", "message_id", unique=True,
              postgresql_where=text("message_id IS NOT NULL")),
    )

    id: Mapped[int] = id_column()
    phone: Mapped[str] = mapped_column(String(20), nullable=False)
    customer_id: Mapped[int | None] = mapped_column(BigInteger)
    action: Mapped[str] = mapped_column(String(8), nullable=False)  # CONSENT_ACTIONS
    method: Mapped[str] = mapped_column(String(16), nullable=False)  # CONSENT_METHODS
    message_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("messages.id", ondelete="SET NULL"))
    text: Mapped[str] = mapped_column(String(200), nullable=False, default="",
                                      server_default="")
    actor_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = created_at_column()

    actor: Mapped[User | None] = relationship()

    def __repr__(self) -> str:
        return f"<ConsentEvent {self.id} {self.phone} {self.action}>"


class OptOut(TenantMixin, db.Model):
    """Who is opted out now (the ledger's latest word per phone), for the send-time check."""

    __tablename__ = "campaign_opt_outs"
    __table_args__ = (
        UniqueConstraint("organization_id", "phone", name="uq_campaign_opt_outs_phone"),
    )

    id: Mapped[int] = id_column()
    phone: Mapped[str] = mapped_column(String(20), nullable=False)
    customer_id: Mapped[int | None] = mapped_column(BigInteger)
    event_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("consent_events.id", ondelete="CASCADE"), nullable=False)
    created_at: Mapped[datetime] = created_at_column()


class CampaignSettings(TenantMixin, db.Model):
    """The organization's consent words; None: the defaults (consent.DEFAULT_*)."""

    __tablename__ = "campaign_settings"
    __table_args__ = (
        UniqueConstraint("organization_id", name="uq_campaign_settings_organization"),
    )

    id: Mapped[int] = id_column()
    opt_out_keywords: Mapped[list | None] = mapped_column(JSONB)
    opt_in_keywords: Mapped[list | None] = mapped_column(JSONB)


class NumberSettings(TenantMixin, db.Model):
    """How fast and how much one WhatsApp number may send (defaults in the columns)."""

    __tablename__ = "campaign_number_settings"
    __table_args__ = (
        UniqueConstraint("organization_id", "profile_id", name="uq_campaign_number_settings"),
    )

    id: Mapped[int] = id_column()
    profile_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("whatsapp_profiles.id", ondelete="CASCADE"), nullable=False)
    # cloud: Meta's throughput (messages a second) and messaging limit tier (None: unlimited).
    throughput_per_second: Mapped[int] = mapped_column(
        Integer, nullable=False, default=NUMBER_DEFAULTS["throughput_per_second"],
        server_default=str(NUMBER_DEFAULTS["throughput_per_second"]))
    messaging_limit: Mapped[int | None] = mapped_column(
        Integer, default=NUMBER_DEFAULTS["messaging_limit"],
        server_default=str(NUMBER_DEFAULTS["messaging_limit"]))
    # web: a random pause between two messages, and at most so many messages a day.
    web_delay_min_seconds: Mapped[int] = mapped_column(
        Integer, nullable=False, default=NUMBER_DEFAULTS["web_delay_min_seconds"],
        server_default=str(NUMBER_DEFAULTS["web_delay_min_seconds"]))
    web_delay_max_seconds: Mapped[int] = mapped_column(
        Integer, nullable=False, default=NUMBER_DEFAULTS["web_delay_max_seconds"],
        server_default=str(NUMBER_DEFAULTS["web_delay_max_seconds"]))
    web_daily_cap: Mapped[int] = mapped_column(
        Integer, nullable=False, default=NUMBER_DEFAULTS["web_daily_cap"],
        server_default=str(NUMBER_DEFAULTS["web_daily_cap"]))
    templates_synced_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    templates_error: Mapped[str | None] = mapped_column(String(500))


class WhatsAppTemplate(TenantMixin, db.Model):
    """A message template of a cloud number's business account, as the Graph API last said."""

    __tablename__ = "whatsapp_templates"
    __table_args__ = (
        UniqueConstraint("organization_id", "profile_id", "name", "language",
                         name="uq_whatsapp_templates_name_language"),
    )

    id: Mapped[int] = id_column()
    profile_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("whatsapp_profiles.id", ondelete="CASCADE"), nullable=False)
    meta_id: Mapped[str | None] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(512), nullable=False)
    language: Mapped[str] = mapped_column(String(16), nullable=False)
    category: Mapped[str] = mapped_column(String(32), nullable=False, default="",
                                          server_default="")
    status: Mapped[str] = mapped_column(String(32), nullable=False, default="",
                                        server_default="")
    # Meta's components (header, body, footer, buttons), only the keys we know.
    components: Mapped[list] = mapped_column(JSONB, nullable=False, default=list,
                                             server_default=text("'[]'::jsonb"))
    synced_at: Mapped[datetime] = created_at_column()

    def __repr__(self) -> str:
        return f"<WhatsAppTemplate {self.id} {self.name} {self.language} {self.status}>"
