"""Organizations and the people who work in them."""

from __future__ import annotations

from datetime import datetime

from flask_babel import lazy_gettext
from flask_login import UserMixin
from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    LargeBinary,
    String,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, deferred, mapped_column, relationship

from crm.extensions import db
from crm.models import created_at_column, id_column, utcnow
from crm.tenancy import TenantMixin

ROLES = ("admin", "manager", "agent", "member")
# A browser login, a bearer token from /api/auth/login, an integration's key made by an admin.
SESSION_KINDS = ("browser", "api_token", "api_key")
# The modules an admin can switch off, and a plan may include (billing is neither: always on).
MODULES = ("whatsapp", "crm", "ticketing", "campaigns")
MODULE_LABELS = {"whatsapp": lazy_gettext("WhatsApp"), "crm": lazy_gettext("Customers (CRM)"),
                 "ticketing": lazy_gettext("Tickets"), "campaigns": lazy_gettext("Campaigns")}


class Organization(db.Model):
    """A customer of Wasl: the tenant. RLS lets a transaction see only its own row."""

    __tablename__ = "organizations"

    id: Mapped[int] = id_column()
    name: Mapped[str] = mapped_column(String(120), nullable=False)
    slug: Mapped[str] = mapped_column(String(60), nullable=False, unique=True)
    default_language: Mapped[str] = mapped_column(String(5), nullable=False, default="ar",
                                                  server_default="ar")
    timezone: Mapped[str] = mapped_column(String(64), nullable=False, default="Asia/Riyadh",
                                          server_default="Asia/Riyadh")
    country: Mapped[str] = mapped_column(String(2), nullable=False, default="SA",
                                         server_default="SA")
    # ISO 4217: the currency of the pipeline's amounts (the country's own by default).
    currency: Mapped[str] = mapped_column(String(3), nullable=False, default="SAR",
                                          server_default="SAR")
    created_at: Mapped[datetime] = created_at_column()

    def __repr__(self) -> str:
        return f"<Organization {self.id} {self.slug}>"


class User(TenantMixin, UserMixin, db.Model):
    __tablename__ = "users"
    __table_args__ = (
        Index("uq_users_organization_id_email", "organization_id", "email", unique=True),
        Index("ix_users_email", "email"),
    )

    id: Mapped[int] = id_column()
    email: Mapped[str] = mapped_column(String(254), nullable=False)
    full_name: Mapped[str] = mapped_column(String(120), nullable=False)
    password_hash: Mapped[str] = mapped_column(String(255), nullable=False)
    role: Mapped[str] = mapped_column(String(16), nullable=False)
    preferred_language: Mapped[str | None] = mapped_column(String(5))
    is_active: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True,
                                            server_default=text("true"))
    last_login_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = created_at_column()
    # Two-factor sign-in (crm/foundation/two_factor.py). The secret is encrypted
    # (crm/crypto.py) and, like the recovery codes' hashes, deferred: every request loads its
    # user, and only signing in and the profile read these.
    totp_secret: Mapped[bytes | None] = deferred(mapped_column(LargeBinary))
    totp_enabled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The time step of the last code accepted: a code of it or before is refused (no replay).
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger)
    recovery_code_hashes: Mapped[list[str]] = deferred(mapped_column(
        JSONB, nullable=False, default=list, server_default=text("'[]'::jsonb")))

    organization: Mapped[Organization] = relationship(lazy="joined", innerjoin=True)

    # The session this request runs as, set by crm.security when it loads or starts one
    # (None for a user loaded any other way). Not a column: it belongs to the request.
    current_session = None
    # The modules the organization has switched on, read with that session (crm.permissions
    # asks the database itself when nobody did). Not a column either.
    enabled_modules = None

    def get_id(self) -> str | None:
        """What Flask-Login keeps in the session cookie: the credential of this session."""
        return self.current_session.credential if self.current_session else None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def has_two_factor(self) -> bool:
        return self.totp_enabled_at is not None

    def __repr__(self) -> str:
        return f"<User {self.id} {self.email}>"


