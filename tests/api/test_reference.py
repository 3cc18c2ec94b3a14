"""/api/docs: the API reference page, read from the same OpenAPI document as /api/openapi.json,
public, in Arabic and English."""

from __future__ import annotations

import json

import pytest
from bs4 import BeautifulSoup
from jsonschema import Draft202012Validator

from tests.factories import login, make_user

LANGUAGES = {"ar": ("rtl", "مرجع واجهة API"), "en": ("ltr", "API reference")}


def _page(client, language: str = "ar") -> BeautifulSoup:
    response = client.get("/api/docs", headers={"Accept-Language": language})
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    return BeautifulSoup(response.get_data(as_text=True), "html.parser")


def _operations(page: BeautifulSoup) -> set[tuple[str, str]]:
    return {(endpoint.select_one(".api-method").get_text().lower(),
             endpoint.select_one("code").get_text())
            for endpoint in page.select(".api-operation .api-endpoint")}


@pytest.mark.parametrize("language", LANGUAGES)
def test_the_page_lists_every_operation_of_the_document(client, language):
    """Every path and method of /api/openapi.json is on the page, and nothing else, in each
    language, with the language's direction and heading."""
    document = client.get("/api/openapi.json").get_json()
    page = _page(client, language)

    assert _operations(page) == {(method, path) for path, methods in document["paths"].items()
                                 for method in methods}
    direction, heading = LANGUAGES[language]
    assert (page.html["lang"], page.html["dir"]) == (language, direction)
    assert page.h1.get_text() == heading
    for name in document["components"]["schemas"]:
        assert page.find(id=f"schema-{name}") is not None, name


def test_the_page_is_public_and_the_same_for_a_member(app, client, org):
    """A visitor reads it without logging in; an admin reads it in the app's layout, with a
    link to the API keys page (which links back)."""
    login(client, org.admin)
    member = _page(client)
    keys_page = BeautifulSoup(client.get("/settings/api-keys").get_data(as_text=True),
                              "html.parser")
    visitor = _page(app.test_client())

    assert _operations(member) == _operations(visitor)
    assert member.find("a", href="/settings/api-keys") is not None
    assert visitor.find("a", href="/settings/api-keys") is None
    assert keys_page.find("a", href="/api/docs") is not None


def test_an_agent_sees_no_link_to_the_api_keys(client, org):
    """The API keys page is the admins' (settings: write): an agent is not sent there."""
    login(client, make_user(org, "agent"))
    assert _page(client).find("a", href="/settings/api-keys") is None


def test_an_operation_shows_its_parameters_body_and_answers(client):
    """POST /api/billing/change-plan: the body's fields with their type, whether required and
    their choices; its answers by status, the errors linked to the errors section."""
    document = client.get("/api/openapi.json").get_json()
    described = document["paths"]["/api/billing/change-plan"]["post"]
    body = described["requestBody"]["content"]["application/json"]["schema"]
    operation = _page(client, "en").find(id="op-change_plan")

    fields = {item.select_one(".api-field-name").get_text(): item
              for item in operation.select(".api-fields > li")}
    assert set(fields) == set(body["properties"])
    plan = fields["plan"]
    assert plan.select_one(".api-required") is not None
    assert [code.get_text() for code in plan.select(".api-detail code")] == [
        f'"{choice}"' for choice in body["properties"]["plan"]["enum"]]
    answers = {item.select_one(".api-status").get_text() for item in
               operation.select(".api-answers li")}
    assert answers == set(described["responses"])
    assert operation.find("a", href="#schema-Subscription") is not None
    assert operation.find("a", href="#error-ValidationFailed") is not None


def test_a_list_shows_its_cursor_and_the_page_explains_it(client):
    """A list's `cursor` and `limit` with its bounds and default; the pagination section."""
    page = _page(client, "en")
    operation = page.find(id="op-list_invoices")
    names = [code.get_text() for code in operation.select(".api-field-name")]
    assert names == ["cursor", "limit"]
    limit = operation.select(".api-fields > li")[1]
    assert "Default: 50" in limit.get_text(" ", strip=True)
    assert "at most 200" in limit.get_text(" ", strip=True)
    assert page.find(id="pagination").find("code", string="next_cursor") is not None
    assert page.find(id="authentication").find("a", href="#op-login") is not None


def test_the_arabic_page_translates_its_own_words(client):
    """The page's words are Arabic; the document's English is marked as English."""
    page = _page(client, "ar")
    contents = page.find(id="api-contents-title").parent
    labels = [link.get_text() for link in contents.select("a")]
    assert {"المصادقة", "الأخطاء", "العملاء (CRM)", "الفوترة"} <= set(labels)
    summary = page.find(id="op-change_plan-title")
    assert (summary["lang"], summary["dir"]) == ("en", "ltr")


def test_every_example_is_valid_for_its_schema(client):
    """The examples of request bodies and of successful answers are made from the document's
    schemas, and each one is valid for its schema (read with the document's components)."""
    document = client.get("/api/openapi.json").get_json()
    page = _page(client, "en")
    checked = 0
    for path, methods in document["paths"].items():
        for method, described in methods.items():
            operation = page.find(id=f"op-{described['operationId']}")
            examples = [json.loads(pre.get_text()) for pre in operation.select(".api-example pre")]
            schemas = [content["schema"] for media_type, content
                       in described.get("requestBody", {}).get("content", {}).items()
                       if media_type == "application/json"]
            schemas += [reply["content"]["application/json"]["schema"]
                        for status, reply in described["responses"].items()
                        if int(status) < 300 and "content" in reply]
            assert len(examples) == len(schemas), (method, path)
            for example, schema in zip(examples, schemas, strict=True):
                Draft202012Validator({**schema, "components": document["components"]}
                                     ).validate(example)
                checked += 1
    assert checked > 80


def test_values_are_written_as_json_unescaped(client):
    """A field's example, choices and default are JSON as written, not \\u escapes."""
    key = _page(client, "en").find(id="schema-NewApiKey")
    assert '"wasl_…"' in key.get_text()
    assert "\\u2026" not in key.get_text()
