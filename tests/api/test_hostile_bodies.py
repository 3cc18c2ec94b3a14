"""Hostile JSON bodies on every API route that takes one: nesting too deep to parse, text that
PostgreSQL cannot store, fields the document does not declare. Each answers 400 or 422 with
the error shape and writes nothing; none answers 500.

Routes are read from the app's url_map and the OpenAPI document when the tests are collected, so
a route added tomorrow with a JSON body is covered the day it is added.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from crm.api import openapi
from crm.foundation import services
from tests.api import assert_error
from tests.customers.factories import make_customer
from tests.factories import bearer, make_org, snapshot, url_map_app
from tests.walks_registry import BODY, OBJECTS

DEEP = 10_000


@pytest.fixture
def org():
    """An organization that speaks English, so that messages can be compared as written."""
    return make_org(language="en")


@dataclass(frozen=True)
class BodyRoute:
    rule: str
    method: str
    arguments: tuple[str, ...]
    fields: tuple[str, ...]  # the body's declared top-level fields, in the document's order
    text_field: str  # a declared field to put hostile text in (a string one where there is)

    def __str__(self) -> str:
        return f"{self.method} {self.rule}"



def _json_schema(path: str, method: str) -> dict | None:
    operation = openapi.document()["paths"].get(path, {}).get(method.lower(), {})
    content = operation.get("requestBody", {}).get("content", {})
    return content.get("application/json", {}).get("schema")


def _body_routes() -> list[BodyRoute]:
    routes = []
    for rule in url_map_app().url_map.iter_rules():
        path = openapi.document_path(rule.rule)
        for method in sorted(rule.methods & {"POST", "PUT", "PATCH", "DELETE"}):
            schema = _json_schema(path, method)
            if schema is None:
                continue
            alternatives = schema.get("oneOf", [schema])
            properties = {name: prop for alternative in alternatives
                          for name, prop in alternative["properties"].items()}
            text_field = next((name for name, prop in properties.items()
                               if prop.get("type") == "string"), next(iter(properties)))
            routes.append(BodyRoute(rule.rule, method, tuple(sorted(rule.arguments)),
                                    tuple(properties), text_field))
    return sorted(routes, key=str)


ROUTES = _body_routes()


def _url(app, route: BodyRoute, org) -> str:
    values = {name: OBJECTS[name](org) for name in route.arguments}
    rule = next(r for r in app.url_map.iter_rules() if r.rule == route.rule)
    return rule.build(values, append_unknown=False)[1]


def _as_admin(org) -> dict:
    """The headers of the organization's admin asking in English (the token is a session of
    its own: made before a test's snapshot, it is no change of the request's)."""
    return {**bearer(org.admin), "Accept-Language": "en"}


def _send(client, route: BodyRoute, url: str, headers: dict, raw: str):
    """Send `raw` as the JSON body of `route` with `headers`."""
    return client.open(url, method=route.method, data=raw.encode(),
                       content_type="application/json", headers=headers)


def _plausible(route: BodyRoute) -> dict:
    """The walks' plausible values of the fields this route declares."""
    return {name: value for name, value in BODY.items() if name in route.fields}


def _nested(levels: int) -> str:
    return "[" * levels + "]" * levels


def _with_raw(values: dict, name: str, raw_value: str) -> str:
    """A JSON object of `values` and `name`, whose value is the JSON text `raw_value`."""
    members = [f"{json.dumps(key)}: {json.dumps(value)}"
               for key, value in values.items() if key != name]
    return "{" + ", ".join([*members, f"{json.dumps(name)}: {raw_value}"]) + "}"


def test_every_json_body_route_is_covered():
    """The discovery finds the API's JSON bodies (not an empty list that tests nothing)."""
    assert {"POST /api/auth/register", "POST /api/whatsapp/send",
            "PATCH /api/crm/customers/<int:customer_id>"} <= {str(route) for route in ROUTES}


@pytest.mark.parametrize("route", ROUTES, ids=[str(route) for route in ROUTES])
def test_json_nested_ten_thousand_levels_deep_is_400(app, client, org, route):
    """A body nested 10,000 levels deep answers 400 saying so, not a RecursionError's 500."""
    url, headers = _url(app, route, org), _as_admin(org)
    before = snapshot(org.id)
    raw = _with_raw(_plausible(route), route.text_field, _nested(DEEP))

    error = assert_error(_send(client, route, url, headers, raw), 400, "bad_request")

    assert error["message"] == "The JSON body is nested too deeply."
    assert snapshot(org.id) == before