class UserSession(TenantMixin, db.Model):
    """One way in for a user: a browser login, an API token or an integration's API key.

    Its credential names the organization and carries a secret ("<org>.<secret>"; an API key
    is "wasl_" and that); only the secret's SHA-256 is stored. Each session ends on its own
    (logout, "sign out" on the profile, revoking a key), leaving the user's others alone.
    """

    __tablename__ = "user_sessions"
    __table_args__ = (
        Index("uq_user_sessions_organization_id_token_hash", "organization_id", "token_hash",
              unique=True),
        # The live sessions of a user (the profile, ending them) and the live keys (settings).
        Index("ix_user_sessions_organization_id_kind_user_id", "organization_id", "kind",
              "user_id", postgresql_where=text("ended_at IS NULL")),
        CheckConstraint("kind IN ('browser', 'api_token', 'api_key')", name="kind"),
    )

    id: Mapped[int] = id_column()
    user_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id", ondelete="CASCADE"),
                                         nullable=False)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    token_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    name: Mapped[str | None] = mapped_column(String(120))  # an API key's, given by the admin
    created_by_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="SET NULL"))
    ip_address: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = created_at_column()
    # Refreshed at most once a minute (SESSION_SEEN_INTERVAL), not on every request; an API
    # key's stays empty until it is first used.
    last_seen_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    user: Mapped[User] = relationship(foreign_keys=[user_id])
    created_by: Mapped[User | None] = relationship(foreign_keys=[created_by_id])

    # The credential in clear: known only in the request that created or presented it.
    credential = None

    def __repr__(self) -> str:
        return f"<UserSession {self.id} {self.kind}>"


class Invitation(TenantMixin, db.Model):
    __tablename__ = "invitations"
    __table_args__ = (
        Index("ix_invitations_organization_id_email", "organization_id", "email"),
        Index("uq_invitations_token_hash", "token_hash", unique=True),
    )

    id: Mapped[int] = id_column()
    email: Mapped[str] = mapped_column(String(254), nullable=False)
    role: Mapped[str] = mapped_column(String(16), nullable=False)
    language: Mapped[str] = mapped_column(String(5), nullable=False)
    token_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    invited_by_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="SET NULL"))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    accepted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = created_at_column()

    invited_by: Mapped[User | None] = relationship()

    @property
    def status(self) -> str:
        if self.accepted_at:
            return "accepted"
        if self.revoked_at:
            return "revoked"
        if self.expires_at <= utcnow():
            return "expired"
        return "pending"

    def __repr__(self) -> str:
        return f"<Invitation {self.id} {self.email}>"


class PasswordResetToken(TenantMixin, db.Model):
    __tablename__ = "password_reset_tokens"
    __table_args__ = (Index("uq_password_reset_tokens_token_hash", "token_hash", unique=True),)

    id: Mapped[int] = id_column()
    user_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id", ondelete="CASCADE"),
                                         nullable=False)
    token_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = created_at_column()

    user: Mapped[User] = relationship()


class EmailChange(TenantMixin, db.Model):
    """A member's request to sign in with another address, confirmed by a link sent to it."""

    __tablename__ = "email_changes"
    __table_args__ = (
        Index("uq_email_changes_organization_id_token_hash", "organization_id", "token_hash",
              unique=True),
        Index("ix_email_changes_organization_id_user_id", "organization_id", "user_id"),
    )

    id: Mapped[int] = id_column()
    user_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id", ondelete="CASCADE"),
                                         nullable=False)
    old_email: Mapped[str] = mapped_column(String(254), nullable=False)
    new_email: Mapped[str] = mapped_column(String(254), nullable=False)
    token_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    confirmed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    cancelled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = created_at_column()

    user: Mapped[User] = relationship()

    def __repr__(self) -> str:
        return f"<EmailChange {self.id} {self.new_email}>"


class ModuleSetting(TenantMixin, db.Model):
    """Whether a module is switched on for an organization (absent row: on)."""

    __tablename__ = "module_settings"
    __table_args__ = (Index("uq_module_settings_organization_id_module", "organization_id",
                            "module", unique=True),)

    id: Mapped[int] = id_column()
    module: Mapped[str] = mapped_column(String(32), nullable=False)
    is_enabled: Mapped[bool] = mapped_column(Boolean, nullable=False)


class AuditEntry(TenantMixin, db.Model):
    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_organization_id_id", "organization_id", "id"),)

    id: Mapped[int] = id_column()
    actor_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="SET NULL"))
    action: Mapped[str] = mapped_column(String(64), nullable=False)
    target_type: Mapped[str | None] = mapped_column(String(32))
    target_id: Mapped[int | None] = mapped_column(BigInteger)
    details: Mapped[dict] = mapped_column(JSONB, nullable=False, default=dict,
                                          server_default=text("'{}'::jsonb"))
    ip_address: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = created_at_column()

    actor: Mapped[User | None] = relationship()

    def __repr__(self) -> str:
        return f"<AuditEntry {self.id} {self.action}>"


