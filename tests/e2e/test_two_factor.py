"""Two-factor sign-in in Chromium: turn it on from the profile reading the key off the page,
sign out, and sign in again with a code an authenticator app (pyotp) computes."""

from __future__ import annotations

import re
import time

import pyotp
import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import (
    PHONE,
    expect_dashboard,
    log_in,
    screenshot,
    scrolls_sideways,
    submit,
    translated,
    user_menu,
)
from tests.factories import PASSWORD

pytestmark = [pytest.mark.e2e, pytest.mark.live, pytest.mark.xdist_group("e2e")]

ARABIC_DIGITS = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")


def test_turn_it_on_sign_out_and_sign_in_with_a_code(browsing, live_server):
    """The admin scans (reads) the key, confirms with a code typed in Arabic-Indic digits,
    keeps ten recovery codes; after signing out, the password leads to the code step, and a
    code from the app opens the dashboard."""
    account = live_server.make_account()
    page = browsing.new_page(account=account)

    page.goto("/profile")
    submit(page, "/profile/two-factor/setup")
    expect(page).to_have_url(re.compile(r"/profile/two-factor$"))
    qr = page.locator("img.qr-code")
    expect(qr).to_be_visible()
    assert qr.evaluate("image => image.naturalWidth") > 0  # the data: image the CSP allows
    totp = pyotp.TOTP(page.locator("#totp-secret").inner_text().replace(" ", ""))
    page.set_viewport_size(PHONE)
    assert not scrolls_sideways(page)
    screenshot(page, "two-factor-setup-ar-phone")

    page.locator("input[name='code']").fill("000000")
    submit(page, "/profile/two-factor")
    expect(page.locator("#error-code")).to_have_text(
        translated(live_server, "The code is incorrect. Check that your phone's clock is right "
                               "and enter the newest code.", "ar"))
    page.locator("input[name='code']").fill(totp.now().translate(ARABIC_DIGITS))
    submit(page, "/profile/two-factor")
    codes = page.locator("#recovery-codes li")
    expect(codes).to_have_count(10)
    page.context.grant_permissions(["clipboard-read", "clipboard-write"],
                                   origin=live_server.url)
    copy = page.locator("button[data-copy]")
    copy.click()
    expect(copy).to_have_text(translated(live_server, "Copied", "ar"))
    copied = page.evaluate("() => navigator.clipboard.readText()")
    assert copied.split() == codes.all_inner_texts()
    assert not scrolls_sideways(page)
    screenshot(page, "two-factor-codes-ar-phone")
    saved = translated(live_server, "I have saved them", "ar")
    page.locator("a[href='/profile']", has_text=saved).click()
    expect(page.locator("#two-factor .badge.on")).to_be_visible()

    user_menu(page).click()
    submit(page, "/logout")
    page.goto("/login")
    log_in(page, account.email, PASSWORD)
    expect(page).to_have_url(re.compile(r"/login/two-factor$"))
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/login"))  # half signed in: nothing opens yet
    page.goto("/login/two-factor")
    # The code that turned it on is spent: the app's next code (one step ahead is accepted).
    page.locator("input[name='code']").fill(totp.at(time.time() + totp.interval))
    submit(page, "/login/two-factor")
    expect_dashboard(page, live_server, "ar")
    # The wrong code's 422 is the one error the browser logs.
    assert [error for error in browsing.console_errors if "422" not in error] == []
    assert browsing.csp_violations() == []
    assert browsing.dialogs == []
