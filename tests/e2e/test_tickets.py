"""Ticketing in Chromium, in Arabic: a customer writes «عندي مشكلة في الطلب» in the sandbox;
the agent sees the suggestion in the conversation, creates the ticket in one click, replies
publicly (the customer receives it), adds an internal note (the customer does not), and solves
it; the SLA badges count down on screen meanwhile."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from crm.customers import services as customers
from crm.extensions import db
from crm.foundation.models import Organization, User
from crm.tickets import services as tickets
from crm.tickets.models import Ticket
from crm.whatsapp import services as whatsapp
from crm.whatsapp.models import Conversation
from tests.e2e.conftest import (
    DESKTOP,
    PHONE,
    expect_page_settled,
    expect_settled,
    open_live,
    screenshot,
    scrolls_sideways,
)
from tests.factories import make_user, run_jobs
from tests.live import Account
from tests.whatsapp.factories import make_profile

pytestmark = [pytest.mark.e2e, pytest.mark.live, pytest.mark.xdist_group("e2e")]

PROBLEM = "عندي مشكلة في الطلب"
REPLY = "نعتذر، نراجع طلبك الآن"
NOTE = "ملاحظة للفريق: تحقق من المستودع"


def _business_all_week(live_server, org_id: int) -> None:
    """Work round the clock with a 30-minute first response, so the clocks run whenever the
    test does and the badges show seconds."""
    with live_server.transaction(org_id):
        admin = db.session.scalar(db.select(User).where(User.role == "admin"))
        tickets.set_business_hours(admin, [{"weekday": day, "start": "00:00", "end": "24:00"}
                                           for day in range(7)])
        tickets.set_policies(admin, [{"priority": priority, "first_response_minutes": 30,
                                      "next_response_minutes": 30, "resolution_minutes": 120}
                                     for priority in ("low", "normal", "high", "urgent")])


def test_a_customer_problem_becomes_a_ticket_that_is_answered_and_solved(browsing,
                                                                         live_server):
    admin = live_server.make_account()
    org_id = admin.organization_id
    with live_server.transaction(org_id):
        org = db.session.get(Organization, org_id)
        profile_id = make_profile(org, "sandbox", display_name="متجر وصل").id
        agent_user = make_user(org, "agent")
        agent_id = agent_user.id
        agent_account = Account(org_id, agent_id, agent_user.email)
    _business_all_week(live_server, org_id)

    customer = browsing.new_page(account=admin)
    # Its socket in its rooms: the reply reaches the chat live.
    open_live(customer, f"/whatsapp/sandbox?profile={profile_id}&phone=0501234567&name=سارة")
    customer.locator("#sandbox-text").fill(PROBLEM)
    customer.locator("#sandbox-form button[type=submit]").click()
    expect(customer.locator("#sandbox-chat")).to_contain_text(PROBLEM)

    with live_server.transaction(org_id):  # the team lead gives the conversation to the agent
        conversation = db.session.scalar(db.select(Conversation))
        conversation_id = conversation.id
        whatsapp.assign_conversation(conversation, agent_id,
                                     db.session.get(User, admin.user_id))
    agent = browsing.new_page(account=agent_account)
    # In its rooms before the jobs run: the suggestion reaches the page live, or never.
    open_live(agent, f"/inbox/conversations/{conversation_id}")
    section = agent.locator(f"#conversation-{conversation_id}-tickets")
    expect(section).to_contain_text("لا تذاكر لهذه المحادثة.")
    with live_server.app.app_context():
        run_jobs(live_server.app)  # message.received: the keyword makes a suggestion, live
    expect(section).to_contain_text("إنشاء تذكرة؟")
    expect(section.locator("input[name=subject]")).to_have_value(PROBLEM)
    expect_settled(section)  # the reloaded section's form posts in place only once wired
    section.get_by_role("button", name="إنشاء التذكرة").click()
    ticket_link = section.locator("a.ticket-subject")
    expect(ticket_link).to_contain_text(PROBLEM)
    expect_settled(section)
    ticket_link.click()
    expect(agent.locator("h1")).to_contain_text(PROBLEM)

    badge = agent.locator(".sla-badge[data-clock=first_response] .sla-text")
    expect(badge).to_contain_text("متبقٍ")
    shown = badge.inner_text()
    assert any("0" <= char <= "9" for char in shown), shown  # the page's Latin digits, in ar_SA
    assert not any("٠" <= char <= "٩" for char in shown), shown
    expect(badge).not_to_have_text(shown, timeout=15_000)  # it counts down on screen
    screenshot(agent, "ticket-badges-ar")

    agent.locator("textarea[name=body]").fill(REPLY)
    agent.get_by_role("button", name="الرد على العميل").click()
    expect(agent.locator(".comment-public")).to_contain_text(REPLY)
    expect(agent.locator(".sla-badge[data-clock=first_response]")).to_have_count(0)

    # The comment can show (live) before the answer replaces the composer: a note typed into
    # the old one would go with it. The new composer is empty, and posts once wired.
    composer = agent.locator(".ticket-composer")
    expect(composer.locator("textarea[name=body]")).to_have_value("")
    expect_settled(composer)
    agent.locator("textarea[name=body]").fill(NOTE)
    agent.get_by_role("button", name="إضافة ملاحظة داخلية").click()
    expect(agent.locator(".comment-note")).to_contain_text(NOTE)
    expect(agent.locator(".comment-note .comment-kind")).to_have_text("ملاحظة داخلية")

    with live_server.app.app_context():
        run_jobs(live_server.app, ("whatsapp",))  # the outbox sends; the sandbox delivers
    expect(customer.locator("#sandbox-chat")).to_contain_text(REPLY)
    customer.reload()
    expect(customer.locator("#sandbox-chat")).to_contain_text(REPLY)
    expect(customer.locator("#sandbox-chat")).not_to_contain_text(NOTE)

    expect_page_settled(agent)  # the fields the comments' answers swapped are wired
    agent.locator("select[name=status]").select_option("solved")
    expect(agent.locator(".ticket-fields")).to_contain_text("محلولة")
    expect(agent.locator(".sla-card")).to_contain_text(
        "لا يعمل أي مؤقت لاتفاقية مستوى الخدمة.")
    expect(agent.locator(".ticket-event-updated").first).to_contain_text("محلولة")

    agent.set_viewport_size(PHONE)  # a phone's width: nothing scrolls sideways
    for url in ("/tickets/", agent.url):
        agent.goto(url)
        width = agent.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"{url} is {width}px wide"
    screenshot(agent, "ticket-solved-phone-ar")
    assert browsing.csp_violations() == []
    assert browsing.dialogs == []


def test_the_lists_badges_count_down_without_a_reload(browsing, live_server):
    """On the tickets list, as on a ticket's page, a running clock's badge counts down on
    screen, in the Latin digits of the rest of the page, while the page stays as it was
    loaded."""
    admin = live_server.make_account()
    org_id = admin.organization_id
    _business_all_week(live_server, org_id)
    with live_server.transaction(org_id):
        ticket = tickets.create_ticket(db.session.get(User, admin.user_id),
                                       {"subject": PROBLEM, "priority": "urgent"})
        ticket_id = ticket.id

    page = browsing.new_page(account=admin)
    page.goto("/tickets/")
    badge = page.locator(f"#ticket-{ticket_id}-sla-compact")
    expect(badge).to_contain_text("متبقٍ")
    shown = badge.inner_text()
    assert any("0" <= char <= "9" for char in shown), shown
    assert not any("٠" <= char <= "٩" for char in shown), shown
    page.evaluate("window.loadedOnce = true")  # a reload would forget it
    expect(badge).not_to_have_text(shown, timeout=15_000)
    assert page.evaluate("window.loadedOnce === true")
    assert browsing.csp_violations() == []


def test_a_new_ticket_is_attached_to_a_customer_found_with_the_keyboard(browsing, live_server):
    """On the new-ticket form an agent types part of a customer's name, arrows to the match
    and opens the ticket with Enter: it is the customer's ticket."""
    admin = live_server.make_account()
    org_id = admin.organization_id
    with live_server.transaction(org_id):
        customer = customers.create_customer(db.session.get(User, admin.user_id),
                                             {"name": "هدى صالح", "phone": "0501234567"})
        db.session.flush()
        customer_id = customer.id

    page = browsing.new_page(account=admin)
    page.goto("/tickets/new")
    page.get_by_label("الموضوع").fill(PROBLEM)
    search = page.locator("#field-customer-search")
    search.fill("هدى")
    search.press("Enter")  # searches; it does not send the form
    match = page.locator(f"#customer-picks input[value='{customer_id}']")
    expect(match).to_have_count(1)
    expect(page).to_have_url(re.compile(r"/tickets/new$"))
    page.locator("#customer-picks input[value='']").focus()
    page.keyboard.press("ArrowDown")  # radio buttons: the arrow checks the next one
    expect(match).to_be_checked()
    page.keyboard.press("Enter")
    expect(page.locator("h1")).to_contain_text(PROBLEM)
    with live_server.transaction(org_id):
        assert db.session.scalar(db.select(Ticket.customer_id)) == customer_id
    assert browsing.csp_violations() == []


