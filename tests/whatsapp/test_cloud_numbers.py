"""A Cloud API number is proven before it is trusted: the Graph API must answer for its phone
number id with the token given (so nobody can claim another business's number), and Meta must
have verified its webhook before it shows as connected."""

from __future__ import annotations

import json

import pytest
from markupsafe import escape

from crm.config import Config
from crm.tenancy import organization_context
from tests.api import assert_error
from tests.conftest import free_port
from tests.factories import bearer, login, make_org, make_user
from tests.foundation import HTMX
from tests.whatsapp.factories import make_profile, page_text, profiles_of
from tests.whatsapp.test_cloud import (
    PLATFORM_SECRET,
    deliver,
    messages,
    payload,
    signature,
)

ACCESS_TOKEN = "EAAG-very-secret-access-token-9876"
APP_SECRET = "an-app-secret-5432"
NUMBER_ID = "106540352242922"
VERSION = Config.WHATSAPP_GRAPH_VERSION
REFUSED_TOKEN = "Invalid OAuth access token - Cannot parse access token"
NOT_YOURS = f"Unsupported get request. Object with ID '{NUMBER_ID}' does not exist"


@pytest.fixture
def org():
    return make_org(language="en")


def _cloud_body(**overrides) -> dict:
    return {"provider": "cloud", "display_name": "Support", "phone_number_id": NUMBER_ID,
            "access_token": ACCESS_TOKEN, "app_secret": APP_SECRET, **overrides}




def _check(profile_id: int, name: str, done: bool) -> str:
    """The markup of one item of a cloud number's checklist, ticked or not."""
    return f'class="check {"done" if done else "missing"}" id="number-{profile_id}-check-{name}"'


def _handshake(client, profile_id: int, verify_token: str):
    """Meta's subscription check on the number's own webhook."""
    return client.get(f"/webhooks/whatsapp/{profile_id}", query_string={
        "hub.mode": "subscribe", "hub.verify_token": verify_token, "hub.challenge": "42"})


# -- hole: a phone number id is no longer first come, first served ------------------------------

def test_creating_a_cloud_number_asks_the_graph_api_with_the_token_given(client, org, graph):
    """The Graph API is asked about the phone number id with the token given, and what it
    says the number is (its verified name) is kept."""
    graph.add_number(NUMBER_ID, token=ACCESS_TOKEN, verified_name="Wasl Shop")

    response = client.post("/api/whatsapp/profiles", json=_cloud_body(),
                           headers=bearer(org.admin))

    assert response.status_code == 201, response.get_json()
    [asked] = graph.requests
    assert (asked.method, asked.path) == ("GET", f"/{VERSION}/{NUMBER_ID}")
    assert asked.headers["Authorization"] == f"Bearer {ACCESS_TOKEN}"
    body = response.get_json()
    assert body["verified_name"] == "Wasl Shop"
    assert body["verified_at"] is not None


@pytest.mark.parametrize(("known_to", "field", "reason"), [
    ("another token", "phone_number_id", NOT_YOURS),
    (None, "access_token", REFUSED_TOKEN),
], ids=["another business's number", "a token Meta refuses"])
def test_a_number_the_token_cannot_reach_is_refused_with_graphs_reason(client, org, graph,
                                                                        known_to, field,
                                                                        reason):
    """Someone else's phone number id, or a bad token: 422 saying WhatsApp refused the number
    and why, on the field at fault; nothing is stored."""
    if known_to:
        graph.add_number("999999999999999", token=ACCESS_TOKEN)  # the token is valid...
        graph.add_number(NUMBER_ID, token="the-real-owners-token")  # ...for another number

    response = client.post("/api/whatsapp/profiles",
                           json=_cloud_body(access_token=ACCESS_TOKEN if known_to else "bad"),
                           headers=bearer(org.admin))

    error = assert_error(response, 422, "validation_error")
    assert error["message"].startswith("WhatsApp refused this number: ")
    assert reason in error["message"]
    assert list(error["fields"]) == [field]
    assert reason in error["fields"][field]
    assert profiles_of(org.id) == []


def test_the_form_says_why_whatsapp_refused_the_number(client, org, graph):
    """On the numbers page the refusal is a 422 with the translated sentence and Graph's
    reason, the cloud form open again without the secrets."""
    login(client, org.admin)

    response = client.post("/whatsapp/numbers", data=_cloud_body(access_token="bad"))

    assert response.status_code == 422
    html = response.get_data(as_text=True)
    assert f"WhatsApp refused this number: {REFUSED_TOKEN}" in html
    assert 'id="error-cloud-access_token"' in html
    assert f'value="{NUMBER_ID}"' in html
    assert APP_SECRET not in html
    assert profiles_of(org.id) == []


