"""The admins' WhatsApp pages: numbers (add, show, connect, pair by QR code, disconnect,
remove) and the sandbox, where an admin plays the customer of a sandbox number."""

from __future__ import annotations

import io
import logging
import re

import pytest
from sqlalchemy import select

from crm.extensions import db
from crm.tenancy import organization_context
from crm.whatsapp import media
from crm.whatsapp.channels.web import mark_supervisor_alive, qr_key
from crm.whatsapp.models import Conversation, Message, WhatsAppProfile
from tests.factories import login, make_org, make_user, run_jobs
from tests.foundation import HTMX, arabic
from tests.whatsapp.factories import make_conversation, make_profile, page_text, png, profiles_of

ACCESS_TOKEN = "EAAG-very-secret-access-token-9876"
APP_SECRET = "an-app-secret-5432"
QR = "data:image/png;base64,iVBORw0KGgo="


@pytest.fixture
def org():
    return make_org(language="en")


def _get(model, org_id: int, object_id: int):
    with organization_context(org_id):
        return db.session.get(model, object_id, populate_existing=True)




# -- numbers -------------------------------------------------------------------------------------

def test_numbers_are_for_admins(client, org):
    """Admins manage numbers; managers, agents and members are refused, and do not see the
    entry in the sidebar (everyone who works the inbox sees the Inbox entry)."""
    make_profile(org, "sandbox", display_name="Demo")
    login(client, org.admin)
    html = page_text(client, "/whatsapp/numbers")
    assert "Demo" in html
    assert 'href="/whatsapp/numbers"' in html
    assert 'href="/inbox"' in html
    for role in ("manager", "agent", "member"):
        login(client, make_user(org, role))
        assert client.get("/whatsapp/numbers").status_code == 403
        assert client.get("/whatsapp/sandbox").status_code == 403
        assert 'href="/whatsapp/numbers"' not in page_text(client, "/inbox")


def test_with_the_module_off_the_numbers_pages_are_gone(client, org):
    from crm.foundation import services as foundation_services

    with organization_context(org.id):
        foundation_services.set_module_enabled(org.admin, "whatsapp", False)
        db.session.flush()
    login(client, org.admin)

    assert client.get("/whatsapp/numbers").status_code == 404
    assert client.get("/whatsapp/sandbox").status_code == 404
    assert client.get("/inbox").status_code == 404


def test_a_sandbox_number_takes_one_click(client, org):
    login(client, org.admin)

    response = client.post("/whatsapp/numbers", data={"provider": "sandbox"})

    [profile] = profiles_of(org.id)
    assert (profile.provider, profile.state, profile.display_name) == (
        "sandbox", "connected", "Sandbox")
    assert response.status_code == 303
    assert response.location.endswith(f"/whatsapp/numbers/{profile.id}")
    assert "\u2068Sandbox\u2069 was added." in page_text(client, response.location)


def test_a_cloud_number_shows_the_webhook_and_never_its_secrets(client, org, caplog, graph):
    """After adding a Cloud API number the page gives the callback URL and verify token to
    paste into Meta's dashboard; the token and secret show only as their last characters."""
    caplog.set_level(logging.DEBUG)
    graph.add_number("106540352242922", token=ACCESS_TOKEN)
    login(client, org.admin)

    response = client.post("/whatsapp/numbers", data={
        "provider": "cloud", "display_name": "Support", "phone_number": "0501234567",
        "phone_number_id": "106540352242922", "business_account_id": "102290129340398",
        "access_token": ACCESS_TOKEN, "app_secret": APP_SECRET, "auto_assign": "on"})

    assert response.status_code == 303
    [profile] = profiles_of(org.id)
    assert profile.auto_assign
    assert profile.phone_number == "+966501234567"
    html = page_text(client, response.location)
    assert f"http://localhost/webhooks/whatsapp/{profile.id}" in html
    assert profile.verify_token in html
    assert "•" * 8 + "9876" in html
    assert "•" * 8 + "5432" in html
    for secret in (ACCESS_TOKEN, APP_SECRET):
        assert secret not in html
        assert secret not in caplog.text


