"""An admin with the keyboard only: after an action swaps the part of the page that held the
focus, the focus stays there (on the same control, or the nearest one left, or the message
that says what happened) instead of falling back to the top of the page; Escape closes the
header's menus and gives the focus back to their button."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from crm.extensions import db
from crm.foundation import services
from crm.foundation.models import User
from tests.e2e.conftest import PHONE
from tests.factories import make_user

pytestmark = [pytest.mark.e2e, pytest.mark.live, pytest.mark.xdist_group("e2e")]

# What has the focus, read in the page (evaluated through DevTools, which the CSP allows).
FOCUSED = """() => {
  const e = document.activeElement;
  if (!e || e === document.body) return null;
  return {id: e.id, text: (e.innerText || "").trim(), within: (e.closest("[id]") || {}).id};
}"""


def _press_on(page: Page, button, key: str = "Enter") -> None:
    """Focus `button` as Tab would and press `key` on it."""
    button.focus()
    page.keyboard.press(key)


def test_revoking_a_key_with_the_keyboard_keeps_the_focus_in_the_list(browsing, live_server):
    """Enter on a key's "Revoke" (confirmed) leaves the focus on the next key's button."""
    account = live_server.make_account()
    with live_server.transaction(account.organization_id):
        admin = db.session.get(User, account.user_id)
        for name in ("first", "second"):
            services.create_api_key(admin, name, admin.id)
    page = browsing.new_page(account=account)
    page.goto("/settings/api-keys")
    browsing.confirm_next(page)
    _press_on(page, page.locator("#api-keys form[action$='/revoke'] button").first)

    expect(page.locator("#api-keys tbody tr")).to_have_count(1)
    expect(page.locator("#api-keys form[action$='/revoke'] button")).to_be_focused()
    assert browsing.dialogs == []


def test_changing_a_role_with_the_keyboard_keeps_the_focus_on_its_button(browsing, live_server):
    """Enter on "Change" swaps the member's row; the focus stays on the new row's button."""
    account = live_server.make_account()
    with live_server.transaction(account.organization_id):
        agent_id = make_user(db.session.get(User, account.user_id).organization, "agent").id
    page = browsing.new_page(account=account)
    page.goto("/team")
    row = page.locator(f"#member-{agent_id}")
    row.locator("select").select_option("manager")
    _press_on(page, row.locator("button[type=submit]").first)

    expect(row.locator("select")).to_have_value("manager")
    expect(row.locator("form[action$='/role'] button")).to_be_focused()


def test_removing_a_member_with_the_keyboard_focuses_what_happened(browsing, live_server):
    """The removed member's row goes; the focus moves to the message saying so, from where
    Tab goes on through the page."""
    account = live_server.make_account()
    with live_server.transaction(account.organization_id):
        agent_id = make_user(db.session.get(User, account.user_id).organization, "agent").id
    page = browsing.new_page(account=account)
    page.goto("/team")
    browsing.confirm_next(page)
    _press_on(page, page.locator(f"#member-{agent_id} form[action$='/remove'] button"))

    expect(page.locator(f"#member-{agent_id}")).to_have_count(0)
    expect(page.locator("#flashes")).to_be_focused()
    page.keyboard.press("Tab")
    assert page.evaluate(FOCUSED) is not None


def test_escape_closes_the_menus_and_gives_the_focus_back(browsing, live_server):
    """At a phone's width, Enter opens the menu and Escape closes it, the focus back on its
    button; the same for the user's menu."""
    page = browsing.new_page(account=live_server.make_account())
    page.set_viewport_size(PHONE)
    page.goto("/settings")
    for menu in ("details.menu-toggle", "details.user-menu"):
        summary = page.locator(f"{menu} > summary")
        _press_on(page, summary)
        expect(page.locator(menu)).to_have_attribute("open", "")
        page.keyboard.press("Tab")  # into the menu
        page.keyboard.press("Escape")
        expect(page.locator(menu)).not_to_have_attribute("open", "")
        expect(summary).to_be_focused()


# How far each table of the page scrolls sideways inside its frame.
TABLES_WIDER = """() => [...document.querySelectorAll('.table-wrap')].map(
  w => w.scrollWidth - w.clientWidth)"""


def test_the_admins_tables_fit_a_phone_without_scrolling_sideways(browsing, live_server):
    """At 390 px in Arabic, the team, its invitations, the API keys, the sessions and the
    audit log show each row whole (its actions within reach), none scrolling sideways."""
    account = live_server.make_account()
    with live_server.transaction(account.organization_id):
        admin = db.session.get(User, account.user_id)
        agent = make_user(admin.organization, "agent",
                          email="abdulrahman.alqahtani.sales-department@very-long-company.example")
        services.invite_user(admin, "someone.with.a.long.address@very-long-company.example",
                             "agent")
        services.create_api_key(admin, "مزامنة المتجر الإلكتروني", admin.id)
        agent_id = agent.id
    other = browsing.new_page(account=account)  # a second session on the profile
    other.goto("/profile")
    page = browsing.new_page(account=account)
    page.set_viewport_size(PHONE)
    for path in ("/team", "/settings/api-keys", "/profile", "/settings/audit"):
        page.goto(path)
        assert [wider for wider in page.evaluate(TABLES_WIDER) if wider > 0] == [], path
    page.goto("/team")
    remove = page.locator(f"#member-{agent_id} form[action$='/remove'] button")
    box = remove.bounding_box()
    assert box is not None
    assert 0 <= box["x"] <= box["x"] + box["width"] <= PHONE["width"]


def test_a_refused_invitation_puts_the_focus_on_the_field_to_fix(browsing, live_server):
    """Enter on "Send the invitation" with an address already in the team: the form comes back
    with the error, the focus on the email field that has it."""
    account = live_server.make_account()
    page = browsing.new_page(account=account)
    page.goto("/team")
    page.locator("#invitations input[name=email]").fill(account.email)
    _press_on(page, page.locator("#invitations form[action$='/team/invitations'] "
                                 "button[type=submit]"))

    email = page.locator("#invitations input[name=email]")
    expect(email).to_have_attribute("aria-invalid", "true")
    expect(email).to_be_focused()


def test_a_refused_settings_page_puts_the_focus_on_the_field_to_fix(browsing, live_server):
    """Enter on "Save" with a time zone that does not exist: the page comes back with the
    error, the focus on the time zone field, what was typed kept."""
    page = browsing.new_page(account=live_server.make_account())
    page.goto("/settings")
    zone = page.locator("input[name=timezone]")
    zone.fill("Mars/Olympus_Mons")
    _press_on(page, page.locator("form[action$='/settings'] button[type=submit]"))

    expect(zone).to_have_attribute("aria-invalid", "true")
    expect(zone).to_have_value("Mars/Olympus_Mons")
    expect(zone).to_be_focused()
