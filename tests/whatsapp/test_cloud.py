"""The `cloud` channel: signed webhooks in Meta's documented shapes, and sends through a local
fake Graph API (tests/whatsapp/fake_graph.py) — never Meta itself."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from string import Template

import pytest
from sqlalchemy import select

from crm.config import Config
from crm.extensions import db
from crm.foundation.models import User
from crm.jobs import enqueue_now
from crm.tenancy import organization_context
from crm.whatsapp import media, services
from crm.whatsapp.channels import cloud
from crm.whatsapp.models import Conversation, Message, WhatsAppProfile
from crm.whatsapp.webhooks import webhook_url
from tests.conftest import free_port
from tests.factories import login, make_org, run_jobs
from tests.whatsapp.factories import make_profile
from tests.whatsapp.fake_graph import TOKEN

PAYLOADS = Path(__file__).parent / "payloads"
APP_SECRET = "the-profiles-app-secret"
PLATFORM_SECRET = "the-platforms-app-secret"
PHONE_NUMBER_ID = "106540352242922"
VERSION = Config.WHATSAPP_GRAPH_VERSION
TEXT_WAMID = "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA="


# -- helpers -----------------------------------------------------------------------------------

def payload(name: str, **values: str) -> bytes:
    """A recorded webhook body with its $placeholders filled in."""
    values.setdefault("phone_number_id", PHONE_NUMBER_ID)
    return Template((PAYLOADS / f"{name}.json").read_text()).substitute(values).encode()


def signature(body: bytes, secret: str = APP_SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def deliver(client, url: str, body: bytes, secret: str = APP_SECRET, headers: dict | None = None,
            apply: bool = True):
    """POST a delivery the way Meta does: raw JSON, signed, no cookie and no CSRF token; then,
    unless `apply` is false, run the ingest job that applies what the webhook kept."""
    headers = headers if headers is not None else {"X-Hub-Signature-256": signature(body, secret)}
    response = client.post(url, data=body, headers={"Content-Type": "application/json", **headers},
                           csrf=False)
    if apply:
        run_jobs(client.application, queues=("inbound",))
    return response


def messages(org_id: int) -> list[Message]:
    with organization_context(org_id):
        return list(db.session.scalars(select(Message).order_by(Message.id)
                                       .execution_options(populate_existing=True)))


def conversations(org_id: int) -> list[Conversation]:
    with organization_context(org_id):
        return list(db.session.scalars(select(Conversation).order_by(Conversation.id)
                                       .execution_options(populate_existing=True)))


class Number:
    """A cloud profile of a fresh organization, remembered by ids (commits expire objects)."""

    def __init__(self, phone_number_id: str = PHONE_NUMBER_ID, app_secret: str = APP_SECRET):
        org = make_org()
        profile = make_profile(org, phone_number_id=phone_number_id, access_token=TOKEN,
                               app_secret=app_secret)
        self.org_id, self.admin_id, self.profile_id = org.id, org.admin.id, profile.id
        self.verify_token = profile.verify_token
        self.url = f"/webhooks/whatsapp/{profile.id}"

    def get(self, model, object_id: int):
        with organization_context(self.org_id):
            obj = db.session.get(model, object_id)
            db.session.refresh(obj)
            return obj


@pytest.fixture
def number():
    return Number()


def customer_writes(client, number: Number) -> Conversation:
    """The customer of text.json writes first, which opens the 24-hour window."""
    assert deliver(client, number.url, payload("text")).status_code == 200
    return conversations(number.org_id)[0]


def reply(app, number: Number, conversation_id: int, text: str, reply_to_id: int | None = None
          ) -> int:
    """The admin answers through the outbox; the send job runs. The outbound message's id."""
    with organization_context(number.org_id):
        conversation = db.session.get(Conversation, conversation_id)
        reply_to = db.session.get(Message, reply_to_id) if reply_to_id else None
        message_id = services.send_text(conversation, db.session.get(User, number.admin_id),
                                        text, reply_to=reply_to).id
    run_jobs(app, queues=("whatsapp",))
    return message_id


def send_status(client, number: Number, wamid: str, status: str, our_id: int | str = "",
                timestamp: str = "1749417000"):
    body = payload("status", wamid=wamid, status=status, our_id=str(our_id),
                   timestamp=timestamp)
    return deliver(client, number.url, body)


