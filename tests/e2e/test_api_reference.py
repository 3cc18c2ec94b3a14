"""/api/docs in a browser: at a phone's width, in Arabic and English, for a visitor and for an
admin in the app's layout, the reference fits its window and breaks no CSP rule."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from crm.extensions import db
from crm.foundation.models import User
from tests.e2e.conftest import ARTIFACTS, LOCALES, PHONE, scrolls_sideways

pytestmark = [pytest.mark.e2e, pytest.mark.live, pytest.mark.xdist_group("e2e")]

HEADINGS = {"ar": "مرجع واجهة API", "en": "API reference"}


@pytest.mark.parametrize("language", ["ar", "en"])
def test_the_reference_fits_a_phone(browsing, live_server, language):
    """At 390 px nothing scrolls sideways, the longest paths and schema names and the
    examples included; the links of its contents lead to the operations."""
    account = live_server.make_account()
    with live_server.transaction(account.organization_id):
        db.session.get(User, account.user_id).preferred_language = language
    for who, page in (("visitor", browsing.new_page(locale=LOCALES[language])),
                      ("admin", browsing.new_page(locale=LOCALES[language], account=account))):
        page.set_viewport_size(PHONE)
        page.goto("/api/docs")
        expect(page.locator("h1")).to_have_text(HEADINGS[language])
        expect(page.locator(".api-operation").first).to_be_visible()
        # The window only: the whole reference is taller than a screenshot can be.
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=ARTIFACTS / f"api-reference-{language}-{who}-390.png")
        assert not scrolls_sideways(page), f"{who} in {language}"
        # Every example open: the widest lines scroll inside their box, not the page.
        page.locator("details.api-example").evaluate_all(
            "(all) => all.forEach((details) => { details.open = true; })")
        assert not scrolls_sideways(page), f"{who} in {language}, the examples open"
        page.locator(".api-contents a[href='#tag-billing']").click()
        expect(page.locator("#tag-billing")).to_be_in_viewport()
    assert not browsing.console_errors
