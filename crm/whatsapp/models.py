"""WhatsApp numbers, the conversations held on them, and their messages."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    Computed,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column, relationship

from crm.extensions import db
from crm.foundation.models import User
from crm.models import created_at_column, id_column
from crm.tenancy import TenantMixin
from crm.versions import VersionedMixin

PROVIDERS = ("cloud", "web", "sandbox")
# pending: a cloud number whose token or webhook is not verified yet (missing_checks).
PROFILE_STATES = ("disconnected", "pairing", "pending", "connected", "failed")
CONVERSATION_STATUSES = ("open", "pending", "resolved")
# queued → sending → sent → delivered → read; failed; unknown (cut off mid-send, settled later
# by the provider's status webhook); received (inbound).
MESSAGE_STATUSES = ("queued", "sending", "sent", "delivered", "read", "failed", "unknown",
                    "received")
# How far each status is along the way: a status never moves backwards.
STATUS_RANK = {"queued": 0, "sending": 1, "unknown": 1, "sent": 2, "delivered": 3, "read": 4,
               "failed": 5, "received": 0}
MESSAGE_TYPES = ("text", "image", "video", "audio", "document", "sticker", "location",
                 "contacts", "reaction", "interactive", "button", "template", "unsupported")
MEDIA_TYPES = ("image", "video", "audio", "document", "sticker")


class WhatsAppProfile(TenantMixin, db.Model):
    """One WhatsApp number of an organization and how it is connected.

    A cloud number is trusted only as far as it is proven. `verified_at`: the Graph API last
    answered for its phone number id with its access token (at creation, and whenever an admin
    checks again); only then does it hold its phone number id and does the platform webhook
    route to it, so nobody can claim another business's number. `webhook_verified_at`: Meta
    reached its webhook, either by the subscription handshake (hub.challenge) on its own
    address or by a signed delivery for it on either address (Meta posts only to a callback
    it has verified; this is how a number on the platform's Meta app, whose handshake names
    no number, gets it). It is `connected` only when both hold.
    """

    __tablename__ = "whatsapp_profiles"
    __table_args__ = (
        Index("ix_whatsapp_profiles_organization_id_id", "organization_id", "id"),
        # The platform-wide webhook routes deliveries by Meta's phone number id, to the one
        # number whose token proved it: an unproven claim holds nothing.
        Index("uq_whatsapp_profiles_phone_number_id", "phone_number_id", unique=True,
              postgresql_where=text("phone_number_id IS NOT NULL AND verified_at IS NOT NULL")),
    )

    id: Mapped[int] = id_column()
    display_name: Mapped[str] = mapped_column(String(120), nullable=False)
    phone_number: Mapped[str | None] = mapped_column(String(20))
    provider: Mapped[str] = mapped_column(String(16), nullable=False)
    state: Mapped[str] = mapped_column(String(16), nullable=False, default="disconnected",
                                       server_default="disconnected")
    phone_number_id: Mapped[str | None] = mapped_column(String(64))  # cloud: Meta's id
    business_account_id: Mapped[str | None] = mapped_column(String(64))  # cloud: WABA id
    verify_token: Mapped[str] = mapped_column(String(64), nullable=False)
    # Fernet-encrypted JSON: cloud {access_token, app_secret}; web {session} (crm/crypto.py).
    secrets: Mapped[bytes | None] = mapped_column(LargeBinary)
    # New conversations go to the online agent with the fewest open ones (round-robin): on
    # unless the admin says otherwise, so that nobody waits for an assignment.
    auto_assign: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True,
                                              server_default=text("true"))
    last_error: Mapped[str | None] = mapped_column(String(500))  # cloud: Graph's refusal
    connected_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    verified_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # cloud
    verified_name: Mapped[str | None] = mapped_column(String(200))  # cloud: Meta's word
    webhook_verified_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    is_deleted: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False,
                                             server_default=text("false"))
    created_at: Mapped[datetime] = created_at_column()

    def __repr__(self) -> str:
        return f"<WhatsAppProfile {self.id} {self.provider} {self.phone_number}>"

    @property
    def missing_checks(self) -> list[str]:
        """What a cloud number still lacks to be connected: "token", "webhook"."""
        if self.provider != "cloud":
            return []
        return [check for check, at in (("token", self.verified_at),
                                        ("webhook", self.webhook_verified_at)) if at is None]


class Conversation(VersionedMixin, TenantMixin, db.Model):
    """The thread between one of our numbers and one contact. Assigning it and changing its
    status are versioned edits (crm/versions.py); new messages are not."""

    __tablename__ = "conversations"
    __table_args__ = (
        Index("uq_conversations_profile_phone", "organization_id", "profile_id",
              "contact_phone", unique=True, postgresql_where=text("contact_phone IS NOT NULL")),
        Index("uq_conversations_profile_user_id", "organization_id", "profile_id",
              "contact_user_id", unique=True,
              postgresql_where=text("contact_user_id IS NOT NULL")),
        Index("ix_conversations_recent", "organization_id", text("last_message_at DESC"),
              text("id DESC")),
        Index("ix_conversations_assignee_recent", "organization_id", "assigned_user_id",
              text("last_message_at DESC"), text("id DESC")),
        # What the dashboard counts: conversations still to work (migration f1ea96597448).
        Index("ix_conversations_active", "organization_id", "assigned_user_id",
              postgresql_include=["status", "unread_count"],
              postgresql_where=text("status <> 'resolved' AND last_message_at IS NOT NULL")),
        Index("ix_conversations_unread", "organization_id", "assigned_user_id",
              postgresql_where=text("unread_count > 0 AND status <> 'resolved' "
                                    "AND last_message_at IS NOT NULL")),
        Index("ix_conversations_search_name", "organization_id", "search_name",
              postgresql_using="gin", postgresql_ops={"search_name": "gin_trgm_ops"}),
        Index("ix_conversations_search_phone", "organization_id", "search_phone",
              postgresql_using="gin", postgresql_ops={"search_phone": "gin_trgm_ops"}),
    )

    id: Mapped[int] = id_column()
    profile_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("whatsapp_profiles.id", ondelete="CASCADE"), nullable=False)
    contact_phone: Mapped[str | None] = mapped_column(String(20))  # E.164
    contact_user_id: Mapped[str | None] = mapped_column(String(128))  # business-scoped user id
    contact_name: Mapped[str] = mapped_column(String(120), nullable=False, default="",
                                              server_default="")
    search_name: Mapped[str] = mapped_column(
        Text, Computed("wasl_fold(coalesce(contact_name, ''))", persisted=True))
    search_phone: Mapped[str] = mapped_column(
        Text, Computed("wasl_digits(coalesce(contact_phone, ''))", persisted=True))
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="open",
                                        server_default="open")
    assigned_user_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="SET NULL"))
    unread_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0,
                                              server_default="0")
    last_message_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_message_preview: Mapped[str] = mapped_column(String(200), nullable=False, default="",
                                                      server_default="")
    last_inbound_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    customer_id: Mapped[int | None] = mapped_column(BigInteger)  # set by the CRM module
    # The team's own words for it ("VIP", "refund"), never sent to the contact.
    labels: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False, default=list,
                                              server_default=text("'{}'::text[]"))
    created_at: Mapped[datetime] = created_at_column()

    profile: Mapped[WhatsAppProfile] = relationship()
    assigned_user: Mapped[User | None] = relationship(foreign_keys=[assigned_user_id])

    def __repr__(self) -> str:
        return f"<Conversation {self.id} {self.contact_phone or self.contact_user_id}>"


class InboxCount(TenantMixin, db.Model):
    """Active conversations (not resolved, with a message) per assignee (0: nobody), status
    and unread or not, kept by triggers on `conversations` (migration eb7087627e79): the
    dashboard and the unread badge read a few rows. Never written by the application."""

    __tablename__ = "inbox_counts"

    assignee_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    status: Mapped[str] = mapped_column(String(16), primary_key=True)
    unread: Mapped[bool] = mapped_column(Boolean, primary_key=True)
    n: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)


class Message(TenantMixin, db.Model):
    __tablename__ = "messages"
    __table_args__ = (
        Index("ix_messages_thread", "organization_id", "conversation_id", text("id DESC")),
        # Redelivered webhooks find the message they already stored.
        Index("uq_messages_provider_id", "organization_id", "profile_id", "provider_message_id",
              unique=True, postgresql_where=text("provider_message_id IS NOT NULL")),
        # The outbox in flight; the recovery job looks for what waits too long in it.
        Index("ix_messages_outbox", "organization_id", "status", "created_at",
              postgresql_where=text("status IN ('queued', 'sending')")),
        # The day's messages, for the dashboard's first response times.
        Index("ix_messages_day", "organization_id", "created_at"),
        Index("ix_messages_search_body", "organization_id", "search_body",
              postgresql_using="gin", postgresql_ops={"search_body": "gin_trgm_ops"}),
    )

    id: Mapped[int] = id_column()
    conversation_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("conversations.id", ondelete="CASCADE"), nullable=False)
    profile_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("whatsapp_profiles.id", ondelete="CASCADE"), nullable=False)
    direction: Mapped[str] = mapped_column(String(3), nullable=False)  # in | out
    type: Mapped[str] = mapped_column(String(16), nullable=False, default="text")
    body: Mapped[str] = mapped_column(Text, nullable=False, default="", server_default="")
    search_body: Mapped[str] = mapped_column(
        Text, Computed("wasl_fold(coalesce(body, ''))", persisted=True))
    # type-specific content: media {id, mime_type, filename, sha256, path, size}, location,
    # contacts, interactive reply, reaction {emoji, message_id}, template {name, language, ...}
    content: Mapped[dict] = mapped_column(JSONB, nullable=False, default=dict,
                                          server_default=text("'{}'::jsonb"))
    provider_message_id: Mapped[str | None] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    # While `sending`: the send job's lease. Past it, the job is taken for dead and the
    # recovery job makes the message `unknown` (crm/recovery.py).
    claimed_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    error_code: Mapped[str | None] = mapped_column(String(32))
    error_message: Mapped[str | None] = mapped_column(String(500))
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    read_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    failed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    reply_to_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("messages.id", ondelete="SET NULL"))
    is_forwarded: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False,
                                               server_default=text("false"))
    edited_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    sender_user_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="SET NULL"))
    provider_timestamp: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = created_at_column()

    conversation: Mapped[Conversation] = relationship()
    reply_to: Mapped[Message | None] = relationship(remote_side="Message.id")
    sender: Mapped[User | None] = relationship()

    def __repr__(self) -> str:
        return f"<Message {self.id} {self.direction} {self.status}>"


class WebhookDelivery(TenantMixin, db.Model):
    """A signed Cloud API delivery, kept until the ingest job has applied it.

    The webhook only verifies, stores and answers, so Meta hears back at once and a crash or a
    slow moment loses nothing; `crm.whatsapp.ingest` applies it. Tenant data like any other
    (it holds customers' messages): the webhook routes it to its organization on receipt, and a
    platform delivery naming several organizations' numbers is kept as one row per
    organization, each with only its own changes.
    """

    __tablename__ = "whatsapp_webhook_deliveries"
    __table_args__ = (
        Index("ix_whatsapp_webhook_deliveries_organization_id_id", "organization_id", "id"),
    )

    id: Mapped[int] = id_column()
    # The per-profile webhook it came through; None: the platform's.
    profile_id: Mapped[int | None] = mapped_column(BigInteger)
    # The bytes Meta signed, or the part of them for this organization (a split delivery).
    body: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    received_at: Mapped[datetime] = created_at_column()
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    # A job applying it holds it until then; a job that died lets it go when the time is up.
    claimed_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(String(500))

    def __repr__(self) -> str:
        return f"<WebhookDelivery {self.id} attempts={self.attempts}>"


class ConversationNote(TenantMixin, db.Model):
    """A private note the team leaves in a conversation: shown beside it, never sent."""

    __tablename__ = "conversation_notes"
    __table_args__ = (
        Index("ix_conversation_notes_conversation", "organization_id", "conversation_id",
              text("id DESC")),
    )

    id: Mapped[int] = id_column()
    conversation_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("conversations.id", ondelete="CASCADE"), nullable=False)
    author_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="SET NULL"))
    body: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = created_at_column()

    author: Mapped[User | None] = relationship()

    def __repr__(self) -> str:
        return f"<ConversationNote {self.id} conversation={self.conversation_id}>"


CANNED_LANGUAGES = ("ar", "en")


class CannedReply(TenantMixin, db.Model):
    """A saved reply of the organization, inserted by typing `/` and its shortcut in the
    composer; `{name}` in its text becomes the contact's name."""

    __tablename__ = "canned_replies"
    __table_args__ = (
        Index("uq_canned_replies_shortcut", "organization_id", "shortcut", "language",
              unique=True),
    )

    id: Mapped[int] = id_column()
    shortcut: Mapped[str] = mapped_column(String(40), nullable=False)
    language: Mapped[str] = mapped_column(String(2), nullable=False)
    body: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = created_at_column()

    def __repr__(self) -> str:
        return f"<CannedReply {self.id} /{self.shortcut} {self.language}>"


class InboxSettings(TenantMixin, db.Model):
    """The organization's inbox rules (one row, made on first change; absent: the defaults)."""

    __tablename__ = "inbox_settings"
    __table_args__ = (Index("uq_inbox_settings_organization", "organization_id", unique=True),)

    id: Mapped[int] = id_column()
    # Agents see the unassigned queue and take conversations from it.
    agents_take_unassigned: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True,
                                                         server_default=text("true"))


class InboxPreference(TenantMixin, db.Model):
    """How one member likes the composer (one row, made on first change)."""

    __tablename__ = "inbox_preferences"
    __table_args__ = (Index("uq_inbox_preferences_user", "organization_id", "user_id",
                            unique=True),)

    id: Mapped[int] = id_column()
    user_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    # Enter sends and Shift+Enter adds a line; False: the other way round.
    enter_sends: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True,
                                              server_default=text("true"))
