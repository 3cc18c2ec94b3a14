"""Billing's JSON API: the plans, the organization's subscription and invoices, and the
Stripe sessions that buy or manage a plan. Thin: every read and write is a service of
crm/billing/services.py; bodies and answers are declared in crm/billing/schemas.py.

Admins write, managers read, agents and members see nothing (the permission matrix). Stripe's
webhook is not here: it is Stripe's door, not the API's (crm/billing/webhooks.py).
"""

from __future__ import annotations

from flask import Response
from flask_babel import lazy_gettext

from crm.api.helpers import decode_keyset, encode_keyset
from crm.api.kit import Page, PageQuery, answer, parse, parse_query
from crm.api.openapi import Endpoints
from crm.billing import schemas, services
from crm.permissions import require
from crm.web import me

billing = Endpoints("billing", lazy_gettext("Billing"))

_NEEDS_STRIPE = ("Answers 409 `billing_not_connected` when this Wasl is self-hosted (no "
                 "Stripe), 503 `billing_unavailable` when Stripe is not answering.")


@billing.get("/billing/plans", "The plans: prices, modules and limits (null: unlimited)",
             answers={200: schemas.PlanList})
@require("billing", "read")
def list_plans() -> Response:
    return answer(schemas.PlanList, {"items": services.plan_catalog()})


@billing.get("/billing/subscription", "The organization's plan, its status, usage and limits",
             answers={200: schemas.Subscription})
@require("billing", "read")
def show_subscription() -> Response:
    return answer(schemas.Subscription, services.subscription_summary())


@billing.post("/billing/subscribe", "Buy a plan: a Stripe Checkout session to send the admin "
              "to", body=schemas.PlanChoice, answers={201: schemas.CheckoutSession},
              errors=(409,), description="The plan is granted once Stripe's webhooks say the "
              "subscription runs, never by the redirect back. A running subscription changes "
              "plan instead (409). " + _NEEDS_STRIPE)
@require("billing", "write")
def subscribe() -> Response:
    body = parse(schemas.PlanChoice)
    url = services.start_checkout(me(), body.plan, body.interval)
    return answer(schemas.CheckoutSession, {"checkout_url": url}, 201)


@billing.post("/billing/change-plan", "Move the subscription to another plan or interval",
              body=schemas.PlanChoice, answers={200: schemas.Subscription}, errors=(409,),
              description="An upgrade applies at once, its difference for the rest of the "
              "period invoiced and charged now (a card that declines it, or a bank that asks to "
              "confirm it, leaves the plan as it was and the upgrade waiting in `pending_plan` "
              "until its invoice, `pending_invoice_url`, is paid); a downgrade waits for the "
              "end of the period paid for (`scheduled_plan`). While a cancellation at the "
              "period's end is pending, 409: keep the plan first "
              "(`POST /api/billing/keep-plan`). "
              + _NEEDS_STRIPE)
@require("billing", "write")
def change_plan() -> Response:
    body = parse(schemas.PlanChoice)
    services.change_plan(me(), body.plan, body.interval)
    return answer(schemas.Subscription, services.subscription_summary())


@billing.post("/billing/cancel", "Cancel the subscription at the end of the period, or now",
              body=schemas.Cancellation, answers={200: schemas.Subscription}, errors=(409,),
              description="Nothing stored is deleted: over a limit of Free, what is there "
              "stays, read-only. " + _NEEDS_STRIPE)
@require("billing", "write")
def cancel() -> Response:
    body = parse(schemas.Cancellation)
    services.cancel(me(), now=body.now)
    return answer(schemas.Subscription, services.subscription_summary())


@billing.post("/billing/keep-plan", "Keep the plan: withdraw a cancellation at the end of the "
              "period", answers={200: schemas.Subscription}, errors=(409,),
              description="The subscription renews as before (`cancel_at_period_end` false), "
              "whether it was cancelled here or in Stripe's portal; with no cancellation to "
              "withdraw nothing changes. Without a subscription, 409. " + _NEEDS_STRIPE)
@require("billing", "write")
def keep_plan() -> Response:
    services.keep_plan(me())
    return answer(schemas.Subscription, services.subscription_summary())


@billing.post("/billing/payment-method", "Change the card: a Stripe Customer Portal session "
              "to send the admin to", answers={201: schemas.PortalSession}, errors=(409,),
              description=_NEEDS_STRIPE)
@require("billing", "write")
def open_payment_method_portal() -> Response:
    url = services.portal_url(me(), card=True)
    return answer(schemas.PortalSession, {"portal_url": url}, 201)


@billing.get("/billing/invoices", "The organization's invoices, newest first",
             query=PageQuery, answers={200: Page[schemas.Invoice]})
@require("billing", "read")
def list_invoices() -> Response:
    query = parse_query(PageQuery)
    invoices, after = services.list_invoices(decode_keyset(query.cursor), query.limit)
    return answer(Page[schemas.Invoice], {"items": invoices, "next_cursor": encode_keyset(after)})
