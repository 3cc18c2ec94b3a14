"""`crm bench billing`: what the billing gate costs an API request, and how fast Stripe's
webhooks are received and processed.

1. The gate: the same API requests with billing connected (the gate asks for the
   organization's entitlements: one Redis GET, memoized for the request) and self-hosted
   (no key: the gate answers "everything" without looking anything up), in alternating
   rounds beside bare Flask + one SELECT. A read (GET /api/crm/customers, a page of 20) and a
   write (POST /api/crm/customers, which also counts the customers against the plan's limit,
   a count that stops one past the limit) in an organization of BENCH_BILLING_CUSTOMERS
   customers. The target: a read under 5% slower with the gate.
2. Webhooks: BENCH_WEBHOOKS signed `customer.subscription.updated` events posted to
   /api/billing/webhooks/stripe (signature checked, stored, job enqueued), then processed by
   an in-process RQ worker (each job re-reads the subscription from Stripe — here the local
   fake of tests/billing/fake_stripe.py on loopback — and applies it once).
"""

from __future__ import annotations

import os
import time

from flask import Flask

from bench.common import (
    baseline_app,
    bench_app,
    check,
    credentials,
    measure_alternating,
    owner_dsn,
    report,
)

REQUESTS = int(os.environ.get("BENCH_REQUESTS", 2000))
CUSTOMERS = int(os.environ.get("BENCH_BILLING_CUSTOMERS", 5_000))
WEBHOOKS = int(os.environ.get("BENCH_WEBHOOKS", 500))
API = "/api/crm/customers"


def run() -> None:
    from tests.billing.fake_stripe import FakeStripe

    fake = FakeStripe()
    app = bench_app()
    app.config.update(STRIPE_API_BASE=fake.url, STRIPE_WEBHOOK_SECRET=fake.webhook_secret)
    try:
        with app.app_context():
            org_id, admin = _seed(app)
            headers, _session = credentials(admin)
        _gate(app, headers, org_id)
        _webhooks(app, fake, org_id)
    finally:
        fake.stop()


def _seed(app: Flask):
    """An organization on the trial of Pro (100,000 customers allowed) holding CUSTOMERS."""
    import psycopg

    from bench.common import set_organization
    from crm.customers import services as customer_services
    from crm.extensions import db
    from crm.foundation import services
    from crm.foundation.models import User
    from crm.tenancy import organization_context
    from crm.transaction import commit

    registration = services.register_organization("متجر الفوترة", "Bench Admin",
                                                  "billing@wasl.example", "bench-password", "ar")
    org_id = registration.organization.id
    with organization_context(org_id):
        stage = customer_services.list_stages()[0].id
        commit()
    with psycopg.connect(owner_dsn(app)) as conn:
        set_organization(conn, org_id)
        conn.execute("""INSERT INTO customers (organization_id, name, stage_id, board_position)
                        SELECT %s, 'عميل ' || g, %s, g FROM generate_series(1, %s) g""",
                     (org_id, stage, CUSTOMERS))
    with organization_context(org_id):
        return org_id, db.session.get(User, registration.user.id)


