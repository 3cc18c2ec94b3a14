"""Put organizations on a plan for the billing tests, as an operator or Stripe would."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from sqlalchemy import inspect, update

from crm.billing import gate, services
from crm.billing.models import Subscription
from crm.extensions import db
from crm.foundation.models import Invitation, Organization
from crm.models import utcnow
from crm.tenancy import organization_context


def put_on_plan(org: Organization, plan: str, **limits: int | None) -> Subscription:
    """`org` on `plan` (outside Stripe, as `crm billing set-limits --plan` does), with its own
    `limits` over the plan's."""
    with organization_context(org.id):
        subscription = services.set_limits(limits, plan)
        db.session.flush()
    return subscription


def age(org: Organization, days: int) -> None:
    """Make `org` registered `days` ago (its built-in trial counts from then)."""
    with organization_context(org.id):
        db.session.execute(update(Organization).where(Organization.id == org.id)
                           .values(created_at=utcnow() - timedelta(days=days)))
        db.session.flush()


def overdue(org: Organization, days: float) -> Subscription:
    """`org` on a Stripe subscription to Pro whose payment has been overdue for `days`."""
    with organization_context(org.id):
        subscription = services.locked_subscription()
        subscription.status, subscription.plan = "past_due", "pro"
        subscription.stripe_subscription_id = "sub_overdue"
        subscription.past_due_since = utcnow() - timedelta(days=days)
        gate.invalidate(org.id)
        db.session.flush()
    return subscription


def oid(org: Organization) -> int:
    """`org`'s id without loading it: once a request has committed, the loaded row is expired,
    and outside its organization RLS would not show it again."""
    return inspect(org).identity[0]


def invitation_token(invitation: Invitation) -> str:
    """A fresh token for `invitation` (the emailed one is not kept)."""
    secret = secrets.token_urlsafe(32)
    invitation.token_hash = hashlib.sha256(secret.encode()).hexdigest()
    db.session.flush()
    return f"{invitation.organization_id}.{secret}"
