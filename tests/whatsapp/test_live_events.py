"""Live inbox events: after each commit the subscribers of crm/whatsapp/live.py emit the
architecture's Socket.IO events (newMessage, messageSent, messageStatus, messageDeleted,
conversationAssigned, ...) with rendered fragments and where they go, only to those who may see
the conversation. Swaps are applied here to real pages the way the glue script applies them,
and one test listens on real sockets of a live server."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
from bs4 import BeautifulSoup
from flask_login import login_user

from crm import realtime
from crm.extensions import db, socketio
from crm.foundation.models import Organization, User
from crm.models import utcnow
from crm.realtime import emit_to_org, user_room
from crm.tenancy import organization_context
from crm.transaction import commit, rollback
from crm.whatsapp import live, profiles, sandbox, services
from crm.whatsapp.channels.base import InboundMessage, StatusUpdate
from crm.whatsapp.models import Conversation, Message
from tests.factories import login, make_org, make_user, run_jobs
from tests.live import Account
from tests.whatsapp.factories import (
    close_queue,
    make_conversation,
    make_message,
    make_profile,
)

WATCH_LEVELS = ("read", "write")


@pytest.fixture
def org():
    return make_org(language="en")


@pytest.fixture
def org_id(org) -> int:
    """The organization's id: a commit expires `org`, which only its own context can reload."""
    return org.id


@pytest.fixture
def emitted(monkeypatch) -> list[tuple[str, dict, str]]:
    """Every emit of the test, as (event, data, room), instead of sending it; every room has
    someone in it (test_nobody_listening_costs_no_rendering checks the opposite)."""
    calls: list[tuple[str, dict, str]] = []
    monkeypatch.setattr(socketio, "emit",
                        lambda event, data, to=None, **_kwargs: calls.append((event, data, to)))
    monkeypatch.setattr(live, "occupied", lambda rooms: set(rooms))
    return calls


@pytest.fixture
def profile(org):
    return make_profile(org, "sandbox", display_name="Shop")


@dataclass(frozen=True)
class Written:
    """What the tests need of a stored message, as plain values that outlive commits."""

    id: int
    conversation_id: int
    provider_message_id: str | None


def _watch_rooms(org_id: int) -> set[str]:
    return {live.watch_room(org_id, language, level)
            for language in ("ar", "en") for level in WATCH_LEVELS}


@contextmanager
def committed(org_id: int) -> Iterator[None]:
    """Run a block as the organization and commit it, which delivers its events."""
    with organization_context(org_id):
        yield
        commit()


def _customer_writes(org_id: int, profile, text: str = "Hello", phone="+966501112233",
                     name="Sara") -> Written:
    """A sandbox customer's message, committed (so its subscribers run)."""
    with committed(org_id):
        message = sandbox.customer_sends(profile, phone, name, text)
        return Written(message.id, message.conversation_id, message.provider_message_id)


def _user(org, role: str, language: str | None = None) -> tuple[int, str]:
    user = make_user(org, role, language=language)
    return user.id, user.full_name


def _get(model, org_id: int, object_id: int):
    with organization_context(org_id):
        return db.session.get(model, object_id, populate_existing=True)


def _by_room(emitted, event: str) -> dict[str, dict]:
    return {room: data for name, data, room in emitted if name == event}


def _html(data: dict) -> str:
    return "".join(swap["html"] for swap in data["swaps"])


def apply_swaps(page: BeautifulSoup, swaps: list[dict]) -> None:
    """Swap fragments into a parsed page as static/js/app.js does with htmx."""
    for swap in swaps:
        target = page.select_one(swap["target"])
        if target is None:
            continue
        nodes = [node for node in BeautifulSoup(swap["html"], "html.parser").contents
                 if getattr(node, "name", None)]
        style = swap["swap"]
        if style == "delete":
            target.decompose()
        elif style == "outerHTML":
            for node in nodes:
                target.insert_before(node)
            target.decompose()
        elif style == "beforeend":
            for node in nodes:
                target.append(node)
        elif style == "afterbegin":
            for node in reversed(nodes):
                target.insert(0, node)
        else:
            raise AssertionError(f"unexpected swap style {style}")


def _page(client, url: str) -> BeautifulSoup:
    response = client.get(url)
    assert response.status_code == 200
    return BeautifulSoup(response.get_data(as_text=True), "html.parser")


def _row_ids(page: BeautifulSoup) -> list[str]:
    return [row["id"] for row in page.select("#conversation-rows > .conversation-row")]