# -- verification ------------------------------------------------------------------------------

def test_verification_echoes_the_challenge_for_the_profiles_token(client, number):
    """Meta's subscription GET with the profile's verify token gets hub.challenge back."""
    response = client.get(number.url, query_string={
        "hub.mode": "subscribe", "hub.verify_token": number.verify_token,
        "hub.challenge": "1158201444"})

    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    assert response.get_data(as_text=True) == "1158201444"


@pytest.mark.parametrize("params", [
    {"hub.mode": "subscribe", "hub.verify_token": "wrong", "hub.challenge": "1"},
    {"hub.mode": "unsubscribe", "hub.verify_token": "$token", "hub.challenge": "1"},
    {"hub.challenge": "1"},
], ids=["wrong token", "wrong mode", "no token"])
def test_verification_without_the_right_token_is_refused(client, number, params):
    """A wrong or missing verify token (or mode) answers 403 and echoes nothing."""
    params = {k: v.replace("$token", number.verify_token) for k, v in params.items()}

    response = client.get(number.url, query_string=params)

    assert response.status_code == 403
    assert response.get_json()["error"]["code"] == "forbidden"


def test_platform_verification_uses_the_platform_token(app, client, monkeypatch, number):
    """The platform-wide webhook answers to WHATSAPP_VERIFY_TOKEN, not to a profile's token;
    with no platform token configured it verifies nothing."""
    monkeypatch.setitem(app.config, "WHATSAPP_VERIFY_TOKEN", "platform-token")
    query = {"hub.mode": "subscribe", "hub.challenge": "42"}

    ok = client.get("/webhooks/whatsapp", query_string={**query, "hub.verify_token":
                                                        "platform-token"})
    profiles = client.get("/webhooks/whatsapp",
                          query_string={**query, "hub.verify_token": number.verify_token})
    monkeypatch.setitem(app.config, "WHATSAPP_VERIFY_TOKEN", "")
    unset = client.get("/webhooks/whatsapp", query_string={**query, "hub.verify_token": ""})

    assert (ok.status_code, ok.get_data(as_text=True)) == (200, "42")
    assert profiles.status_code == 403
    assert unset.status_code == 403


def test_webhook_url_is_absolute(app, number):
    """The URL shown for pasting into Meta's dashboard is absolute, built from PUBLIC_URL."""
    with organization_context(number.org_id):
        profile = db.session.get(WhatsAppProfile, number.profile_id)
        assert webhook_url(profile) == f"http://localhost/webhooks/whatsapp/{number.profile_id}"


# -- signatures and malformed deliveries -------------------------------------------------------

@pytest.mark.parametrize("headers", [
    {},
    {"X-Hub-Signature-256": signature(payload("text"), "someone-elses-secret")},
    {"X-Hub-Signature-256": signature(payload("text"), PLATFORM_SECRET)},
    {"X-Hub-Signature-256": signature(payload("text"))[len("sha256="):]},
    {"X-Hub-Signature-256": signature(payload("text") + b" ")},
    {"X-Hub-Signature-1": signature(payload("text"))},
], ids=["missing", "wrong secret", "platform secret", "no sha256= prefix", "other body",
        "other header"])
def test_a_bad_signature_is_refused_and_nothing_is_stored(app, client, monkeypatch, number,
                                                          headers):
    """Only the profile's app secret over the exact raw body is accepted."""
    monkeypatch.setitem(app.config, "WHATSAPP_APP_SECRET", PLATFORM_SECRET)

    response = deliver(client, number.url, payload("text"), headers=headers)

    assert response.status_code == 403
    assert messages(number.org_id) == []
    assert conversations(number.org_id) == []


def test_a_session_does_not_open_the_webhook(client, number):
    """Logged in as the organization's own admin, an unsigned delivery is still refused."""
    with organization_context(number.org_id):
        login(client, db.session.get(User, number.admin_id))

    response = deliver(client, number.url, payload("text"), headers={})

    assert response.status_code == 403
    assert messages(number.org_id) == []


def test_a_profile_without_an_app_secret_accepts_nothing(client):
    """With no app secret to check against, no signature is valid (not even one over '')."""
    org = make_org()
    profile = make_profile(org, secrets={"access_token": TOKEN},
                           phone_number_id=PHONE_NUMBER_ID)
    url, org_id = f"/webhooks/whatsapp/{profile.id}", org.id

    response = deliver(client, url, payload("text"), secret="")

    assert response.status_code == 403
    assert messages(org_id) == []


