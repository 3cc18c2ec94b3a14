"""Organizations and the people who work in them."""

from __future__ import annotations

from datetime import datetime

from flask_login import UserMixin
from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    LargeBinary,
    String,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column, relationship

from crm.extensions import db
from crm.models import created_at_column, id_column, utcnow
from crm.tenancy import TenantMixin

ROLES = ("admin", "manager", "agent", "member")
MODULES = ("whatsapp", "crm", "ticketing", "campaigns", "billing")


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
    # Rotated on logout, password change and removal: every session and token minted
    # before the rotation stops working at once.
    session_nonce: Mapped[str] = mapped_column(String(32), nullable=False)
    last_login_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = created_at_column()

    organization: Mapped[Organization] = relationship(lazy="joined", innerjoin=True)

    def get_id(self) -> str:
        return f"{self.organization_id}.{self.id}.{self.session_nonce}"

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def __repr__(self) -> str:
        return f"<User {self.id} {self.email}>"


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
    __table_args__ = (Index("ix_outbound_emails_organization_id_status", "organization_id",
                            "status"),)

    id: Mapped[int] = id_column()
    to_address: Mapped[str] = mapped_column(String(254), nullable=False)
    subject: Mapped[str] = mapped_column(String(255), nullable=False)
    body_text: Mapped[str] = mapped_column(db.Text, nullable=False)
    body_html: Mapped[str] = mapped_column(db.Text, nullable=False)
    # The bodies show a one-time link with its token left out; the link itself is kept here,
    # encrypted (crm/crypto.py), until the email has been sent, then cleared.
    secrets: Mapped[bytes | None] = mapped_column(LargeBinary)
    # queued -> sending -> sent | failed; a send cut off mid-flight stays "sending" and is
    # never retried blindly.
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="queued",
                                        server_default="queued")
    error: Mapped[str | None] = mapped_column(String(500))
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = created_at_column()