# -- who hears what ------------------------------------------------------------------------------

def test_a_new_message_reaches_the_inbox_rooms_and_no_agent(org, org_id, profile, emitted):
    """An unassigned conversation's message goes to the inbox rooms (every language and access
    level) and the agents' queue rooms, never to an agent's own room."""
    agent_id, _name = _user(org, "agent")

    message = _customer_writes(org_id, profile, "Is the shop open?")

    rooms = _by_room(emitted, "newMessage")
    assert set(rooms) == _watch_rooms(org_id) | {live.queue_room(org_id, language)
                                                 for language in ("ar", "en")}
    assert user_room(agent_id) not in {room for _event, _data, room in emitted}
    data = rooms[live.watch_room(org_id, "en", "write")]
    assert data["conversation_id"] == message.conversation_id
    assert data["message_id"] == message.id
    assert "Is the shop open?" in _html(data)
    assert data["markAsRead"] == {"selector": f"#thread-{message.conversation_id}-messages",
                                  "conversation_id": message.conversation_id}
    assert "markAsRead" not in rooms[live.watch_room(org_id, "en", "read")]


def test_nobody_listening_costs_no_rendering(org_id, profile, monkeypatch):
    """Fragments are rendered only for rooms someone has a page open in: none at all when
    nobody does, one language when only English readers are in."""
    calls, rendered = [], []
    monkeypatch.setattr(socketio, "emit",
                        lambda event, data, to=None, **_kwargs: calls.append((event, to)))
    real_render = live.render_bubble
    monkeypatch.setattr(live, "render_bubble",
                        lambda *args: rendered.append(args) or real_render(*args))

    _customer_writes(org_id, profile, "Anyone there?")
    assert (calls, rendered) == ([], [])

    english_writers = live.watch_room(org_id, "en", "write")
    realtime.arrive(org_id, 1, "a-socket-id", [english_writers])
    _customer_writes(org_id, profile, "Hello?")
    assert calls == [("newMessage", english_writers)]
    assert len(rendered) == 1


def test_an_assigned_agent_hears_their_conversation_and_no_other_agent_does(
        org, org_id, profile, emitted):
    """Once assigned, the agent's own room gets the conversation's events; a colleague's never
    does, whether the message comes in or goes out."""
    (agent_id, _name), (colleague_id, _other) = _user(org, "agent"), _user(org, "agent")
    first = _customer_writes(org_id, profile)
    with committed(org_id):
        services.assign_conversation(db.session.get(Conversation, first.conversation_id),
                                     agent_id, org.admin)
    emitted.clear()

    _customer_writes(org_id, profile, "Second question")
    with committed(org_id):
        services.send_text(db.session.get(Conversation, first.conversation_id),
                           db.session.get(User, agent_id), "An answer")

    rooms = {room for _event, _data, room in emitted}
    assert user_room(agent_id) in rooms
    assert user_room(colleague_id) not in rooms
    assert rooms - {user_room(agent_id)} <= _watch_rooms(org_id)
    assert "Second question" in _html(_by_room(emitted, "newMessage")[user_room(agent_id)])


def test_a_transfer_takes_the_conversation_off_the_previous_agents_page(org, org_id, profile,
                                                                        emitted):
    """Agent A's room gets only a notice and the row's removal (nothing of the conversation);
    agent B's room gets the row; managers see the new assignee."""
    (agent_a, _name_a), (agent_b, name_b) = _user(org, "agent"), _user(org, "agent")
    first = _customer_writes(org_id, profile, "Private words", name="Nadia")
    with committed(org_id):
        services.assign_conversation(db.session.get(Conversation, first.conversation_id),
                                     agent_a, org.admin)
    emitted.clear()

    with committed(org_id):
        services.assign_conversation(db.session.get(Conversation, first.conversation_id),
                                     agent_b, org.admin)

    rooms = _by_room(emitted, "conversationAssigned")
    withdrawn = rooms[user_room(agent_a)]
    assert [swap["swap"] for swap in withdrawn["swaps"]] == ["delete", "outerHTML"]
    assert "Nadia" not in _html(withdrawn)
    assert "Private words" not in _html(withdrawn)
    assert "assigned to someone else" in _html(withdrawn)
    assert "Nadia" in _html(rooms[user_room(agent_b)])
    assert name_b in _html(rooms[live.watch_room(org_id, "en", "write")])


