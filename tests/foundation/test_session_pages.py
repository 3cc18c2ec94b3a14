"""The profile's list of sessions: this device, the others, signing them out."""

from __future__ import annotations

import re

from tests.factories import bearer, login, make_user
from tests.foundation import HTMX, arabic, audit_actions, log_in

FIREFOX_ON_WINDOWS = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 "
                      "Firefox/133.0")
SAFARI_ON_IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 "
                    "(KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1")


def _browser(app, email: str, user_agent: str):
    """A browser with its own user agent, logged in through the login page."""
    browser = app.test_client()
    browser.environ_base["HTTP_USER_AGENT"] = user_agent
    assert log_in(browser, email).status_code == 303
    return browser


def _end_buttons(page: str) -> list[int]:
    """The ids of the sessions the page offers to sign out."""
    return [int(n) for n in re.findall(r'action="/profile/sessions/(\d+)/end"', page)]


def _row(page: str, marker: str) -> str:
    """The session row (of the sessions list) that contains `marker`."""
    rows = page.split('id="sessions"')[1].split("</tbody>")[0].split("<tr")
    [row] = [row for row in rows if marker in row]
    return row


def test_the_profile_lists_this_device_and_the_others(app, org):
    """Each session shows its device, address and times; this device is marked and has no
    sign-out button of its own (logging out does that); the others each have one."""
    email = org.admin.email
    here = _browser(app, email, SAFARI_ON_IPHONE)
    _browser(app, email, FIREFOX_ON_WINDOWS)
    bearer(org.admin)
    page = here.get("/profile").text
    this_row = _row(page, arabic("This device"))
    assert arabic("%(browser)s on %(system)s", browser="Safari", system="iOS") in this_row
    assert "/end" not in this_row
    other_row = _row(page, arabic("%(browser)s on %(system)s", browser="Firefox",
                                  system="Windows"))
    assert "127.0.0.1" in other_row
    assert len(_end_buttons(other_row)) == 1
    assert arabic("API token") in page
    assert len(_end_buttons(page)) == 2  # the other browser and the token
    confirmation = arabic("Sign out of every other session? Those devices will have to log "
                          "in again.")
    assert f'hx-confirm="{confirmation}"' in page


def test_signing_out_one_other_session_ends_that_one_only(app, org):
    """Ending one session signs that device out; this one and the rest stay signed in."""
    email = org.admin.email
    here = _browser(app, email, SAFARI_ON_IPHONE)
    phone = _browser(app, email, FIREFOX_ON_WINDOWS)
    laptop = _browser(app, email, "curl/8.5.0")
    [phone_session] = _end_buttons(_row(here.get("/profile").text, "Firefox"))
    response = here.post(f"/profile/sessions/{phone_session}/end")
    assert response.status_code == 303
    assert response.headers["Location"] == "/profile"
    assert phone.get("/").status_code == 302
    assert laptop.get("/").status_code == 200
    assert here.get("/").status_code == 200
    assert audit_actions(org)[-1] == "user.session_ended"


def test_signing_out_through_htmx_answers_the_list(app, org):
    """htmx gets the sessions section back without the ended session."""
    email = org.admin.email
    here = _browser(app, email, SAFARI_ON_IPHONE)
    _browser(app, email, FIREFOX_ON_WINDOWS)
    [other] = _end_buttons(here.get("/profile").text)
    response = here.post(f"/profile/sessions/{other}/end", headers=HTMX)
    assert response.status_code == 200
    assert response.text.lstrip().startswith('<section id="sessions"')
    assert _end_buttons(response.text) == []
    assert "Firefox" not in response.text


def test_signing_out_of_all_other_sessions(app, org):
    """One button ends every other browser session and API token; this device stays."""
    email = org.admin.email
    here = _browser(app, email, SAFARI_ON_IPHONE)
    elsewhere = _browser(app, email, FIREFOX_ON_WINDOWS)
    token = bearer(org.admin)
    response = here.post("/profile/sessions/end-others")
    assert response.status_code == 303
    assert elsewhere.get("/").status_code == 302
    assert here.get("/api/users/me", headers=token).status_code == 401
    page = here.get("/profile")
    assert page.status_code == 200
    assert _end_buttons(page.text) == []
    assert audit_actions(org)[-1] == "user.other_sessions_ended"


def test_another_persons_session_is_not_found(app, client, org, other_org):
    """Only one's own sessions can be ended: a colleague's or another organization's id
    answers 404 and that session goes on."""
    colleague = make_user(org, "agent")
    stranger = other_org.admin
    emails = colleague.email, stranger.email
    login(client, org.admin)
    colleague_browser, stranger_browser = app.test_client(), app.test_client()
    login(colleague_browser, colleague)
    login(stranger_browser, stranger)
    ids = [_end_buttons(_browser(app, email, FIREFOX_ON_WINDOWS).get("/profile").text)
           for email in emails]
    for [session_id] in ids:
        assert client.post(f"/profile/sessions/{session_id}/end").status_code == 404
    assert colleague_browser.get("/").status_code == 200
    assert stranger_browser.get("/").status_code == 200
