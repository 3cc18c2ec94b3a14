"""The `web` channel: the supervisor holds each linked device's session, with neonize replaced at
its boundary by a fake that emits neonize's own events (tests/whatsapp/fake_neonize.py).

The supervisor works in threads of its own, so these tests run against the live server's
database (committed data, `@pytest.mark.live`); each makes its own organizations, and its web
profiles are deleted afterwards so later supervisors leave them alone.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from dataclasses import replace
from urllib.parse import urlsplit

import pytest
import requests
from flask_babel import force_locale, gettext
from neonize.events import ReceiptEv
from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import Message as E2EMessage
from sqlalchemy import select

from crm.crypto import decrypt_json, encrypt
from crm.extensions import db
from crm.foundation.models import Organization, User
from crm.whatsapp import media, profiles, services
from crm.whatsapp.channels.base import ChannelError, DeliveryUncertainError
from crm.whatsapp.channels.web import (
    WebChannel,
    commands_key,
    current_qr,
    failure_sentence,
    inbound_from_event,
    statuses_from_receipt,
    supervisor_running,
)
from crm.whatsapp.models import Message, WhatsAppProfile
from crm.whatsapp.supervisor import qr_data_url
from tests.conftest import ROOT
from tests.factories import make_user
from tests.foundation import arabic
from tests.live import Account, wait_until
from tests.whatsapp.factories import make_profile
from tests.whatsapp.fake_neonize import (
    FAST,
    FakeNetwork,
    RunningSupervisor,
    device_session,
    message_event,
    receipt_event,
    supervising,
    text,
)

CONTACT = "966501234567@s.whatsapp.net"
NO_NETWORK = "failed to dial whatsapp servers: dial tcp 157.240.1.53:443: i/o timeout"
VCARD = "BEGIN:VCARD\nFN:Omar\nitem1.TEL;waid=966511111111:+966 51 111 1111\nEND:VCARD"


@pytest.fixture
def network() -> FakeNetwork:
    return FakeNetwork()


@pytest.fixture
def web_profile(live_server):
    """Make a web profile on the live server: `web_profile(org_id, state, session=None)`."""
    made: list[tuple[int, int]] = []

    def make(org_id: int, state: str, session: bytes | None = None) -> int:
        with live_server.transaction(org_id):
            secrets = {"session": base64.b64encode(session).decode()} if session else None
            profile = make_profile(db.session.get(Organization, org_id), "web", state=state,
                                   secrets=secrets, phone_number=None)
            made.append((org_id, profile.id))
            return profile.id

    yield make
    for org_id, profile_id in made:
        with live_server.transaction(org_id):
            db.session.get(WhatsAppProfile, profile_id).is_deleted = True


@pytest.fixture
def connected(live_server, network, web_profile):
    """An organization whose paired number the supervisor has connected."""
    account = live_server.make_account()
    profile_id = web_profile(account.organization_id, "connected", device_session()[0])
    with supervising(live_server, network):
        client = network.client(profile_id)
        wait_for_state(live_server, account.organization_id, profile_id, "connected")
        yield account, profile_id, client


def profile_row(live_server, org_id: int, profile_id: int) -> dict:
    with live_server.transaction(org_id):
        profile = db.session.get(WhatsAppProfile, profile_id)
        return {"state": profile.state, "phone_number": profile.phone_number,
                "secrets": profile.secrets, "last_error": profile.last_error,
                "session": decrypt_json(profile.secrets).get("session")}


def wait_for_state(live_server, org_id: int, profile_id: int, state: str) -> dict:
    return wait_until(
        lambda: (row := profile_row(live_server, org_id, profile_id))["state"] == state and row,
        f"profile {profile_id} becoming {state}")


def admin_http(live_server, account: Account) -> requests.Session:
    """The admin's browser, as plain HTTP: logged in, asking for pages in the org's language."""
    http = requests.Session()
    name, _, value = live_server.session_cookie(account).partition("=")
    http.cookies.set(name, value, domain=urlsplit(live_server.url).hostname)
    return http


def get_page(http: requests.Session, live_server, path: str) -> str:
    answer = http.get(f"{live_server.url}{path}", timeout=10)
    assert answer.status_code == 200, answer.text[:500]
    return answer.text


def forget_profile(live_server, org_id: int, profile_id: int) -> None:
    """Delete a profile a test made, so later supervisors leave it alone."""
    with live_server.transaction(org_id):
        db.session.get(WhatsAppProfile, profile_id).is_deleted = True


def make_message(live_server, org_id: int, profile_id: int, *, direction: str = "out",
                 status: str = "sent", provider_id: str | None = None, body: str = "",
                 content: dict | None = None, reply_to_id: int | None = None,
                 type_: str = "text") -> int:
    with live_server.transaction(org_id):
        profile = db.session.get(WhatsAppProfile, profile_id)
        conversation, _created = services.conversation_for(profile, "+966501234567", None)
        message = Message(conversation_id=conversation.id, profile_id=profile_id,
                          direction=direction, type=type_, body=body, status=status,
                          provider_message_id=provider_id, content=content or {},
                          reply_to_id=reply_to_id)
        db.session.add(message)
        db.session.flush()
        return message.id


def message_row(live_server, org_id: int, message_id: int) -> dict:
    with live_server.transaction(org_id):
        message = db.session.get(Message, message_id)
        return {"status": message.status, "provider_message_id": message.provider_message_id,
                "delivered_at": message.delivered_at, "read_at": message.read_at}


def call_channel(live_server, org_id: int, message_id: int, action: str, *args):
    """Call the web channel for a message as a job would (in its organization)."""
    with live_server.transaction(org_id):
        message = db.session.get(Message, message_id)
        channel = WebChannel(message.conversation.profile)
        return getattr(channel, action)(message, *args)


# -- pairing -----------------------------------------------------------------------------------


@pytest.mark.live
def test_pairing_shows_the_qr_code_then_keeps_the_session_encrypted(live_server, network,
                                                                    web_profile):
    """A number being paired shows its QR code to its own organization's admins only; once
    the phone scans it, the number is connected, its phone number known, and the session
    stored encrypted (not readable in the row), in a file only we can read while it runs."""
    account, other = live_server.make_account(), live_server.make_account()
    with live_server.transaction(account.organization_id):
        agent = make_user(db.session.get(Organization, account.organization_id), "agent")
        agent_account = Account(account.organization_id, agent.id, agent.email)
    profile_id = web_profile(account.organization_id, "pairing")
    code = "2@pairing-code,noise-key,identity-key,adv-secret"
    with (live_server.socket(live_server.session_cookie(account)) as socket,
          live_server.socket(live_server.session_cookie(other)) as other_socket,
          live_server.socket(live_server.session_cookie(agent_account)) as agent_socket,
          supervising(live_server, network)):
        client = network.client(profile_id)
        assert stat.S_IMODE(client.session_path.stat().st_mode) == 0o600
        assert stat.S_IMODE(client.session_path.parent.stat().st_mode) == 0o700
        client.show_qr(code)
        socket.wait_for("qrCode", {"profile_id": profile_id, "qr_png_data_url": qr_data_url(code)})
        assert profile_row(live_server, account.organization_id, profile_id)["state"] == "pairing"
        with live_server.app.app_context():
            assert current_qr(profile_id) == qr_data_url(code)

        secret = client.pair("966500000001")
        socket.wait_for("clientReady", {"profile_id": profile_id, "phone_number": "+966500000001"})
        row = profile_row(live_server, account.organization_id, profile_id)
        assert (row["state"], row["phone_number"]) == ("connected", "+966500000001")
        assert secret in base64.b64decode(row["session"])
        assert secret not in row["secrets"]
        assert b"SQLite format 3" not in row["secrets"]
        with live_server.app.app_context():
            assert current_qr(profile_id) is None
    assert other_socket.events == []
    assert "qrCode" not in [event for event, _data in agent_socket.events]
    assert not client.session_path.exists()  # removed with the runner
    assert profile_row(live_server, account.organization_id, profile_id)["state"] == "disconnected"


@pytest.mark.live
def test_adding_a_linked_device_starts_pairing_in_the_same_action(live_server, network):
    """One press of «Add»: the number is pairing and its page waits for the QR code; the
    supervisor starts its client with no second action, and the QR code then shows."""
    account = live_server.make_account()
    http = admin_http(live_server, account)
    code = "2@one-press,noise-key,identity-key,adv-secret"
    with supervising(live_server, network):
        form = get_page(http, live_server, "/whatsapp/numbers")
        token = re.search(r'name="csrf_token" value="([^"]+)"', form).group(1)
        answer = http.post(f"{live_server.url}/whatsapp/numbers", timeout=10, data={
            "provider": "web", "display_name": "Front desk", "csrf_token": token})
        assert answer.status_code == 200, answer.text[:500]
        profile_id = int(answer.url.rsplit("/", 1)[1])
        try:
            assert arabic("Waiting for the QR code…") in answer.text
            assert profile_row(live_server, account.organization_id,
                               profile_id)["state"] == "pairing"
            network.client(profile_id).show_qr(code)
            state = get_page(http, live_server, f"/whatsapp/numbers/{profile_id}/state")
            assert f'src="{qr_data_url(code)}"' in state
        finally:
            forget_profile(live_server, account.organization_id, profile_id)


@pytest.mark.live
def test_without_the_supervisor_a_pairing_number_says_the_service_is_off(live_server,
                                                                        network, web_profile):
    """The supervisor says it runs (a heartbeat in Redis) while it runs; when it is stopped,
    a pairing number's page says the service is not running instead of waiting forever."""
    account = live_server.make_account()
    http = admin_http(live_server, account)
    profile_id = web_profile(account.organization_id, "pairing")
    stopped = arabic("The WhatsApp service for linked devices is not running, so this number "
                     "can neither pair nor send. Start it with “crm up” (or “crm whatsapp "
                     "supervise”).")
    with supervising(live_server, network):
        network.client(profile_id)
        with live_server.app.app_context():
            assert supervisor_running()
        page = get_page(http, live_server, f"/whatsapp/numbers/{profile_id}")
        assert stopped not in page
    with live_server.app.app_context():
        assert not supervisor_running()
    with live_server.transaction(account.organization_id):
        db.session.get(WhatsAppProfile, profile_id).state = "pairing"  # as if never started
    page = get_page(http, live_server, f"/whatsapp/numbers/{profile_id}")
    assert stopped in page
    assert arabic("Waiting for the QR code…") not in page


