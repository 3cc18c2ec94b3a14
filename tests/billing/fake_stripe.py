"""A local stand-in for Stripe's API, served on a loopback port, and the webhooks it would send.

It speaks what stripe-python sends (form-encoded bodies with bracketed keys, bearer key,
Idempotency-Key) and answers in Stripe's object shapes for what Wasl calls: customers,
products, prices (listed by lookup key), billing meters and meter events, Checkout and portal
sessions, subscriptions (retrieve, update with Stripe's prorations, cancel) and their
schedules, invoices with their lines, proration invoice items; errors in Stripe's error
shape. Objects follow the API versions since 2025 (a subscription's period on its items, an
invoice's subscription under `parent`).

What Stripe sends after a call that changes something (a subscription updated, the invoice of
a plan change) waits in `outbox` until a test `take_events()`, or, when `webhook_url` is set,
is also delivered there by a thread, after the answer, as Stripe sends its webhooks.

What Stripe does on its own side, a test does with a helper: `complete_checkout` (the customer
paid), `fail_payment` / `pay_invoice` (a renewal failed, then went through), `renew` (a period
ends: a scheduled downgrade or a cancellation takes effect), `expire_pending_updates` (an
upgrade held for its payment is dropped unpaid, about 23 hours on). With `declines` or
`requires_action` an update's payment is refused, or waits for the bank's 3-D Secure. Each
returns the events Stripe would send; `signed(event)` gives the body and headers of its
webhook, signed with `stripe.WebhookSignature.generate_signature_header` as Stripe signs them.

It also serves the pages Stripe hosts, for browsers: a Checkout session's URL opens a page
whose "Pay" button completes the checkout, sends its signed webhooks to `webhook_url` (when a
test sets it: a live server's) and returns the browser to the session's success URL; a portal
session's URL opens a page that links back to its return URL. Those URLs are on the fake's
own address, or with `on_stripe_origins` on Stripe's (checkout.stripe.com, billing.stripe.com),
for a browser test that routes those origins here to go through the app's CSP as with Stripe.

One fake serves the whole test run (tests/conftest.py points STRIPE_API_BASE at it, so no test
can reach Stripe); the `stripe_api` fixture `reset()`s it for each test that uses it.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

import requests
import stripe
from flask import Flask, jsonify, redirect, request
from werkzeug.serving import make_server

API_KEY = "sk_test_wasl_fake"
WEBHOOK_SECRET = "whsec_wasl_fake"
# Where Stripe serves Checkout and the Customer Portal.
CHECKOUT_ORIGIN = "https://checkout.stripe.com"
PORTAL_ORIGIN = "https://billing.stripe.com"
MONTH = 30 * 24 * 3600
YEAR = 365 * 24 * 3600


@dataclass
class Recorded:
    method: str
    path: str
    params: dict
    idempotency_key: str | None


def decode(pairs: list[tuple[str, str]]) -> dict:
    """Stripe's bracketed form keys (`items[0][price]=x`) as nested dicts and lists."""
    root: dict = {}
    for key, value in pairs:
        parts = re.findall(r"[^\[\]]+", key)
        node = root
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return _lists(root)


def _lists(node):
    if not isinstance(node, dict):
        return node
    if node and all(key.isdigit() for key in node):
        return [_lists(node[key]) for key in sorted(node, key=int)]
    return {key: _lists(value) for key, value in node.items()}


