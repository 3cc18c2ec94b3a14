"""The Stripe client: stripe-python's StripeClient, built from the settings.

STRIPE_SECRET_KEY authenticates; STRIPE_API_BASE is where every call goes (Stripe itself, or
a local fake in tests). Each client keeps a short timeout and retries network failures twice,
sending the same idempotency key, so a retried create never makes two objects.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time

import stripe
from flask import current_app

# stripe-python logs each response body at DEBUG: Checkout and portal session URLs (which
# open the organization's billing to whoever holds them) must never reach a log.
logging.getLogger("stripe").setLevel(logging.WARNING)

IDEMPOTENCY_WINDOW = 600  # seconds
TIMEOUT = 20  # seconds: a page waits on Checkout and portal sessions
NETWORK_RETRIES = 2
# Where Stripe's pages live that a billing form sends people to: Checkout and the Customer
# Portal. A plain form post is answered with a redirect there, and browsers apply the CSP's
# form-action to that redirect (crm/security.py lets these two through).
PAGE_ORIGINS = ("https://checkout.stripe.com", "https://billing.stripe.com")
# A failure of the moment (Stripe unreachable, overloaded, 5xx): try again later. Any other
# StripeError is a request Stripe refused, which trying again would not change.
TRANSIENT = (stripe.APIConnectionError, stripe.RateLimitError, stripe.APIError)


def client() -> stripe.StripeClient:
    """The app's Stripe client (one per secret key and base address)."""
    config = current_app.config
    key, base = config["STRIPE_SECRET_KEY"], config["STRIPE_API_BASE"].rstrip("/")
    clients = current_app.extensions.setdefault("crm.stripe", {})
    if (key, base) not in clients:
        clients[(key, base)] = stripe.StripeClient(
            key, base_addresses={"api": base, "meter_events": base},
            max_network_retries=NETWORK_RETRIES,
            http_client=stripe.RequestsClient(timeout=TIMEOUT))
    return clients[(key, base)]


def idempotency_key(action: str, params: dict) -> dict:
    """Request options with an idempotency key naming `action`, its parameters and the
    current IDEMPOTENCY_WINDOW: a retry of the same call (a network retry, a double click) is
    answered as the first was; the same call made again later (cancel, resume in the portal,
    cancel again) is a new one, which a key kept for Stripe's 24 hours would swallow."""
    window = int(time.time() // IDEMPOTENCY_WINDOW)
    digest = hashlib.sha256(json.dumps([params, window], sort_keys=True, default=str).encode())
    return {"idempotency_key": f"wasl-{action}-{digest.hexdigest()[:24]}"}


def field(obj: stripe.StripeObject | dict | None, key: str) -> object:
    """`obj[key]`, or None when Stripe left the key out (Stripe objects are not dicts)."""
    return obj[key] if obj is not None and key in obj else None