def test_read_only_members_get_fragments_without_actions(org_id, profile, emitted):
    """The read room's bubble has no actions and a failed message no Retry; the write room's
    have them."""
    first = _customer_writes(org_id, profile)
    sent = make_message(_get(Conversation, org_id, first.conversation_id), "out",
                        body="Will fail")
    provider_id = sent.provider_message_id
    emitted.clear()
    with committed(org_id):  # as the provider's status webhook says it failed
        services.apply_status(profile, StatusUpdate(
            provider_message_id=provider_id, status="failed", timestamp=utcnow(),
            error_code="131047", error_message="Re-engagement message"))

    rooms = _by_room(emitted, "messageStatus")
    writable = _html(rooms[live.watch_room(org_id, "en", "write")])
    readable = _html(rooms[live.watch_room(org_id, "en", "read")])
    assert "Retry" in writable
    assert "message-menu" in writable
    assert "Retry" not in readable
    assert "message-menu" not in readable
    assert "More than 24 hours have passed" in readable


def test_each_language_room_gets_its_language(org, org_id, profile, emitted):
    """Fragments are rendered once per language: the Arabic room reads Arabic."""
    first = _customer_writes(org_id, profile)
    emitted.clear()
    with committed(org_id):
        services.set_status(db.session.get(Conversation, first.conversation_id), "pending",
                            org.admin)

    rooms = _by_room(emitted, "conversationUpdated")
    assert ">Status<" in _html(rooms[live.watch_room(org_id, "en", "write")])
    assert ">الحالة<" in _html(rooms[live.watch_room(org_id, "ar", "write")])


def test_a_rolled_back_change_announces_nothing(org_id, profile, emitted):
    with organization_context(org_id):
        sandbox.customer_sends(profile, "+966501112233", "Sara", "Never stored")
        rollback()
        commit()

    assert emitted == []


def test_a_reaction_updates_its_message_and_adds_no_bubble(org_id, profile, emitted):
    """A reaction is shown on the message it reacts to (messageUpdated), not as a message."""
    first = _customer_writes(org_id, profile, "Photo please")
    emitted.clear()
    with committed(org_id):
        services.receive_inbound(profile, InboundMessage(
            provider_message_id="sandbox.reaction-1", type="reaction", timestamp=utcnow(),
            contact_phone="+966501112233", body="❤️",
            content={"message_id": first.provider_message_id, "emoji": "❤️"}))

    assert "newMessage" not in {event for event, _data, _room in emitted}
    updated = _by_room(emitted, "messageUpdated")[live.watch_room(org_id, "en", "write")]
    assert [swap["target"] for swap in updated["swaps"]] == [f"#message-{first.id}"]
    assert "❤️" in _html(updated)


# -- what the swaps do to a page ---------------------------------------------------------------

def test_a_new_message_joins_the_open_thread_once_and_its_row_moves_to_the_top(
        client, org, org_id, profile, emitted):
    """Applied to a manager's open page: the bubble is appended to the thread (and not again
    when the event repeats), the row moves to the top with its new preview."""
    login(client, make_user(org, "manager", language="en"))
    first = _customer_writes(org_id, profile, "First")
    with organization_context(org_id):
        other_id = make_conversation(profile, contact_name="Someone else").id
    page = _page(client, f"/inbox/conversations/{first.conversation_id}")
    assert _row_ids(page)[0] == f"conversation-row-{other_id}"
    emitted.clear()

    message = _customer_writes(org_id, profile, "Second")
    data = _by_room(emitted, "newMessage")[live.watch_room(org_id, "en", "write")]
    apply_swaps(page, data["swaps"])
    apply_swaps(page, data["swaps"])  # delivered twice: still one bubble, one row

    thread = page.select_one(f"#thread-{first.conversation_id}-messages")
    assert [a["id"] for a in thread.select("article")] == [f"message-{first.id}",
                                                             f"message-{message.id}"]
    assert _row_ids(page) == [f"conversation-row-{first.conversation_id}",
                              f"conversation-row-{other_id}"]
    assert "Second" in page.select_one(f"#conversation-row-{first.conversation_id}").get_text()
    assert page.select_one(data["markAsRead"]["selector"]) is not None


