"""Two people editing one customer: the one who saves second never silently overwrites the first.

The API answers a customer's version as its ETag; a PATCH whose If-Match names an older one is
refused with 412 and the customer as it is now. Tags sent as additions and removals keep what
others added meanwhile. The edit form carries the version it was opened at and, when someone
saved first, says who and when, and lets the person reload or save anyway.
"""

from __future__ import annotations

import re

import pytest

from crm.customers import services
from crm.customers.models import Customer
from crm.extensions import db
from crm.tenancy import organization_context
from tests.api import assert_error
from tests.customers.factories import make_customer
from tests.factories import bearer, login, make_org, make_user
from tests.foundation import HTMX, ident, reload


@pytest.fixture
def org():
    """An organization working in English, so the tests read the messages they expect."""
    return make_org(language="en")


@pytest.fixture
def sara(org):
    """A manager named سارة, who edits the customer first."""
    user = make_user(org, "manager")
    with organization_context(org.id):
        user.full_name = "سارة"
        db.session.flush()
    return user


def _url(customer) -> str:
    return f"/api/crm/customers/{ident(customer)}"


def _edit(org, user, customer, data: dict, expected_version: int | None = None) -> None:
    """`user` saves a change through the service, as another request would."""
    with organization_context(org.id):
        stored = db.session.get(Customer, ident(customer))
        services.update_customer(user, stored, data, expected_version=expected_version)
        db.session.flush()


# -- the API ----------------------------------------------------------------------------------

def test_a_customer_answers_its_version_as_a_strong_etag(client, org):
    """GET answers ETag "1" and version 1; a change makes both 2 and names who made it; a PATCH
    that changes nothing keeps the version."""
    customer = make_customer(org, name="Amal")
    headers = bearer(org.admin)

    first = client.get(_url(customer), headers=headers)
    assert first.headers["ETag"] == '"1"'
    assert first.get_json()["version"] == 1

    changed = client.patch(_url(customer), json={"company": "Wasl"}, headers=headers)
    assert changed.status_code == 200
    assert changed.headers["ETag"] == '"2"'
    assert (changed.get_json()["version"], changed.get_json()["edited_by_id"]) == (
        2, org.admin.id)
    assert changed.get_json()["edited_at"] is not None

    same = client.patch(_url(customer), json={"company": "Wasl"}, headers=headers)
    assert same.headers["ETag"] == '"2"'
    assert client.get(_url(customer), headers=headers).headers["ETag"] == '"2"'


def test_a_patch_with_a_stale_if_match_is_412_with_the_current_customer(client, org, sara):
    """Both read version 1; سارة saves first; the second PATCH naming version 1 is refused
    with 412, the current customer and its ETag, and changes nothing. Naming version 2 saves."""
    customer = make_customer(org, name="Amal", company="Old")
    headers = bearer(org.admin)
    etag = client.get(_url(customer), headers=headers).headers["ETag"]
    sara_saved = client.patch(_url(customer), json={"name": "Amal Saleh"},
                              headers={**bearer(sara), "If-Match": etag})
    assert sara_saved.status_code == 200

    stale = client.patch(_url(customer), json={"company": "New"},
                         headers={**headers, "If-Match": etag})

    error = assert_error(stale, 412, "stale_version")
    assert error["fields"] == {}
    current = stale.get_json()["current"]
    assert (current["name"], current["company"], current["version"], current["edited_by_id"]) \
        == ("Amal Saleh", "Old", 2, sara.id)
    assert stale.headers["ETag"] == '"2"'
    assert reload(org, Customer, customer).company == "Old"

    fresh = client.patch(_url(customer), json={"company": "New"},
                         headers={**headers, "If-Match": stale.headers["ETag"]})
    assert fresh.status_code == 200
    assert (fresh.get_json()["name"], fresh.get_json()["company"]) == ("Amal Saleh", "New")


@pytest.mark.parametrize("if_match", ['W/"1"', '"one"', '"0"', '"1"x'])
def test_an_if_match_naming_no_current_version_is_412(client, org, if_match):
    """A weak tag (If-Match compares strongly), a made-up or a garbled one never matches."""
    customer = make_customer(org, name="Amal")

    response = client.patch(_url(customer), json={"name": "Changed"},
                            headers={**bearer(org.admin), "If-Match": if_match})

    assert_error(response, 412, "stale_version")
    assert reload(org, Customer, customer).name == "Amal"