def test_graph_unreachable_refuses_the_number(app, client, org, monkeypatch):
    """With the Graph API out of reach the token is not proven: 422, nothing stored."""
    monkeypatch.setitem(app.config, "WHATSAPP_GRAPH_URL", f"http://127.0.0.1:{free_port()}")

    response = client.post("/api/whatsapp/profiles", json=_cloud_body(),
                           headers=bearer(org.admin))

    assert "WhatsApp could not be reached" in assert_error(response, 422)["message"]
    assert profiles_of(org.id) == []


def test_an_unproven_claim_on_a_number_does_not_block_its_owner(app, client, org, other_org,
                                                                graph, monkeypatch):
    """A profile whose token was never proven (made before numbers were checked) holds
    nothing: the real owner connects the number, and the platform webhook routes its
    messages to the owner only."""
    org_id, squatter_org_id = org.id, other_org.id
    make_profile(other_org, phone_number_id=NUMBER_ID, verified_at=None)
    graph.add_number(NUMBER_ID, token=ACCESS_TOKEN)
    created = client.post("/api/whatsapp/profiles", json=_cloud_body(),
                          headers=bearer(org.admin))
    assert created.status_code == 201, created.get_json()
    monkeypatch.setitem(app.config, "WHATSAPP_APP_SECRET", PLATFORM_SECRET)

    deliver(client, "/webhooks/whatsapp", payload("text"), secret=PLATFORM_SECRET)

    assert [m.body for m in messages(org_id)] == ["Does it come in another color?"]
    assert messages(squatter_org_id) == []


def test_the_platform_webhook_routes_only_to_numbers_whose_token_was_proven(app, client, org,
                                                                            monkeypatch):
    """A signed platform delivery naming an unproven number is answered 200 (Meta must not
    retry it forever) and goes nowhere."""
    monkeypatch.setitem(app.config, "WHATSAPP_APP_SECRET", PLATFORM_SECRET)
    org_id = make_profile(org, phone_number_id=NUMBER_ID, verified_at=None).organization_id

    response = deliver(client, "/webhooks/whatsapp", payload("text"), secret=PLATFORM_SECRET)

    assert response.status_code == 200
    assert messages(org_id) == []


# -- bug: a cloud number showed «متصل» without checking anything --------------------------------

def test_a_new_cloud_number_is_connected_only_once_meta_verified_its_webhook(client, org,
                                                                              graph):
    """After Graph answered, the page ticks the token and says the webhook is missing, with
    the address and verify token to paste; Meta's handshake on that address connects it."""
    graph.add_number(NUMBER_ID, token=ACCESS_TOKEN, verified_name="Wasl Shop")
    login(client, org.admin)
    client.post("/whatsapp/numbers", data=_cloud_body())
    [profile] = profiles_of(org.id)
    assert profile.state == "pending"
    page = page_text(client, f"/whatsapp/numbers/{profile.id}")
    assert _check(profile.id, "token", done=True) in page
    assert "Wasl Shop" in page
    assert _check(profile.id, "webhook", done=False) in page
    assert f"http://localhost/webhooks/whatsapp/{profile.id}" in page
    assert profile.verify_token in page
    assert "Awaiting verification" in page_text(client, "/whatsapp/numbers")

    assert _handshake(client, profile.id, profile.verify_token).status_code == 200

    [profile] = profiles_of(org.id)
    assert profile.state == "connected"
    page = page_text(client, f"/whatsapp/numbers/{profile.id}")
    assert _check(profile.id, "webhook", done=True) in page
    with organization_context(org.id):
        org_ar = make_user(org, "admin", language="ar")
    login(client, org_ar)
    assert "متصل" in page_text(client, "/whatsapp/numbers")


def test_a_signed_delivery_on_its_webhook_also_proves_meta_verified_it(client, org):
    """Meta posts only to a callback it verified: the first signed delivery counts."""
    profile = make_profile(org, phone_number_id=NUMBER_ID, app_secret=APP_SECRET,
                           webhook_verified_at=None, state="pending")

    body = payload("text")
    client.post(f"/webhooks/whatsapp/{profile.id}", data=body, csrf=False,
                headers={"Content-Type": "application/json",
                         "X-Hub-Signature-256": signature(body, APP_SECRET)})

    assert profiles_of(org.id)[0].state == "connected"


def test_a_failed_handshake_verifies_nothing(client, org):
    """A wrong verify token leaves the webhook unverified."""
    profile = make_profile(org, webhook_verified_at=None, state="pending")

    assert _handshake(client, profile.id, "wrong").status_code == 403

    [stored] = profiles_of(org.id)
    assert (stored.state, stored.webhook_verified_at) == ("pending", None)