@pytest.mark.parametrize("kind", ["missing", "deleted", "sandbox"])
def test_a_webhook_of_no_cloud_profile_answers_404(client, kind):
    """An unknown or deleted profile, or one that is not `cloud`, has no webhook."""
    org = make_org()
    if kind == "missing":
        profile_id = 2**62
    else:
        profile = make_profile(org, provider="cloud" if kind == "deleted" else "sandbox",
                               app_secret=APP_SECRET, is_deleted=kind == "deleted")
        profile_id = profile.id

    get = client.get(f"/webhooks/whatsapp/{profile_id}",
                     query_string={"hub.mode": "subscribe", "hub.challenge": "1"})
    post = deliver(client, f"/webhooks/whatsapp/{profile_id}", payload("text"))

    assert (get.status_code, post.status_code) == (404, 404)


def _broken(name: str, change, **values: str) -> bytes:
    """A recorded delivery with its first change's value altered by `change(value)`."""
    body = json.loads(payload(name, **values))
    change(body["entry"][0]["changes"][0]["value"])
    return json.dumps(body).encode()


@pytest.mark.parametrize("body", [
    b"not json at all",
    b"\xff\xfe\x00",
    b"[]",
    json.dumps({"object": "whatsapp_business_account", "entry": {}}).encode(),
    json.dumps({"object": "whatsapp_business_account",
                "entry": [{"changes": [{"field": "messages", "value": []}]}]}).encode(),
    _broken("text", lambda value: value.pop("metadata")),
    _broken("text", lambda value: value["messages"][0].update(timestamp="yesterday")),
    _broken("text", lambda value: value["messages"][0].update({"from": "+1 650"})),
    _broken("text", lambda value: value["messages"][0].update(text=["x"])),
    _broken("text", lambda value: value["messages"][0].pop("type")),
    _broken("status", lambda value: value["statuses"][0].pop("id"), wamid="wamid.X",
            status="sent", our_id="1", timestamp="1749417000"),
    _broken("several", lambda value: value["messages"][-1].pop("id")),
], ids=["not json", "not utf-8", "a list", "entry not a list", "value not an object",
        "no metadata", "bad timestamp", "bad from", "text not an object", "no type",
        "status without id", "last of several messages without id"])
def test_a_malformed_delivery_is_refused_with_400_and_nothing_is_stored(client, number, body):
    """A validly signed body that is not Meta's shape answers 400 JSON and stores nothing —
    not even the well-formed messages before the broken one."""
    response = deliver(client, number.url, body)

    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "bad_request"
    assert messages(number.org_id) == []


def test_changes_of_other_fields_and_objects_are_acknowledged_and_ignored(client, number):
    """Template reviews, account updates or another product's object are not errors."""
    other_field = json.loads(payload("text"))
    other_field["entry"][0]["changes"][0]["field"] = "message_template_status_update"
    other_object = {"object": "page", "entry": []}

    for body in (other_field, other_object):
        assert deliver(client, number.url, json.dumps(body).encode()).status_code == 200
    assert messages(number.org_id) == []


# -- inbound messages --------------------------------------------------------------------------

def test_a_text_message_is_stored_in_the_contacts_conversation(client, number):
    """The text, its WhatsApp id and time, and a conversation keyed by the E.164 phone."""
    response = deliver(client, number.url, payload("text"))

    assert response.status_code == 200
    [message] = messages(number.org_id)
    assert (message.direction, message.type, message.status) == ("in", "text", "received")
    assert message.body == "Does it come in another color?"
    assert message.provider_message_id == TEXT_WAMID
    assert message.provider_timestamp.timestamp() == 1749416383
    [conversation] = conversations(number.org_id)
    assert conversation.contact_phone == "+16505551234"
    assert conversation.contact_name == "Sheena Nelson"
    assert conversation.unread_count == 1
    assert message.conversation_id == conversation.id


def test_the_same_delivery_twice_stores_one_message(client, number):
    """Meta redelivers until it gets a 200: the second copy changes nothing."""
    first = deliver(client, number.url, payload("text"))
    second = deliver(client, number.url, payload("text"))

    assert (first.status_code, second.status_code) == (200, 200)
    assert len(messages(number.org_id)) == 1
    assert conversations(number.org_id)[0].unread_count == 1


