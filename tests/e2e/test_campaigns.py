"""Campaigns in Chromium, in Arabic: a marketer builds a segment, writes the campaign, previews
it, starts it and watches the progress move live; a customer answers «إيقاف» in the sandbox,
and the next campaign skips them.

The live send goes from a sandbox number: picking a cloud number's template synced from the
(fake) Graph API is covered by tests/campaigns/test_pages.py, where the fake Graph API runs in
the test's process.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import select

from crm.campaigns import services
from crm.campaigns.models import Campaign
from crm.customers.models import Segment
from crm.extensions import db
from crm.foundation.models import Organization, User
from tests.conftest import ROOT
from tests.customers.factories import make_customer
from tests.e2e.conftest import (
    PHONE,
    expect_page_settled,
    expect_settled,
    open_live,
    screenshot,
    translated,
)
from tests.live import LiveServer, wait_until
from tests.whatsapp.factories import make_profile

pytestmark = [pytest.mark.e2e, pytest.mark.live, pytest.mark.xdist_group("e2e")]

PEOPLE = [("سارة العتيبي", "0501230001"), ("عمر السعيد", "0501230002"),
          ("ليلى حسن", "0501230003"), ("خالد علي", "0501230004")]
STOPPER = PEOPLE[0]


# How long a `crm worker` may take to start: a busy machine takes seconds to import the app,
# which is not what the waits on the campaign's progress are for.
WORKER_START_SECONDS = 60


@contextmanager
def workers(live: LiveServer, log: Path) -> Iterator[subprocess.Popen]:
    """`crm worker` on every queue, as `crm up` runs it, listening when the block starts (the
    waits inside time the work, not the start), until the block ends (SIGTERM)."""
    with open(log, "a") as output:
        process = subprocess.Popen([sys.executable, "-m", "crm", "worker"], cwd=ROOT,
                                   env=live.environment(), stdout=output,
                                   stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: process.poll() is not None or "Listening on" in log.read_text(),
                   "the worker starting", timeout=WORKER_START_SECONDS)
        assert process.poll() is None, log.read_text()
        yield process
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def saved(page: Page, press: Callable[[], None]) -> None:
    """Press a step's save button and wait for the draft's page to come back (each save
    answers with the page again: the next form must carry the new version)."""
    heading = page.locator("h1").element_handle()
    with page.expect_response(lambda r: r.url.split("#")[0].endswith("/edit")
                              and r.request.method == "GET" and r.status == 200):
        press()
    heading.wait_for_element_state("hidden")  # the old page is gone: htmx swapped the new in
    # ...and wired it: a change made before the settle (the preview's pick) would send nothing.
    expect_page_settled(page)


def campaign_status(live: LiveServer, org_id: int, campaign_id: int) -> str:
    with live.transaction(org_id):
        return db.session.get(Campaign, campaign_id).status


def test_a_campaign_goes_out_live_and_an_opt_out_is_skipped_next_time(browsing, live_server,
                                                                      tmp_path):
    account = live_server.make_account()
    org_id = account.organization_id
    with live_server.transaction(org_id):
        org = db.session.get(Organization, org_id)
        org.admin = db.session.get(User, account.user_id)  # whom the factories act as
        profile_id = make_profile(org, "sandbox", display_name="متجر وصل").id
        for name, phone in PEOPLE:
            make_customer(org, name=name, phone=phone, tags=["عملاء مميزون"])
        make_customer(org, name="بلا وسم", phone="0501230099")

    page = browsing.new_page(account=account)
    ar = lambda message: translated(live_server, message, "ar")  # noqa: E731

    # A segment of the tagged customers.
    page.goto("/customers/segments/new")
    page.locator("#segment-form input[name=name]").fill("العملاء المميزون")
    page.locator("#segment-form input[name=tag]").fill("عملاء مميزون")
    page.locator("#segment-form button[type=submit]").click()
    expect(page.locator("main")).to_contain_text("العملاء المميزون")

    # A new campaign: name and number, then its steps.
    page.goto("/campaigns/")
    expect(page.locator("main")).to_contain_text(ar("No campaigns yet."))
    page.get_by_role("link", name=ar("New campaign")).first.click()
    page.locator("main input[name=name]").fill("عرض نهاية الأسبوع")
    page.get_by_role("button", name=ar("Save and continue")).click()
    expect(page.locator("h1")).to_have_text("عرض نهاية الأسبوع")

    audience = page.locator("#audience")
    audience.get_by_role("radio", name=ar("A segment")).check()
    audience.locator("select[name=segment_id]").select_option(label="العملاء المميزون")
    saved(page, lambda: audience.get_by_role("button", name=ar("Save the audience")).click())
    expect(page.locator("#audience .current-audience")).to_contain_text("4")

    text = "مرحبا {first_name}، خصم *20٪* لك هذا الأسبوع"
    page.locator("#field-text").fill(text)
    saved(page, lambda: page.locator("#message").get_by_role(
        "button", name=ar("Save the message")).click())
    expect(page.locator("#field-text")).to_have_value(text)

    schedule = page.locator("#schedule")
    schedule.locator("input[name=rate_per_minute]").fill("60")  # one a second: visible moving
    saved(page, lambda: schedule.get_by_role("button", name=ar("Save")).click())

    # The preview, as the chosen customer's phone shows it.
    page.locator("#preview-customer").select_option(label="عمر السعيد")
    bubble = page.locator("#campaign-preview .preview-bubble")
    expect(bubble).to_contain_text("مرحبا عمر، خصم 20٪ لك هذا الأسبوع")
    expect(bubble.locator("strong")).to_have_text("20٪")
    screenshot(page, "campaign-draft-ar")

    # The sandbox customer's phone, open before the campaign goes out.
    customer = browsing.new_page(account=account)
    # Its socket in its rooms: the campaign reaches the chat live.
    open_live(customer,
              f"/whatsapp/sandbox?profile={profile_id}&phone={STOPPER[1]}&name={STOPPER[0]}")

    # Start, and watch the progress move live.
    browsing.confirm_next(page)
    page.locator("#start").get_by_role("button", name=ar("Start sending")).click()
    expect(page.locator("main")).to_contain_text(ar("Recipients"))
    campaign_id = int(page.url.rstrip("/").rsplit("/", 1)[1])
    progress = page.locator(f"#campaign-{campaign_id}-progress progress")
    # The runner freezes the list of 4, then sends one a second: the bar moves without a reload.
    with workers(live_server, tmp_path / "worker.log"):
        expect(progress).to_have_attribute("max", "4", timeout=15_000)
        expect(progress).to_have_attribute("value", re.compile("^[123]$"), timeout=15_000)
        expect(progress).to_have_attribute("value", "4", timeout=15_000)
        expect(page.locator(f"#campaign-{campaign_id}-status")).to_have_text(
            translated_p(live_server, "campaign status", "Completed"), timeout=15_000)
        expect(page.locator(".funnel-sent .funnel-figure")).to_contain_text("4")
        expect(page.locator("svg.time-chart")).to_be_visible()
        screenshot(page, "campaign-results-ar")

        # The customer got it, and answers «إيقاف».
        expect(customer.locator("#sandbox-chat")).to_contain_text("مرحبا سارة")
        customer.locator("#sandbox-text").fill("إيقاف")
        customer.locator("#sandbox-form button[type=submit]").click()
        expect(customer.locator("#sandbox-chat")).to_contain_text("لن تصلك رسائل حملاتنا",
                                                                 timeout=15_000)

        # The next campaign to the same segment skips them.
        with live_server.transaction(org_id):
            admin = db.session.get(User, account.user_id)
            segment_id = db.session.scalar(select(Segment.id))
            second = services.create_campaign(admin, {
                "name": "عرض الأسبوع القادم", "profile_id": profile_id,
                "audience": {"segment_id": segment_id}, "message": {"text": "عرض جديد"}})
            services.start_campaign(admin, second)
            second_id = second.id
        wait_until(lambda: campaign_status(live_server, org_id, second_id) == "completed",
                   "the second campaign completing", timeout=20)

    page.goto(f"/campaigns/{second_id}/recipients?state=skipped")
    rows = page.locator("#recipient-rows tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text(STOPPER[0])
    expect(rows.first).to_contain_text(ar("Opted out of campaigns"))

    # The customer page says so, with the words they wrote.
    page.goto("/customers/")
    page.get_by_role("link", name=STOPPER[0]).click()
    expect(page.locator("#consent")).to_contain_text("إيقاف")
    expect(page.locator("#consent .consent-state")).to_have_text(
        translated_p(live_server, "consent", "Opted out"))

    # The list, a draft's steps and the results fit a phone without scrolling sideways.
    with live_server.transaction(org_id):
        draft_id = services.create_campaign(db.session.get(User, account.user_id), {
            "name": "مسودة", "profile_id": profile_id}).id
    page.set_viewport_size(PHONE)
    for path, name in (("/campaigns/", "list"), (f"/campaigns/{draft_id}/edit", "draft"),
                       (f"/campaigns/{campaign_id}", "results")):
        page.goto(path)
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"], path
        screenshot(page, f"campaign-{name}-phone-ar")
    assert browsing.confirmed  # the start asked first
    assert browsing.csp_violations() == []
    assert browsing.dialogs == []



def test_the_preview_finds_its_recipient_with_the_keyboard(browsing, live_server):
    """Past the audience's first 20, typing in the preview's search swaps the matches and the
    preview in (letters folded: «احمد» finds «أحمد»), with a warning naming a variable empty
    for the recipient; Tab reaches the list, whose arrow keys preview the next match and keep
    the focus there."""
    account = live_server.make_account()
    org_id = account.organization_id
    with live_server.transaction(org_id):
        org = db.session.get(Organization, org_id)
        org.admin = db.session.get(User, account.user_id)
        profile = make_profile(org, "sandbox")
        make_customer(org, name="أحمد الشمري", phone="0559876543", tags=["vip"],
                      company="مخبز النور")
        make_customer(org, name="احمد سالم", phone="0559876544", tags=["vip"])
        for n in range(22):
            make_customer(org, name=f"عميل {n}", phone=f"05012345{n:02d}", tags=["vip"])
        campaign_id = services.create_campaign(org.admin, {
            "name": "عرض", "profile_id": profile.id, "audience": {"tag": "vip"},
            "message": {"text": "مرحبا {first_name} من {company}"}}).id

    page = browsing.new_page(account=account)
    page.goto(f"/campaigns/{campaign_id}/edit")
    options = page.locator("#preview-customer option")
    expect(options).to_have_count(20)
    page.locator("#preview-search").focus()
    # A slow typist's pauses send the letters so far too: the answer to the whole word is the
    # last (htmx queues each search behind the one on its way).
    with page.expect_response(lambda r: parse_qs(urlsplit(r.url).query).get("q") == ["احمد"]):
        page.keyboard.type("احمد")
    expect(options).to_have_count(2)
    text = page.locator("#campaign-preview .message-text")
    expect(text).to_have_text("مرحبا احمد من")
    expect(page.locator("#campaign-preview .preview-warnings")).to_contain_text("{company}")
    expect_settled(page.locator("#preview-candidates"))  # the new list sends its change

    page.keyboard.press("Tab")
    picker = page.locator("#preview-customer")
    expect(picker).to_be_focused()
    page.keyboard.press("ArrowDown")
    expect(text).to_have_text("مرحبا أحمد من مخبز النور")
    expect(page.locator("#campaign-preview .preview-warnings")).to_have_count(0)
    expect(picker).to_be_focused()
    screenshot(page, "campaign-preview-search-ar")
    assert browsing.csp_violations() == []


def translated_p(live: LiveServer, context: str, message: str) -> str:
    """What the live app says for `message` in Arabic, in `context` (pgettext)."""
    from flask_babel import force_locale, pgettext

    with live.app.test_request_context(), force_locale("ar"):
        return pgettext(context, message)
