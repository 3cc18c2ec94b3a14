"""Hostile form posts on the pages: a NUL (which PostgreSQL cannot store) or bytes that are not
UTF-8 answer 422 with the form again, saying what is wrong in the user's language; never a
500, and nothing is written.

Lone surrogates cannot arrive through a form: werkzeug keeps a percent-escape that is not UTF-8
as the literal characters, replaces bad bytes in a multipart part with U+FFFD, and reads a
urlencoded body holding raw bytes that are not UTF-8 as an empty form.
"""

from __future__ import annotations

import io

import pytest
from sqlalchemy import select

from crm.customers.models import Customer
from crm.extensions import db
from crm.foundation import services
from crm.foundation.models import Organization
from crm.tenancy import organization_context
from crm.whatsapp.models import Message
from tests.factories import PASSWORD, login, make_org, snapshot
from tests.whatsapp.factories import make_conversation, make_profile, png

ENGLISH = {"Accept-Language": "en"}
REGISTRATION = {"organization_name": "Acme", "full_name": "Amal Haddad",
                "email": "amal@acme.example", "password": PASSWORD, "language": "en"}


@pytest.fixture
def org():
    return make_org(language="en")


@pytest.mark.parametrize("field", ["organization_name", "full_name", "email"])
def test_a_nul_in_a_registration_field_is_422_on_the_form(client, field):
    """Registering with a NUL in a field shows the form again, the field marked; no account."""
    response = client.post("/register", headers=ENGLISH,
                           data={**REGISTRATION, field: "Am\x00al"})

    assert response.status_code == 422
    html = response.get_data(as_text=True)
    assert 'name="organization_name"' in html
    assert "Please correct the highlighted fields." in html
    assert services.login_candidates(REGISTRATION["email"]) == []


def test_bytes_that_are_not_utf8_are_a_form_with_nothing_in_it(client):
    """A urlencoded body with raw bytes that are not UTF-8 cannot be read: 422, each required
    field named, no account."""
    body = b"organization_name=Acme\xff&full_name=Amal&email=amal%40acme.example&password=x"

    response = client.post("/register", headers=ENGLISH, data=body,
                           content_type="application/x-www-form-urlencoded")

    assert response.status_code == 422
    assert "This field is required." in response.get_data(as_text=True)
    assert services.login_candidates(REGISTRATION["email"]) == []


def test_a_percent_escaped_surrogate_stays_literal_text(client):
    """%ED%A0%80 (the bytes of a lone surrogate, not UTF-8) is kept as those nine characters,
    never decoded into something PostgreSQL cannot store."""
    body = ("organization_name=Acme%ED%A0%80&full_name=Amal&email=amal%40acme.example"
            f"&password={PASSWORD.replace(' ', '+')}&language=en").encode()

    response = client.post("/register", headers=ENGLISH, data=body,
                           content_type="application/x-www-form-urlencoded")

    assert response.status_code == 303, response.get_data(as_text=True)
    [(org_id, _user_id)] = services.login_candidates(REGISTRATION["email"])
    with organization_context(org_id):
        assert db.session.get(Organization, org_id).name == "Acme%ED%A0%80"


def test_a_nul_in_the_login_form_is_a_failed_login(client):
    """A NUL in the email or password of the login page is a wrong credential, not a 500."""
    response = client.post("/login", headers=ENGLISH,
                           data={"email": "amal\x00@acme.example", "password": "x\x00"})

    assert response.status_code in (401, 422), response.status_code


def test_a_nul_in_the_profile_form_is_422(client, org):
    """One's own name with a NUL shows the profile form again; the name is unchanged."""
    login(client, org.admin)
    before = snapshot(org.id)

    response = client.post("/profile", headers=ENGLISH,
                           data={"full_name": "Am\x00al", "preferred_language": "en"})

    assert response.status_code == 422
    assert "Remove the control characters." in response.get_data(as_text=True)
    assert snapshot(org.id) == before


@pytest.mark.parametrize("field", ["name", "company", "notes"])
def test_a_nul_in_the_customer_form_is_422_on_the_form(client, org, field):
    """The new-customer form with a NUL in a field is shown again, the field marked."""
    login(client, org.admin)

    response = client.post("/customers/new", headers=ENGLISH,
                           data={"name": "Amal", field: "Am\x00al"})

    assert response.status_code == 422
    assert "Remove the control characters." in response.get_data(as_text=True)
    with organization_context(org.id):
        assert db.session.scalars(select(Customer)).all() == []


def test_a_nul_in_the_send_message_form_is_422(client, org):
    """The inbox composer refuses a NUL in the text; nothing is sent."""
    conversation = make_conversation(make_profile(org, "sandbox"))
    login(client, org.admin)

    response = client.post(f"/inbox/conversations/{conversation.id}/messages", headers=ENGLISH,
                           data={"text": "Hi\x00there"})

    assert response.status_code == 422
    assert "Remove the control characters." in response.get_data(as_text=True)
    with organization_context(org.id):
        assert db.session.scalars(select(Message)).all() == []


def test_a_nul_in_the_organization_settings_is_422(client, org):
    """The organization's name with a NUL shows the settings form again; nothing changes."""
    login(client, org.admin)
    before = snapshot(org.id)

    response = client.post("/settings", headers=ENGLISH, data={
        "name": "Ac\x00me", "default_language": "en", "timezone": "Asia/Riyadh",
        "country": "SA"})

    assert response.status_code == 422
    assert "Remove the control characters." in response.get_data(as_text=True)
    assert snapshot(org.id) == before


@pytest.mark.parametrize("field", ["display_name", "phone_number_id", "business_account_id"])
def test_a_nul_in_the_new_number_form_is_422(client, org, field):
    """Connecting a cloud number with a NUL in a field shows the form again, the field
    marked; no number is added."""
    login(client, org.admin)
    before = snapshot(org.id)
    form = {"provider": "cloud", "display_name": "Sales", "phone_number_id": "106540352242922",
            "business_account_id": "102290129340398", "access_token": "EAAG-token",
            "app_secret": "secret"}

    response = client.post("/whatsapp/numbers", headers=ENGLISH,
                           data={**form, field: form[field][:3] + "\x00"})

    assert response.status_code == 422
    assert "Remove the control characters." in response.get_data(as_text=True)
    assert snapshot(org.id) == before


def test_a_nul_in_an_uploaded_file_name_is_replaced(client, org):
    """A file sent from the inbox whose name holds a NUL (no file system allows one) is sent
    with the NUL shown as U+FFFD, as werkzeug shows bytes that are not UTF-8."""
    conversation = make_conversation(make_profile(org, "sandbox"))
    login(client, org.admin)

    response = client.post(f"/inbox/conversations/{conversation.id}/messages", headers=ENGLISH,
                           content_type="multipart/form-data", data={
                               "text": "The catalogue",
                               "file": (io.BytesIO(png()), "cata\x00logue.png", "image/png")})

    assert response.status_code in (200, 303), response.get_data(as_text=True)[:300]
    with organization_context(org.id):
        [message] = db.session.scalars(select(Message)).all()
        assert message.content["filename"] == "cata\ufffdlogue.png"