def test_an_image_with_a_caption_is_stored_and_its_media_downloaded(app, client, graph,
                                                                    number):
    """The caption is the body; the media job fetches the file through the Graph API (media
    id → URL → download with the token) into storage."""
    jpeg = b"\xff\xd8\xff\xe0fake-jpeg-bytes"
    graph.add_media("1003383421387255", jpeg, "image/jpeg")

    deliver(client, number.url, payload("image", media_id="1003383421387255",
                                        sha256=hashlib.sha256(jpeg).hexdigest()))
    run_jobs(app, queues=("whatsapp",))

    [message] = messages(number.org_id)
    assert (message.type, message.body) == ("image", "هذا هو المنتج المطلوب")
    assert message.content["media_id"] == "1003383421387255"
    assert message.content["sha256"] == hashlib.sha256(jpeg).hexdigest()
    assert (message.content["mime_type"], message.content["size"]) == ("image/jpeg", len(jpeg))
    with organization_context(number.org_id):
        assert media.path_of(message).read_bytes() == jpeg
    media_get, download = graph.requests
    assert media_get.path == f"/{VERSION}/1003383421387255"
    assert download.headers["Authorization"] == f"Bearer {TOKEN}"


def test_a_reply_points_at_the_message_it_answers(client, number):
    """`context.id` links the reply to the stored message it quotes."""
    deliver(client, number.url, payload("text"))
    deliver(client, number.url, payload("reply", reply_to=TEXT_WAMID))

    original, answer = messages(number.org_id)
    assert answer.reply_to_id == original.id
    assert answer.body == "Yes, the blue one please"


def test_a_reaction_shows_on_its_message_and_an_empty_one_removes_it(client, number):
    """A reaction names the message it reacts to; Meta omits the emoji when it is removed."""
    deliver(client, number.url, payload("text"))
    deliver(client, number.url, payload("reaction", reaction_id="wamid.REACT.1",
                                        reacted_to=TEXT_WAMID))
    reacted = messages(number.org_id)[0].content["reactions"]
    deliver(client, number.url, payload("reaction_removed", reaction_id="wamid.REACT.2",
                                        reacted_to=TEXT_WAMID))

    target, *reactions = messages(number.org_id)
    assert reacted == {"contact": "\u2764\ufe0f"}
    assert target.content["reactions"] == {}
    assert [(r.type, r.content) for r in reactions] == [
        ("reaction", {"message_id": TEXT_WAMID, "emoji": "\u2764\ufe0f"}),
        ("reaction", {"message_id": TEXT_WAMID, "emoji": ""})]


def test_several_messages_in_one_delivery_are_all_stored(client, number):
    """Location, contacts, button and list replies, a template button, a forwarded document and
    a frequently forwarded sticker, from two contacts, in one delivery."""
    response = deliver(client, number.url, payload("several"))

    assert response.status_code == 200
    stored = messages(number.org_id)
    assert [(m.provider_message_id, m.type, m.body, m.is_forwarded) for m in stored] == [
        ("wamid.SEVERAL.1", "location", "Kingdom Centre", False),
        ("wamid.SEVERAL.2", "contacts", "Layla Hassan", False),
        ("wamid.SEVERAL.3", "interactive", "Confirm", False),
        ("wamid.SEVERAL.4", "interactive", "Large", False),
        ("wamid.SEVERAL.5", "button", "Stop promotions", False),
        ("wamid.SEVERAL.6", "document", "Invoice", True),
        ("wamid.SEVERAL.7", "sticker", "", True),
    ]
    location, contacts, button_reply, list_reply, button, document, sticker = stored
    assert location.content["latitude"] == 24.7136
    assert contacts.content["contacts"][0]["phones"][0]["wa_id"] == "966507654321"
    assert button_reply.content == {"reply_type": "button_reply", "id": "confirm-order",
                                    "title": "Confirm"}
    assert list_reply.content["description"] == "Fits 4 people"
    assert button.content == {"text": "Stop promotions", "payload": "STOP_PROMOTIONS"}
    assert document.content["filename"] == "invoice-2025-06.pdf"
    assert (document.content["media_id"], sticker.content["media_id"]) == (
        "1003383421387256", "1003383421387257")
    assert sorted(c.contact_phone for c in conversations(number.org_id)) == [
        "+966501234567", "+971501112233"]


