"""WhatsApp in Chromium: a customer writes through the sandbox and the agent answers live; an
admin adds a linked device and pairs it in one press."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from crm.extensions import db
from crm.foundation.models import Organization
from crm.whatsapp.models import WhatsAppProfile
from tests.e2e.conftest import (
    expect_page_settled,
    expect_settled,
    open_live,
    screenshot,
    translated,
)
from tests.factories import run_jobs
from tests.live import Account
from tests.whatsapp.factories import make_profile
from tests.whatsapp.fake_neonize import FakeNetwork, supervising

pytestmark = [pytest.mark.e2e, pytest.mark.live, pytest.mark.xdist_group("e2e")]


def test_a_customer_message_arrives_live_and_the_reply_reaches_the_customer(browsing,
                                                                             live_server):
    """Two browsers: the customer's sandbox message appears in the agent's inbox without a
    reload; the agent replies; the customer sees the reply and the agent sees blue ticks."""
    admin = live_server.make_account()
    account = Account(admin.organization_id, admin.user_id, admin.email)
    with live_server.transaction(admin.organization_id):
        org = db.session.get(Organization, admin.organization_id)
        profile_id = make_profile(org, "sandbox", display_name="متجر وصل").id

    agent = browsing.new_page(account=account)
    open_live(agent, "/inbox")  # in its rooms before the customer writes: else it misses it
    customer = browsing.new_page(account=account)
    # Its socket in its rooms: the reply reaches the chat live.
    open_live(customer, f"/whatsapp/sandbox?profile={profile_id}&phone=0501234567&name=سارة")

    customer.locator("#sandbox-text").fill("السلام عليكم، هل الطلب جاهز؟")
    customer.locator("#sandbox-form button[type=submit]").click()
    expect(customer.locator("#sandbox-chat")).to_contain_text("هل الطلب جاهز؟")

    row = agent.locator(".conversation-row").first
    expect(row).to_contain_text("سارة")  # arrived without a reload
    expect_settled(row)  # its link opens the thread in place only once htmx wired it
    row.locator("a").click()
    expect(agent.locator(".thread-messages")).to_contain_text("هل الطلب جاهز؟")
    agent.locator("textarea[name=text]").fill("نعم، يصلك غدًا")
    agent.locator(".composer").get_by_role("button", name="إرسال").click()
    expect(agent.locator("article.bubble-out").last).to_contain_text("يصلك غدًا")

    with live_server.app.app_context():
        run_jobs(live_server.app, ("whatsapp",))  # the outbox sends; the sandbox delivers
    expect(customer.locator("#sandbox-chat")).to_contain_text("يصلك غدًا")
    expect(agent.locator("article.bubble-out .ticks.read").last).to_be_visible()

    customer.locator("#sandbox-text").fill("شكرًا")
    customer.locator("#sandbox-form button[type=submit]").click()
    expect(agent.locator(".thread-messages")).to_contain_text("شكرًا")
    row = agent.locator(".conversation-row").first
    expect(row).to_contain_text("شكرًا")  # the row's own update came: its badge is the new one
    expect(row.locator(".unread-badge")).to_have_count(0)
    screenshot(agent, "inbox-live-ar")
    screenshot(customer, "sandbox-customer-ar")
    assert browsing.csp_violations() == []


def test_a_linked_device_is_added_and_paired_in_one_press(browsing, live_server):
    """The admin reads the warning about linked devices, presses «Add and pair» once, and
    lands on the number's page waiting for the QR code; the code appears live when the
    supervisor publishes it, and the number shows connected once the phone scans it."""
    admin = live_server.make_account()
    network = FakeNetwork()
    page = browsing.new_page(account=admin)
    with supervising(live_server, network):
        open_live(page, "/whatsapp/numbers")  # the QR code comes over the socket
        form = page.locator("details.add-number",
                            has=page.locator("input[name=provider][value=web]"))
        form.locator("summary").click()
        expect(form.locator(".warning-notice")).to_be_visible()
        form.locator("input[name=display_name]").fill("الاستقبال")
        form.locator("button[type=submit]").click()
        expect(page.locator(".qr-area")).to_contain_text(
            translated(live_server, "Waiting for the QR code…", "ar"))
        # The boosted answer's state listens for the QR code's event only once htmx wired it.
        expect_page_settled(page)
        profile_id = int(page.url.rsplit("/", 1)[1])
        try:
            client = network.client(profile_id)
            client.show_qr("2@e2e-pairing,noise-key,identity-key,adv-secret")
            expect(page.locator("img.qr-code")).to_be_visible()
            screenshot(page, "linked-device-qr-ar")
            client.pair()
            expect(page.locator(".number-state .badge")).to_have_text(
                translated(live_server, "Connected", "ar"))
        finally:
            with live_server.transaction(admin.organization_id):
                db.session.get(WhatsAppProfile, profile_id).is_deleted = True
    assert browsing.csp_violations() == []