class OutboundEmail(TenantMixin, db.Model):
    """The email outbox: written in the business transaction, delivered by a job."""

    __tablename__ = "outbound_emails"
    __table_args__ = (
        Index("ix_outbound_emails_organization_id_status", "organization_id", "status"),
        # The outbox in flight; the recovery job looks for what waits too long in it.
        Index("ix_outbound_emails_outbox", "organization_id", "status", "created_at",
              postgresql_where=text("status IN ('queued', 'sending')")),
        CheckConstraint("(subject IS NOT NULL AND body_text IS NOT NULL AND body_html IS NOT "
                        "NULL) OR template IS NOT NULL", name="rendered_or_renderable"),
    )

    id: Mapped[int] = id_column()
    to_address: Mapped[str] = mapped_column(String(254), nullable=False)
    # Rendered when queued (send_email), or by the delivery job from `template`, `language`
    # and `context` (queue_email: the emails a job's transaction writes by the hundred).
    subject: Mapped[str | None] = mapped_column(String(255))
    body_text: Mapped[str | None] = mapped_column(db.Text)
    body_html: Mapped[str | None] = mapped_column(db.Text)
    template: Mapped[str | None] = mapped_column(String(80))
    language: Mapped[str | None] = mapped_column(String(8))
    context: Mapped[dict | None] = mapped_column(JSONB)
    # The bodies show a one-time link with its token left out; the link itself is kept here,
    # encrypted (crm/crypto.py), until the email has been sent, then cleared.
    secrets: Mapped[bytes | None] = mapped_column(LargeBinary)
    # queued -> sending -> sent | failed; a send cut off mid-flight is never retried blindly:
    # once its lease is up it is failed, saying it may have arrived (crm/mail.py).
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="queued",
                                        server_default="queued")
    claimed_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    error: Mapped[str | None] = mapped_column(String(500))
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = created_at_column()


class Team(TenantMixin, db.Model):
    """A named group of people (Support, Sales) with an optional manager: tickets route to a
    team, escalations notify its managers; the inbox may route to teams later."""

    __tablename__ = "teams"
    __table_args__ = (Index("uq_teams_organization_id_name", "organization_id", "name",
                            unique=True),)

    id: Mapped[int] = id_column()
    name: Mapped[str] = mapped_column(String(80), nullable=False)
    manager_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="SET NULL"))
    # Round-robin assignment takes the next member after this one.
    last_assigned_user_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = created_at_column()

    manager: Mapped[User | None] = relationship(foreign_keys=[manager_id])

    def __repr__(self) -> str:
        return f"<Team {self.id} {self.name}>"


class TeamMember(TenantMixin, db.Model):
    __tablename__ = "team_members"
    __table_args__ = (
        Index("uq_team_members_organization_id_team_id_user_id", "organization_id", "team_id",
              "user_id", unique=True),
        Index("ix_team_members_organization_id_user_id", "organization_id", "user_id"),
    )

    id: Mapped[int] = id_column()
    team_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("teams.id", ondelete="CASCADE"),
                                         nullable=False)
    user_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id", ondelete="CASCADE"),
                                         nullable=False)
    created_at: Mapped[datetime] = created_at_column()

    user: Mapped[User] = relationship()


class Notification(TenantMixin, db.Model):
    """An in-app notification of one user. Its text is rendered when shown, in the reader's
    language, from its `kind` and `params` (crm/foundation/notifications.py)."""

    __tablename__ = "notifications"
    __table_args__ = (
        Index("ix_notifications_organization_id_user_id_id", "organization_id", "user_id",
              text("id DESC")),
        Index("ix_notifications_unread", "organization_id", "user_id",
              postgresql_where=text("read_at IS NULL")),
    )

    id: Mapped[int] = id_column()
    user_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id", ondelete="CASCADE"),
                                         nullable=False)
    kind: Mapped[str] = mapped_column(String(40), nullable=False)
    params: Mapped[dict] = mapped_column(JSONB, nullable=False, default=dict,
                                         server_default=text("'{}'::jsonb"))
    link: Mapped[str | None] = mapped_column(String(300))  # a path of the app: /tickets/12
    read_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = created_at_column()

    def __repr__(self) -> str:
        return f"<Notification {self.id} {self.kind}>"