def test_a_contact_with_only_a_user_id_gets_a_conversation_and_replies_use_recipient(
        app, client, graph, number):
    """A contact known only by a business-scoped user id is keyed by it, and our reply goes
    out with `recipient` instead of `to`."""
    deliver(client, number.url, payload("user_id_only"))
    [conversation] = conversations(number.org_id)

    reply(app, number, conversation.id, "Yes, it ships today")

    assert (conversation.contact_phone, conversation.contact_user_id) == (
        None, "US.13491208655302741918")
    assert conversation.contact_name == "Bob"
    [sent] = graph.sends()
    assert sent["recipient"] == "US.13491208655302741918"
    assert "to" not in sent


def test_an_unknown_message_type_is_kept_as_unsupported(client, number):
    """Never dropped: stored as `unsupported` with Meta's whole message object."""
    deliver(client, number.url, payload("unsupported"))

    [message] = messages(number.org_id)
    assert message.type == "unsupported"
    assert message.content["original_type"] == "unsupported"
    assert message.content["raw"]["errors"][0]["code"] == 131051


# -- statuses ----------------------------------------------------------------------------------

def test_statuses_out_of_order_end_as_read(app, client, graph, number):
    """A late "delivered" after "read" fills its time but never moves the message back."""
    conversation = customer_writes(client, number)
    message_id = reply(app, number, conversation.id, "Blue and green")
    wamid = number.get(Message, message_id).provider_message_id

    send_status(client, number, wamid, "read", message_id, timestamp="1749417060")
    send_status(client, number, wamid, "delivered", message_id, timestamp="1749417030")

    message = number.get(Message, message_id)
    assert message.status == "read"
    assert message.read_at.timestamp() == 1749417060
    assert message.delivered_at.timestamp() == 1749417030


def test_a_failed_status_keeps_the_error_code_and_message(app, client, graph, number):
    """Meta's asynchronous failure lands on the message with its code and reason."""
    conversation = customer_writes(client, number)
    message_id = reply(app, number, conversation.id, "Your order has shipped")
    wamid = number.get(Message, message_id).provider_message_id

    response = deliver(client, number.url, payload("status_failed", wamid=wamid,
                                                   our_id=str(message_id)))

    assert response.status_code == 200
    message = number.get(Message, message_id)
    assert (message.status, message.error_code) == ("failed", "131026")
    assert message.error_message == "Message undeliverable: Message Undeliverable."
    assert message.failed_at.timestamp() == 1749417000


def test_a_status_for_a_message_that_is_not_ours_changes_nothing(app, client, number):
    """Another app on the same number (or a stale id) is acknowledged and ignored."""
    response = send_status(client, number, "wamid.SOMEONE.ELSE", "delivered", "")

    assert response.status_code == 200
    assert messages(number.org_id) == []


# -- the platform-wide webhook -----------------------------------------------------------------

def test_the_platform_webhook_routes_each_change_to_its_organization(app, client,
                                                                     monkeypatch):
    """One delivery signed by the platform's app carries two organizations' numbers (and one
    unknown number, skipped): each message lands in its own organization only."""
    monkeypatch.setitem(app.config, "WHATSAPP_APP_SECRET", PLATFORM_SECRET)
    first, second = Number("111111111111111"), Number("222222222222222")
    body = payload("platform", first_phone_number_id="111111111111111",
                   second_phone_number_id="222222222222222")

    response = deliver(client, "/webhooks/whatsapp", body, secret=PLATFORM_SECRET)

    assert response.status_code == 200
    assert [m.body for m in messages(first.org_id)] == ["Hello first business"]
    assert [m.body for m in messages(second.org_id)] == ["Hello second business"]
    assert [c.contact_phone for c in conversations(first.org_id)] == ["+966501234567"]
    assert [c.contact_phone for c in conversations(second.org_id)] == ["+971501112233"]


