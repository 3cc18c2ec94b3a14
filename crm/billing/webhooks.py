"""Stripe's webhook: `POST /api/billing/webhooks/stripe`, signed, stored, answered at once.

The `Stripe-Signature` header is checked on the raw body with STRIPE_WEBHOOK_SECRET (Stripe's
scheme: HMAC-SHA256 of "<timestamp>.<body>", the timestamp within 300 seconds); anything else
is a 400 and leaves nothing behind. A signed event of a type we handle is stored for the
organization whose Stripe customer it names (a SECURITY DEFINER lookup: the only way to an
organization before one is known) and processed by a job (crm/billing/jobs.py). An event
naming no customer of ours, or of a type we do not handle, is answered 200 and dropped, or
Stripe would retry it for days.

It sits under /api (the path is a contract) but is no bearer route: its own blueprint, exempt
from CSRF (Stripe signs, it cannot send a token) and from the API's per-organization limit.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import stripe
from flask import Blueprint, Response, current_app, jsonify, request
from sqlalchemy import text

from crm import json_input
from crm.billing import jobs
from crm.extensions import csrf, db
from crm.tenancy import set_current_organization
from crm.web import error_body

log = logging.getLogger("crm.billing.webhooks")
blueprint = Blueprint("billing_webhooks", __name__)
csrf.exempt(blueprint)

PATH = "/api/billing/webhooks/stripe"
SIGNATURE_HEADER = "Stripe-Signature"
TOLERANCE = 300  # seconds between Stripe signing an event and our checking it


# Answers go to Stripe's servers, not to people, so their wording is not translated.
@blueprint.post(PATH)
def receive_stripe():
    body = request.get_data(cache=True)
    try:
        stripe.WebhookSignature.verify_header(body, request.headers.get(SIGNATURE_HEADER),
                                              current_app.config["STRIPE_WEBHOOK_SECRET"],
                                              TOLERANCE)
    except (stripe.SignatureVerificationError, UnicodeDecodeError):
        return _refuse("Invalid signature.")
    try:
        event = _parsed(body)
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError, OSError) as exc:
        log.warning("malformed Stripe event refused: %s", exc)
        return _refuse(f"Malformed event: {exc}")
    if event.type not in jobs.HANDLED:
        return _ok()
    org_id = _organization_of(event.customer_id)
    if org_id is None:
        log.warning("Stripe event %s (%s) names no customer of ours: dropped", event.id,
                    event.type)
        return _ok()
    set_current_organization(org_id)
    jobs.store_event(event, body)
    return _ok()


def _ok() -> Response:
    return jsonify({"received": True})


def _refuse(message: str) -> Response:
    response = jsonify(error_body(400, "bad_request", message))
    response.status_code = 400
    return response


def _parsed(body: bytes) -> jobs.ReceivedEvent:
    """The parts of Stripe's event we read: its id, type, creation time and customer."""
    document = json_input.loads(body)
    event_id, kind, created = document["id"], document["type"], document["created"]
    if not (isinstance(event_id, str) and isinstance(kind, str) and isinstance(created, int)
            and 0 < len(event_id) <= 64):
        raise ValueError("id, type or created is not what Stripe sends")
    customer = document["data"]["object"].get("customer")
    if isinstance(customer, dict):  # expanded
        customer = customer.get("id")
    return jobs.ReceivedEvent(event_id, kind, datetime.fromtimestamp(created, UTC),
                              customer if isinstance(customer, str) else None)


def _organization_of(customer_id: str | None) -> int | None:
    if not customer_id:
        return None
    return db.session.execute(text("SELECT wasl_billing_organization_by_customer(:customer)"),
                              {"customer": customer_id}).scalar()
