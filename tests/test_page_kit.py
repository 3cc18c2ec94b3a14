"""The page kit (crm/web.py) every module's views answer with: htmx answers carry the flashes
out of band and the headers that steer htmx; a form that worked is answered with a 303."""

from __future__ import annotations

import json

import pytest
from flask import flash, get_flashed_messages

from crm.web import came_from, htmx_response, see_other


@pytest.mark.parametrize(("trigger", "header"), [
    ("customersChanged", "customersChanged"),
    (["customersChanged", "stagesChanged"], "customersChanged, stagesChanged"),
])
def test_a_trigger_names_the_events_the_page_listens_for(app, trigger, header):
    """Pages refresh what depends on a change by listening for events named in HX-Trigger."""
    with app.test_request_context("/"):
        response = htmx_response("<p>saved</p>", trigger=trigger)
    assert response.headers["HX-Trigger"] == header


def test_a_trigger_carries_details_as_json(app):
    """An event with details (the changed customer's id) is sent as htmx's JSON form."""
    with app.test_request_context("/"):
        response = htmx_response(trigger={"customerChanged": {"id": 7}})
    assert json.loads(response.headers["HX-Trigger"]) == {"customerChanged": {"id": 7}}


def test_an_htmx_answer_carries_the_flashes_out_of_band(app):
    """The body comes first, then the flash area swapped out of band with what was flashed."""
    with app.test_request_context("/"):
        flash("Saved.", "success")
        response = htmx_response("<p>row</p>", 201, retarget="#list", reswap="beforeend")
    body = response.get_data(as_text=True)
    assert response.status_code == 201
    assert body.startswith("<p>row</p>")
    assert ('<div id="flashes" class="flashes" role="status" aria-live="polite" '
            'hx-swap-oob="true">') in body
    assert "Saved." in body
    assert (response.headers["HX-Retarget"], response.headers["HX-Reswap"]) == (
        "#list", "beforeend")
    assert "HX-Trigger" not in response.headers


def test_a_read_with_nothing_flashed_leaves_the_flash_area_alone(app):
    """A list refreshed by an event (after a bulk action, a poll) must not wipe the message
    the action's answer has just shown; an action's own answer still replaces it."""
    flash_area = 'id="flashes"'
    with app.test_request_context("/tickets/", method="GET"):
        assert flash_area not in htmx_response("<li>row</li>").get_data(as_text=True)
    with app.test_request_context("/tickets/", method="GET"):
        flash("Saved.", "success")
        assert "Saved." in htmx_response("<li>row</li>").get_data(as_text=True)
    with app.test_request_context("/tickets/bulk", method="POST"):
        assert flash_area in htmx_response("").get_data(as_text=True)


@pytest.mark.parametrize(("referrer", "back"), [
    ("http://localhost/campaigns/3/edit?step=start#start", "/campaigns/3/edit?step=start"),
    ("http://localhost/", "/"),
    ("https://evil.example/campaigns/3/edit", None),
    ("http://localhost//evil.example/x", None),
    ("http://localhost/\\evil.example", None),
    ("", None),
])
def test_came_from_is_a_path_of_this_site_or_nothing(app, referrer, back):
    with app.test_request_context("/campaigns/3/start", method="POST",
                                  headers={"Referer": referrer} if referrer else {}):
        assert came_from() == back


def test_a_refresh_leaves_the_flashes_to_the_reloaded_page(app):
    """A page that reloads shows the flashes itself, so the answer does not spend them."""
    with app.test_request_context("/"):
        flash("The move was not saved.", "error")
        response = htmx_response("", 409, refresh=True)
        assert get_flashed_messages() == ["The move was not saved."]
    assert response.headers["HX-Refresh"] == "true"
    assert response.get_data(as_text=True) == ""


def test_a_form_that_worked_is_answered_with_see_other(app):
    """303, so the browser GETs the page and a reload never posts the form again."""
    with app.test_request_context("/"):
        response = see_other("customers.show_customer", customer_id=5)
    assert response.status_code == 303
    assert response.headers["Location"] == "/customers/5"