@pytest.mark.parametrize("platform_secret", [PLATFORM_SECRET, ""], ids=["set", "unset"])
def test_the_platform_webhook_refuses_a_profiles_signature(app, client, monkeypatch,
                                                           platform_secret):
    """Only the platform's own app secret opens the platform door; unset, nothing does."""
    monkeypatch.setitem(app.config, "WHATSAPP_APP_SECRET", platform_secret)
    number = Number()

    response = deliver(client, "/webhooks/whatsapp", payload("text"), secret=APP_SECRET)
    unsigned_empty = deliver(client, "/webhooks/whatsapp", payload("text"), secret="")

    assert (response.status_code, unsigned_empty.status_code) == (403, 403)
    assert messages(number.org_id) == []


def test_a_profile_webhook_never_writes_into_another_organization(client):
    """A delivery signed with organization A's secret naming B's phone number id is skipped."""
    a = Number("333333333333333")
    b = Number("444444444444444", app_secret="b-secret")
    body = payload("text", phone_number_id="444444444444444")

    response = deliver(client, a.url, body, secret=APP_SECRET)

    assert response.status_code == 200
    assert messages(a.org_id) == []
    assert messages(b.org_id) == []


# -- sending through the Graph API -------------------------------------------------------------

def test_the_send_job_posts_metas_exact_payload_and_stores_the_provider_id(app, client, graph,
                                                                           number):
    """A reply quoting the customer's message: Meta's text payload with `context` and our id
    in biz_opaque_callback_data, with the profile's token; the message is `sent` with the id
    Meta gave it."""
    conversation = customer_writes(client, number)
    inbound_id = messages(number.org_id)[0].id

    message_id = reply(app, number, conversation.id, "نعم، متوفر بالأزرق", inbound_id)

    [request] = graph.requests
    assert request.path == f"/{VERSION}/{PHONE_NUMBER_ID}/messages"
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert request.json == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": "16505551234",
        "type": "text",
        "text": {"body": "نعم، متوفر بالأزرق"},
        "context": {"message_id": TEXT_WAMID},
        "biz_opaque_callback_data": str(message_id),
    }
    message = number.get(Message, message_id)
    assert (message.status, message.provider_message_id) == ("sent", "wamid.FAKE000001")
    assert message.sent_at is not None


@pytest.mark.parametrize(("code", "reason"), [
    (131047, "(#131047) Re-engagement message: Message failed to send because more than 24 "
             "hours have passed since the customer last replied to this number."),
    (130429, "(#130429) Rate limit hit: Cloud API message throughput has been reached."),
    (131000, "(#131000) Something went wrong: Message failed to send due to an unknown "
             "error."),
], ids=["window closed", "rate limit", "HTTP 500 with a Graph error"])
def test_a_graph_error_fails_the_message_with_its_code(app, client, graph, number, code,
                                                       reason):
    """WhatsApp refused the message: failed, with Meta's code and reason for the agent. A
    Graph error object is WhatsApp's own answer, even with HTTP 500: not sent, not unknown."""
    conversation = customer_writes(client, number)
    graph.error_code = code

    message_id = reply(app, number, conversation.id, "Hello again")

    message = number.get(Message, message_id)
    assert (message.status, message.error_code, message.error_message) == (
        "failed", str(code), reason)
    assert message.provider_message_id is None


@pytest.mark.parametrize("failure", ["timeout", "dropped connection", "gateway error"])
def test_a_send_cut_off_is_unknown_never_resent_and_settled_by_the_status_webhook(
        app, client, graph, number, monkeypatch, failure):
    """The request reached Meta but its answer was lost: the message is `unknown`; running
    the job again sends nothing; the status webhook naming our id settles it."""
    conversation = customer_writes(client, number)
    if failure == "timeout":
        monkeypatch.setattr(cloud, "TIMEOUT", (5, 0.2))
        graph.delay = 0.6
    elif failure == "dropped connection":
        graph.drop_connection = True
    else:
        graph.raw_status = 504

    message_id = reply(app, number, conversation.id, "On its way")
    unknown = number.get(Message, message_id).status
    enqueue_now("crm.whatsapp.jobs:send_message", message_id, queue="whatsapp",
                org_id=number.org_id)
    run_jobs(app, queues=("whatsapp",))
    send_status(client, number, "wamid.LATE.ANSWER", "delivered", message_id)

    assert unknown == "unknown"
    [sent] = graph.sends()  # once, carrying the id that the status webhook echoes back
    assert sent["biz_opaque_callback_data"] == str(message_id)
    message = number.get(Message, message_id)
    assert (message.status, message.provider_message_id) == ("delivered", "wamid.LATE.ANSWER")


