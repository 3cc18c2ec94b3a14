"""Socket.IO on a live server: only logged-in sockets connect, and a socket hears only its own
organization, whether the event is emitted by the web process or by an RQ worker process.
Also the health endpoints that load balancers probe."""

from __future__ import annotations

import re

import pytest
import socketio as socketio_client

from crm.extensions import db, socketio
from crm.foundation import services
from crm.foundation.models import Organization, User
from crm.jobs import enqueue
from crm.realtime import emit_to_admins, emit_to_org, emit_to_user, message_channel
from crm.transaction import rollback
from tests.conftest import free_port
from tests.factories import make_user
from tests.live import Account, emit_to_current_organization, fresh_app

# -- sockets -----------------------------------------------------------------------------------


@pytest.mark.live
@pytest.mark.parametrize("cookie", [None, "session=forged.cookie.value"],
                         ids=["no cookie", "forged cookie"])
def test_a_socket_without_a_valid_session_is_refused(live_server, cookie):
    """A socket with no session, or a session cookie we did not sign, cannot connect."""
    with pytest.raises(socketio_client.exceptions.ConnectionError), live_server.socket(cookie):
        pass


@pytest.mark.live
def test_a_socket_of_a_signed_out_user_is_refused(live_server):
    """Once the user's sessions end (a password reset, removal), the old cookie no longer
    opens a socket."""
    account = live_server.make_account()
    cookie = live_server.session_cookie(account)
    with live_server.socket(cookie):
        pass  # the cookie works
    with live_server.transaction(account.organization_id):
        services.end_all_sessions(db.session.get(User, account.user_id))
    with pytest.raises(socketio_client.exceptions.ConnectionError), live_server.socket(cookie):
        pass


@pytest.mark.live
def test_ending_a_users_sessions_closes_their_open_sockets(live_server):
    """A removed or signed-out user's open page stops hearing the organization at once."""
    from crm.realtime import online_user_ids
    from tests.live import wait_until

    account = live_server.make_account()
    with live_server.socket(live_server.session_cookie(account)) as socket:
        with live_server.app.app_context():
            assert online_user_ids(account.organization_id) == {account.user_id}
        with live_server.transaction(account.organization_id):
            services.end_all_sessions(db.session.get(User, account.user_id))
        wait_until(lambda: not socket.client.connected, "the socket closing")
        with live_server.app.app_context():
            wait_until(lambda: not online_user_ids(account.organization_id),
                       "the user leaving the presence set")


def _member(live_server, account: Account, role: str) -> Account:
    """A committed colleague of `account` with `role`."""
    with live_server.transaction(account.organization_id):
        user = make_user(db.session.get(Organization, account.organization_id), role)
        return Account(account.organization_id, user.id, user.email)


def _conversation_event(org_id: int) -> None:
    """What the live inbox sends everyone who may see every conversation (Arabic, writable)."""
    from crm.whatsapp.live import watch_room

    socketio.emit("newMessage", {"org": org_id}, to=watch_room(org_id, "ar", "write"))


def _pairing_code(org_id: int) -> None:
    """What the WhatsApp supervisor sends the organization's admins while a number pairs."""
    emit_to_admins("qrCode", {"org": org_id}, org_id)


@pytest.mark.live
@pytest.mark.parametrize(("role", "new_role", "send", "event"), [
    ("manager", "agent", _conversation_event, "newMessage"),
    ("admin", "manager", _pairing_code, "qrCode"),
], ids=["demoted manager", "demoted admin"])
def test_a_role_change_disconnects_the_old_rooms(live_server, role, new_role, send, event):
    """A demoted manager stops hearing every conversation, a demoted admin the pairing codes:
    their open page is disconnected at once, and the page they open next joins only the
    rooms of the new role."""
    from tests.live import wait_until

    account = live_server.make_account()
    person = _member(live_server, account, role)
    org_id = account.organization_id
    with live_server.socket(live_server.session_cookie(person)) as before:
        with live_server.transaction(org_id):
            send(org_id)
        before.wait_for(event, {"org": org_id})
        with live_server.transaction(org_id):
            services.change_role(db.session.get(User, account.user_id),
                                 db.session.get(User, person.user_id), new_role)
        wait_until(lambda: not before.client.connected, "the socket closing")
    with live_server.socket(live_server.session_cookie(person)) as after:
        with live_server.transaction(org_id):
            send(org_id)
            emit_to_org("news", {"org": org_id})  # after it: had the first leaked, it came first
        after.wait_for("news", {"org": org_id})
    assert after.events == [("news", {"org": org_id})]