@pytest.mark.parametrize("headers", [{}, {"If-Match": "*"}, {"If-Match": '"7", "1"'}])
def test_without_if_match_a_star_or_a_list_naming_the_version_the_patch_goes_through(
        client, org, headers):
    """Clients that send no If-Match keep working; * matches any version; a list matches
    when it names the current one."""
    customer = make_customer(org, name="Amal")

    response = client.patch(_url(customer), json={"name": "Changed"},
                            headers={**bearer(org.admin), **headers})

    assert response.status_code == 200
    assert reload(org, Customer, customer).name == "Changed"


def test_added_and_removed_tags_keep_what_others_added_meanwhile(client, org, sara):
    """Two people who read tags ["a"] each add one, and one removes "a": both additions stay,
    without If-Match and whatever order they arrive in; a tag already there (however written)
    is not added twice."""
    customer = make_customer(org, name="Amal", tags=["a"])

    first = client.patch(_url(customer), json={"add_tags": ["vip"]}, headers=bearer(sara))
    second = client.patch(_url(customer), json={"add_tags": ["late payer", "VIP"],
                                                "remove_tags": ["a"]},
                          headers=bearer(org.admin))

    assert (first.status_code, second.status_code) == (200, 200)
    assert second.get_json()["tags"] == ["vip", "late payer"]
    assert reload(org, Customer, customer).tags == ["vip", "late payer"]
    assert second.get_json()["version"] == 3


@pytest.mark.parametrize(("body", "fields"), [
    ({"tags": ["a"], "add_tags": ["b"]}, {"tags"}),
    ({"add_tags": "vip"}, {"add_tags"}),
    ({"remove_tags": [1]}, {"remove_tags"}),
    ({"add_tags": [f"tag {n}" for n in range(20)]}, {"add_tags"}),
])
def test_bad_tag_changes_are_422_and_change_nothing(client, org, body, fields):
    """A whole list and changes together, changes of the wrong type, or more tags than a
    customer may have (one is there already)."""
    customer = make_customer(org, name="Amal", tags=["a"])

    response = client.patch(_url(customer), json=body, headers=bearer(org.admin))

    assert set(assert_error(response, 422, "validation_error")["fields"]) == fields
    assert reload(org, Customer, customer).tags == ["a"]


def test_what_nobody_edited_keeps_the_version(client, org):
    """A logged call (the last contact) and the score recomputed after it are not edits."""
    customer = make_customer(org, name="Amal")
    headers = bearer(org.admin)

    logged = client.post(f"{_url(customer)}/activity", json={"type": "call", "body": "Called"},
                         headers=headers)

    assert logged.status_code == 201
    body = client.get(_url(customer), headers=headers).get_json()
    assert body["last_contacted_at"] is not None
    assert body["version"] == 1


def test_a_stage_move_on_the_board_is_an_edit(client, org, sara):
    """Dragging a card to another stage changes the version, so a form opened before it is
    told."""
    customer = make_customer(org, name="Amal")
    with organization_context(org.id):
        stage_id = services.list_stages()[2].id
        services.move_customer(sara, db.session.get(Customer, ident(customer)), stage_id)
        db.session.flush()

    body = client.get(_url(customer), headers=bearer(org.admin)).get_json()
    assert (body["stage_id"], body["version"], body["edited_by_id"]) == (stage_id, 2, sara.id)


def test_the_document_describes_etags_if_match_and_the_412(client):
    """GET and PATCH of a customer answer an ETag header; PATCH takes If-Match and documents
    the 412 with the current customer, and add_tags and remove_tags."""
    document = client.get("/api/openapi.json").get_json()
    path = document["paths"]["/api/crm/customers/{customer_id}"]

    assert "ETag" in path["get"]["responses"]["200"]["headers"]
    assert "ETag" in path["patch"]["responses"]["200"]["headers"]
    assert {"name": "If-Match", "in": "header"}.items() <= next(
        p for p in path["patch"]["parameters"] if p["name"] == "If-Match").items()
    conflict = path["patch"]["responses"]["412"]["content"]["application/json"]["schema"]
    assert {"$ref": "#/components/schemas/Customer"} in [
        part.get("properties", {}).get("current") for part in conflict["allOf"]]
    body = path["patch"]["requestBody"]["content"]["application/json"]["schema"]
    assert {"add_tags", "remove_tags"} <= set(body["properties"])


# -- the edit form ----------------------------------------------------------------------------

def _form(client, customer, headers=HTMX) -> str:
    response = client.get(f"/customers/{ident(customer)}/edit", headers=headers)
    assert response.status_code == 200
    return response.get_data(as_text=True)