def test_check_again_asks_graph_and_shows_its_answer(client, org, graph):
    """A number whose token is unproven (as every number made before the checks is) offers
    "Check again": Graph refusing shows its reason and ✘; Graph answering ticks it."""
    profile = make_profile(org, phone_number_id=NUMBER_ID, access_token=ACCESS_TOKEN,
                           verified_at=None, state="pending")
    graph.add_number("999999999999999", token=ACCESS_TOKEN)  # not yet this one
    login(client, org.admin)
    page = page_text(client, f"/whatsapp/numbers/{profile.id}")
    assert "Check again" in page
    assert _check(profile.id, "token", done=False) in page

    refused = client.post(f"/whatsapp/numbers/{profile.id}/connect", headers=HTMX)
    assert refused.status_code == 200
    assert escape(NOT_YOURS) in refused.get_data(as_text=True)
    assert _check(profile.id, "token", done=False) in (
        refused.get_data(as_text=True))
    assert profiles_of(org.id)[0].state == "failed"

    graph.add_number(NUMBER_ID, token=ACCESS_TOKEN, verified_name="Wasl Shop")
    answered = client.post(f"/whatsapp/numbers/{profile.id}/connect", headers=HTMX)
    html = answered.get_data(as_text=True)
    assert _check(profile.id, "token", done=True) in html
    assert escape(NOT_YOURS) not in html
    [stored] = profiles_of(org.id)
    assert (stored.state, stored.verified_name) == ("connected", "Wasl Shop")
    assert [r.path for r in graph.requests] == [f"/{VERSION}/{NUMBER_ID}"] * 2


def test_checking_again_never_takes_a_number_another_workspace_proved(client, org, other_org,
                                                                       graph):
    """Both tokens reach the number, but another workspace proved it first: it keeps it, and
    this one says the number is already connected."""
    make_profile(other_org, phone_number_id=NUMBER_ID)
    profile = make_profile(org, phone_number_id=NUMBER_ID, access_token=ACCESS_TOKEN,
                           verified_at=None, state="pending")
    graph.add_number(NUMBER_ID, token=ACCESS_TOKEN)
    login(client, org.admin)

    response = client.post(f"/whatsapp/numbers/{profile.id}/connect", headers=HTMX)

    assert "This WhatsApp number is already connected." in response.get_data(as_text=True)
    [stored] = profiles_of(org.id)
    assert (stored.state, stored.verified_at) == ("failed", None)


def test_a_number_whose_token_is_now_refused_stops_being_routed(app, client, org, graph,
                                                               monkeypatch):
    """Checking again after the token was revoked: the number is no longer proven, so the
    platform webhook stops routing to it."""
    monkeypatch.setitem(app.config, "WHATSAPP_APP_SECRET", PLATFORM_SECRET)
    profile = make_profile(org, phone_number_id=NUMBER_ID, access_token="revoked")
    login(client, org.admin)

    client.post(f"/whatsapp/numbers/{profile.id}/connect")
    deliver(client, "/webhooks/whatsapp", payload("text"), secret=PLATFORM_SECRET)

    assert profiles_of(org.id)[0].verified_at is None
    assert messages(org.id) == []


def test_the_webhook_address_comes_from_public_url_never_from_the_request(app, client, org,
                                                                         monkeypatch):
    """The address to paste into Meta's dashboard is PUBLIC_URL's, whatever host the request
    came to (here localhost): on the page and in the API."""
    monkeypatch.setitem(app.config, "PUBLIC_URL", "https://wasl.example/")
    profile = make_profile(org)
    login(client, org.admin)
    expected = f"https://wasl.example/webhooks/whatsapp/{profile.id}"

    page = page_text(client, f"/whatsapp/numbers/{profile.id}")
    api = client.get(f"/api/whatsapp/profiles/{profile.id}", headers=bearer(org.admin))

    assert expected in page
    assert "localhost/webhooks" not in page
    assert api.get_json()["webhook_url"] == expected


# -- only admins see a number's verify token ----------------------------------------------------

@pytest.mark.parametrize("role", ["manager", "agent"])
def test_only_admins_see_the_verify_token(client, org, role):
    """The API shows the webhook's verify token (and the masked secrets) to admins only."""
    profile = make_profile(org)
    other = make_user(org, role)

    as_admin = client.get(f"/api/whatsapp/profiles/{profile.id}", headers=bearer(org.admin))
    as_other = client.get("/api/whatsapp/profiles", headers=bearer(other))

    assert as_admin.get_json()["verify_token"] == profile.verify_token
    [item] = as_other.get_json()["items"]
    assert [item[k] for k in ("verify_token", "access_token", "app_secret")] == [None] * 3
    assert profile.verify_token not in json.dumps(as_other.get_json())