def test_a_bad_cloud_number_is_shown_again_with_its_errors(client, org):
    """Missing secrets and a bad phone: 422, the cloud form open with each error beside its
    field and what was typed kept, except the secrets; nothing is stored."""
    login(client, org.admin)

    response = client.post("/whatsapp/numbers", data={
        "provider": "cloud", "display_name": "Support", "phone_number": "12",
        "phone_number_id": "106540352242922", "access_token": ACCESS_TOKEN, "app_secret": ""})

    assert response.status_code == 422
    html = response.get_data(as_text=True)
    assert 'id="error-cloud-app_secret"' in html
    assert 'id="error-cloud-phone_number"' in html
    assert 'value="106540352242922"' in html
    assert ACCESS_TOKEN not in html
    assert profiles_of(org.id) == []


def test_a_linked_device_pairs_by_qr_code_that_updates_live(client, app, org):
    """Adding a linked device starts pairing in the same action: the page it lands on waits
    for the QR code the supervisor publishes, then shows it. The state area re-fetches itself
    on the supervisor's events; «Show a new QR code» keeps it pairing."""
    mark_supervisor_alive(app.extensions["crm.redis"], "supervisor-1", 30)
    login(client, org.admin)
    response = client.post("/whatsapp/numbers", data={"provider": "web",
                                                      "display_name": "Front desk"})
    [device] = profiles_of(org.id)
    assert device.state == "pairing"
    page = page_text(client, response.location)
    assert "Waiting for the QR code" in page
    assert "realtime:qrCode from:body" in page
    assert "realtime:clientReady from:body" in page

    response = client.post(f"/whatsapp/numbers/{device.id}/connect", headers=HTMX)

    assert response.status_code == 200
    assert _get(WhatsAppProfile, org.id, device.id).state == "pairing"
    assert "Waiting for the QR code" in response.get_data(as_text=True)
    app.extensions["crm.redis"].set(qr_key(device.id), QR)
    state = page_text(client, f"/whatsapp/numbers/{device.id}/state", headers=HTMX)
    assert f'<img class="qr-code" src="{QR}"' in state
    assert state.lstrip().startswith(f'<section id="number-{device.id}-state"')


def test_with_no_supervisor_running_the_page_says_so_and_keeps_asking(client, org):
    """No supervisor's heartbeat: a pairing number says the service is off and how to start
    it, instead of waiting forever for a QR code; the state area asks again every few
    seconds, so it moves on by itself once the service runs."""
    device = make_profile(org, "web", state="pairing", phone_number=None)
    login(client, org.admin)

    state = page_text(client, f"/whatsapp/numbers/{device.id}/state", headers=HTMX)

    assert ("The WhatsApp service for linked devices is not running, so this number can "
            "neither pair nor send. Start it with “crm up” (or “crm whatsapp supervise”).") in state
    assert "Waiting for the QR code" not in state
    assert "every 5s" in state


@pytest.mark.parametrize(("last_error", "sentence"), [
    ("failed to dial whatsapp servers: dial tcp 157.240.1.53:443: i/o timeout",
     "Could not reach WhatsApp's servers. Check this server's internet connection; Wasl "
     "keeps trying."),
    ("pairing_timeout", "The QR code expired before it was scanned. Press “Connect” to get a "
                        "new one."),
], ids=["no network", "pairing abandoned"])
def test_a_linked_device_failure_is_shown_in_arabic_not_go(client, sentence, last_error):
    """A linked device's failure shows as a translated sentence on its Arabic page; the
    error text WhatsApp's library gave stays out of the page."""
    org = make_org()  # Arabic
    device = make_profile(org, "web", state="disconnected", last_error=last_error)
    login(client, org.admin)

    page = page_text(client, f"/whatsapp/numbers/{device.id}")

    assert arabic(sentence) in page
    assert last_error not in page