@pytest.mark.live
def test_no_network_while_pairing_is_said_in_arabic_and_tried_again(live_server, network,
                                                                   web_profile):
    """With no route to WhatsApp, the pairing number's page says so in a translated sentence
    (the Go error stays in the log) and pairing goes on; once the network is back the QR code
    shows and the sentence goes."""
    account = live_server.make_account()
    http = admin_http(live_server, account)
    profile_id = web_profile(account.organization_id, "pairing")
    network.fail_next(profile_id, 1_000, NO_NETWORK)
    sentence = arabic("Could not reach WhatsApp's servers. Check this server's internet "
                      "connection; Wasl keeps trying.")
    with supervising(live_server, network):
        wait_until(lambda: len(network.attempt_times[f"wasl-profile-{profile_id}"]) >= 3,
                   "three attempts to connect")
        row = profile_row(live_server, account.organization_id, profile_id)
        assert (row["state"], row["last_error"]) == ("pairing", NO_NETWORK)
        page = get_page(http, live_server, f"/whatsapp/numbers/{profile_id}")
        assert sentence in page
        assert "dial tcp" not in page
        assert "i/o timeout" not in page

        network.failures_left[f"wasl-profile-{profile_id}"] = 0
        network.client(profile_id).show_qr("2@back-online")
        wait_until(lambda: profile_row(live_server, account.organization_id,
                                       profile_id)["last_error"] is None,
                   "the failure cleared by the QR code")
        page = get_page(http, live_server, f"/whatsapp/numbers/{profile_id}")
        assert sentence not in page
        assert 'class="qr-code"' in page