def test_rows_go_only_into_lists_whose_filters_they_match(client, org, org_id, profile,
                                                          emitted):
    """A new message's row is not added to a list of resolved conversations nor to another
    number's list; a status change takes it out of a list it no longer matches."""
    manager = make_user(org, "manager", language="en")
    manager_id = manager.id
    login(client, manager)
    other_number_id = make_profile(org, "sandbox").id
    resolved_list = _page(client, "/inbox?status=resolved")
    other_list = _page(client, f"/inbox?profile={other_number_id}")
    open_list = _page(client, "/inbox?status=open")

    message = _customer_writes(org_id, profile)
    data = _by_room(emitted, "newMessage")[live.watch_room(org_id, "en", "write")]
    for page in (resolved_list, other_list, open_list):
        apply_swaps(page, data["swaps"])
    assert _row_ids(resolved_list) == []
    assert _row_ids(other_list) == []
    assert _row_ids(open_list) == [f"conversation-row-{message.conversation_id}"]

    emitted.clear()
    with committed(org_id):
        services.set_status(db.session.get(Conversation, message.conversation_id), "resolved",
                            db.session.get(User, manager_id))
    data = _by_room(emitted, "conversationUpdated")[live.watch_room(org_id, "en", "write")]
    apply_swaps(open_list, data["swaps"])
    assert _row_ids(open_list) == []


def test_an_agents_list_gains_a_conversation_assigned_to_them(client, org, org_id, profile,
                                                              emitted):
    """The agent's list (always "mine") gets the row when the conversation becomes theirs."""
    agent = make_user(org, "agent", language="en")
    agent_id = agent.id
    login(client, agent)
    message = _customer_writes(org_id, profile)
    page = _page(client, "/inbox")
    assert _row_ids(page) == []
    emitted.clear()

    with committed(org_id):
        services.assign_conversation(db.session.get(Conversation, message.conversation_id),
                                     agent_id, org.admin)

    apply_swaps(page, _by_room(emitted, "conversationAssigned")[user_room(agent_id)]["swaps"])
    assert _row_ids(page) == [f"conversation-row-{message.conversation_id}"]


def test_a_sent_message_gets_its_ticks_live(app, client, org, org_id, profile, emitted):
    """The sender's queued bubble is replaced when it is sent, then its ticks move on as the
    customer's phone receives and reads it."""
    login(client, org.admin)
    first = _customer_writes(org_id, profile)
    response = client.post(f"/inbox/conversations/{first.conversation_id}/messages",
                           data={"text": "On its way"}, headers={"HX-Request": "true"})
    assert response.status_code == 200
    page = _page(client, f"/inbox/conversations/{first.conversation_id}")
    [bubble] = page.select("article.bubble-out")
    assert bubble.select_one(".ticks.pending")
    emitted.clear()

    run_jobs(app, queues=("whatsapp",))
    with committed(org_id):
        sandbox.customer_reads(db.session.get(Conversation, first.conversation_id))

    events = [(event, data) for event, data, room in emitted
              if room == live.watch_room(org_id, "en", "write")]
    # Sent once (the whole bubble, its ticks included), then each move of its ticks.
    assert [event for event, _data in events] == [
        "messageSent", "messageStatus", "messageStatus"]
    assert [data["status"] for _event, data in events] == ["sent", "delivered", "read"]
    for _event, data in events:
        apply_swaps(page, data["swaps"])
    [bubble] = page.select("article.bubble-out")
    assert bubble.select_one(".ticks.read")
    assert not bubble.select_one(".ticks.pending")


def test_a_deleted_message_is_replaced_where_it_is_shown(client, org, org_id, profile,
                                                         emitted):
    login(client, org.admin)
    first = _customer_writes(org_id, profile)
    sent_id = make_message(_get(Conversation, org_id, first.conversation_id), "out",
                           body="Oops").id
    page = _page(client, f"/inbox/conversations/{first.conversation_id}")
    emitted.clear()

    with committed(org_id):
        services.delete_message(db.session.get(Message, sent_id), org.admin)

    data = _by_room(emitted, "messageDeleted")[live.watch_room(org_id, "en", "write")]
    apply_swaps(page, data["swaps"])
    assert "Oops" not in page.select_one(f"#message-{sent_id}").get_text()
    assert "This message was deleted." in page.select_one(f"#message-{sent_id}").get_text()


# -- rooms and the client's markAsRead -----------------------------------------------------------

def test_agents_join_the_queue_room_and_the_others_an_inbox_room(app, org, org_id):
    """Agents hear their conversations in their own room and the unassigned queue in its
    room; the others join the room of their language and access level."""
    cases = [(make_user(org, role, language="ar"), rooms)
             for role, rooms in (("agent", [live.queue_room(org_id, "ar")]),
                                 ("manager", [live.watch_room(org_id, "ar", "write")]),
                                 ("member", [live.watch_room(org_id, "ar", "read")]))]
    cases.append((org.admin, [live.watch_room(org_id, "en", "write")]))
    for user, rooms in cases:
        # A socket connects in an app context of its own (so its own locale), with a request.
        with app.app_context(), organization_context(org_id), app.test_request_context():
            login_user(user)
            assert live.inbox_rooms(user) == rooms