def test_linked_devices_come_with_a_warning_against_bulk_sending(client):
    """The linked-device form and a linked number's page say plainly that linked devices are
    unofficial and bulk sending can get the number banned; a Cloud API number's page does not."""
    org = make_org()  # Arabic
    device = make_profile(org, "web", state="disconnected")
    cloud = make_profile(org, "cloud")
    warning = arabic("Linked devices use WhatsApp Web unofficially. WhatsApp may ban numbers "
                     "used for bulk or automated sending: use the official Cloud API for "
                     "campaigns.")
    login(client, org.admin)

    form = page_text(client, "/whatsapp/numbers")
    assert form.count(warning) == 1
    assert form.index(warning) > form.index('name="provider" value="web"')
    assert warning in page_text(client, f"/whatsapp/numbers/{device.id}")
    assert warning not in page_text(client, f"/whatsapp/numbers/{cloud.id}")


def test_disconnect_and_remove_ask_first_and_keep_the_conversations(client, org):
    """Both buttons ask for confirmation; disconnecting forgets a device's session, removing
    hides the number and keeps its conversations in the inbox."""
    device = make_profile(org, "web", secrets={"session": "c2Vzc2lvbg=="})
    conversation = make_conversation(device, contact_name="Kept")
    login(client, org.admin)
    page = page_text(client, f"/whatsapp/numbers/{device.id}")
    assert page.count("hx-confirm=") == 2

    response = client.post(f"/whatsapp/numbers/{device.id}/disconnect", headers=HTMX)
    assert response.status_code == 200
    stored = _get(WhatsAppProfile, org.id, device.id)
    assert (stored.state, stored.secrets) == ("disconnected", None)

    response = client.post(f"/whatsapp/numbers/{device.id}/delete")
    assert response.status_code == 303
    assert _get(WhatsAppProfile, org.id, device.id).is_deleted
    assert client.get(f"/whatsapp/numbers/{device.id}").status_code == 404
    assert "Kept" in page_text(client, "/inbox")
    assert _get(Conversation, org.id, conversation.id) is not None


# -- the sandbox ---------------------------------------------------------------------------------

def test_without_a_sandbox_number_the_page_offers_to_create_one(client, org):
    make_profile(org, "cloud")
    login(client, org.admin)

    html = page_text(client, "/whatsapp/sandbox")

    assert "No sandbox number yet" in html
    assert 'name="provider" value="sandbox"' in html


def test_the_customer_writes_and_the_message_reaches_the_inbox(client, org):
    """Typed on the sandbox page as a customer (any phone, any name), the message arrives in
    the inbox like any channel's: a new unread conversation with that name and number."""
    profile = make_profile(org, "sandbox", display_name="Demo")
    login(client, org.admin)
    page = page_text(client, "/whatsapp/sandbox?phone=0501234567&name=Sara")
    assert 'id="sandbox-form"' in page
    assert "realtime:newMessage from:body" in page

    response = client.post(f"/whatsapp/sandbox/{profile.id}/messages", headers=HTMX,
                           data={"phone": "+966501234567", "name": "Sara",
                                 "text": "Do you have size 42?"})

    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert "Do you have size 42?" in html
    assert 'id="sandbox-form" class="composer sandbox-form"' in html  # a fresh form, out of band
    inbox = page_text(client, "/inbox")
    assert "Sara" in inbox
    assert "Do you have size 42?" in inbox
    with organization_context(org.id):
        conversation = db.session.scalar(select(Conversation))
        assert (conversation.contact_phone, conversation.unread_count) == ("+966501234567", 1)