def test_a_bulk_action_says_what_it_did_and_the_refreshed_list_leaves_it_said(browsing,
                                                                              live_server):
    """«Assign» with nothing checked says to check tickets first; with one checked it says
    one ticket changed. The list refreshes itself after each, and the message stays (the
    refresh's empty flash area wiped it as soon as it showed)."""
    admin = live_server.make_account()
    with live_server.transaction(admin.organization_id):
        tickets.create_ticket(db.session.get(User, admin.user_id), {"subject": PROBLEM})

    page = browsing.new_page(account=admin)
    page.goto("/tickets/")
    rows = page.locator("#ticket-rows")
    assign = page.locator(".bulk-bar button[value='assign']")
    for check, said in ((False, ".flash-error"), (True, ".flash-success")):
        if check:
            page.locator("input[name='ticket_ids']").first.check()
        rows.evaluate("(list) => list.firstElementChild.dataset.stale = '1'")
        browsing.confirm_next(page)
        assign.click()
        expect(rows.locator("[data-stale]")).to_have_count(0)  # the list was refreshed
        expect(page.locator(f"#flashes {said}")).to_be_visible()


def test_a_days_working_hours_read_on_one_line_and_are_typed_from_the_keyboard(browsing,
                                                                                live_server):
    """A split shift reads «09:00–13:00، 16:00–21:00» on one line at 1280 and 390 px, in
    Arabic and English, without the page scrolling sideways; a day worked to midnight shows
    24:00; from a day's box the keyboard goes through its times, and Enter saves them."""
    account = live_server.make_account()
    org_id = account.organization_id
    with live_server.transaction(org_id):
        tickets.set_business_hours(db.session.get(User, account.user_id), [
            {"weekday": 6, "start": "09:00", "end": "13:00"},
            {"weekday": 6, "start": "16:00", "end": "21:00"},
            {"weekday": 0, "start": "00:00", "end": "24:00"}])
    for page, language, viewport in browsing.in_each_language_and_width(account):
        page.goto("/tickets/settings/calendar")
        sunday = page.locator("fieldset.hours-row", has=page.locator("#day-6-open"))
        times = [sunday.locator(f"#day-6-{n}-{end}") for n in (0, 1)
                 for end in ("start", "end")]
        assert [time.input_value() for time in times] == ["09:00", "13:00", "16:00", "21:00"]
        tops = {round(time.bounding_box()["y"]) for time in times}
        assert len(tops) == 1, (language, viewport, tops)
        assert page.locator("#day-0-0-end").input_value() == "24:00"
        assert not scrolls_sideways(page), (language, viewport)
        screenshot(page, f"working-hours-{language}-{viewport['width']}")

    page.set_viewport_size(DESKTOP)
    page.locator("#day-1-open").focus()
    page.keyboard.press("Space")
    for field, typed in (("0-start", "08:30"), ("0-end", "12:00"), ("1-start", "13:00"),
                         ("1-end", "17:00")):
        page.keyboard.press("Tab")
        expect(page.locator(f"#day-1-{field}")).to_be_focused()
        page.keyboard.type(typed)
    page.keyboard.press("Enter")
    expect(page.locator(".flash")).to_contain_text("working hours were saved")
    with live_server.transaction(org_id):
        assert tickets.business_hours()[1] == [(510, 720), (780, 1020)]
    assert not browsing.csp_violations()