def test_the_app_hears_mark_as_read_from_the_pages(app):
    """The app's Socket.IO server handles markAsRead, whichever app of the process imported
    the module first (tests and workers create several)."""
    assert socketio.server.handlers["/"]["markAsRead"]


def _mark_as_read(app, org_id: int, user_id: int, data) -> None:
    """Run the markAsRead socket handler as the user, in a request context like a socket's."""
    with organization_context(org_id):
        user = db.session.get(User, user_id)
    with app.test_request_context():
        login_user(user)
        live.mark_as_read(data)


def test_mark_as_read_from_the_page_clears_the_unread_count(app, org, org_id, profile):
    """The assigned agent's open page reads the conversation; another agent's, a member's or a
    malformed request changes nothing."""
    (agent, _a), (colleague, _c), (member, _m) = (_user(org, "agent"), _user(org, "agent"),
                                                  _user(org, "member"))
    first = _customer_writes(org_id, profile)
    with committed(org_id):
        services.assign_conversation(db.session.get(Conversation, first.conversation_id),
                                     agent, org.admin)
    conversation_id = first.conversation_id

    for user_id, data in ((colleague, {"conversation_id": conversation_id}),
                          (member, {"conversation_id": conversation_id}),
                          (agent, {"conversation_id": str(conversation_id)}),
                          (agent, {"conversation_id": True}), (agent, None)):
        _mark_as_read(app, org_id, user_id, data)
        assert _get(Conversation, org_id, conversation_id).unread_count == 1

    _mark_as_read(app, org_id, agent, {"conversation_id": conversation_id})
    assert _get(Conversation, org_id, conversation_id).unread_count == 0


# -- real sockets ---------------------------------------------------------------------------

@pytest.mark.live
def test_sockets_hear_only_conversations_they_may_see(live_server):
    """On a live server: a manager's socket hears a customer's message, an agent's does not
    until the conversation is assigned to them (the queue closed to agents, the number not
    auto-assigning)."""
    admin = live_server.make_account()
    with live_server.transaction(admin.organization_id):
        org = db.session.get(Organization, admin.organization_id)
        manager, agent = make_user(org, "manager"), make_user(org, "agent")
        profile_id = make_profile(org, "sandbox", auto_assign=False).id
        close_queue(org)
        accounts = [Account(org.id, user.id, user.email) for user in (manager, agent)]
    manager_account, agent_account = accounts

    def customer_writes(text: str) -> int:
        with live_server.transaction(admin.organization_id):
            profile = profiles.access_profile(profile_id)
            return sandbox.customer_sends(profile, "+966501112233", "Sara", text).conversation_id

    with (live_server.socket(live_server.session_cookie(manager_account)) as manager_socket,
          live_server.socket(live_server.session_cookie(agent_account)) as agent_socket):
        conversation_id = customer_writes("Before assignment")
        _wait_for_message(manager_socket, "Before assignment")
        with live_server.transaction(admin.organization_id):
            emit_to_org("sentinel", {"n": 1})  # after everything emitted before it
        agent_socket.wait_for("sentinel", {"n": 1})
        assert [event for event, _data in agent_socket.events] == ["sentinel"]

        with live_server.transaction(admin.organization_id):
            conversation = db.session.get(Conversation, conversation_id)
            services.assign_conversation(conversation, agent_account.user_id,
                                         db.session.get(User, admin.user_id))
        customer_writes("After assignment")
        _wait_for_message(agent_socket, "After assignment")


def _wait_for_message(probe, text: str) -> None:
    from tests.live import wait_until

    wait_until(lambda: any(event == "newMessage" and text in _html(data)
                           for event, data in probe.events), f"newMessage {text!r}")


# -- the unassigned queue and presence -------------------------------------------------------

