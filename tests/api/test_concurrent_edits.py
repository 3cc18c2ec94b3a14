"""Edits that really run at once, on the live server: two API clients whose requests are both
in flight before either writes. Neither may silently undo the other.

To make "at once" certain rather than likely, the test holds the row's lock while it sends both
requests, waits until both are waiting on it, and only then lets them go.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
import requests
from sqlalchemy import select, text

from crm.customers.models import Customer
from crm.extensions import db
from crm.foundation.models import Organization, User
from crm.tenancy import organization_context
from crm.transaction import commit
from crm.whatsapp.models import Conversation
from tests.customers.factories import make_customer
from tests.factories import bearer, make_user
from tests.live import TIMEOUT, LiveServer, wait_until
from tests.whatsapp.factories import make_conversation, make_profile

pytestmark = pytest.mark.live


def _waiting_on_locks(live_server: LiveServer) -> int:
    with live_server.app.app_context(), db.engine.connect() as connection:
        return connection.scalar(text(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"))


@contextmanager
def _held(live_server: LiveServer, org_id: int, model: type, object_id: int) -> Iterator[None]:
    """Hold the row's lock until the block ends, as a slow request would."""
    with live_server.app.app_context(), organization_context(org_id):
        db.session.execute(select(model).where(model.id == object_id).with_for_update())
        try:
            yield
        finally:
            commit()


def _at_once(live_server: LiveServer, org_id: int, model: type, object_id: int,
             *calls: Callable[[], requests.Response]) -> list[requests.Response]:
    """Send every call while the row is locked; release it once all of them wait on it."""
    answers: list[requests.Response | BaseException | None] = [None] * len(calls)

    def run(index: int) -> None:
        try:
            answers[index] = calls[index]()
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            answers[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    with _held(live_server, org_id, model, object_id):
        for thread in threads:
            thread.start()
        wait_until(lambda: _waiting_on_locks(live_server) >= len(calls),
                   "both requests waiting on the row")
    for thread in threads:
        thread.join(TIMEOUT)
    assert all(isinstance(answer, requests.Response) for answer in answers), answers
    return answers


def _setup(live_server: LiveServer, build: Callable[[Organization], dict]) -> dict:
    """A committed organization, a manager besides its admin, and what `build` makes; each
    person with an API token."""
    account = live_server.make_account()
    with live_server.transaction(account.organization_id):
        org = db.session.get(Organization, account.organization_id)
        org.admin = db.session.get(User, account.user_id)
        manager = make_user(org, "manager")
        made = build(org) | {"org_id": org.id, "admin_id": org.admin.id,
                             "manager_id": manager.id}
        made["tokens"] = [bearer(org.admin), bearer(manager)]
    return made


def test_two_patches_with_the_same_if_match_one_wins_the_other_is_412(live_server):
    """Both read version 1 and send their change at once: one is saved, the other answers
    412 with the winner's customer, and the stored customer is the winner's."""
    made = _setup(live_server, lambda org: {"id": make_customer(org, name="Amal").id})
    url = f"{live_server.url}/api/crm/customers/{made['id']}"

    def patch(token: dict, name: str) -> Callable[[], requests.Response]:
        return lambda: requests.patch(url, json={"name": name}, timeout=TIMEOUT,
                                      headers={**token, "If-Match": '"1"'})

    answers = _at_once(live_server, made["org_id"], Customer, made["id"],
                       patch(made["tokens"][0], "Amal A."), patch(made["tokens"][1], "Amal M."))

    assert sorted(answer.status_code for answer in answers) == [200, 412], [
        answer.text for answer in answers]
    winner = next(answer for answer in answers if answer.status_code == 200).json()
    loser = next(answer for answer in answers if answer.status_code == 412).json()
    assert loser["current"]["name"] == winner["name"]
    assert loser["current"]["version"] == winner["version"] == 2
    with live_server.transaction(made["org_id"]):
        assert db.session.get(Customer, made["id"]).name == winner["name"]


def test_two_tags_added_at_once_are_both_kept(live_server):
    """Two people tag the same customer at the same moment: "vip" and "late payer" both stay
    beside the tag it had."""
    made = _setup(live_server, lambda org: {"id": make_customer(org, tags=["new"]).id})
    url = f"{live_server.url}/api/crm/customers/{made['id']}"

    def tag(token: dict, name: str) -> Callable[[], requests.Response]:
        return lambda: requests.patch(url, json={"add_tags": [name]}, headers=token,
                                      timeout=TIMEOUT)

    answers = _at_once(live_server, made["org_id"], Customer, made["id"],
                       tag(made["tokens"][0], "vip"), tag(made["tokens"][1], "late payer"))

    assert [answer.status_code for answer in answers] == [200, 200], [a.text for a in answers]
    with live_server.transaction(made["org_id"]):
        assert set(db.session.get(Customer, made["id"]).tags) == {"new", "vip", "late payer"}


def test_two_assignments_with_the_same_if_match_one_wins_the_other_is_412(live_server):
    """Two managers assign one conversation at once, each to themself: one is assigned, the
    other hears 412 naming them."""
    def build(org: Organization) -> dict:
        return {"id": make_conversation(make_profile(org, "sandbox")).id}

    made = _setup(live_server, build)
    url = f"{live_server.url}/api/whatsapp/conversations/{made['id']}/assign"

    def assign(token: dict, user_id: int) -> Callable[[], requests.Response]:
        return lambda: requests.post(url, json={"assignee_id": user_id}, timeout=TIMEOUT,
                                     headers={**token, "If-Match": '"1"'})

    answers = _at_once(live_server, made["org_id"], Conversation, made["id"],
                       assign(made["tokens"][0], made["admin_id"]),
                       assign(made["tokens"][1], made["manager_id"]))

    assert sorted(answer.status_code for answer in answers) == [200, 412], [
        answer.text for answer in answers]
    winner = next(answer for answer in answers if answer.status_code == 200).json()
    loser = next(answer for answer in answers if answer.status_code == 412).json()
    assert loser["current"]["assigned_user_id"] == winner["assigned_user_id"]
    with live_server.transaction(made["org_id"]):
        stored = db.session.get(Conversation, made["id"])
        assert (stored.assigned_user_id, stored.version) == (winner["assigned_user_id"], 2)
