"""Bad input never makes a 500: every mistake answers 4xx with the error shape, translated."""

import re

import pytest

from crm.foundation import services
from tests.api import assert_error
from tests.factories import PASSWORD, bearer, make_user
from tests.foundation import arabic

ARABIC = re.compile(r"[\u0600-\u06FF]")
REGISTRATION = {"organization_name": "Acme", "full_name": "Amal", "email": "amal@acme.example",
                "password": PASSWORD}


def test_malformed_json_is_400(client):
    """A body that is not JSON answers 400 bad_request."""
    response = client.post("/api/auth/register", data='{"email": ',
                           content_type="application/json")
    assert_error(response, 400, "bad_request")


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded",
                                          None])
def test_a_body_that_is_not_declared_json_is_400(client, content_type):
    """JSON sent as text, a form, or with no Content-Type answers 400."""
    response = client.post("/api/auth/login", data='{"email": "a@b.example", "password": "x"}',
                           content_type=content_type)
    assert_error(response, 400, "bad_request")


@pytest.mark.parametrize("body", ["[]", '"text"', "42", "null"])
def test_a_json_body_that_is_not_an_object_is_400(client, body):
    """Only a JSON object is a request body."""
    response = client.post("/api/auth/register", data=body, content_type="application/json")
    assert_error(response, 400, "bad_request")


def test_invalid_utf8_is_400(client):
    """Bytes that are not UTF-8 answer 400, not a decoding crash."""
    response = client.post("/api/auth/register", data=b'{"email": "\xff\xfe"}',
                           content_type="application/json")
    assert_error(response, 400, "bad_request")


@pytest.mark.parametrize("path", ["/api/auth/register", "/api/auth/login"])
def test_an_oversized_body_is_413(app, client, path):
    """A body above MAX_CONTENT_LENGTH answers 413 too_large with the error shape, saying
    what the limit is."""
    padding = "a" * (app.config["MAX_CONTENT_LENGTH"] + 1)
    response = client.post(path, json={**REGISTRATION, "full_name": padding})
    error = assert_error(response, 413, "too_large")
    assert error["message"] == arabic("The request is too large: at most %(mb)d MB.", mb=1)
    assert services.login_candidates(REGISTRATION["email"]) == []


def test_missing_fields_are_each_named(client):
    """An empty object names every required field of register at once."""
    error = assert_error(client.post("/api/auth/register", json={}), 422, "validation_error")
    assert error["fields"].keys() == {"organization_name", "full_name", "email", "password"}


@pytest.mark.parametrize("wrong", [123, 1.5, True, None, [], ["x"], {}, {"nested": "object"}])
def test_wrong_json_types_are_422_on_each_field(client, wrong):
    """Numbers, booleans, null, lists and objects where text belongs answer 422, never 500."""
    body = {"organization_name": wrong, "full_name": wrong, "email": wrong, "password": wrong}
    error = assert_error(client.post("/api/auth/register", json=body), 422)
    assert error["fields"].keys() == {"organization_name", "full_name", "email", "password"}
    assert services.login_candidates(REGISTRATION["email"]) == []


@pytest.mark.parametrize(("path", "body", "fields"), [
    ("/api/auth/forgot-password", {"email": ["a@b.example"]}, {"email"}),
    ("/api/auth/reset-password", {"token": 5, "password": PASSWORD}, {"token"}),
    ("/api/auth/reset-password", {"token": "x", "password": 12345678}, {"password"}),
    ("/api/auth/accept-invitation", {"token": {"a": 1}, "full_name": "A", "password": PASSWORD},
     {"token"}),
    ("/api/auth/register", {**REGISTRATION, "language": 5}, {"language"}),
])
def test_wrong_types_on_public_endpoints_are_422(client, path, body, fields):
    """Every public endpoint rejects a wrong type with 422 naming the field."""
    assert assert_error(client.post(path, json=body), 422)["fields"].keys() == fields


@pytest.mark.parametrize(("body", "fields"), [
    ({"email": 5, "role": "agent"}, {"email"}),
    ({"email": "x@y.example", "role": ["admin"]}, {"role"}),
    ({"email": "x@y.example", "role": "agent", "language": {"ar": True}}, {"language"}),
    ({}, {"email", "role"}),
])
def test_invite_with_wrong_types_is_422(client, org, body, fields):
    """The invite endpoint names each wrong or missing field."""
    response = client.post("/api/users/invite", headers=bearer(org.admin), json=body)
    assert assert_error(response, 422)["fields"].keys() == fields


def test_role_with_a_wrong_type_is_422(client, org):
    """A role that is not a string answers 422 on `role`."""
    agent = make_user(org)
    response = client.patch(f"/api/users/{agent.id}/role", headers=bearer(org.admin),
                            json={"role": None})
    assert assert_error(response, 422)["fields"].keys() == {"role"}


def test_login_with_wrong_types_is_an_ordinary_failed_login(client):
    """Non-text credentials are wrong credentials: 401, the same answer as a wrong password."""
    response = client.post("/api/auth/login", json={"email": ["a@b.example"], "password": 5})
    assert_error(response, 401, "unauthorized")


def test_wrong_method_is_405_json(client):
    """A method a route does not take answers 405 with the error shape."""
    assert_error(client.get("/api/auth/login"), 405, "method_not_allowed")
    assert_error(client.put("/api/users"), 405, "method_not_allowed")


def test_unknown_api_path_is_404_json(client):
    """Unknown /api paths answer JSON, not the HTML error page."""
    assert_error(client.get("/api/no-such-thing"), 404, "not_found")


def test_a_bad_token_is_401_json(client):
    """A forged, expired-looking or non-bearer Authorization answers 401 JSON."""
    for value in ("Bearer abc.def.ghi", "Basic dXNlcjpwYXNz", "Bearer "):
        assert_error(client.get("/api/users/me", headers={"Authorization": value}), 401)


def test_errors_speak_the_anonymous_callers_language(client):
    """With Accept-Language: ar the message is Arabic; with en it is English."""
    arabic = assert_error(client.post("/api/auth/register", json={},
                                      headers={"Accept-Language": "ar"}), 422)
    english = assert_error(client.post("/api/auth/register", json={},
                                       headers={"Accept-Language": "en"}), 422)
    assert english["message"] == "Please correct the highlighted fields."
    assert ARABIC.search(arabic["message"]), arabic["message"]
    assert ARABIC.search(arabic["fields"]["email"]), arabic["fields"]


def test_errors_speak_the_users_preferred_language(client, org):
    """An authenticated user's preference (ar) wins over the request's Accept-Language."""
    agent = make_user(org, "agent", language="ar")
    response = client.post("/api/users/invite", headers={**bearer(agent),
                                                         "Accept-Language": "en"},
                           json={"email": "x@y.example", "role": "agent"})
    assert ARABIC.search(assert_error(response, 403)["message"])
    english = make_user(org, "manager", language="en")
    response = client.post("/api/users/invite", headers={**bearer(english),
                                                         "Accept-Language": "ar"},
                           json={"email": "x@y.example", "role": "agent"})
    assert assert_error(response, 403)["message"] == "You do not have permission to do this."