def test_the_queue_rooms_hear_unassigned_conversations_while_agents_may_take_them(
        org, org_id, profile, emitted):
    """A message in an unassigned conversation reaches the agents' queue rooms; once the admin
    closes the queue to agents, it does not."""
    _customer_writes(org_id, profile, "Anyone there?")
    assert "Anyone there?" in _html(_by_room(emitted, "newMessage")[live.queue_room(org_id,
                                                                                      "en")])
    emitted.clear()
    with committed(org_id):
        from crm.whatsapp import inbox
        inbox.update_inbox_settings(org.admin, False)

    _customer_writes(org_id, profile, "Hello?")

    assert not {room for _e, _d, room in emitted} & {live.queue_room(org_id, language)
                                                     for language in ("ar", "en")}


def test_a_taken_conversation_leaves_the_queue_of_the_other_agents(client, org, org_id, profile,
                                                                   emitted):
    """Taking a conversation sends the queue rooms the row's removal from unassigned lists,
    and the withdrawal notice for every page that shows it but the taker's: another agent's
    page loses it, the taker's keeps it."""
    (taker, _t), (other, _o) = _user(org, "agent"), _user(org, "agent")
    first = _customer_writes(org_id, profile, "Waiting", name="Nadia")
    login(client, _get(User, org_id, other))
    others_page = _page(client, f"/inbox/conversations/{first.conversation_id}"
                                "?scope=unassigned")
    login(client, _get(User, org_id, taker))
    takers_page = _page(client, f"/inbox/conversations/{first.conversation_id}"
                                "?scope=unassigned")
    emitted.clear()

    assert client.post(f"/inbox/conversations/{first.conversation_id}/take").status_code == 303

    swaps = _by_room(emitted, "conversationAssigned")[live.queue_room(org_id, "en")]["swaps"]
    assert "Nadia" not in _html({"swaps": swaps})
    for page in (others_page, takers_page):
        apply_swaps(page, swaps)
        assert _row_ids(page) == []
    assert "assigned to someone else" in others_page.text
    assert others_page.select_one(".thread") is None
    assert takers_page.select_one(".thread") is not None


def _socket_call(app, org_id: int, user_id: int, handler, data, sid: str) -> None:
    """Run a socket handler as the user, from socket `sid` (a request context like a
    socket's)."""
    from flask import request

    with organization_context(org_id):
        user = db.session.get(User, user_id, populate_existing=True)
        db.session.expunge(user)  # loaded here, as the socket's own request loads it
    with app.test_request_context():
        request.sid, request.namespace = sid, "/"
        login_user(user)
        handler(data)


def test_agents_in_one_conversation_see_each_other_and_who_types(app, org, org_id, profile,
                                                                 emitted, monkeypatch):
    """Each socket that shows the conversation gets the avatars of the others there; typing
    reaches the others only, and only from a socket that showed it; an agent who may not see
    the conversation joins nothing; closing a socket takes its avatar away."""
    from crm.whatsapp import presence

    monkeypatch.setattr(socketio.server, "enter_room", lambda *args, **kwargs: None)
    monkeypatch.setattr(socketio.server, "leave_room", lambda *args, **kwargs: None)
    with committed(org_id):  # the handlers end their own transactions
        ids = {name: make_user(org, "agent", full_name=name.title()).id
               for name in ("sara", "layla", "omar")}
        conversation_id = make_conversation(profile).id  # in the queue: agents may open it
    ids["outsider"] = ids["omar"]
    data = {"conversation_id": conversation_id}

    _socket_call(app, org_id, ids["sara"], presence.viewing, data, "sid-sara")
    _socket_call(app, org_id, ids["layla"], presence.viewing, data, "sid-layla")
    with organization_context(org_id):
        services.assign_conversation(db.session.get(Conversation, conversation_id),
                                     ids["layla"], db.session.get(User, org.admin.id))
        commit()
    _socket_call(app, org_id, ids["outsider"], presence.viewing, data, "sid-omar")

    avatars = {room: _html(payload) for name, payload, room in emitted if name == "presence"}
    assert "Layla" in avatars["sid-sara"]
    assert "Sara" not in avatars["sid-sara"]
    assert "sid-omar" not in avatars
    emitted.clear()
    _socket_call(app, org_id, ids["layla"], presence.typing, data, "sid-layla")
    _socket_call(app, org_id, ids["outsider"], presence.typing, data, "sid-omar")
    typing = {room: _html(payload) for name, payload, room in emitted if name == "typing"}
    assert list(typing) == ["sid-sara"]
    assert "<bdi>Layla</bdi> is typing…" in typing["sid-sara"]
    emitted.clear()
    with app.test_request_context():
        from flask import request

        request.namespace = "/"
        presence.forget("sid-layla")
    assert "Layla" not in _html(_by_room(emitted, "presence")["sid-sara"])
