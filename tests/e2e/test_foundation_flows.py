"""The foundation's flows in Chromium: sign up, log in and out, invite and join, switch language,
sessions, and the shell's safety (escaped user content, the CSP, the live socket)."""

from __future__ import annotations

import re

import pytest
import requests
from playwright.sync_api import Page, expect

from crm.extensions import db
from crm.foundation.models import Organization
from tests.e2e.conftest import (
    PHONE,
    expect_dashboard,
    expect_direction,
    link_in,
    log_in,
    receive_email,
    screenshot,
    submit,
    translated,
    unique_email,
    user_menu,
)
from tests.factories import make_user

pytestmark = [pytest.mark.e2e, pytest.mark.live, pytest.mark.xdist_group("e2e")]


def page_width(page: Page) -> int:
    return page.evaluate("document.documentElement.scrollWidth")


def test_register_log_out_and_log_in_again(browsing, live_server):
    """A visitor creates a workspace on the Arabic page and lands on the dashboard; after
    logging out the dashboard is closed to them, a wrong password is refused, and the right
    one brings them back."""
    email, password, name = unique_email("owner"), "a long enough password", "سارة أحمد"
    page = browsing.new_page()

    page.goto("/register")
    expect_direction(page, "ar", "rtl")
    page.locator("input[name='organization_name']").fill("مخبز النور")
    page.locator("input[name='full_name']").fill(name)
    page.locator("input[name='email']").fill(email)
    page.locator("input[name='password']").fill(password)
    submit(page, "/register")
    expect_dashboard(page, live_server, "ar")
    expect(user_menu(page)).to_have_text(name)
    expect(page.locator(".topbar .org-name")).to_have_text("مخبز النور")

    user_menu(page).click()
    submit(page, "/logout")
    expect(page).to_have_url(re.compile(r"/login$"))
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/login\?next="))

    log_in(page, email, "not the password")
    expect(page.locator(".form-error")).to_be_visible()
    expect(page).to_have_url(re.compile(r"/login"))

    log_in(page, email, password)
    expect_dashboard(page, live_server, "ar")
    expect(user_menu(page)).to_have_text(name)
    assert browsing.dialogs == []


def test_invite_a_colleague_who_joins_from_the_email(browsing, live_server, mailbox):
    """An admin invites an agent in English; the email arrives over SMTP, the colleague opens
    its link in their own browser, joins, lands on the dashboard under their name and in the
    invitation's language, and the admin's team page lists them."""
    admin = live_server.make_account()
    invitee, name = unique_email("agent"), "Omar Haddad"
    page = browsing.new_page(account=admin)

    page.goto("/team")
    invite = page.locator("#invitations form[action='/team/invitations']")
    invite.locator("input[name='email']").fill(invitee)
    invite.locator("select[name='role']").select_option("agent")
    invite.locator("select[name='language']").select_option("en")
    submit(page, "/team/invitations")
    expect(page.locator("#invitations tbody")).to_contain_text(invitee)

    email = receive_email(live_server, mailbox, invitee)
    assert translated(live_server, "Open this link to choose your name and password:",
                      "en") in email.get_body(("plain",)).get_content()
    link = link_in(email, live_server)
    assert "/invitations/accept/" in link

    colleague = browsing.new_page()  # their browser asks for Arabic: the invitation decides
    colleague.goto(link)
    expect_direction(colleague, "ar", "rtl")
    colleague.locator("input[name='full_name']").fill(name)
    colleague.locator("input[name='password']").fill("the colleague's password")
    colleague.locator("form[action*='/invitations/accept/'] button[type='submit']").click()
    expect_dashboard(colleague, live_server, "en")
    expect(user_menu(colleague)).to_have_text(name)

    page.goto("/team")
    expect(page.locator("#members")).to_contain_text(name)
    expect(page.locator("#members")).to_contain_text(invitee)
    assert browsing.dialogs == []


def test_switch_language_and_screenshot_the_dashboard(browsing, live_server):
    """The header switcher turns the page to English (ltr) and back to Arabic (rtl), the
    choice survives a reload, and the shell fits a phone without scrolling sideways."""
    page = browsing.new_page(account=live_server.make_account())
    page.goto("/")
    expect_direction(page, "ar", "rtl")
    expect_dashboard(page, live_server, "ar")

    page.locator(".topbar button[name='language'][value='en']").click()
    expect_direction(page, "en", "ltr")
    expect_dashboard(page, live_server, "en")
    page.reload()
    expect_direction(page, "en", "ltr")
    screenshot(page, "dashboard-en")

    page.locator(".topbar button[name='language'][value='ar']").click()
    expect_direction(page, "ar", "rtl")
    expect_dashboard(page, live_server, "ar")
    screenshot(page, "dashboard-ar")

    page.set_viewport_size(PHONE)
    expect(page.locator(".sidebar")).to_be_hidden()
    expect(page.locator(".menu-toggle")).to_be_visible()
    assert page_width(page) <= PHONE["width"]
    screenshot(page, "dashboard-ar-phone")
    page.goto("/team")  # wide tables scroll inside their frame, not the page
    expect(page.locator("#members")).to_be_visible()
    assert page_width(page) <= PHONE["width"]


def test_a_script_typed_as_a_name_is_shown_as_text(browsing, live_server):
    """A full name of `<script>alert(1)</script>` is saved and shown literally, in the header
    and on the team page; nothing runs."""
    payload = "<script>alert(1)</script>"
    page = browsing.new_page(account=live_server.make_account())

    page.goto("/profile")
    page.locator("input[name='full_name']").fill(payload)
    submit(page, "/profile")
    expect(page.locator("#flashes .flash-success")).to_be_visible()
    expect(user_menu(page)).to_have_text(payload)
    expect(page.locator("input[name='full_name']")).to_have_value(payload)

    page.goto("/team")
    expect(page.locator("#members td").first).to_contain_text(payload)
    expect(page.locator("body script")).to_have_count(0)
    assert browsing.dialogs == []


