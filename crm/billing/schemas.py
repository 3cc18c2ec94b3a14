"""The billing API's bodies and answers (crm/api/kit.py).

Amounts are in the currency's minor units, as Stripe counts them (9900 SAR halalas = 99.00
SAR); a limit or a price of null is unlimited, or not for sale (Enterprise is quoted).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from crm.api.kit import Answer, Body, Timestamp
from crm.billing.models import STATUSES
from crm.billing.plans import INTERVALS, PLANS

PlanCode = Literal[tuple(PLANS)]
# What Checkout and a plan change accept: the plans with a price (Free costs nothing to be on,
# Enterprise is agreed with an operator).
PaidPlan = Literal[tuple(code for code, plan in PLANS.items() if plan.is_paid)]
Interval = Literal[INTERVALS]


# -- bodies ---------------------------------------------------------------------------------

class PlanChoice(Body):
    plan: PaidPlan
    interval: Interval = Field(description="Billed every month or every year.")


class Cancellation(Body):
    now: bool = Field(False, description=(
        "End the plan at once (no refund) instead of at the end of the period paid for."))


# -- answers --------------------------------------------------------------------------------

class Limits(Answer):
    """What a plan allows; null is unlimited."""

    users: int | None
    whatsapp_numbers: int | None
    customers: int | None
    campaign_messages_per_month: int | None
    api_requests_per_minute: int | None


class Usage(Answer):
    """What the organization uses now of each counted limit."""

    users: int
    whatsapp_numbers: int
    customers: int
    campaign_messages_per_month: int


class Prices(Answer):
    month: int | None = Field(description="Minor units; null when not sold by the month.")
    year: int | None = Field(description="Minor units; null when not sold by the year.")


class Plan(Answer):
    code: PlanCode
    name: str = Field(description="In the caller's language.")
    currency: str = Field(description="ISO 4217, lower case, as Stripe writes it.")
    prices: Prices
    modules: list[str]
    limits: Limits


class PlanList(Answer):
    items: list[Plan]


class Subscription(Answer):
    plan: PlanCode
    status: Literal[STATUSES] = Field(description=(
        "Stripe's subscription status; `trialing` also for the built-in trial of a new "
        "organization, which needs no card."))
    interval: Interval | None = Field(description="null: no price (a trial, Free, a contract).")
    trial_ends_at: Timestamp | None
    current_period_end: Timestamp | None
    cancel_at_period_end: bool
    scheduled_plan: PlanCode | None = Field(description=(
        "A downgrade that takes effect at the end of the period."))
    pending_plan: PlanCode | None = Field(description=(
        "An upgrade waiting for its invoice to be paid (a card declined, or a bank asking to "
        "confirm the payment): `plan` stays until then. Stripe drops it unpaid at "
        "`pending_expires_at`."))
    pending_interval: Interval | None = Field(description="The interval of `pending_plan`.")
    pending_invoice_url: str | None = Field(description=(
        "Stripe's page of the upgrade's invoice: pay it, or confirm the payment, there."))
    pending_requires_action: bool = Field(description=(
        "The card's bank asks the card holder to confirm the payment (3-D Secure) on "
        "`pending_invoice_url`; false when the card was declined or nothing waits."))
    pending_expires_at: Timestamp | None = Field(description=(
        "When Stripe drops the waiting upgrade if its invoice is still unpaid (about 23 "
        "hours after it was asked)."))
    read_only: bool = Field(description=(
        "A payment has been overdue past its grace: reading and exporting still work, "
        "nothing new is written or sent."))
    self_hosted: bool = Field(description="No Stripe: every module and limit is unlocked.")
    usage: Usage
    limits: Limits


class CheckoutSession(Answer):
    checkout_url: str = Field(description="Stripe Checkout: send the admin there.")


class PortalSession(Answer):
    portal_url: str = Field(description="Stripe's Customer Portal: send the admin there.")


class Invoice(Answer):
    id: int
    number: str | None = Field(description="Set once Stripe finalizes the invoice.")
    issued_at: Timestamp
    amount: int = Field(description="Minor units of `currency`: the amount due.")
    currency: str
    status: str = Field(description="Stripe's: draft, open, paid, uncollectible or void.")
    hosted_invoice_url: str | None
    invoice_pdf: str | None
