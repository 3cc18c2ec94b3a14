"""Billing in Chromium, in Arabic: the trial's banner, an upgrade through (the fake) Stripe
Checkout, the plan shown once Stripe's signed webhook has been processed, and the usage bars;
and the same upgrade with JavaScript off, through the CSP's form-action."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
import requests
from playwright.sync_api import Route, expect
from sqlalchemy import func, select

from crm.billing import services
from crm.billing.models import Invoice, Subscription
from crm.billing.webhooks import PATH
from crm.extensions import db
from crm.models import utcnow
from tests.billing.fake_stripe import FakeStripe
from tests.conftest import fake_stripe
from tests.e2e.conftest import DESKTOP, PHONE, screenshot, translated
from tests.factories import make_org, run_jobs
from tests.live import Account, LiveServer, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.live, pytest.mark.xdist_group("e2e")]

_STRIPE_SETTINGS = ("STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET", "STRIPE_API_BASE")


@pytest.fixture
def stripe_connected(live_server) -> Iterator[FakeStripe]:
    """The live server connected to the fake Stripe, its plans synced, and the fake's
    Checkout page sending its signed webhooks to the live server."""
    fake = fake_stripe()
    fake.reset()
    config = live_server.app.config
    saved = {key: config[key] for key in _STRIPE_SETTINGS}
    config.update(STRIPE_SECRET_KEY=fake.api_key, STRIPE_WEBHOOK_SECRET=fake.webhook_secret,
                  STRIPE_API_BASE=fake.url)
    fake.webhook_url = f"{live_server.url}{PATH}"
    with live_server.app.app_context():
        services.sync_catalog()
    try:
        yield fake
    finally:
        config.update(saved)
        fake.reset()


def _subscription_status(live: LiveServer, org_id: int) -> str | None:
    """Run the queued jobs (the webhook's), then the organization's Stripe status."""
    with live.app.app_context():
        run_jobs(live.app, ("default",))
    with live.transaction(org_id):
        subscription = db.session.scalar(select(Subscription))
        return subscription.status if subscription and subscription.stripe_subscription_id \
            else None


def test_an_admin_upgrades_from_the_trial_through_checkout(browsing, live_server,
                                                           stripe_connected):
    """A new organization's admin reads the trial's banner, chooses Starter by the month,
    pays on Stripe's Checkout page, and is back on the billing page, which shows Starter as
    soon as the webhook is processed, with a bar per limit of Starter."""
    account = live_server.make_account()
    page = browsing.new_page(account=account)

    page.goto("/")
    banner = page.locator(".billing-banner-trial")
    expect(banner).to_contain_text(translated(live_server, "Choose a plan", "ar"))
    expect(banner).to_contain_text("14")
    screenshot(page, "billing-trial-banner-ar")
    banner.get_by_role("link").click()
    expect(page).to_have_url(f"{live_server.url}/billing")
    expect(page.locator(".billing-plan")).to_contain_text(translated(live_server, "Pro", "ar"))
    expect(page.locator("article[data-plan='starter'] .plan-price")).to_contain_text("ر.س")

    page.locator("article[data-plan='starter'] button[value='month']").click()
    expect(page).to_have_url(re.compile(re.escape(f"{stripe_connected.url}/c/pay/")))
    expect(page.locator("h1")).to_have_text("Pay 99.00 SAR")
    page.get_by_role("button", name="Pay").click()

    expect(page).to_have_url(f"{live_server.url}/billing?checkout=done")
    wait_until(lambda: _subscription_status(live_server, account.organization_id) == "active",
               "the checkout's webhook being processed")
    summary = page.locator("#billing-summary")
    expect(summary.locator(".billing-plan")).to_contain_text(
        translated(live_server, "Starter", "ar"))
    expect(summary).to_contain_text(translated(live_server, "Active", "ar"))
    users = page.locator("#usage-users")
    expect(users).to_have_attribute("value", "1")
    expect(users).to_have_attribute("max", "5")
    expect(page.locator("#usage-customers")).to_have_attribute("max", "10000")
    expect(page.locator(".billing-banner-trial")).to_have_count(0)
    screenshot(page, "billing-starter-ar")
    assert browsing.csp_violations() == []


def _stripe_pages_served_by(fake: FakeStripe) -> Callable[[Route], None]:
    """A route handler answering Stripe's page origins from the fake (redirects unfollowed,
    so the browser follows them itself and applies its CSP to them)."""
    def forward(route: Route) -> None:
        request = route.request
        address = urlsplit(request.url)
        answer = requests.request(
            request.method, f"{fake.url}{address.path}", data=request.post_data_buffer,
            headers={"Content-Type": request.headers.get("content-type", "text/plain")},
            allow_redirects=False, timeout=10)
        route.fulfill(status=answer.status_code, body=answer.content, headers={
            name: value for name, value in answer.headers.items()
            if name.lower() in ("content-type", "location")})

    return forward


def test_without_javascript_a_plain_post_reaches_checkout_through_the_csp(
        browsing, live_server, stripe_connected):
    """With JavaScript off, choosing a plan is a plain form post answered 303 to Stripe's
    Checkout (on checkout.stripe.com, served by the fake): Chromium applies the CSP's
    form-action to that redirect, which must let it through; paying brings the admin back,
    and once the webhook is processed the page shows Starter."""
    stripe_connected.on_stripe_origins = True
    account = live_server.make_account()
    page = browsing.new_page(account=account, javascript=False)
    page.context.route(re.compile(r"^https://(checkout|billing)\.stripe\.com/"),
                       _stripe_pages_served_by(stripe_connected))

    page.goto("/billing")
    page.locator("article[data-plan='starter'] button[value='month']").click()
    expect(page).to_have_url(re.compile(r"^https://checkout\.stripe\.com/c/pay/cs_test_"))
    expect(page.locator("h1")).to_have_text("Pay 99.00 SAR")
    page.get_by_role("button", name="Pay").click()

    expect(page).to_have_url(f"{live_server.url}/billing?checkout=done")
    wait_until(lambda: _subscription_status(live_server, account.organization_id) == "active",
               "the checkout's webhook being processed")
    page.reload()
    expect(page.locator(".billing-plan")).to_contain_text(
        translated(live_server, "Starter", "ar"))
    assert browsing.csp_violations() == []


def _invoices(live: LiveServer, org_id: int) -> int:
    """Run the queued jobs (the webhooks'), then count the organization's invoices."""
    with live.app.app_context():
        run_jobs(live.app, ("default",))
    with live.transaction(org_id):
        return db.session.scalar(select(func.count()).select_from(Invoice))


def test_an_admin_upgrades_cancels_and_keeps_the_plan_in_arabic(browsing, live_server,
                                                               stripe_connected):
    """Subscribed to Starter, the admin upgrades to Pro: Stripe's webhook brings the prorated
    invoice, listed beside the first; cancels at the period's end (confirmed), reads the day
    it ends and «Keep my plan», and instead of the plans' buttons a line saying to keep the
    plan first; presses it, reads that the plan renews, and the buttons are back; at 390 px
    too, without sideways scrolling."""
    account = live_server.make_account()
    page = browsing.new_page(account=account)
    page.goto("/billing")
    page.locator("article[data-plan='starter'] button[value='month']").click()
    page.get_by_role("button", name="Pay").click()
    wait_until(lambda: _subscription_status(live_server, account.organization_id) == "active",
               "the checkout's webhook being processed")

    page.goto("/billing")
    page.locator("article[data-plan='pro'] button[value='month']").click()
    expect(page.locator(".billing-plan")).to_contain_text(translated(live_server, "Pro", "ar"))
    wait_until(lambda: _invoices(live_server, account.organization_id) == 2,
               "the upgrade's prorated invoice arriving by webhook")
    page.reload()
    expect(page.locator("section[aria-labelledby='invoices-title'] tbody tr")).to_have_count(2)

    browsing.confirm_next(page)
    page.locator("article[data-plan='free'] button").click()
    keep = page.get_by_role("button", name=translated(live_server, "Keep my plan", "ar"))
    expect(keep).to_be_visible()
    assert translated(live_server, "Keep my plan", "ar") == "الإبقاء على الاشتراك"
    expect(page.locator("#billing-summary")).to_contain_text(
        translated(live_server, "Ends on", "ar"))
    # Ending, the plan is kept before it changes: no upgrade or downgrade, a line says so.
    expect(page.locator(".plan-choice")).to_have_count(0)
    expect(page.locator(".plans-ending")).to_contain_text("«الإبقاء على الاشتراك»")
    screenshot(page, "billing-keep-plan-ar")
    page.set_viewport_size({"width": 390, "height": 844})
    screenshot(page, "billing-keep-plan-ar-390")
    assert not page.evaluate(
        "() => document.documentElement.scrollWidth > document.documentElement.clientWidth")
    page.set_viewport_size({"width": 1280, "height": 800})

    keep.click()

    expect(page.locator("#billing-summary")).to_contain_text(
        translated(live_server, "Renews on", "ar"))
    expect(keep).to_have_count(0)
    expect(page.locator(".plans-ending")).to_have_count(0)
    expect(page.locator("article[data-plan='starter'] .plan-choice")).to_be_visible()
    said = translated(live_server, "Your plan continues: it renews on %(date)s.", "ar")
    expect(page.locator("body")).to_contain_text(said.split("%(date)s")[0].strip())
    screenshot(page, "billing-kept-ar")
    assert browsing.csp_violations() == []
    assert browsing.console_errors == []
    assert browsing.dialogs == []


def test_an_upgrade_the_bank_must_confirm_waits_with_its_invoice_link_in_arabic(
        browsing, live_server, stripe_connected):
    """Subscribed to Starter, the admin upgrades to Pro and the bank asks for 3-D Secure: the
    page says to confirm the payment with the bank (not that it failed), keeps Starter, and
    shows Pro waiting with a link to the invoice's page to confirm it; at 390 px too."""
    account = live_server.make_account()
    page = browsing.new_page(account=account)
    page.goto("/billing")
    page.locator("article[data-plan='starter'] button[value='month']").click()
    page.get_by_role("button", name="Pay").click()
    wait_until(lambda: _subscription_status(live_server, account.organization_id) == "active",
               "the checkout's webhook being processed")
    stripe_connected.requires_action = True

    page.goto("/billing")
    page.locator("article[data-plan='pro'] button[value='month']").click()

    said = translated(live_server, "Your bank asks you to confirm the payment for %(plan)s: "
                      "confirm it on the invoice's page, and your plan changes once it is "
                      "paid.", "ar")
    expect(page.locator(".flash-info")).to_contain_text(said.split("%(plan)s")[0].strip())
    expect(page.locator(".billing-plan")).to_contain_text(
        translated(live_server, "Starter", "ar"))
    invoice = stripe_connected.of_kind("invoice")[-1]
    link = page.locator("#billing-pending a")
    expect(link).to_have_text(translated(live_server, "Confirm the payment", "ar"))
    expect(link).to_have_attribute("href", invoice["hosted_invoice_url"])
    screenshot(page, "billing-3ds-ar")
    page.set_viewport_size(PHONE)
    screenshot(page, "billing-3ds-ar-390")
    assert not page.evaluate(
        "() => document.documentElement.scrollWidth > document.documentElement.clientWidth")
    assert browsing.csp_violations() == []


# What a phone's width must not do to the billing page (a function: the CSP forbids eval):
# scroll sideways, cut an invoice's links off (in the viewport and in any box that clips
# them), or squeeze a usage bar beside its label instead of across its row.
LAYOUT = """() => {
  const root = document.documentElement;
  const inside = (box, outer) => box.left >= outer.left - 0.5 && box.right <= outer.right + 0.5;
  const viewport = {left: 0, right: root.clientWidth};
  const cut = [];
  for (const link of document.querySelectorAll("[aria-labelledby=invoices-title] a")) {
    const box = link.getBoundingClientRect();
    let clipped = !inside(box, viewport);
    for (let up = link.parentElement; up; up = up.parentElement) {
      if (getComputedStyle(up).overflowX !== "visible") {
        clipped = clipped || !inside(box, up.getBoundingClientRect());
      }
    }
    if (clipped) cut.push(link.textContent.trim());
  }
  const bars = [...document.querySelectorAll(".usage")].map((row) => {
    const bar = row.querySelector("progress");
    return bar ? bar.getBoundingClientRect().width / row.getBoundingClientRect().width : 1;
  });
  return {wider: root.scrollWidth - root.clientWidth, cut: cut, narrowest: Math.min(...bars)};
}"""


@pytest.mark.parametrize(("language", "locale"), [("ar", "ar-SA"), ("en", "en-US")])
def test_the_billing_page_fits_a_phone_and_a_desktop(browsing, live_server, stripe_connected,
                                                     language, locale):
    """At 390 px, in Arabic and in English, the page does not scroll sideways, each usage bar
    runs across its row under its label and figures, and every invoice's View / Pay / PDF
    link is on screen, not cut at the edge of the table; at 1280 px too."""
    with live_server.transaction():
        org = make_org(language=language)
        account = Account(org.id, org.admin.id, org.admin.email)
    with live_server.transaction(account.organization_id):
        for n, status in enumerate(("open", "paid", "paid")):
            db.session.add(Invoice(
                stripe_invoice_id=f"in_layout_{n}", number=f"WASL-0001-{n:04d}",
                issued_at=utcnow() - timedelta(days=30 * n), amount=299_000 - n * 100_000,
                currency="sar", status=status,
                hosted_invoice_url=f"https://invoice.stripe.test/i/{n}",
                invoice_pdf=f"https://invoice.stripe.test/i/{n}/pdf"))
    page = browsing.new_page(locale=locale, account=account)

    for size, name in ((PHONE, "390"), (DESKTOP, "1280")):
        page.set_viewport_size(size)
        page.goto("/billing")
        expect(page.locator("[aria-labelledby=invoices-title] a")).to_have_count(6)
        screenshot(page, f"billing-layout-{language}-{name}")
        found = page.evaluate(LAYOUT)
        assert found["wider"] <= 0, (name, found)
        assert found["cut"] == [], (name, found)
        if size is PHONE:
            assert found["narrowest"] >= 0.9, found
    assert browsing.csp_violations() == []
    assert browsing.console_errors == []
