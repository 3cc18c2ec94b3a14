"""The tickets API driven over HTTP against a live server, with a real `crm worker` computing
the clocks again after a settings change: what a client integrating with Wasl sees."""

from __future__ import annotations

import pytest
import requests

from crm.extensions import db
from crm.foundation.models import User
from tests.factories import PASSWORD, bearer, make_user
from tests.live import TIMEOUT, LiveServer

pytestmark = pytest.mark.live


def test_a_client_works_a_ticket_and_the_worker_moves_its_clocks(live_server: LiveServer):
    """Log in for a token, open a ticket, assign it, note and reply, see the preview; an
    admin tightens the policy and `crm worker` computes the open ticket's clocks again."""
    account = live_server.make_account()
    with live_server.transaction(account.organization_id):
        agent = make_user(db.session.get(User, account.user_id).organization, "agent")
        agent_id, agent_headers = agent.id, bearer(agent)
    http = requests.Session()
    token = http.post(f"{live_server.url}/api/auth/login", timeout=TIMEOUT, json={
        "email": account.email, "password": PASSWORD}).json()["access_token"]
    http.headers["Authorization"] = f"Bearer {token}"
    api = f"{live_server.url}/api/tickets"

    created = http.post(api, json={"subject": "عندي مشكلة في الطلب"}, timeout=TIMEOUT)
    assert created.status_code == 201
    ticket = created.json()
    url = f"{api}/{ticket['id']}"
    assigned = http.post(f"{url}/assign", json={"user_id": agent_id},
                         headers={"If-Match": created.headers["ETag"]}, timeout=TIMEOUT)
    assert assigned.json()["assignee_id"] == agent_id
    mine = requests.get(f"{api}?view=mine", headers=agent_headers, timeout=TIMEOUT).json()
    assert [item["id"] for item in mine["items"]] == [ticket["id"]]
    assert http.post(f"{url}/comments", json={"body": "ملاحظة داخلية", "public": False},
                     timeout=TIMEOUT).status_code == 201
    preview = http.post(f"{api}/sla-preview", json={
        "priority": "normal", "opened_at": "2026-12-03T16:00:00+03:00"}, timeout=TIMEOUT)
    assert preview.json()["first_response_due_at"] == "2026-12-06T09:00:00Z"

    policies = http.get(f"{api}/sla-policies", timeout=TIMEOUT).json()["policies"]
    rows = [{key: p[key] for key in ("priority", "type_id", "first_response_minutes",
                                     "next_response_minutes", "resolution_minutes")}
            for p in policies]
    for row in rows:
        row["resolution_minutes"] = 24 * 60 * 20
    assert http.put(f"{api}/sla-policies", json={"policies": rows},
                    timeout=TIMEOUT).status_code == 200
    before = http.get(url, timeout=TIMEOUT).json()["sla"]["resolution_due_at"]
    worker = live_server.run_worker()
    assert worker.returncode == 0, worker.stderr
    after = http.get(url, timeout=TIMEOUT).json()["sla"]["resolution_due_at"]
    assert after > before  # 16 business hours became 480