@pytest.mark.parametrize("route", ROUTES, ids=[str(route) for route in ROUTES])
def test_a_lone_surrogate_is_422_on_its_field_and_writes_nothing(app, client, org, route):
    r"""A string holding "\ud800" (a lone surrogate, which no UTF-8 can encode) answers 422
    naming its field, and nothing is written."""
    url, headers = _url(app, route, org), _as_admin(org)
    before = snapshot(org.id)
    raw = json.dumps({**_plausible(route), route.text_field: "Hi \ud800"})
    assert "\\ud800" in raw

    error = assert_error(_send(client, route, url, headers, raw), 422, "validation_error")

    assert route.text_field in error["fields"]
    assert snapshot(org.id) == before
    assert services.login_candidates(BODY["email"]) == []


@pytest.mark.parametrize("route", ROUTES, ids=[str(route) for route in ROUTES])
def test_an_unknown_field_is_422_naming_it(app, client, org, route):
    """A field the document does not declare (a typo, say) answers 422 naming it, never
    silently ignored; nothing is written."""
    url, headers = _url(app, route, org), _as_admin(org)
    before = snapshot(org.id)
    raw = json.dumps({**_plausible(route), "no_such_field": "x"})

    error = assert_error(_send(client, route, url, headers, raw), 422, "validation_error")

    assert error["fields"]["no_such_field"] == "Unknown field."
    assert snapshot(org.id) == before
    assert services.login_candidates(BODY["email"]) == []


def test_the_document_closes_every_json_body():
    """Every JSON request body (each alternative of a oneOf) says additionalProperties: false."""
    for route in ROUTES:
        schema = _json_schema(openapi.document_path(route.rule), route.method)
        for alternative in schema.get("oneOf", [schema]):
            assert alternative["additionalProperties"] is False, route


# -- one route, the finer points ---------------------------------------------------------------

CUSTOMERS = "/api/crm/customers"


def _post(client, org, raw: str):
    return client.post(CUSTOMERS, data=raw.encode(), content_type="application/json",
                       headers=_as_admin(org))


def test_nesting_up_to_the_limit_is_parsed_and_one_level_more_is_400(client, org):
    """64 levels are read (and the field's own check answers); 65 are refused unread."""
    at_limit = _post(client, org, f'{{"name": "Amal", "tags": {_nested(63)}}}')
    beyond = _post(client, org, f'{{"name": "Amal", "tags": {_nested(64)}}}')

    assert "tags" in assert_error(at_limit, 422)["fields"]
    assert assert_error(beyond, 400, "bad_request")["message"] == (
        "The JSON body is nested too deeply.")


def test_a_lone_surrogate_deep_inside_a_value_names_the_top_field(client, org):
    """Text nested inside a field's value is checked too; the field that holds it is named."""
    raw = json.dumps({"name": "Amal", "tags": [["ok", "bad \udc00"]]})

    assert assert_error(_post(client, org, raw), 422)["fields"].keys() == {"tags"}


def test_a_lone_surrogate_in_a_field_name_is_400(client, org):
    """A field name that is not text cannot be named back: the body is refused with 400."""
    raw = json.dumps({"name": "Amal", "na\ud800me": "x"})

    assert_error(_post(client, org, raw), 400, "bad_request")


def test_a_surrogate_pair_is_an_ordinary_character(client, org):
    r"""JSON's escaped pair "\ud83d\ude00" is one emoji, stored like any other text."""
    response = _post(client, org, '{"name": "Amal \\ud83d\\ude00"}')

    assert response.status_code == 201, response.get_data(as_text=True)
    assert response.get_json()["name"] == "Amal \U0001F600"


def test_the_whole_body_is_answered_at_once(client, org):
    """Unknown fields and unstorable text are named together, in one 422."""
    raw = json.dumps({"name": "Amal \x00", "nmae": "Amal", "email": "a\ud800@b.example"})

    error = assert_error(_post(client, org, raw), 422)

    assert error["fields"] == {"name": "Remove the control characters.",
                               "nmae": "Unknown field.",
                               "email": "Remove the control characters."}


def test_a_typo_in_a_patch_changes_nothing(client, org):
    """PATCH {"nmae": ...} is refused, not taken for an empty change that answers 200."""
    customer_id, headers = make_customer(org).id, _as_admin(org)
    before = snapshot(org.id)

    response = client.patch(f"{CUSTOMERS}/{customer_id}", json={"nmae": "Other"},
                            headers=headers)

    assert assert_error(response, 422)["fields"] == {"nmae": "Unknown field."}
    assert snapshot(org.id) == before