def test_pages_keep_to_the_csp_and_the_socket_connects(browsing, live_server):
    """The shell loads under a CSP allowing only our own scripts without a single violation,
    its Socket.IO connection opens, and an injected inline script is refused."""
    page = browsing.new_page(account=live_server.make_account())

    response = page.goto("/")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    page.wait_for_function("() => window.waslSocket && window.waslSocket.connected")
    for path in ("/team", "/settings", "/settings/audit"):
        page.locator(f".sidebar a[href='{path}']").click()
        expect(page).to_have_url(f"{live_server.url}{path}")
    page.wait_for_function("() => window.waslSocket.connected")
    visitor = browsing.new_page()
    visitor.goto("/register")
    visitor.goto("/login")
    assert browsing.csp_violations() == []

    with page.expect_console_message(lambda m: "Content Security Policy" in m.text):
        page.evaluate("""() => {
            const script = document.createElement("script");
            script.textContent = "window.injected = true";
            document.body.append(script);
        }""")
    assert page.evaluate("window.injected") is None


def test_sign_out_of_the_other_sessions_from_the_profile(browsing, live_server):
    """The profile marks this device among the sessions; "sign out of all other sessions"
    asks first, then the other browser's open page stops listening and its next click lands
    on the login page, while this browser stays signed in."""
    account = live_server.make_account()
    here, there = (browsing.new_page(account=account) for _ in range(2))
    there.goto("/")
    there.wait_for_function("() => window.waslSocket && window.waslSocket.connected")

    here.goto("/profile")
    sessions = here.locator("#sessions")
    expect(sessions).to_contain_text(translated(live_server, "This device", "ar"))
    expect(sessions.locator("tbody tr")).to_have_count(2)
    here.remove_listener("dialog", browsing._dialog)  # this confirmation is expected: accept it
    here.once("dialog", lambda dialog: dialog.accept())
    submit(here, "/profile/sessions/end-others")
    expect(sessions.locator("tbody tr")).to_have_count(1)

    there.wait_for_function("() => !window.waslSocket.connected")
    there.locator(".sidebar a[href='/team']").click()
    expect(there).to_have_url(re.compile(r"/login"))
    here.goto("/team")
    expect(here).to_have_url(f"{live_server.url}/team")
    assert browsing.dialogs == []


def test_a_page_rejoins_after_its_users_role_changes(browsing, live_server):
    """An admin who makes themself a manager (another admin remains), once they confirm, stays
    signed in; the server closes their open page's socket and the page connects again, into
    the manager's rooms."""
    account = live_server.make_account()
    with live_server.transaction(account.organization_id):
        make_user(db.session.get(Organization, account.organization_id), "admin")
    page = browsing.new_page(account=account)
    page.goto("/team")
    page.wait_for_function("() => window.waslSocket && window.waslSocket.connected")
    page.evaluate("() => { window.connects = 0; "
                  "window.waslSocket.on('connect', () => { window.connects += 1; }); }")

    row = page.locator(f"#member-{account.user_id}")
    row.locator("select[name='role']").select_option("manager")
    browsing.confirm_next(page)  # one's own role: it asks first
    row.locator("button[type='submit']").click()
    expect(page.locator("#flashes .flash-success")).to_be_visible()
    page.wait_for_function("() => window.connects === 1 && window.waslSocket.connected")
    assert len(browsing.confirmed) == 1
    assert browsing.dialogs == []


def test_create_and_revoke_an_api_key(browsing, live_server):
    """From the settings an admin makes a key for an integration, sees it once, and revokes it
    after confirming; the key works until then."""
    page = browsing.new_page(account=live_server.make_account())
    page.goto("/settings")
    page.locator("a[href='/settings/api-keys']").click()
    expect(page).to_have_url(f"{live_server.url}/settings/api-keys")
    page.locator("input[name='name']").fill("مزامنة المتجر")
    submit(page, "/settings/api-keys")
    key = page.locator("code.secret").inner_text()
    assert key.startswith("wasl_")

    def me() -> int:
        return requests.get(f"{live_server.url}/api/users/me", timeout=10,
                            headers={"Authorization": f"Bearer {key}"}).status_code

    assert me() == 200
    page.goto("/settings/api-keys")
    expect(page.locator("code.secret")).to_have_count(0)
    expect(page.locator("#api-keys tbody")).to_contain_text("مزامنة المتجر")
    page.remove_listener("dialog", browsing._dialog)  # this confirmation is expected: accept it
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("#api-keys form[action$='/revoke'] button").click()
    expect(page.locator("#api-keys tbody tr")).to_have_count(0)
    assert me() == 401
    assert browsing.dialogs == []


def test_reloading_the_page_that_shows_a_new_key_makes_no_other(browsing, live_server):
    """The page showing a new key once, reloaded, is the list again: no second key is made
    (the browser would post the form again), and the secret is not shown twice."""
    page = browsing.new_page(account=live_server.make_account())
    page.goto("/settings/api-keys")
    page.locator("input[name='name']").fill("مزامنة المتجر")
    submit(page, "/settings/api-keys")
    expect(page.locator("code.secret")).to_have_count(1)
    # A person reloads a page that has loaded; the secret can show before its scripts have run.
    page.wait_for_load_state()

    page.reload()
    expect(page.locator("#api-keys tbody tr")).to_have_count(1)
    expect(page.locator("code.secret")).to_have_count(0)