@pytest.mark.live
def test_a_stored_session_resumes_without_a_qr_code(live_server, network, web_profile):
    """A paired number reconnects from its stored session (as after a restart): the client
    finds its device in the file, and no QR code is shown."""
    account = live_server.make_account()
    session, _secret = device_session()
    profile_id = web_profile(account.organization_id, "disconnected", session)
    with supervising(live_server, network):
        client = network.client(profile_id)
        wait_for_state(live_server, account.organization_id, profile_id, "connected")
        assert client.session_path.read_bytes() == session
        with live_server.app.app_context():
            assert current_qr(profile_id) is None


@pytest.mark.live
def test_a_pairing_nobody_finishes_is_given_up(live_server, network, web_profile):
    """When no new QR code comes for a while (nobody scanned), pairing stops and the number
    shows as disconnected, with nothing stored."""
    account = live_server.make_account()
    profile_id = web_profile(account.organization_id, "pairing")
    with supervising(live_server, network, replace(FAST, pairing=0.3)):
        client = network.client(profile_id)
        client.show_qr("2@abandoned")
        row = wait_for_state(live_server, account.organization_id, profile_id, "disconnected")
        assert row["last_error"] == "pairing_timeout"
        assert row["secrets"] is None
        wait_until(client.was_stopped.is_set, "the client stopping")


@pytest.mark.live
@pytest.mark.parametrize(("what_happens", "reason"), [
    (lambda client: client.fail_pairing("pair-device signature mismatch"),
     "pair-device signature mismatch"),
    (lambda client: client.replaced(), "stream_replaced"),
], ids=["pairing refused", "session taken over"])
def test_a_session_that_fails_for_good_is_stopped(live_server, network, web_profile,
                                                  what_happens, reason):
    """A refused pairing, or a session another connection took over, marks the number failed
    and stops its client for good (until someone connects it again)."""
    account = live_server.make_account()
    profile_id = web_profile(account.organization_id, "pairing")
    with supervising(live_server, network):
        client = network.client(profile_id)
        what_happens(client)
        row = wait_for_state(live_server, account.organization_id, profile_id, "failed")
        assert row["last_error"] == reason
        wait_until(client.was_stopped.is_set, "the client stopping")
        time.sleep(FAST.scan * 3)
    assert len([c for c in network.clients if c.client_id == client.client_id]) == 1