@dataclass
class FakeStripe:
    api_key: str = API_KEY
    webhook_secret: str = WEBHOOK_SECRET
    requests: list[Recorded] = field(default_factory=list)
    objects: dict[str, dict] = field(default_factory=dict)  # id → object, of every kind
    meter_events: list[dict] = field(default_factory=list)
    outbox: list[dict] = field(default_factory=list)  # events of API calls, not yet taken
    fail_with: int | None = None  # answer every call with this status (a Stripe outage)
    declines: bool = False  # the card declines an update's charge (pending_if_incomplete)
    # The card's bank asks for 3-D Secure on an update's charge: its payment intent
    # `requires_action`, the update pending as for a decline.
    requires_action: bool = False
    clock: float | None = None  # now, for created timestamps (None: the real time)
    webhook_url: str | None = None  # where the Checkout page sends its events (None: nowhere)
    on_stripe_origins: bool = False  # session URLs on Stripe's origins (else on the fake's)
    url: str = ""

    def __post_init__(self) -> None:
        self._numbers = itertools.count(1)
        self._answered: dict[str, tuple[dict, object]] = {}  # idempotency key → first answer
        self._lock = threading.Lock()
        self._server = make_server("127.0.0.1", 0, self._app(), threaded=True)
        self.url = f"http://127.0.0.1:{self._server.port}"
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def reset(self) -> None:
        """Forget every object, call and setting: an account as new, for the next test."""
        with self._lock:
            self.requests.clear()
            self.objects.clear()
            self.meter_events.clear()
            self.outbox.clear()
            self._answered.clear()
            self.fail_with = self.clock = self.webhook_url = None
            self.on_stripe_origins = self.declines = self.requires_action = False

    # -- what tests read --------------------------------------------------------------------

    def now(self) -> int:
        return int(self.clock if self.clock is not None else time.time())

    def of_kind(self, kind: str) -> list[dict]:
        return [obj for obj in self.objects.values() if obj["object"] == kind]

    def calls(self, method: str, path_prefix: str) -> list[Recorded]:
        return [call for call in self.requests
                if call.method == method and call.path.startswith(path_prefix)]

    def take_events(self) -> list[dict]:
        """The events the API calls since the last take caused, oldest first."""
        with self._lock:
            events, self.outbox[:] = list(self.outbox), []
        return events

    def counted_meter_events(self) -> dict[str, dict]:
        """The meter events as Stripe counts them: one per identifier."""
        return {event["identifier"]: event for event in self.meter_events}

    # -- what Stripe does on its side (each returns the events it would send) ----------------

    def complete_checkout(self, session_id: str, card_last4: str = "4242") -> list[dict]:
        """The customer paid on the Checkout page: a subscription starts, its first invoice is
        paid."""
        session = self.objects[session_id]
        price = self.objects[session["line_items"][0]["price"]]
        method = self._create("pm", "payment_method", type="card", card={
            "brand": "visa", "last4": card_last4, "exp_month": 12, "exp_year": 2030})
        subscription = self._create(
            "sub", "subscription", customer=session["customer"], status="active",
            cancel_at_period_end=False, cancel_at=None, canceled_at=None, schedule=None,
            trial_end=None, pending_update=None, latest_invoice=None,
            default_payment_method=method["id"],
            metadata=session.get("subscription_data", {}).get("metadata", {}),
            items={"object": "list", "data": [self._item(price)]})
        session.update(status="complete", subscription=subscription["id"])
        invoice = self._invoice(subscription, [self._line(subscription, price)], "paid",
                                "subscription_create")
        return [self.event("checkout.session.completed", session),
                self.event("customer.subscription.created", subscription),
                self.event("invoice.paid", invoice)]

    def fail_payment(self, subscription_id: str) -> list[dict]:
        """A renewal's payment failed: the invoice stays open, the subscription is past due."""
        subscription = self.objects[subscription_id]
        price = subscription["items"]["data"][0]["price"]
        invoice = self._invoice(subscription, [self._line(subscription, price)], "open",
                                "subscription_cycle")
        subscription["status"] = "past_due"
        return [self.event("invoice.payment_failed", invoice),
                self.event("customer.subscription.updated", subscription)]

    def pay_invoice(self, invoice_id: str) -> list[dict]:
        """The invoice is paid (a retry, a new card): the subscription is active, and an
        update that waited for this payment applies."""
        invoice = self.objects[invoice_id]
        invoice.update(status="paid", amount_paid=invoice["amount_due"])
        for payment in invoice["payments"]["data"]:
            payment["status"] = "paid"
            self.objects[payment["payment"]["payment_intent"]]["status"] = "succeeded"
        subscription = self.objects[invoice["parent"]["subscription_details"]["subscription"]]
        subscription["status"] = "active"
        pending = subscription["pending_update"]
        if pending:
            item = subscription["items"]["data"][0]
            price = self.objects[pending["subscription_items"][0]["price"]["id"]]
            if price["recurring"]["interval"] != item["price"]["recurring"]["interval"]:
                self._new_period(item)
            item["price"], subscription["pending_update"] = price, None
        return [self.event("invoice.paid", invoice),
                self.event("customer.subscription.updated", subscription)]

    def expire_pending_updates(self) -> list[dict]:
        """Stripe drops each update held for its payment (`pending_if_incomplete`) still unpaid
        at its `expires_at` (about 23 hours on, by the fake's clock): the subscription stays
        on its price, with no `pending_update`; the invoice is left as it is."""
        events = []
        for subscription in self.of_kind("subscription"):
            pending = subscription["pending_update"]
            if pending and pending["expires_at"] <= self.now():
                subscription["pending_update"] = None
                events += [self.event("customer.subscription.pending_update_expired",
                                      subscription),
                           self.event("customer.subscription.updated", subscription)]
        return events

    def renew(self, subscription_id: str) -> list[dict]:
        """The period ends: a cancellation waiting takes effect, else a new period starts (on
        the next phase's price when a schedule waits, which then releases the subscription)."""
        subscription = self.objects[subscription_id]
        if subscription["cancel_at_period_end"]:
            subscription.update(status="canceled", canceled_at=self.now())
            return [self.event("customer.subscription.deleted", subscription)]
        item = subscription["items"]["data"][0]
        if subscription["schedule"]:
            schedule = self.objects[subscription["schedule"]]
            item["price"] = self.objects[schedule["phases"][1]["items"][0]["price"]]
            schedule.update(status="released", released_subscription=subscription_id)
            subscription["schedule"] = None
        self._new_period(item)
        lines = [self._line(subscription, item["price"]), *self._pending_items(subscription)]
        invoice = self._invoice(subscription, lines, "paid", "subscription_cycle")
        return [self.event("customer.subscription.updated", subscription),
                self.event("invoice.paid", invoice)]

    def page_url(self, origin: str, path: str) -> str:
        """The address of one of the pages Stripe hosts: on `origin`, or on the fake's."""
        return f"{origin if self.on_stripe_origins else self.url}{path}"

    def event(self, kind: str, obj: dict) -> dict:
        """A Stripe event of `kind` whose data is a snapshot of `obj` now."""
        return {"id": f"evt_{secrets.token_hex(12)}", "object": "event",
                "api_version": stripe._api_version._ApiVersion.CURRENT,
                "created": self.now(), "livemode": False, "pending_webhooks": 1,
                "request": {"id": None, "idempotency_key": None}, "type": kind,
                "data": {"object": json.loads(json.dumps(obj))}}

    def signed(self, event: dict, secret: str | None = None, timestamp: int | None = None
               ) -> tuple[bytes, dict[str, str]]:
        """The body and headers of `event`'s webhook delivery, signed as Stripe signs."""
        body = json.dumps(event)
        header = stripe.WebhookSignature.generate_signature_header(
            body, secret or self.webhook_secret, timestamp=timestamp)
        return body.encode(), {"Stripe-Signature": header, "Content-Type": "application/json"}

    def _emit(self, kind: str, obj: dict) -> None:
        """An event an API call caused: kept for `take_events`, and sent to `webhook_url`
        (if set) from a thread, as Stripe sends it once the call is answered."""
        event = self.event(kind, obj)
        with self._lock:
            self.outbox.append(event)
        if self.webhook_url is not None:
            threading.Thread(target=self._send_later, args=(event,), daemon=True).start()

    def _send_later(self, event: dict) -> None:
        time.sleep(0.2)  # after the call's answer, as Stripe's webhooks come
        # Not delivered: Stripe would retry later; what waits on it sees it did not arrive.
        with contextlib.suppress(requests.RequestException):
            self.send(event)

    def send(self, event: dict) -> None:
        """Deliver `event` to `webhook_url` as Stripe does: a signed POST (nothing without one)."""
        if self.webhook_url is None:
            return
        body, headers = self.signed(event)
        answer = requests.post(self.webhook_url, data=body, headers=headers, timeout=10)
        answer.raise_for_status()

    # -- the objects ------------------------------------------------------------------------

    def _create(self, prefix: str, kind: str, object_id: str | None = None, **values) -> dict:
        with self._lock:
            number = next(self._numbers)
        obj = {"id": object_id or f"{prefix}_{number:06d}{secrets.token_hex(4)}",
               "object": kind, "created": self.now(), "livemode": False, **values}
        self.objects[obj["id"]] = obj
        return obj

    def _item(self, price: dict) -> dict:
        item = {"id": f"si_{secrets.token_hex(6)}", "object": "subscription_item",
                "price": price, "quantity": 1}
        self._new_period(item)
        return item

    def _new_period(self, item: dict) -> None:
        start = self.now()
        length = YEAR if item["price"]["recurring"]["interval"] == "year" else MONTH
        item.update(current_period_start=start, current_period_end=start + length)

    def _line(self, subscription: dict, price: dict, amount: int | None = None,
              proration: bool = False) -> dict:
        """An invoice line of `price` for the subscription's item (its whole amount unless a
        prorated one is given), in the API's shape since 2025 (what it bills under
        `parent`)."""
        item = subscription["items"]["data"][0]
        return {"id": f"il_{secrets.token_hex(6)}", "object": "line_item",
                "amount": price["unit_amount"] if amount is None else amount,
                "currency": price["currency"], "pricing": {"price_details": {
                    "price": price["id"], "product": price["product"]}},
                "period": {"start": self.now(), "end": item["current_period_end"]},
                "parent": {"type": "subscription_item_details", "subscription_item_details": {
                    "subscription": subscription["id"], "subscription_item": item["id"],
                    "proration": proration, "invoice_item": None}}}

    def _pending_items(self, subscription: dict) -> list[dict]:
        """The lines of the proration items that wait for the subscription's next invoice."""
        return [item["_line"] for item in self.of_kind("invoiceitem")
                if item["subscription"] == subscription["id"] and item["invoice"] is None]

    def _invoice(self, subscription: dict, lines: list[dict], status: str,
                 reason: str, intent_status: str | None = None) -> dict:
        """An invoice of `lines` (its proration items then name it), the subscription's latest,
        paid through a payment intent (`payments`, expanded on request as Stripe's are): one
        that `succeeded` when paid, else `intent_status` (`requires_payment_method` after a
        decline by default). A credit beyond what is due goes to the customer's balance:
        nothing below zero is due."""
        intent_status = "succeeded" if status == "paid" else (
            intent_status or "requires_payment_method")
        with self._lock:
            number = next(self._numbers)
        invoice_id = f"in_{secrets.token_hex(8)}"
        amount = max(0, sum(line["amount"] for line in lines))
        for item in self.of_kind("invoiceitem"):
            if item["_line"] in lines:
                item["invoice"] = invoice_id
        subscription["latest_invoice"] = invoice_id
        intent = self._create("pi", "payment_intent", amount=amount, currency="sar",
                              status=intent_status, invoice=invoice_id)
        return self._create(
            "in", "invoice", object_id=invoice_id, customer=subscription["customer"],
            number=f"WASL-{number:04d}", amount_due=amount, amount_paid=amount
            if status == "paid" else 0, currency="sar", status=status, billing_reason=reason,
            lines={"object": "list", "data": lines, "has_more": False,
                   "url": f"/v1/invoices/{invoice_id}/lines"},
            hosted_invoice_url=f"https://invoice.stripe.test/i/{invoice_id}",
            invoice_pdf=f"https://pay.stripe.test/invoice/{invoice_id}/pdf",
            payments={"object": "list", "has_more": False, "data": [{
                "object": "invoice_payment", "invoice": invoice_id, "is_default": True,
                "status": "paid" if status == "paid" else "open",
                "payment": {"type": "payment_intent", "payment_intent": intent["id"]}}]},
            parent={"type": "subscription_details",
                    "subscription_details": {"subscription": subscription["id"]}})

    def _change_price(self, subscription: dict, price: dict, behavior: str,
                      pending: bool = False) -> None:
        """Move the subscription's item to `price` now, prorated as Stripe prorates: a
        credit for the time left on the old price, a charge for it on the new one (to the
        second), as invoice items that wait for the next invoice (`create_prorations`, the
        default), or invoiced and paid at once (`always_invoice`), or none (`none`). A new
        interval starts a new period at once, invoiced at once whatever the behavior (less the
        credit unless `none`). With `pending` (`payment_behavior=pending_if_incomplete`) and a
        card that declines, the change waits in `pending_update` for its invoice's payment."""
        item = subscription["items"]["data"][0]
        old, now = item["price"], self.now()
        start, end = item["current_period_start"], item["current_period_end"]
        left = (end - now) / (end - start) if end > start else 0
        credit = self._line(subscription, old, -round(old["unit_amount"] * left), True)
        new_cycle = old["recurring"]["interval"] != price["recurring"]["interval"]
        item["price"] = price
        if new_cycle:
            self._new_period(item)
            lines = [self._line(subscription, price)]
        else:
            lines = [self._line(subscription, price, round(price["unit_amount"] * left), True)]
        if behavior != "none":
            lines.insert(0, credit)
            for line in lines:
                details = line["parent"]["subscription_item_details"]
                if details["proration"]:  # `_line`: the fake's own note of its invoice line
                    details["invoice_item"] = self._create(
                        "ii", "invoiceitem", customer=subscription["customer"],
                        subscription=subscription["id"], amount=line["amount"],
                        currency=line["currency"], proration=True, invoice=None,
                        _line=line)["id"]
        if new_cycle or behavior == "always_invoice":
            declined = (self.declines or self.requires_action) and pending
            invoice = self._invoice(
                subscription, lines if new_cycle else self._pending_items(subscription),
                "open" if declined else "paid", "subscription_update",
                "requires_action" if self.requires_action else None)
            if declined:
                item.update(price=old, current_period_start=start, current_period_end=end)
                subscription["pending_update"] = {
                    "subscription_items": [{"object": "subscription_item", "id": item["id"],
                                            "price": price, "quantity": 1}],
                    "expires_at": now + 23 * 3600, "billing_cycle_anchor": None,
                    "trial_end": None, "trial_from_plan": False}
            refused = ("invoice.payment_action_required" if self.requires_action
                       else "invoice.payment_failed")
            for kind in ("invoice.created", "invoice.finalized",
                         refused if declined else "invoice.paid"):
                self._emit(kind, invoice)

    def _cancel_at_period_end(self, subscription: dict, cancel: bool) -> None:
        """Stripe's `cancel_at_period_end`: with it, `cancel_at` is the period's end and
        `canceled_at` the request's moment; set back to false, both are cleared."""
        period_end = subscription["items"]["data"][0]["current_period_end"]
        subscription.update(cancel_at_period_end=cancel,
                            cancel_at=period_end if cancel else None,
                            canceled_at=self.now() if cancel else None)

    def _subscription_view(self, subscription: dict, expand: list[str]) -> dict:
        view = json.loads(json.dumps(subscription))
        if "default_payment_method" in expand and view["default_payment_method"]:
            view["default_payment_method"] = self.objects[view["default_payment_method"]]
        if "latest_invoice" in expand and view["latest_invoice"]:
            view["latest_invoice"] = self.objects[view["latest_invoice"]]
        return view

    def _invoice_view(self, invoice: dict, expand: list[str]) -> dict:
        """An invoice; its payments' payment intents expanded when asked (Stripe includes
        `payments` only when expanded)."""
        view = json.loads(json.dumps(invoice))
        if "payments.data.payment.payment_intent" in expand:
            for payment in view["payments"]["data"]:
                payment["payment"]["payment_intent"] = self.objects[
                    payment["payment"]["payment_intent"]]
        elif "payments" not in expand:
            del view["payments"]
        return view

    # -- the HTTP API -----------------------------------------------------------------------

    def _app(self) -> Flask:
        app = Flask("fake_stripe")
        routes: dict[tuple[str, str], callable] = {}

        def route(method: str, pattern: str):
            def register(handler):
                routes[(method, pattern)] = handler
                return handler
            return register

        @app.get("/favicon.ico")
        def favicon():  # asked for by a browser on the hosted pages: not an API call
            return "", 204

        @app.get("/c/pay/<session_id>")
        def checkout_page(session_id: str):
            session = self.objects.get(session_id)
            if session is None or session["object"] != "checkout.session":
                return "No such Checkout session", 404
            price = self.objects[session["line_items"][0]["price"]]
            return (f'<!doctype html><html lang="en"><title>Stripe Checkout (fake)</title>'
                    f'<h1>Pay {price["unit_amount"] / 100:.2f} {price["currency"].upper()}'
                    f'</h1><form method="post"><button type="submit">Pay</button></form>'
                    f'<a href="{session["cancel_url"]}">Back</a></html>')

        @app.post("/c/pay/<session_id>")
        def pay(session_id: str):
            session = self.objects.get(session_id)
            if session is None or session["status"] != "open":
                return "This Checkout session is not open", 409
            for event in self.complete_checkout(session_id):
                self.send(event)
            return redirect(session["success_url"], 303)

        @app.get("/p/session/<session_id>")
        def portal_page(session_id: str):
            session = self.objects.get(session_id)
            if session is None or session["object"] != "billing_portal.session":
                return "No such portal session", 404
            return (f'<!doctype html><html lang="en"><title>Customer Portal (fake)</title>'
                    f'<a href="{session["return_url"]}">Return</a></html>')

        @app.route("/<path:path>", methods=["GET", "POST", "DELETE"])
        def dispatch(path: str):
            pairs = (parse_qsl(request.query_string.decode(), keep_blank_values=True)
                     + parse_qsl(request.get_data(as_text=True), keep_blank_values=True))
            params = decode(pairs)
            self.requests.append(Recorded(request.method, f"/{path}", params,
                                          request.headers.get("Idempotency-Key")))
            if request.headers.get("Authorization") != f"Bearer {self.api_key}":
                return _error(401, "Invalid API Key provided.", None)
            if self.fail_with:
                response = _error(self.fail_with, "Stripe is having a moment.", None,
                                  "api_error")
                response.headers["Stripe-Should-Retry"] = "false"  # fail fast in tests
                return response
            key = request.headers.get("Idempotency-Key") if request.method == "POST" else None
            if key in self._answered:  # Stripe answers a retried request as it did the first
                first_params, first_answer = self._answered[key]
                if first_params != params:
                    return _error(400, "Keys for idempotent requests can only be used with the "
                                  "same parameters they were first used with.", None,
                                  "idempotency_error")
                return first_answer
            for (method, pattern), handler in routes.items():
                found = re.fullmatch(pattern, f"/{path}")
                if method == request.method and found:
                    answer = handler(params, *found.groups())
                    if key:
                        self._answered[key] = (params, answer)
                    return answer
            return _error(404, f"Unrecognized request URL ({request.method}: /{path}).",
                          None)

        def get(object_id: str, kind: str):
            obj = self.objects.get(object_id)
            if obj is None or obj["object"] != kind:
                return None, _error(404, f"No such {kind}: '{object_id}'", "resource_missing")
            return obj, None

        def listing(items: list[dict], path: str):
            return jsonify({"object": "list", "data": items, "has_more": False, "url": path})

        @route("POST", r"/v1/customers")
        def create_customer(params):
            return jsonify(self._create("cus", "customer", name=params.get("name"),
                                        email=params.get("email"),
                                        metadata=params.get("metadata", {})))

        @route("GET", r"/v1/products/([^/]+)")
        def retrieve_product(params, product_id):
            product, error = get(product_id, "product")
            return error or jsonify(product)

        @route("POST", r"/v1/products")
        def create_product(params):
            return jsonify(self._create("prod", "product", object_id=params.get("id"),
                                        name=params["name"], active=True,
                                        metadata=params.get("metadata", {})))

        @route("GET", r"/v1/prices")
        def list_prices(params):
            keys = params.get("lookup_keys", [])
            found = [price for price in self.of_kind("price")
                     if price["lookup_key"] in keys and price["active"]]
            return listing(found[:int(params.get("limit", 10))], "/v1/prices")

        @route("POST", r"/v1/prices")
        def create_price(params):
            key = params.get("lookup_key")
            if key and params.get("transfer_lookup_key") == "true":
                for price in self.of_kind("price"):
                    if price["lookup_key"] == key:
                        price["lookup_key"] = None
            return jsonify(self._create(
                "price", "price", product=params["product"], currency=params["currency"],
                unit_amount=int(params["unit_amount"]), lookup_key=key, active=True,
                type="recurring", recurring={"interval": params["recurring"]["interval"],
                                             "interval_count": 1},
                metadata=params.get("metadata", {})))

        @route("GET", r"/v1/billing/meters")
        def list_meters(params):
            return listing(self.of_kind("billing.meter"), "/v1/billing/meters")

        @route("POST", r"/v1/billing/meters")
        def create_meter(params):
            return jsonify(self._create(
                "mtr", "billing.meter", display_name=params["display_name"],
                event_name=params["event_name"], status="active",
                default_aggregation=params["default_aggregation"],
                customer_mapping=params["customer_mapping"],
                value_settings=params["value_settings"]))

        @route("POST", r"/v1/billing/meter_events")
        def create_meter_event(params):
            event = {"object": "billing.meter_event", "created": self.now(),
                     "event_name": params["event_name"], "identifier": params["identifier"],
                     "payload": params["payload"], "timestamp": int(params["timestamp"]),
                     "livemode": False}
            self.meter_events.append(event)
            return jsonify(event)

        @route("POST", r"/v1/checkout/sessions")
        def create_checkout_session(params):
            if params.get("mode") != "subscription":
                return _error(400, "mode must be subscription here", "parameter_invalid")
            _price, error = get(params["line_items"][0]["price"], "price")
            if error:
                return error
            session = self._create(
                "cs_test", "checkout.session", mode="subscription", status="open",
                customer=params["customer"],
                client_reference_id=params.get("client_reference_id"),
                line_items=params["line_items"], metadata=params.get("metadata", {}),
                subscription_data=params.get("subscription_data", {}),
                success_url=params["success_url"], cancel_url=params["cancel_url"],
                subscription=None)
            session["url"] = self.page_url(CHECKOUT_ORIGIN, f"/c/pay/{session['id']}")
            return jsonify(session)

        @route("POST", r"/v1/billing_portal/sessions")
        def create_portal_session(params):
            session = self._create("bps", "billing_portal.session",
                                   customer=params["customer"], return_url=params["return_url"])
            session["url"] = self.page_url(PORTAL_ORIGIN, f"/p/session/{session['id']}")
            return jsonify(session)

        @route("GET", r"/v1/subscriptions/([^/]+)")
        def retrieve_subscription(params, subscription_id):
            subscription, error = get(subscription_id, "subscription")
            return error or jsonify(self._subscription_view(subscription,
                                                            params.get("expand", [])))

        @route("POST", r"/v1/subscriptions/([^/]+)")
        def update_subscription(params, subscription_id):
            subscription, error = get(subscription_id, "subscription")
            if error:
                return error
            if subscription["status"] in ("canceled", "incomplete_expired"):
                return _error(400, "A canceled subscription can only update its "
                              "cancellation_details and metadata.", None)
            if subscription["schedule"] and "cancel_at_period_end" in params:
                return _error(400, "The subscription is managed by the subscription schedule",
                              "subscription_schedule_managed")
            if "cancel_at_period_end" in params:
                self._cancel_at_period_end(subscription,
                                           params["cancel_at_period_end"] == "true")
            for change in params.get("items", []):
                item = subscription["items"]["data"][0]
                if change["id"] != item["id"]:
                    return _error(400, "No such subscription item", "resource_missing")
                price, error = get(change["price"], "price")
                if error:
                    return error
                self._change_price(
                    subscription, price, params.get("proration_behavior", "create_prorations"),
                    pending=params.get("payment_behavior") == "pending_if_incomplete")
            self._emit("customer.subscription.updated", subscription)
            return jsonify(self._subscription_view(subscription, []))

        @route("DELETE", r"/v1/subscriptions/([^/]+)")
        def cancel_subscription(params, subscription_id):
            subscription, error = get(subscription_id, "subscription")
            if error:
                return error
            subscription.update(status="canceled", canceled_at=self.now())
            self._emit("customer.subscription.deleted", subscription)
            return jsonify(self._subscription_view(subscription, []))

        @route("POST", r"/v1/subscription_schedules")
        def create_schedule(params):
            subscription, error = get(params["from_subscription"], "subscription")
            if error:
                return error
            item = subscription["items"]["data"][0]
            schedule = self._create(
                "sub_sched", "subscription_schedule", subscription=subscription["id"],
                status="active", end_behavior="release", released_subscription=None,
                phases=[{"start_date": item["current_period_start"],
                         "end_date": item["current_period_end"],
                         "items": [{"price": item["price"]["id"], "quantity": 1}]}])
            subscription["schedule"] = schedule["id"]
            return jsonify(schedule)

        @route("GET", r"/v1/subscription_schedules/([^/]+)")
        def retrieve_schedule(params, schedule_id):
            schedule, error = get(schedule_id, "subscription_schedule")
            return error or jsonify(schedule)

        @route("POST", r"/v1/subscription_schedules/([^/]+)/release")
        def release_schedule(params, schedule_id):
            schedule, error = get(schedule_id, "subscription_schedule")
            if error:
                return error
            schedule.update(status="released", released_subscription=schedule["subscription"])
            self.objects[schedule["subscription"]]["schedule"] = None
            return jsonify(schedule)

        @route("POST", r"/v1/subscription_schedules/([^/]+)")
        def update_schedule(params, schedule_id):
            schedule, error = get(schedule_id, "subscription_schedule")
            if error:
                return error
            phases = params["phases"]
            if str(schedule["phases"][0]["start_date"]) != phases[0]["start_date"]:
                return _error(400, "You can not modify the start date of the current phase.",
                              "parameter_invalid")
            schedule["phases"] = [
                {"start_date": int(phase["start_date"]) if "start_date" in phase else None,
                 "end_date": int(phase["end_date"]) if "end_date" in phase else None,
                 "items": [{"price": item["price"], "quantity": int(item["quantity"])}
                           for item in phase["items"]]} for phase in phases]
            schedule["end_behavior"] = params.get("end_behavior", schedule["end_behavior"])
            return jsonify(schedule)

        @route("GET", r"/v1/invoices/([^/]+)")
        def retrieve_invoice(params, invoice_id):
            invoice, error = get(invoice_id, "invoice")
            return error or jsonify(self._invoice_view(invoice, params.get("expand", [])))

        return app


def _error(status: int, message: str, code: str | None,
           kind: str = "invalid_request_error"):
    body = {"error": {"type": kind, "message": message}}
    if code:
        body["error"]["code"] = code
    response = jsonify(body)
    response.status_code = status
    return response

