"""Text of the other direction on a page (DESIGN.md, Arabic first): an Arabic customer's task
on an English page, an English one on an Arabic page, in the dashboard's tasks card and on the
customer's timeline, and a ticket's subject in the dashboard's tickets card, at 1280 and
390 px. Each name and each text is a block of its own
direction, so that it wraps in its own reading order instead of breaking into pieces inside a
line of the page's direction."""

from __future__ import annotations

from datetime import timedelta

import pytest
from playwright.sync_api import Page

from crm.customers import services
from crm.extensions import db
from crm.foundation.models import User
from crm.models import utcnow
from crm.tickets import services as tickets
from tests.e2e.conftest import screenshot, scrolls_sideways
from tests.factories import make_user

pytestmark = [pytest.mark.e2e, pytest.mark.live, pytest.mark.xdist_group("e2e")]

ARABIC_NAME = "عبدالرحمن بن عبدالعزيز القحطاني"
ARABIC_TASK = ("اتصل بالعميل بخصوص عرض السعر رقم 2031 قبل الساعة 5 مساءً وتأكد من موافقة "
               "Ahmed على الخصم")
ENGLISH_NAME = "Sarah Johnson"
ENGLISH_TASK = "Send the quote to أحمد before Thursday"
ARABIC_SUBJECT = "الطلب رقم 4521 وصل ناقصًا والعميل يطلب استبدال القطعة قبل نهاية الأسبوع"

# Runs in the page: where the text of `selector`'s elements sits, line by line.
TEXT_LINES = """(selector) => [...document.querySelectorAll(selector)].map((element) => {
  const range = document.createRange();
  range.selectNodeContents(element);
  const lines = [...range.getClientRects()].filter((r) => r.width > 0);
  const box = element.getBoundingClientRect();
  return {text: element.textContent.trim(), direction: getComputedStyle(element).direction,
          top: Math.min(...lines.map((r) => r.top)),
          bottom: Math.max(...lines.map((r) => r.bottom)),
          left: Math.min(...lines.map((r) => r.left)),
          right: Math.max(...lines.map((r) => r.right)),
          boxLeft: box.left, boxRight: box.right,
          fragments: element.getClientRects().length};
})"""


def _lines(page: Page, selector: str) -> dict[str, dict]:
    return {line["text"]: line for line in page.evaluate(TEXT_LINES, selector)}


def _one_edge(page: Page, selector: str) -> bool:
    """Every line of each element's text starts at the same edge, the one of its direction:
    a block of its own, not a piece of a line of the page's direction."""
    return page.evaluate("""(selector) => [...document.querySelectorAll(selector)].every((e) => {
      const range = document.createRange();
      range.selectNodeContents(e);
      const rtl = getComputedStyle(e).direction === "rtl";
      const lines = new Map();  // a line's top -> its start edge (a line has a box per run)
      for (const r of [...range.getClientRects()].filter((r) => r.width > 0)) {
        const top = Math.round(r.top), seen = lines.get(top);
        const edge = rtl ? r.right : -r.left;  // the further out, the greater
        lines.set(top, seen === undefined ? edge : Math.max(seen, edge));
      }
      const edges = [...lines.values()];
      return edges.length > 0 && edges.every((edge) => Math.abs(edge - edges[0]) <= 1);
    })""", selector)


def _starts_at_its_own_side(line: dict) -> bool:
    """Its text starts where its direction starts: the right edge for Arabic."""
    if line["direction"] == "rtl":
        return abs(line["right"] - line["boxRight"]) <= 1
    return abs(line["left"] - line["boxLeft"]) <= 1


def test_other_direction_tasks_read_in_their_own_direction(browsing, live_server):
    """On the dashboard's card each task's customer and text are lines of their own, the
    Arabic ones right to left from the right edge on an English page (and the English ones
    from the left on an Arabic page), and its date never breaks; a ticket's subject wraps
    from its own edge; on the timeline a task's text starts at its own side and who it is for
    stays on one line."""
    account = live_server.make_account()
    org_id = account.organization_id
    now = utcnow()
    with live_server.transaction(org_id):
        admin = db.session.get(User, account.user_id)
        sara = make_user(admin.organization, "agent", full_name="سارة العتيبي")
        arabic = services.create_customer(admin, {"name": ARABIC_NAME, "phone": "0501234567"})
        english = services.create_customer(admin, {"name": ENGLISH_NAME, "phone": "0501234568"})
        services.add_activity(admin, arabic, "task", ARABIC_TASK,
                              due_at=(now - timedelta(days=1)).isoformat())
        services.add_activity(admin, arabic, "task", "متابعة الطلب 4521",
                              due_at=(now - timedelta(days=1)).isoformat(),
                              assignee_id=str(sara.id))
        # Due now: today wherever the day stands (half an hour on was tomorrow after 23:30 in
        # the organization's time zone, and the card left it out).
        services.add_activity(admin, english, "task", ENGLISH_TASK, due_at=now.isoformat())
        customer_id = arabic.id
        ticket = tickets.create_ticket(admin, {"subject": ARABIC_SUBJECT})
        ticket.sla_status, ticket.sla_due_at = "warning", now + timedelta(minutes=20)
    for page, language, viewport in browsing.in_each_language_and_width(account, ("en", "ar")):
        where = f"{language} {viewport['width']}"
        page.goto("/")
        card = "#card-tasks-today li"
        page.locator(card).first.wait_for()
        names = _lines(page, f"{card} a")
        texts = _lines(page, f"{card} [dir=auto]:not(a)")
        for name, text in ((ARABIC_NAME, ARABIC_TASK[:40]), (ENGLISH_NAME, ENGLISH_TASK)):
            shown = next(line for key, line in texts.items() if key.startswith(text))
            assert shown["top"] >= names[name]["bottom"] - 1, (where, name)
            assert _starts_at_its_own_side(names[name]), (where, names[name])
            assert _starts_at_its_own_side(shown), (where, shown)
        assert _one_edge(page, "#card-tickets li [dir=auto]"), where
        dates = _lines(page, f"{card} time")
        assert all(line["fragments"] == 1 for line in dates.values()), (where, dates)
        screenshot(page, f"tasks-card-{language}-{viewport['width']}")

        page.goto(f"/customers/{customer_id}")
        bodies = _lines(page, ".activity-task .activity-body")
        assert _starts_at_its_own_side(bodies[ARABIC_TASK]), (where, bodies[ARABIC_TASK])
        assignees = _lines(page, ".activity-task .activity-meta span:has(bdi)")
        assert assignees, where
        assert all(line["fragments"] == 1 for line in assignees.values()), (where, assignees)
        assert not scrolls_sideways(page), where
        screenshot(page, f"customer-timeline-{language}-{viewport['width']}")
    assert not browsing.csp_violations()