# -- messages and receipts -------------------------------------------------------------------


@pytest.mark.live
def test_a_message_in_is_stored_once_in_its_organization(live_server, connected):
    """A contact's message becomes a message of the number's organization, in a new
    conversation with that contact; the same event delivered twice is stored once."""
    account, profile_id, client = connected
    event = message_event(text("Is the shop open today?"), message_id="3AHELLO",
                          push_name="Sara")
    client.receive(event)
    client.receive(event)
    with live_server.transaction(account.organization_id):
        messages = db.session.scalars(
            select(Message).where(Message.profile_id == profile_id)).all()
        assert [(m.provider_message_id, m.direction, m.type, m.body, m.organization_id)
                for m in messages] == [("3AHELLO", "in", "text", "Is the shop open today?",
                                        account.organization_id)]
        conversation = messages[0].conversation
        assert (conversation.contact_phone, conversation.contact_name,
                conversation.unread_count) == ("+966501234567", "Sara", 1)


@pytest.mark.live
def test_receipts_move_a_sent_message_forward_and_never_back(live_server, connected):
    """Delivered then read ends read; read then a late delivered stays read (the late receipt
    only fills its time)."""
    account, profile_id, client = connected
    in_order = make_message(live_server, account.organization_id, profile_id,
                            provider_id="3EB0IN-ORDER")
    late = make_message(live_server, account.organization_id, profile_id,
                        provider_id="3EB0LATE")
    for kind, message_id in [(ReceiptEv.DELIVERED, "3EB0IN-ORDER"), (ReceiptEv.READ,
                             "3EB0IN-ORDER"), (ReceiptEv.READ, "3EB0LATE"),
                             (ReceiptEv.DELIVERED, "3EB0LATE")]:
        client.receipt(receipt_event(kind, message_id))
    for message_id in (in_order, late):
        row = message_row(live_server, account.organization_id, message_id)
        assert row["status"] == "read"
        assert row["delivered_at"] is not None
        assert row["read_at"] is not None


# -- the connection --------------------------------------------------------------------------


@pytest.mark.live
def test_a_failing_connection_is_tried_again_with_backoff(live_server, network, web_profile):
    """A connection that fails is tried again, each wait twice the last (capped), until it
    connects; a dropped link shows as disconnected until the client is back."""
    account = live_server.make_account()
    profile_id = web_profile(account.organization_id, "disconnected", device_session()[0])
    network.fail_next(profile_id, 3)
    with (live_server.socket(live_server.session_cookie(account)) as socket,
          supervising(live_server, network)):
        client = network.client(profile_id)
        row = wait_for_state(live_server, account.organization_id, profile_id, "connected")
        assert row["last_error"] is None
        attempts = network.attempt_times[client.client_id]
        assert len(attempts) == 4
        gaps = [later - earlier for earlier, later in itertools.pairwise(attempts)]
        assert all(gap >= 0.9 * min(FAST.backoff_base * 2 ** n, FAST.backoff_max)
                   for n, gap in enumerate(gaps)), gaps

        client.drop()
        socket.wait_for("clientDisconnected", {"profile_id": profile_id,
                                               "reason": "connection_lost"})
        client.reconnect()
        wait_for_state(live_server, account.organization_id, profile_id, "connected")


@pytest.mark.live
def test_two_supervisors_never_run_one_session(live_server, network, web_profile):
    """Two supervisors racing for a number: exactly one runs its client; when that one stops,
    the other takes the session over."""
    account = live_server.make_account()
    profile_id = web_profile(account.organization_id, "disconnected", device_session()[0])
    supervisors = {owner: RunningSupervisor(live_server, network, owner) for owner in "AB"}
    try:
        first = network.client(profile_id)
        time.sleep(FAST.scan * 5)  # both have scanned again and again
        made = [c.owner for c in network.clients if c.client_id == first.client_id]
        assert made == [first.owner]

        supervisors[first.owner].stop()
        second = wait_until(lambda: next((c for c in network.running(profile_id)
                                          if c.owner != first.owner), None),
                            "the other supervisor taking over")
        assert first.was_stopped.is_set()
        assert second.is_running
    finally:
        for running in supervisors.values():
            running.stop()


# -- commands ------------------------------------------------------------------------------