def test_a_connection_that_never_opens_fails_the_message(app, client, number, monkeypatch):
    """Nothing listening: the request never left, so the message is failed (retryable by a
    person), not unknown."""
    conversation = customer_writes(client, number)
    monkeypatch.setitem(app.config, "WHATSAPP_GRAPH_URL", f"http://127.0.0.1:{free_port()}")

    message_id = reply(app, number, conversation.id, "Anyone there?")

    message = number.get(Message, message_id)
    assert (message.status, message.error_code) == ("failed", "network")


def test_an_image_is_uploaded_then_sent_by_its_media_id(app, client, graph, number):
    """Media goes up to /{phone_number_id}/media first, then out by id with its caption."""
    conversation = customer_writes(client, number)
    png = b"\x89PNG\r\n\x1a\nfake-png"
    with organization_context(number.org_id):
        target = media.root() / str(number.org_id) / "outbox" / "catalogue.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(png)
        message = services.queue_outbound(
            db.session.get(Conversation, conversation.id),
            db.session.get(User, number.admin_id), type_="image", body="Our new catalogue",
            content={"path": f"{number.org_id}/outbox/catalogue.png", "mime_type": "image/png",
                     "filename": "catalogue.png"})
        message_id = message.id

    run_jobs(app, queues=("whatsapp",))

    upload, send = graph.requests
    assert upload.path == f"/{VERSION}/{PHONE_NUMBER_ID}/media"
    assert upload.form == {"messaging_product": "whatsapp", "type": "image/png"}
    assert upload.files["file"] == ("catalogue.png", "image/png", png)
    [media_id] = graph.media
    assert send.json["type"] == "image"
    assert send.json["image"] == {"id": media_id, "caption": "Our new catalogue"}
    assert number.get(Message, message_id).status == "sent"


def test_a_template_is_sent_in_metas_template_format(app, client, graph, number):
    """Outside the window only templates go out: name and language code as Meta expects."""
    deliver(client, number.url, payload("text"))
    conversation_id = conversations(number.org_id)[0].id
    with organization_context(number.org_id):
        services.queue_outbound(db.session.get(Conversation, conversation_id),
                                db.session.get(User, number.admin_id), type_="template",
                                content={"name": "order_update", "language": "ar",
                                         "components": [{"type": "body", "parameters": [
                                             {"type": "text", "text": "1024"}]}]})

    run_jobs(app, queues=("whatsapp",))

    [sent] = graph.sends()
    assert sent["type"] == "template"
    assert sent["template"] == {"name": "order_update", "language": {"code": "ar"},
                                "components": [{"type": "body", "parameters": [
                                    {"type": "text", "text": "1024"}]}]}


def test_a_template_sent_from_the_inbox_reaches_meta_with_its_parameters(app, client, graph,
                                                                        number):
    """The composer's template (name, language, a text per parameter) goes out as Meta's
    template object, its parameters as the body's."""
    deliver(client, number.url, payload("text"))
    conversation_id = conversations(number.org_id)[0].id
    with organization_context(number.org_id):
        message_id = services.send_template(db.session.get(Conversation, conversation_id),
                                            db.session.get(User, number.admin_id),
                                            "order_update", "ar", ["1024", "الرياض"]).id

    run_jobs(app, queues=("whatsapp",))

    [sent] = graph.sends()
    assert sent["template"] == {"name": "order_update", "language": {"code": "ar"},
                                "components": [{"type": "body", "parameters": [
                                    {"type": "text", "text": "1024"},
                                    {"type": "text", "text": "الرياض"}]}]}
    assert number.get(Message, message_id).status == "sent"


def test_marking_a_conversation_read_sends_the_read_receipt(app, client, graph, number):
    """The agent opening the conversation sends Meta's read receipt for the last message."""
    conversation = customer_writes(client, number)
    with organization_context(number.org_id):
        services.mark_conversation_read(db.session.get(Conversation, conversation.id),
                                        db.session.get(User, number.admin_id))

    run_jobs(app, queues=("whatsapp",))

    [receipt] = graph.requests
    assert receipt.path == f"/{VERSION}/{PHONE_NUMBER_ID}/messages"
    assert receipt.json == {"messaging_product": "whatsapp", "status": "read",
                            "message_id": TEXT_WAMID}
