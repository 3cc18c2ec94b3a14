"""Billing's tables: the subscription, Stripe's events, invoices, cards and usage.

All are tenant tables behind both walls. Stripe's payloads are data: only the keys we know are
copied into our own columns (the event's body is kept whole only in `stripe_events`, for the
job that applies it).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, DateTime, Index, Integer, LargeBinary, String, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from crm.extensions import db
from crm.models import created_at_column, id_column
from crm.tenancy import TenantMixin

# Stripe's subscription statuses, and `trialing` also for the built-in trial (no Stripe
# subscription yet). `active` with no Stripe subscription: a plan an operator set.
STATUSES = ("trialing", "active", "past_due", "unpaid", "canceled", "incomplete",
            "incomplete_expired", "paused")


class Subscription(TenantMixin, db.Model):
    """An organization's plan and where its payments stand; one row per organization.

    An organization with no row is on the built-in trial counted from its creation
    (crm/billing/gate.py), so registering writes nothing here.
    """

    __tablename__ = "subscriptions"
    __table_args__ = (
        Index("uq_subscriptions_organization_id", "organization_id", unique=True),
        # Webhooks are routed by the customer an event names (a SECURITY DEFINER lookup):
        # one customer belongs to one organization, as a proven phone number id does.
        Index("uq_subscriptions_stripe_customer_id", "stripe_customer_id", unique=True,
              postgresql_where=text("stripe_customer_id IS NOT NULL")),
    )

    id: Mapped[int] = id_column()
    plan: Mapped[str] = mapped_column(String(16), nullable=False)
    interval: Mapped[str | None] = mapped_column(String(8))  # month | year; None: no price
    status: Mapped[str] = mapped_column(String(24), nullable=False)
    stripe_customer_id: Mapped[str | None] = mapped_column(String(64))
    stripe_subscription_id: Mapped[str | None] = mapped_column(String(64))
    trial_ends_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    current_period_end: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    cancel_at_period_end: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False,
                                                       server_default=text("false"))
    # A downgrade waits for the period's end (a Stripe subscription schedule): shown meanwhile.
    scheduled_plan: Mapped[str | None] = mapped_column(String(16))
    scheduled_interval: Mapped[str | None] = mapped_column(String(8))
    # An upgrade waiting on its invoice's payment (Stripe's `pending_update`, dropped by Stripe
    # unpaid after about 23 hours): shown meanwhile, with the invoice's page to pay it.
    pending_plan: Mapped[str | None] = mapped_column(String(16))
    pending_interval: Mapped[str | None] = mapped_column(String(8))
    pending_invoice_url: Mapped[str | None] = mapped_column(String(1000))
    # The bank asks the card holder to confirm the payment (3-D Secure), on that page.
    pending_requires_action: Mapped[bool] = mapped_column(
        Boolean, nullable=False, default=False, server_default=text("false"))
    pending_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    past_due_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The creation time of the newest Stripe event applied: an older one changes nothing.
    last_event_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Limits an operator set for this organization (`crm billing set-limits`), over the plan's:
    # {"users": 40, "customers": null, ...}; a key left out keeps the plan's.
    custom_limits: Mapped[dict] = mapped_column(JSONB, nullable=False, default=dict,
                                                server_default=text("'{}'::jsonb"))
    created_at: Mapped[datetime] = created_at_column()
    updated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    def __repr__(self) -> str:
        return f"<Subscription {self.id} {self.plan} {self.status}>"


class StripeEvent(TenantMixin, db.Model):
    """A Stripe webhook event, stored on receipt for the organization whose customer it names,
    processed once by a job (crm/billing/jobs.py)."""

    __tablename__ = "stripe_events"
    __table_args__ = (
        Index("uq_stripe_events_organization_id_stripe_event_id", "organization_id",
              "stripe_event_id", unique=True),
        # What waits to be processed (the recovery job looks here).
        Index("ix_stripe_events_unprocessed", "organization_id", "id",
              postgresql_where=text("processed_at IS NULL")),
    )

    id: Mapped[int] = id_column()
    stripe_event_id: Mapped[str] = mapped_column(String(64), nullable=False)
    type: Mapped[str] = mapped_column(String(64), nullable=False)
    # When Stripe created the event: the order in which they are applied.
    stripe_created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    payload: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)  # the raw, signed body
    received_at: Mapped[datetime] = created_at_column()
    processed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0,
                                          server_default="0")
    last_error: Mapped[str | None] = mapped_column(String(500))

    def __repr__(self) -> str:
        return f"<StripeEvent {self.id} {self.type} {self.stripe_event_id}>"


class Invoice(TenantMixin, db.Model):
    """A Stripe invoice of the organization, as its webhooks last told it."""

    __tablename__ = "invoices"
    __table_args__ = (
        Index("uq_invoices_organization_id_stripe_invoice_id", "organization_id",
              "stripe_invoice_id", unique=True),
        Index("ix_invoices_organization_id_issued_at", "organization_id",
              text("issued_at DESC"), text("id DESC")),
    )

    id: Mapped[int] = id_column()
    stripe_invoice_id: Mapped[str] = mapped_column(String(64), nullable=False)
    number: Mapped[str | None] = mapped_column(String(64))  # set once finalized
    issued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    amount: Mapped[int] = mapped_column(BigInteger, nullable=False)  # minor units, amount due
    currency: Mapped[str] = mapped_column(String(3), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)  # draft|open|paid|...
    hosted_invoice_url: Mapped[str | None] = mapped_column(String(1000))
    invoice_pdf: Mapped[str | None] = mapped_column(String(1000))
    created_at: Mapped[datetime] = created_at_column()

    def __repr__(self) -> str:
        return f"<Invoice {self.id} {self.number} {self.status}>"


class PaymentMethod(TenantMixin, db.Model):
    """The card a subscription is paid with: brand, last four digits and expiry, never more."""

    __tablename__ = "payment_methods"
    __table_args__ = (
        Index("uq_payment_methods_organization_id_stripe_payment_method_id",
              "organization_id", "stripe_payment_method_id", unique=True),
    )

    id: Mapped[int] = id_column()
    stripe_payment_method_id: Mapped[str] = mapped_column(String(64), nullable=False)
    brand: Mapped[str | None] = mapped_column(String(32))
    last4: Mapped[str | None] = mapped_column(String(4))
    exp_month: Mapped[int | None] = mapped_column(Integer)
    exp_year: Mapped[int | None] = mapped_column(Integer)
    is_default: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False,
                                             server_default=text("false"))
    created_at: Mapped[datetime] = created_at_column()

    def __repr__(self) -> str:
        return f"<PaymentMethod {self.id} {self.brand} {self.last4}>"


class UsageRecord(TenantMixin, db.Model):
    """Billable usage of one organization in one hour (UTC), reported once to Stripe's Billing
    Meters after the hour closes (crm/billing/usage.py)."""

    __tablename__ = "usage_records"
    __table_args__ = (
        Index("uq_usage_records_organization_id_hour", "organization_id", "hour", unique=True),
        Index("ix_usage_records_unreported", "organization_id", "hour",
              postgresql_where=text("reported_at IS NULL")),
    )

    id: Mapped[int] = id_column()
    hour: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    campaign_messages: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0,
                                                   server_default="0")
    # The WhatsApp numbers the organization held as the hour closed.
    whatsapp_numbers: Mapped[int | None] = mapped_column(Integer)
    reported_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    def __repr__(self) -> str:
        return f"<UsageRecord {self.id} {self.hour:%Y-%m-%d %H}h>"