@pytest.mark.live
def test_a_send_goes_through_the_supervisor_once(live_server, connected):
    """The channel's send reaches the client once, quoting the message it answers, and
    returns WhatsApp's id; the supervisor also records it on the message."""
    account, profile_id, client = connected
    question = make_message(live_server, account.organization_id, profile_id, direction="in",
                            status="received", provider_id="3AQUESTION", body="Open today?")
    answer = make_message(live_server, account.organization_id, profile_id, status="sending",
                          body="Yes, until 9.", reply_to_id=question)
    provider_id = call_channel(live_server, account.organization_id, answer, "send")
    assert client.called("send") == [
        (CONTACT, "text", "Yes, until 9.", None, "", "", {"id": "3AQUESTION", "from_me": False,
                                                          "text": "Open today?"})]
    row = wait_until(lambda: (row := message_row(live_server, account.organization_id, answer))
                     ["provider_message_id"] == provider_id and row,
                     "the message recorded as sent")
    assert row["status"] == "sent"


@pytest.mark.live
def test_a_medium_is_sent_with_its_file(live_server, connected):
    """An image goes to the client with its bytes, type and caption; a missing file fails
    before anything is asked of WhatsApp."""
    account, profile_id, client = connected
    org_id = account.organization_id
    with live_server.app.app_context():
        (media.root() / str(org_id)).mkdir(parents=True, exist_ok=True)
        (media.root() / str(org_id) / "menu.png").write_bytes(b"\x89PNG menu")
    image = make_message(live_server, org_id, profile_id, type_="image", status="sending",
                         body="Today's menu", content={"path": f"{org_id}/menu.png",
                                                       "mime_type": "image/png"})
    missing = make_message(live_server, org_id, profile_id, type_="image", status="sending",
                           content={"path": f"{org_id}/gone.png", "mime_type": "image/png"})
    call_channel(live_server, org_id, image, "send")
    with pytest.raises(ChannelError) as refusal:
        call_channel(live_server, org_id, missing, "send")
    assert refusal.value.code == "no_media"
    assert client.called("send") == [(CONTACT, "image", "Today's menu", b"\x89PNG menu",
                                      "image/png", "", None)]


@pytest.mark.live
def test_read_edit_revoke_and_download_go_through_the_supervisor(live_server, connected):
    """Read receipts, edits, deletes for everyone and media downloads reach the client."""
    account, profile_id, client = connected
    org_id = account.organization_id
    inbound = make_message(live_server, org_id, profile_id, direction="in", status="received",
                           provider_id="3APHOTO", content={"media_id": "3APHOTO",
                                                           "mime_type": "image/jpeg",
                                                           "web_media": "CgA="})
    sent = make_message(live_server, org_id, profile_id, provider_id="3EB0SENT", body="Hi")
    call_channel(live_server, org_id, inbound, "mark_read")
    call_channel(live_server, org_id, sent, "edit", "Hello")
    call_channel(live_server, org_id, sent, "revoke")
    data, mime_type = call_channel(live_server, org_id, inbound, "download_media")
    assert (data, mime_type) == (b"\x89PNG fake image bytes", "image/jpeg")
    assert client.calls == [("mark_read", (CONTACT, ["3APHOTO"])),
                            ("edit", (CONTACT, "3EB0SENT", "Hello")),
                            ("revoke", (CONTACT, "3EB0SENT")),
                            ("download", (base64.b64decode("CgA="),))]


@pytest.mark.live
def test_a_send_with_no_session_running_fails_and_is_taken_back(live_server, network,
                                                                web_profile, monkeypatch):
    """With no supervisor holding the number, a send fails after the timeout (certainly not
    sent, so it may be retried) and its command is withdrawn: it can never go out later."""
    monkeypatch.setitem(live_server.app.config, "WHATSAPP_WEB_COMMAND_TIMEOUT", 0.3)
    account = live_server.make_account()
    profile_id = web_profile(account.organization_id, "failed")
    message_id = make_message(live_server, account.organization_id, profile_id,
                              status="sending", body="Anyone there?")
    with pytest.raises(ChannelError) as refusal:
        call_channel(live_server, account.organization_id, message_id, "send")
    assert refusal.value.code == "not_connected"
    assert live_server.app.extensions["crm.redis"].llen(commands_key(profile_id)) == 0


@pytest.mark.live
def test_a_send_answered_too_late_is_uncertain_then_settled(live_server, connected,
                                                            monkeypatch):
    """A send the session took but did not answer in time is uncertain (never resent); once
    WhatsApp answers, the supervisor names the message and it counts as sent."""
    monkeypatch.setitem(live_server.app.config, "WHATSAPP_WEB_COMMAND_TIMEOUT", 0.3)
    account, profile_id, client = connected
    client.send_delay = 1.0
    message_id = make_message(live_server, account.organization_id, profile_id,
                              status="unknown", body="Slow network")
    with pytest.raises(DeliveryUncertainError):
        call_channel(live_server, account.organization_id, message_id, "send")
    row = wait_until(lambda: (row := message_row(live_server, account.organization_id,
                                                 message_id))["status"] == "sent" and row,
                     "the uncertain message settled")
    assert row["provider_message_id"].startswith("3EB0")
    assert len(client.called("send")) == 1


