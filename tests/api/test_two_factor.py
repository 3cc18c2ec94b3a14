"""Two-factor sign-in through the API: the login's body carries the code; API keys are
unaffected."""

from __future__ import annotations

import pytest

from tests.api import assert_error
from tests.factories import PASSWORD, TOTP_STEP, make_api_key, totp_code, turn_on_two_factor


@pytest.fixture
def secret(org, totp_clock):
    secret, _codes = turn_on_two_factor(org.admin)
    totp_clock(TOTP_STEP + 1)
    return secret


def test_login_asks_for_the_code(client, org, secret):
    """The password alone answers 401 two_factor_required, and no token."""
    response = client.post("/api/auth/login", json={"email": org.admin.email,
                                                    "password": PASSWORD})
    error = assert_error(response, 401, "two_factor_required")
    assert set(error["fields"]) == {"code"}


def test_a_wrong_code_is_a_422_on_code(client, org, secret):
    response = client.post("/api/auth/login", json={"email": org.admin.email,
                                                    "password": PASSWORD, "code": "000000"})
    assert set(assert_error(response, 422, "validation_error")["fields"]) == {"code"}


def test_the_right_code_answers_a_token_once(client, org, secret):
    body = {"email": org.admin.email, "password": PASSWORD,
            "code": totp_code(secret, TOTP_STEP + 1)}
    response = client.post("/api/auth/login", json=body)
    assert response.status_code == 200, response.get_json()
    token = response.get_json()["access_token"]
    me = client.get("/api/users/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200
    assert_error(client.post("/api/auth/login", json=body), 422)  # no replay


def test_a_wrong_password_with_a_right_code_is_refused(client, org, secret):
    response = client.post("/api/auth/login", json={
        "email": org.admin.email, "password": "not the password",
        "code": totp_code(secret, TOTP_STEP + 1)})
    assert_error(response, 401, "unauthorized")


def test_api_keys_need_no_code(client, org, secret):
    key = make_api_key(org)
    response = client.get("/api/users/me", headers={"Authorization": f"Bearer {key.credential}"})
    assert response.status_code == 200


def test_the_code_is_documented(client):
    """/api/openapi.json shows the optional `code` of the login's body, and what it answers."""
    document = client.get("/api/openapi.json").get_json()
    body = document["paths"]["/api/auth/login"]["post"]["requestBody"]
    credentials = body["content"]["application/json"]["schema"]
    assert "code" in credentials["properties"]
    assert "two_factor_required" in credentials["properties"]["code"]["description"]
    assert "code" not in credentials["required"]
