"""`crm bench auth`: an authenticated page and /api/users beside bare Flask + one SELECT.

Requests go through the WSGI test client in one process, sequentially, so app and baseline are
measured the same way; the ratio is the figure that carries from machine to machine.
"""

from __future__ import annotations

import os

from bench.common import baseline_app, bench_app, check, credentials, measure, report, sign_in

REQUESTS = int(os.environ.get("BENCH_REQUESTS", 2000))
TEAM_SIZE = 60


def run() -> None:
    app = bench_app()
    with app.app_context():
        headers, session = credentials(_seed_team())
        client = app.test_client()
        sign_in(client, session)

    baseline_client = baseline_app(app.config["DATABASE_URL"]).test_client()
    baseline = measure("bare Flask + 1 indexed SELECT",
                       lambda: check(baseline_client.get("/baseline/1259")), REQUESTS)
    results = [
        measure("dashboard page (session, HTML)", lambda: check(client.get("/")), REQUESTS),
        measure("GET /api/users (bearer, 50 users)",
                lambda: check(client.get("/api/users", headers=headers)), REQUESTS),
    ]
    report(f"auth — {REQUESTS} sequential requests each, in-process WSGI", results, baseline)


def _seed_team():
    from crm.extensions import db
    from crm.foundation import services
    from crm.foundation.models import User
    from crm.tenancy import organization_context
    from crm.transaction import commit

    registration = services.register_organization("Bench", "Bench Admin", "bench@wasl.example",
                                                  "bench-password", "ar")
    org_id = registration.organization.id
    with organization_context(org_id):
        for n in range(TEAM_SIZE):
            db.session.add(User(email=f"agent{n}@wasl.example", full_name=f"وكيل {n}",
                                password_hash=registration.user.password_hash, role="agent"))
        commit()
        return db.session.get(User, registration.user.id)