@pytest.mark.live
def test_a_command_its_caller_gave_up_on_is_never_carried_out(live_server, connected):
    """A command found after its caller stopped waiting is dropped, not sent late."""
    account, profile_id, client = connected
    stale = {"action": "send", "reply_to": "wasl:whatsapp:web:reply:stale",
             "deadline": time.time() - 1,
             "arguments": {"message_id": 1, "to": CONTACT, "type": "text", "text": "Too late",
                           "reply": None}}
    live_server.app.extensions["crm.redis"].rpush(commands_key(profile_id), json.dumps(stale))
    sent = make_message(live_server, account.organization_id, profile_id, provider_id="3EB0X")
    call_channel(live_server, account.organization_id, sent, "mark_read")  # queued after it
    assert client.called("send") == []


# -- the end of a session ------------------------------------------------------------------


@pytest.mark.live
def test_logged_out_on_the_phone_forgets_the_session(live_server, connected):
    """When the phone unlinks the device, the number is disconnected, its stored session
    deleted and its client stopped for good."""
    account, profile_id, client = connected
    with live_server.socket(live_server.session_cookie(account)) as socket:
        client.log_out_remotely()
        socket.wait_for("clientDisconnected", {"profile_id": profile_id, "reason": "logged_out"})
    row = profile_row(live_server, account.organization_id, profile_id)
    assert (row["state"], row["secrets"]) == ("disconnected", None)
    wait_until(client.was_stopped.is_set, "the client stopping")
    wait_until(lambda: not client.session_path.exists(), "the session file removed")


@pytest.mark.live
def test_logging_out_through_the_channel_unlinks_and_forgets(live_server, connected):
    """Logging out through the channel unlinks the device and deletes the stored session."""
    account, profile_id, client = connected
    with live_server.transaction(account.organization_id):
        WebChannel(db.session.get(WhatsAppProfile, profile_id)).log_out()
    assert client.called("log_out") == [()]
    row = wait_for_state(live_server, account.organization_id, profile_id, "disconnected")
    assert row["secrets"] is None
    wait_until(client.was_stopped.is_set, "the client stopping")


@pytest.mark.live
@pytest.mark.parametrize("action", [profiles.disconnect_profile, profiles.delete_profile],
                         ids=["disconnected", "deleted"])
def test_a_number_disconnected_or_deleted_in_wasl_is_unlinked(live_server, connected, action):
    """Disconnecting or deleting the number stops its session at the next scan, unlinks the
    device from the phone, and never stores the session again."""
    account, profile_id, client = connected
    with live_server.transaction(account.organization_id):
        action(db.session.get(User, account.user_id),
               db.session.get(WhatsAppProfile, profile_id))
    wait_until(client.was_stopped.is_set, "the client stopping")
    assert client.called("log_out") == [()]
    time.sleep(FAST.scan * 3)
    assert profile_row(live_server, account.organization_id, profile_id)["secrets"] is None


@pytest.mark.live
def test_supervise_stops_cleanly_on_sigterm(live_server, tmp_path):
    """`crm whatsapp supervise` runs until SIGTERM, then stops its sessions and exits 0."""
    log_file = tmp_path / "supervise.log"
    with log_file.open("w") as log:
        process = subprocess.Popen([sys.executable, "-m", "crm", "whatsapp", "supervise"],
                                   cwd=ROOT, env=live_server.environment(), stdout=log,
                                   stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: "supervising WhatsApp" in log_file.read_text(),
                   "the supervisor starting", timeout=30)
        os.kill(process.pid, signal.SIGTERM)
        assert process.wait(10) == 0
    finally:
        if process.poll() is None:
            process.kill()
    assert "stopped supervising" in log_file.read_text()


# -- neonize events → our values -------------------------------------------------------------


def _media(**fields) -> E2EMessage:
    message = E2EMessage()
    message.imageMessage.mimetype = "image/jpeg"
    message.imageMessage.fileSHA256 = b"\x01\x02"
    message.imageMessage.fileLength = 2048
    message.imageMessage.JPEGThumbnail = b"thumbnail"
    for key, value in fields.items():
        setattr(message.imageMessage, key, value)
    return message


def _part(field: str, **values) -> E2EMessage:
    message = E2EMessage()
    part = getattr(message, field)
    for key, value in values.items():
        if isinstance(value, dict):
            for inner, inner_value in value.items():
                setattr(getattr(part, key), inner, inner_value)
        else:
            setattr(part, key, value)
    return message