def test_the_customer_sees_the_agents_reply_with_ticks_and_reads_it(client, app, org):
    """The agent answers in the inbox; the customer's side shows the reply; looking at it
    reads it, and the agent's bubble turns blue."""
    profile = make_profile(org, "sandbox")
    agent = make_user(org, "agent")
    login(client, org.admin)
    client.post(f"/whatsapp/sandbox/{profile.id}/messages",
                data={"phone": "0501234567", "name": "Sara", "text": "Hello?"})
    with organization_context(org.id):
        conversation = db.session.scalar(select(Conversation))
        conversation.assigned_user_id = agent.id
        conversation_id = conversation.id
        db.session.flush()

    login(client, agent)
    client.post(f"/inbox/conversations/{conversation_id}/messages", data={"text": "Hi Sara!"})
    run_jobs(app, queues=("whatsapp",))
    with organization_context(org.id):
        reply = db.session.scalar(select(Message).where(Message.direction == "out"))
        assert reply.status == "delivered"
        reply_id = reply.id

    login(client, org.admin)
    chat = page_text(client, f"/whatsapp/sandbox/{profile.id}/chat?phone=0501234567&name=Sara",
                 headers=HTMX)
    assert "Hi Sara!" in chat
    assert 'class="bubble bubble-in"' in chat  # the team's side, from the customer's view
    assert _get(Message, org.id, reply_id).status == "read"

    login(client, agent)
    thread = page_text(client, f"/inbox/conversations/{conversation_id}")
    bubble = thread[thread.index(f'<article id="message-{reply_id}"'):]
    assert "ticks read" in bubble[:bubble.index("</article>")]


def test_the_customer_can_send_an_image(client, org):
    profile = make_profile(org, "sandbox")
    login(client, org.admin)

    response = client.post(f"/whatsapp/sandbox/{profile.id}/messages", headers=HTMX,
                           content_type="multipart/form-data", data={
                               "phone": "0501234567", "name": "Sara", "text": "This one",
                               "file": (io.BytesIO(png(3, 3)), "shoe.png", "image/png")})

    assert response.status_code == 200
    with organization_context(org.id):
        message = db.session.scalar(select(Message))
        assert (message.type, message.body) == ("image", "This one")
        assert media.path_of(message).read_bytes() == png(3, 3)
        message_id = message.id
    assert f'src="/inbox/messages/{message_id}/media"' in response.get_data(as_text=True)


@pytest.mark.parametrize(("data", "error"), [
    ({"phone": "0501234567", "text": "  "}, "Write a message first."),
    ({"phone": "12", "text": "Hi"}, "Enter a valid phone number."),
    ({"phone": "0501234567", "text": "",
      "file": (io.BytesIO(b"%PDF-1.4"), "a.pdf", "application/pdf")},
     "The sandbox customer can send images only."),
])
def test_a_bad_customer_message_is_422_and_stores_nothing(client, org, data, error):
    profile = make_profile(org, "sandbox")
    login(client, org.admin)

    response = client.post(f"/whatsapp/sandbox/{profile.id}/messages", headers=HTMX,
                           content_type="multipart/form-data", data={"name": "Sara", **data})

    assert response.status_code == 422
    assert response.headers["HX-Retarget"] == "#sandbox-form"
    assert error in response.get_data(as_text=True)
    with organization_context(org.id):
        assert db.session.scalar(select(Message)) is None


def test_an_invalid_phone_on_the_page_is_pointed_out(client, org):
    make_profile(org, "sandbox")
    login(client, org.admin)

    html = page_text(client, "/whatsapp/sandbox?phone=12")

    assert "Enter a valid phone number." in html
    assert 'id="sandbox-form"' not in html


def test_sandbox_pages_need_a_sandbox_number(client, org):
    """The customer's pages of a cloud number do not exist (404)."""
    cloud = make_profile(org, "cloud")
    login(client, org.admin)

    assert client.get(f"/whatsapp/sandbox/{cloud.id}/chat?phone=0501234567").status_code == 404
    response = client.post(f"/whatsapp/sandbox/{cloud.id}/messages",
                           data={"phone": "0501234567", "text": "Hi"})
    assert response.status_code == 404


def test_the_customer_side_lists_only_that_customers_messages(client, org):
    """Two customers of one sandbox number: each sees their own chat."""
    profile = make_profile(org, "sandbox")
    login(client, org.admin)
    for phone, text in (("0501111111", "From the first"), ("0502222222", "From the second")):
        client.post(f"/whatsapp/sandbox/{profile.id}/messages",
                    data={"phone": phone, "name": "", "text": text})

    chat = page_text(client, f"/whatsapp/sandbox/{profile.id}/chat?phone=0502222222")

    assert "From the second" in chat
    assert "From the first" not in chat
    assert len(re.findall(r'<article class="bubble', chat)) == 1
