"""A member changes their email address in Arabic: the profile asks, the link arrives over
SMTP at the new address, opening it makes the change and signs the other browsers out."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import (
    expect_dashboard,
    expect_direction,
    link_in,
    log_in,
    receive_email,
    submit,
    translated,
    unique_email,
    user_menu,
)
from tests.factories import PASSWORD

pytestmark = [pytest.mark.e2e, pytest.mark.live, pytest.mark.xdist_group("e2e")]


def test_change_the_email_address_in_arabic(browsing, live_server, mailbox):
    """A wrong password is said on its field and keeps the typed address; the right one
    leaves the change waiting (the old address still logs in) and mails both addresses; the
    link, opened in the member's browser, changes the address, keeps that browser signed in,
    signs the other one out, and from then on the new address logs in."""
    account = live_server.make_account()
    new = unique_email("new")
    here, there = (browsing.new_page(account=account) for _ in range(2))
    say = lambda message: translated(live_server, message, "ar")  # noqa: E731

    here.goto("/profile")
    expect_direction(here, "ar", "rtl")
    form = here.locator("form[action='/profile/email']")
    form.locator("input[name='new_email']").fill(new)
    form.locator("input[name='current_password']").fill("not the password")
    submit(here, "/profile/email")
    expect(here.locator("#error-email-current_password")).to_have_text(
        say("The current password is incorrect."))
    expect(form.locator("input[name='new_email']")).to_have_value(new)
    expect(form.locator("input[name='current_password']")).to_have_attribute(
        "aria-describedby", "help-email-current_password error-email-current_password")

    form.locator("input[name='current_password']").fill(PASSWORD)
    submit(here, "/profile/email")
    notice = here.locator("#email .notice")
    expect(notice).to_contain_text(new)
    expect(here.locator("form[action='/profile/email/cancel']")).to_be_visible()
    expect(here.locator("form[action='/profile/email/resend']")).to_be_visible()

    told = receive_email(live_server, mailbox, account.email)
    assert told["Subject"] == say("A change of your Wasl email address was asked for")
    assert new in told.get_body(("plain",)).get_content()
    confirmation = receive_email(live_server, mailbox, new)
    assert confirmation["Subject"] == say("Confirm your new Wasl email address")
    link = link_in(confirmation, live_server)
    assert "/confirm-email/" in link

    visitor = browsing.new_page()  # the old address still logs in until the link is opened
    visitor.goto("/login")
    log_in(visitor, account.email, PASSWORD)
    expect_dashboard(visitor, live_server, "ar")

    here.goto(link)
    expect(here.locator("h1")).to_have_text(say("Your email address was changed"))
    expect(here.locator("main")).to_contain_text(new)
    here.locator("main a[href='/profile']").click()
    expect(here).to_have_url(f"{live_server.url}/profile")
    expect(here.locator("#email")).to_contain_text(new)
    expect(here.locator("#email .notice")).to_have_count(0)

    there.goto("/team")
    expect(there).to_have_url(re.compile(r"/login"))
    there.goto("/login")
    log_in(there, account.email, PASSWORD)
    expect(there.locator(".form-error")).to_be_visible()
    log_in(there, new, PASSWORD)
    expect_dashboard(there, live_server, "ar")
    expect(user_menu(there)).to_be_visible()

    here.goto(link)  # once used, the link says so
    expect(here.locator("h1")).to_have_text(say("This link cannot be used"))
    assert browsing.dialogs == []