@pytest.mark.parametrize(("raw", "sentence"), [
    ("dial tcp: lookup web.whatsapp.com: no such host", "network"),
    (NO_NETWORK, "network"),
    ("websocket: close 1006 (abnormal closure)", "network"),
    ("failed to dial whatsapp web websocket: dial tcp 157.240.1.53:443: connect: connection "
     "refused", "network"),
    ("couldn't dial whatsapp web websocket: dial tcp: connect: network is unreachable",
     "network"),
    ("connect_failed", "network"),
    ("connection_lost", "network"),
    ("pairing_timeout", "expired"),
    ("QR code timed out", "expired"),
    ("pairing code expired", "expired"),
    ("logged_out", "unlinked"),
    ("logged out from another device", "unlinked"),
    ("primary device was logged out", "unlinked"),
    ("stream:error conflict type=device_removed", "unlinked"),
    ("stream_replaced", "replaced"),
    ("stream:error conflict type=replaced", "replaced"),
    ("temporary_ban", "banned"),
    ("account banned", "banned"),
    ("client_outdated", "outdated"),
    ("pair-device signature mismatch", "pairing"),
    ("invalid device identity HMAC in pair success message", "pairing"),
    ("runtime error: invalid memory address or nil pointer dereference", "other"),
], ids=lambda value: value if len(value) < 30 else value[:30])
def test_linked_device_failures_are_said_in_plain_words(app, raw, sentence):
    """Each known whatsmeow failure (or our reason code for it) becomes one translated
    sentence of its kind; anything else a general one. The Go text is never in it."""
    sentences = {
        "network": "Could not reach WhatsApp's servers. Check this server's internet "
                   "connection; Wasl keeps trying.",
        "expired": "The QR code expired before it was scanned. Press “Connect” to get a "
                   "new one.",
        "unlinked": "This device was unlinked from the phone. Press “Connect” to link it "
                    "again.",
        "replaced": "WhatsApp Web or another linked session took this device's place. Press "
                    "“Connect” to link it here again.",
        "banned": "WhatsApp has banned this number. Bulk or automated sending from a linked "
                  "device is the usual cause; the phone shows for how long.",
        "outdated": "WhatsApp refuses this version of the linked-device library. Update "
                    "Wasl, then link the number again.",
        "pairing": "Pairing did not finish. Press “Connect” and scan the new QR code.",
        "other": "The connection to WhatsApp failed. Press “Connect” to try again; the "
                 "server's log has the details.",
    }
    with app.test_request_context():
        with force_locale("en"):
            said = str(failure_sentence(raw))
        assert said == sentences[sentence]
        with force_locale("ar"):
            assert str(failure_sentence(raw)) == gettext(sentences[sentence]) != said
            assert raw not in str(failure_sentence(raw))


@pytest.mark.parametrize(("message", "expected"), [
    (text("Hi", stanzaID="3AEARLIER", isForwarded=True),
     {"type": "text", "body": "Hi", "reply_to_provider_id": "3AEARLIER", "is_forwarded": True}),
    (_media(caption="Our invoice"),
     {"type": "image", "body": "Our invoice",
      "content": {"media_id": "3AMSG", "mime_type": "image/jpeg", "sha256": "0102",
                  "size": 2048}}),
    (_part("documentMessage", fileName="order.pdf", mimetype="application/pdf",
           caption="The order"),
     {"type": "document", "body": "The order",
      "content": {"filename": "order.pdf", "mime_type": "application/pdf"}}),
    (_part("audioMessage", PTT=True, mimetype="audio/ogg"),
     {"type": "audio", "content": {"voice": True}}),
    (_part("locationMessage", degreesLatitude=24.7, degreesLongitude=46.7, name="Shop"),
     {"type": "location", "content": {"latitude": 24.7, "longitude": 46.7, "name": "Shop",
                                      "address": ""}}),
    (_part("contactMessage", displayName="Omar", vcard=VCARD),
     {"type": "contacts",
      "content": {"contacts": [{"name": "Omar", "phones": ["+966 51 111 1111"],
                                "vcard": VCARD}]}}),
    (_part("reactionMessage", text="👍", key={"ID": "3EB0MINE"}),
     {"type": "reaction", "content": {"emoji": "👍", "message_id": "3EB0MINE"}}),
    (_part("buttonsResponseMessage", selectedDisplayText="Yes", selectedButtonID="yes"),
     {"type": "button", "body": "Yes", "content": {"id": "yes"}}),
    (_part("pollCreationMessage", name="Lunch?"),
     {"type": "unsupported", "content": {"provider_type": "pollCreationMessage"}}),
], ids=["reply forwarded", "image", "document", "voice note", "location", "contact", "reaction",
        "button", "unknown"])