def _gate(app: Flask, headers: dict[str, str], org_id: int) -> None:
    client = app.test_client()
    names = iter(range(10**9))

    def with_gate(call):
        def gated():
            app.config["STRIPE_SECRET_KEY"] = "sk_bench_gate"
            return call()
        return gated

    def without_gate(call):
        def unlocked():
            app.config["STRIPE_SECRET_KEY"] = ""
            return call()
        return unlocked

    def read():
        return check(client.get(f"{API}?limit=20", headers=headers))

    def write():
        response = client.post(API, headers=headers, json={"name": f"جديد {next(names)}"})
        assert response.status_code == 201, response.get_data(as_text=True)
        return response

    baseline_client = baseline_app(app.config["DATABASE_URL"]).test_client()
    results = measure_alternating({
        "bare Flask + 1 indexed SELECT": lambda: check(baseline_client.get("/baseline/1259")),
        "GET customers, self-hosted (no gate)": without_gate(read),
        "GET customers, billing on (gate)": with_gate(read),
        "POST customer, self-hosted (no gate)": without_gate(write),
        "POST customer, billing on (gate+count)": with_gate(write),
    }, REQUESTS, rounds=10)
    baseline, *measured = results
    report(f"billing gate — {REQUESTS} requests each in alternating rounds, in-process WSGI, "
           f"{CUSTOMERS:,} customers", measured, baseline)
    _lookup(app, org_id)
    by_name = {result.name: result for result in measured}
    for verb in ("GET customers", "POST customer"):
        gated = next(r for name, r in by_name.items() if name.startswith(verb) and "on" in name)
        bare = next(r for name, r in by_name.items() if name.startswith(verb) and "no" in name)
        slower = bare.rps / gated.rps - 1
        print(f"{verb}: the gate costs {slower:+.1%} (req/s), p50 "
              f"{gated.pct(50) - bare.pct(50):+.3f} ms")


def _lookup(app: Flask, org_id: int) -> None:
    """The gate's own work in a request, alone (a machine's load blurs the difference of two
    whole requests): the entitlements read from Redis and parsed, then memoized."""
    from flask import g

    from crm.billing import gate
    from crm.tenancy import set_current_organization

    app.config["STRIPE_SECRET_KEY"] = "sk_bench_gate"
    with app.test_request_context():
        set_current_organization(org_id)
        gate.allows("crm")  # cached in Redis by the first
        start = time.perf_counter()
        for _ in range(REQUESTS):
            g.pop("billing_entitlements", None)  # a new request: the memo is empty
            gate.allows("crm")
            gate.allows("crm")  # a second question in the same request: the memo
        took = (time.perf_counter() - start) / REQUESTS
    print(f"the gate's lookup alone, per request (a Redis GET, parsed, memoized): "
          f"{took * 1e6:.0f} µs")


def _webhooks(app: Flask, fake, org_id: int) -> None:
    """Post WEBHOOKS signed events, then process them; the rate of each."""
    from rq import SimpleWorker
    from sqlalchemy import func, select

    from crm.billing import services
    from crm.billing.models import StripeEvent
    from crm.billing.webhooks import PATH
    from crm.extensions import db
    from crm.foundation.models import User
    from crm.tenancy import organization_context
    from crm.transaction import commit

    app.config["STRIPE_SECRET_KEY"] = fake.api_key
    with app.app_context():
        services.sync_catalog()
        with organization_context(org_id):
            admin = db.session.scalar(select(User).where(User.role == "admin"))
            services.start_checkout(admin, "pro", "month")
            commit()
    session = fake.of_kind("checkout.session")[-1]
    fake.complete_checkout(session["id"])
    subscription = fake.of_kind("subscription")[-1]
    deliveries = [fake.signed(fake.event("customer.subscription.updated", subscription))
                  for _ in range(WEBHOOKS)]
    client = app.test_client()

    start = time.perf_counter()
    for body, headers in deliveries:
        check(client.post(PATH, data=body, headers=headers))
    received = time.perf_counter() - start
    with app.app_context():
        start = time.perf_counter()
        SimpleWorker(["default"], connection=app.extensions["crm.redis"]).work(burst=True)
        processed = time.perf_counter() - start
        with organization_context(org_id):
            done = db.session.scalar(select(func.count()).select_from(StripeEvent).where(
                StripeEvent.processed_at.is_not(None)))
    assert done == WEBHOOKS, f"{done} of {WEBHOOKS} events processed"
    print(f"\nStripe webhooks — {WEBHOOKS} signed events, sequential, in-process")
    print(f"received (signature, stored, enqueued): {WEBHOOKS / received:7.0f} events/s, "
          f"{received / WEBHOOKS * 1000:.2f} ms each")
    print(f"processed (locked, subscription re-read from the fake Stripe, applied once): "
          f"{WEBHOOKS / processed:7.0f} events/s, {processed / WEBHOOKS * 1000:.2f} ms each")