def _hidden(html: str, name: str) -> str:
    match = re.search(rf'<input type="hidden" name="{name}" value="([^"]*)"', html)
    assert match, f"no hidden {name} in the form"
    return match.group(1)


def _shown(customer) -> dict:
    """The fields the form shows of a new customer (read before a request expires it)."""
    return {"name": customer.name, "phone": customer.phone or "", "email": "", "company": "",
            "owner_id": "", "stage_id": str(customer.stage_id), "tags": ", ".join(customer.tags),
            "notes": ""}


def _posted(shown: dict, html: str, **changes) -> dict:
    """What the form posts: the fields it shows, its hidden ones, and `changes`."""
    return shown | {"version": _hidden(html, "version"),
                    "shown_tags": _hidden(html, "shown_tags")} | changes


def test_a_stale_edit_form_says_who_changed_it_and_overwrites_nothing(client, org, sara):
    """The form was opened at version 1; سارة saved meanwhile. Saving answers 409 with the
    form as typed and "Changed by سارة a moment ago", with Reload and Save anyway; nothing is
    written. Save anyway (the current version) overwrites."""
    customer = make_customer(org, name="Amal", company="")
    shown = _shown(customer)
    login(client, org.admin)
    html = _form(client, customer)
    assert _hidden(html, "version") == "1"
    _edit(org, sara, customer, {"company": "Sara's company"})

    url = f"/customers/{ident(customer)}/edit"
    refused = client.post(url, data=_posted(shown, html, name="Amal Admin"), headers=HTMX)

    assert refused.status_code == 409
    page = refused.get_data(as_text=True)
    assert "Changed by <bdi>سارة</bdi> a moment ago" in page
    assert 'value="Amal Admin"' in page
    assert _hidden(page, "version") == "2"
    assert ">Save anyway</button>" in page
    assert f'hx-get="{url}"' in page  # Reload: the form afresh, with their changes
    stored = reload(org, Customer, customer)
    assert (stored.name, stored.company, stored.version) == ("Amal", "Sara's company", 2)

    anyway = client.post(url, data=_posted(shown, page, name="Amal Admin"), headers=HTMX)

    assert anyway.status_code == 200
    stored = reload(org, Customer, customer)
    assert (stored.name, stored.company, stored.version) == ("Amal Admin", "", 3)


def test_a_plain_edit_page_that_is_stale_says_so_too(client, org, sara):
    """Without htmx the whole page answers 409 with the notice."""
    customer = make_customer(org, name="Amal")
    shown = _shown(customer)
    login(client, org.admin)
    html = _form(client, customer, headers={})
    _edit(org, sara, customer, {"name": "Amal S."})

    refused = client.post(f"/customers/{ident(customer)}/edit",
                          data=_posted(shown, html, name="Amal A."))

    assert refused.status_code == 409
    assert refused.get_data(as_text=True).startswith("<!doctype html>")
    assert "Changed by <bdi>سارة</bdi>" in refused.get_data(as_text=True)
    assert reload(org, Customer, customer).name == "Amal S."


def test_tags_typed_in_the_form_are_added_and_removed_not_replaced(client, org, sara):
    """The form showed "a, b"; سارة added "vip" meanwhile; the form saved anyway with "a, c"
    removes b and adds c, and "vip" stays."""
    customer = make_customer(org, name="Amal", tags=["a", "b"])
    shown = _shown(customer)
    login(client, org.admin)
    html = _form(client, customer)
    assert _hidden(html, "shown_tags") == "a, b"
    _edit(org, sara, customer, {"add_tags": ["vip"]})
    url = f"/customers/{ident(customer)}/edit"

    refused = client.post(url, data=_posted(shown, html, tags="a, c"), headers=HTMX)
    assert refused.status_code == 409
    page = refused.get_data(as_text=True)
    assert _hidden(page, "shown_tags") == "a, b"
    saved = client.post(url, data=_posted(shown, page, tags="a, c"), headers=HTMX)

    assert saved.status_code == 200
    assert reload(org, Customer, customer).tags == ["a", "vip", "c"]


def test_a_form_without_a_version_saves_as_before(client, org):
    """A post that names no version and no shown tags (an old page) replaces the tags it
    sends, as it always did."""
    customer = make_customer(org, name="Amal", tags=["a"])
    stage_id = customer.stage_id
    login(client, org.admin)

    saved = client.post(f"/customers/{ident(customer)}/edit", headers=HTMX, data={
        "name": "Amal", "stage_id": str(stage_id), "tags": "b"})

    assert saved.status_code == 200
    assert reload(org, Customer, customer).tags == ["b"]