def test_message_events_become_inbound_messages(message, expected):
    """Each kind of WhatsApp message becomes its type, body and content; unknown kinds are
    kept as unsupported."""
    inbound = inbound_from_event(message_event(message, message_id="3AMSG"))
    assert inbound.provider_message_id == "3AMSG"
    assert (inbound.contact_phone, inbound.contact_name) == ("+966501234567", "Sara")
    assert inbound.timestamp.year == 2025
    for key, value in expected.items():
        if key == "content":
            assert {k: inbound.content.get(k) for k in value} == value
        else:
            assert getattr(inbound, key) == value


def test_an_inbound_medium_keeps_what_its_download_needs():
    """A medium's content carries its message part (keys, path, hashes) for the download,
    without the thumbnail, so the inbox shows nothing WhatsApp did not send."""
    inbound = inbound_from_event(message_event(_media(mediaKey=b"key", directPath="/v/t62")))
    part = E2EMessage.FromString(base64.b64decode(inbound.content["web_media"])).imageMessage
    assert (part.mediaKey, part.directPath, part.fileLength) == (b"key", "/v/t62", 2048)
    assert part.JPEGThumbnail == b""


def test_a_contact_known_only_by_hidden_id_keeps_that_id():
    """A contact whose phone number WhatsApp hides is kept by its hidden id; when the number
    comes along (SenderAlt), the number is used."""
    hidden = inbound_from_event(message_event(text("Hi"), sender="123456789@lid"))
    assert (hidden.contact_phone, hidden.contact_user_id) == (None, "123456789@lid")
    shown = inbound_from_event(message_event(text("Hi"), sender="123456789@lid",
                                             sender_alt=CONTACT))
    assert (shown.contact_phone, shown.contact_user_id) == ("+966501234567", None)


@pytest.mark.parametrize("event", [
    message_event(text("from my phone"), from_me=True),
    message_event(text("group chat"), chat="120363000000000000@g.us", group=True),
    message_event(text("status"), chat="status@broadcast"),
    message_event(_part("protocolMessage", type=0)),
], ids=["sent from the phone", "group", "status broadcast", "protocol message"])
def test_what_is_not_a_contacts_message_is_skipped(event):
    """Our own messages, groups, status broadcasts and protocol bookkeeping are not stored."""
    assert inbound_from_event(event) is None


def test_receipts_become_status_updates():
    """Delivered and read receipts (a played voice note counts as read) name each message;
    other receipt kinds are ignored."""
    delivered = statuses_from_receipt(receipt_event(ReceiptEv.DELIVERED, "3EB0A", "3EB0B"))
    assert [(u.provider_message_id, u.status) for u in delivered] == [("3EB0A", "delivered"),
                                                                     ("3EB0B", "delivered")]
    assert statuses_from_receipt(receipt_event(ReceiptEv.PLAYED, "3EB0A"))[0].status == "read"
    assert statuses_from_receipt(receipt_event(ReceiptEv.READ_SELF, "3EB0A")) == []


def test_a_template_cannot_go_through_a_linked_device(app):
    """Templates are a Business API feature: the web channel refuses them at once."""
    profile = WhatsAppProfile(id=1, provider="web", display_name="Shop", verify_token="t")
    with pytest.raises(ChannelError) as refusal:
        WebChannel(profile).send(Message(type="template", body="", content={}))
    assert refusal.value.code == "unsupported"


def test_the_session_is_never_stored_in_plaintext(app):
    """The stored session decrypts to the device's bytes; the row shows neither."""
    from crm.whatsapp.supervisor import session_of, store_session

    session, secret = device_session()
    profile = WhatsAppProfile(provider="web", display_name="Shop", verify_token="t",
                              secrets=encrypt({"note": "kept"}))
    store_session(profile, session)
    assert session_of(profile) == session
    assert secret not in profile.secrets
    assert base64.b64encode(secret) not in profile.secrets
    store_session(profile, None)
    assert session_of(profile) is None
    assert decrypt_json(profile.secrets) == {"note": "kept"}


@pytest.mark.parametrize("kind", ["video", "audio"])
def test_video_and_voice_without_ffmpeg_fail_saying_why(monkeypatch, kind):
    """neonize prepares video and voice notes with FFmpeg; without it the send is refused with
    a reason an admin can act on (the agent sees it on the failed message), not neonize's bare
    'No such file or directory'. Text, images and documents need nothing."""
    from crm.whatsapp import neonize_client

    monkeypatch.setattr(neonize_client.shutil, "which", lambda _name: None)
    with pytest.raises(neonize_client.MediaToolMissingError, match="needs FFmpeg") as refused:
        neonize_client.check_media_tools(kind)
    assert refused.value.code == "ffmpeg_missing"
    for other in ("text", "image", "document"):
        neonize_client.check_media_tools(other)