@pytest.mark.live
def test_signing_out_one_session_closes_only_its_sockets(live_server):
    """Signing another session out (the profile's "sign out") closes that session's open
    pages; the pages of the session that did it keep listening."""
    from tests.live import TIMEOUT, csrf_token, wait_until

    account = live_server.make_account()
    here = live_server.browser(account)
    with (live_server.socket(live_server.cookie_of(here)) as kept,
          live_server.socket(live_server.session_cookie(account)) as ended):
        page = here.get(f"{live_server.url}/profile", timeout=TIMEOUT).text
        [other] = re.findall(r'action="/profile/sessions/(\d+)/end"', page)
        answer = here.post(f"{live_server.url}/profile/sessions/{other}/end",
                           data={"csrf_token": csrf_token(page)}, allow_redirects=False,
                           timeout=TIMEOUT)
        assert answer.status_code == 303
        wait_until(lambda: not ended.client.connected, "the ended session's socket closing")
        with live_server.transaction(account.organization_id):
            emit_to_org("news", {"still": "here"})
        kept.wait_for("news", {"still": "here"})
        assert kept.client.connected


@pytest.mark.live
def test_a_room_counts_as_occupied_while_an_open_page_is_in_it(live_server):
    """Rooms a socket joined are occupied until it closes (events for a room nobody is in are
    not rendered); a room nobody joined never is."""
    from crm.realtime import occupied, org_room, user_room
    from tests.live import wait_until

    account = live_server.make_account()
    rooms = {org_room(account.organization_id), user_room(account.user_id)}
    with live_server.app.app_context():
        assert occupied(rooms) == set()
    with live_server.socket(live_server.session_cookie(account)):
        with live_server.app.app_context():
            assert occupied([*rooms, user_room(account.user_id + 1)]) == rooms
        with live_server.transaction(account.organization_id):  # the server closes the socket
            services.end_all_sessions(db.session.get(User, account.user_id))
        with live_server.app.app_context():
            wait_until(lambda: not occupied(rooms), "the rooms emptying")


@pytest.mark.live
def test_a_websocket_opened_by_another_site_is_refused(live_server):
    """A page of another origin cannot open a websocket with the user's cookie (browsers
    apply no CORS to websockets); our own pages can, and hear their organization on it."""
    account = live_server.make_account()
    cookie = live_server.session_cookie(account)
    with live_server.socket(cookie, origin=live_server.url, transport="websocket") as socket:
        with live_server.transaction(account.organization_id):
            emit_to_org("news", {"over": "websocket"})
        socket.wait_for("news", {"over": "websocket"})  # our own pages may
    with (pytest.raises(socketio_client.exceptions.ConnectionError),
          live_server.socket(cookie, origin="http://evil.example", transport="websocket")):
        pass


@pytest.mark.live
def test_a_socket_hears_only_its_own_organization(live_server):
    """An event emitted to organization B never reaches A's socket; A's event does."""
    a, b = live_server.make_account(), live_server.make_account()
    with (live_server.socket(live_server.session_cookie(a)) as socket_a,
          live_server.socket(live_server.session_cookie(b)) as socket_b):
        for account in (b, a):  # B's first: had it leaked, it would reach A before A's own
            with live_server.transaction(account.organization_id):
                emit_to_org("news", {"org": account.organization_id})
        socket_a.wait_for("news", {"org": a.organization_id})
        socket_b.wait_for("news", {"org": b.organization_id})
    assert socket_a.events == [("news", {"org": a.organization_id})]


