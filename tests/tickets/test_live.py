"""Tickets, live: after each commit crm/tickets/live.py emits ticketCreated, ticketUpdated,
ticketAssigned and commentAdded with rendered fragments, only to those who may see the ticket
(agents only their own). Swaps are applied to real pages the way the glue script does."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from bs4 import BeautifulSoup

from crm.extensions import db, socketio
from crm.foundation.models import User
from crm.realtime import user_room
from crm.tenancy import organization_context
from crm.tickets import live, services
from crm.tickets.models import Ticket
from crm.transaction import commit
from tests.factories import login, make_org, make_user
from tests.whatsapp.test_live_events import apply_swaps


@pytest.fixture
def org():
    return make_org(language="en")


@pytest.fixture
def org_id(org) -> int:
    return org.id


@pytest.fixture
def emitted(monkeypatch) -> list[tuple[str, dict, str]]:
    """Every emit of the test as (event, data, room); every room has someone in it."""
    calls: list[tuple[str, dict, str]] = []
    monkeypatch.setattr(socketio, "emit",
                        lambda event, data, to=None, **_kwargs: calls.append((event, data, to)))
    monkeypatch.setattr(live, "occupied", lambda rooms: set(rooms))
    return calls


@contextmanager
def committed(org_id: int) -> Iterator[None]:
    with organization_context(org_id):
        yield
        commit()


def watch_rooms(org_id: int) -> set[str]:
    return {live.watch_room(org_id, language, level)
            for language in ("ar", "en") for level in live.LEVELS}


def rooms_of(emitted, event: str) -> dict[str, dict]:
    return {room: data for name, data, room in emitted if name == event}


def html_of(data: dict) -> str:
    return "".join(swap["html"] for swap in data["swaps"])


def open_ticket(org_id: int, actor_id: int, **data) -> int:
    with committed(org_id):
        ticket = services.create_ticket(db.session.get(User, actor_id),
                                        {"subject": "Broken lamp", **data})
        return ticket.id


def test_a_new_ticket_reaches_the_ticket_rooms_and_no_agent(org, org_id, emitted):
    """An unassigned ticket goes to every language and level's room, never to an agent."""
    agent = make_user(org, "agent")
    agent_id = agent.id
    ticket_id = open_ticket(org_id, org.admin.id)

    rooms = rooms_of(emitted, "ticketCreated")
    assert set(rooms) == watch_rooms(org_id)
    assert user_room(agent_id) not in {room for _event, _data, room in emitted}
    data = rooms[live.watch_room(org_id, "en", "write")]
    assert data["ticket_id"] == ticket_id
    assert "Broken lamp" in html_of(data)
    targets = [swap["target"] for swap in data["swaps"]]
    assert any('data-view="all"' in target for target in targets)
    assert any('data-view="unassigned"' in target for target in targets)
    # Fragments follow each room's access, never the person whose change sent them.
    assert 'name="ticket_ids"' in html_of(data)
    assert 'name="ticket_ids"' not in html_of(rooms[live.watch_room(org_id, "en", "read")])


def test_an_agent_hears_only_their_own_tickets(org, org_id, emitted):
    """Assigned to an agent, the ticket's events reach their room; a colleague's never."""
    agent, colleague = make_user(org, "agent"), make_user(org, "agent")
    agent_id, colleague_id = agent.id, colleague.id
    ticket_id = open_ticket(org_id, org.admin.id, assignee_id=agent_id)
    with committed(org_id):
        services.add_comment(db.session.get(User, org.admin.id),
                             db.session.get(Ticket, ticket_id), "Internal detail", False)

    heard = {room for _event, _data, room in emitted}
    assert user_room(agent_id) in heard
    assert user_room(colleague_id) not in heard
    comment = rooms_of(emitted, "commentAdded")[user_room(agent_id)]
    assert "Internal detail" in html_of(comment)


def test_an_agent_who_loses_a_ticket_is_told_to_let_it_go(org, org_id, emitted):
    agent, other = make_user(org, "agent"), make_user(org, "agent")
    agent_id, other_id = agent.id, other.id
    ticket_id = open_ticket(org_id, org.admin.id, assignee_id=agent_id)
    emitted.clear()
    with committed(org_id):
        services.assign_ticket(db.session.get(User, org.admin.id),
                               db.session.get(Ticket, ticket_id), other_id)

    withdrawn = [data for event, data, room in emitted
                 if event == "ticketAssigned" and room == user_room(agent_id)]
    assert withdrawn
    assert {"target": f"#ticket-row-{ticket_id}", "html": "", "swap": "delete"} in \
        withdrawn[0]["swaps"]
    assert "Broken lamp" not in html_of(withdrawn[0])
    assert user_room(other_id) in {room for _e, _d, room in emitted}


def test_swaps_land_on_open_pages(client, org, org_id, emitted):
    """A ticket opened elsewhere joins an open list; a comment joins the open ticket's
    thread once, however often its event comes."""
    login(client, org.admin)
    first_id = open_ticket(org_id, org.admin.id)
    page = BeautifulSoup(client.get("/tickets/?view=all").get_data(as_text=True),
                         "html.parser")
    ticket_page = BeautifulSoup(client.get(f"/tickets/{first_id}").get_data(as_text=True),
                                "html.parser")
    emitted.clear()

    second_id = open_ticket(org_id, org.admin.id, subject="Second one")
    created = rooms_of(emitted, "ticketCreated")[live.watch_room(org_id, "ar", "write")]
    apply_swaps(page, created["swaps"])
    rows = [row["id"] for row in page.select("#ticket-rows > .ticket-row")]
    assert rows[0] == f"ticket-row-{second_id}"
    assert f"ticket-row-{first_id}" in rows

    with committed(org_id):
        services.add_comment(db.session.get(User, org.admin.id),
                             db.session.get(Ticket, first_id), "A note", False)
    added = rooms_of(emitted, "commentAdded")[live.watch_room(org_id, "ar", "write")]
    apply_swaps(ticket_page, added["swaps"])
    apply_swaps(ticket_page, added["swaps"])
    assert len(ticket_page.select(f"#ticket-{first_id}-comments > .comment")) == 1


def test_a_suggestion_reloads_the_conversations_open_panels(org, org_id, emitted, monkeypatch):
    """A customer's keyword makes the conversation's panels, and only those who may see the
    conversation (agents through the open queue), load their tickets section again (which now
    offers the ticket)."""
    from crm.tickets.services.suggestions import suggest
    from crm.whatsapp import live as whatsapp_live
    from tests.whatsapp.factories import make_conversation, make_profile

    monkeypatch.setattr(whatsapp_live, "occupied", lambda rooms: set(rooms))
    agent_id = make_user(org, "agent").id
    conversation_id = make_conversation(make_profile(org)).id
    with committed(org_id):
        suggest(conversation_id, 1, "عندي مشكلة في الطلب", None)

    rooms = rooms_of(emitted, "ticketSuggested")
    # An unassigned conversation: agents see it in the open queue (the inbox's default).
    assert set(rooms) == {whatsapp_live.watch_room(org_id, language, level)
                          for language in ("ar", "en") for level in ("read", "write")} | {
        whatsapp_live.queue_room(org_id, language) for language in ("ar", "en")}
    assert user_room(agent_id) not in rooms
    swap = rooms[whatsapp_live.watch_room(org_id, "ar", "write")]["swaps"][0]
    assert swap["target"] == f"#conversation-{conversation_id}-tickets"
    assert f'hx-get="/tickets/conversations/{conversation_id}"' in swap["html"]
    assert "مشكلة" not in swap["html"]  # the text itself is fetched by each reader