@pytest.mark.live
def test_a_socket_hears_its_user_room_only_for_its_user(live_server):
    """An event for one user reaches that user's socket, not a colleague's."""
    account = live_server.make_account()
    with live_server.transaction(account.organization_id):
        user = make_user(db.session.get(Organization, account.organization_id), "agent")
        colleague = Account(account.organization_id, user.id, user.email)
    with (live_server.socket(live_server.session_cookie(account)) as mine,
          live_server.socket(live_server.session_cookie(colleague)) as theirs):
        for user_id in (account.user_id, colleague.user_id):
            with live_server.transaction(account.organization_id):
                emit_to_user("note", {"user": user_id}, user_id)
        mine.wait_for("note", {"user": account.user_id})
        theirs.wait_for("note", {"user": colleague.user_id})
    assert mine.events == [("note", {"user": account.user_id})]
    assert theirs.events == [("note", {"user": colleague.user_id})]


@pytest.mark.live
def test_an_event_of_a_rolled_back_transaction_is_never_sent(live_server):
    """Emits wait for the commit: a rolled-back transaction announces nothing."""
    account = live_server.make_account()
    with live_server.socket(live_server.session_cookie(account)) as socket:
        with live_server.transaction(account.organization_id):
            emit_to_org("news", {"kept": False})
            rollback()
            emit_to_org("news", {"kept": True})
        socket.wait_for("news", {"kept": True})
    assert socket.events == [("news", {"kept": True})]


@pytest.mark.live
def test_events_emitted_by_a_worker_process_reach_only_their_organization(live_server):
    """A job run by `crm worker` in another process emits as the organization that enqueued it;
    A's socket gets A's event and never B's."""
    a, b = live_server.make_account(), live_server.make_account()
    with (live_server.socket(live_server.session_cookie(a)) as socket_a,
          live_server.socket(live_server.session_cookie(b)) as socket_b):
        for account in (b, a):  # one queue, run in order: B's job first
            with live_server.transaction(account.organization_id):
                enqueue(emit_to_current_organization, "news", {"org": account.organization_id})
        worker = live_server.run_worker()
        assert worker.returncode == 0, worker.stderr
        socket_a.wait_for("news", {"org": a.organization_id})
        socket_b.wait_for("news", {"org": b.organization_id})
    assert socket_a.events == [("news", {"org": a.organization_id})]


def test_deployments_on_different_redis_databases_use_different_channels():
    """Redis pub/sub ignores database numbers, so the channel carries the database: two
    deployments sharing a Redis server never hear each other's emits."""
    assert message_channel("redis://host:6379/1") != message_channel("redis://host:6379/2")
    assert message_channel("redis://host:6379") == message_channel("redis://host:6379/0")


# -- health ------------------------------------------------------------------------------------

def test_healthz_answers_while_the_process_is_up(client):
    """/healthz answers 200 without touching the database or Redis."""
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_readyz_answers_200_when_database_and_redis_answer(client):
    """/readyz checks the database and Redis and says both are fine."""
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok",
                                   "checks": {"database": "ok", "redis": "ok"}}


def test_readyz_answers_503_when_redis_is_unreachable(app):
    """With Redis unreachable, /readyz answers 503 and names Redis, so the load balancer stops
    sending traffic."""
    settings = {key: app.config[key] for key in
                ("TESTING", "SECRET_KEY", "DATABASE_URL", "MIGRATION_DATABASE_URL",
                 "RATELIMIT_STORAGE_URI", "INSTANCE_PATH")}
    settings["REDIS_URL"] = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    with fresh_app(settings) as broken:
        response = broken.test_client().get("/readyz")
    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "unavailable"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["redis"].startswith("error")
