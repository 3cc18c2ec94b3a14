"""Every page at a phone's width (390 px), in Arabic and in English: nothing scrolls sideways,
every phone number is inside an element whose direction is left to right, and a
conversation's name stays clear of its header's "Details" link.

The pages are found in the app's url_map (every GET route that answers a whole HTML page to
an admin, or to a visitor for the public ones), so a page added tomorrow is checked too; each
URL parameter is filled with an object of the organization made by the route walks' factories
(tests/walks_registry.py). The organization holds what makes pages wide: long names and
emails, numbers, a conversation with long messages, cloud numbers with their long ids.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import requests
from flask import Flask
from playwright.sync_api import Page

from crm.customers import services as crm
from crm.extensions import db
from crm.foundation.models import Organization, User
from tests.e2e.conftest import PHONE
from tests.factories import make_user
from tests.live import TIMEOUT, Account, LiveServer
from tests.walks_registry import OBJECTS, OTHER_PARAMETERS
from tests.whatsapp.factories import make_conversation, make_message, make_profile

pytestmark = [pytest.mark.e2e, pytest.mark.live, pytest.mark.xdist_group("e2e")]

# Not pages: the API, files, webhooks and what only htmx asks for (answered as a redirect or
# a fragment, which the loop below leaves out by itself).
SKIPPED_PREFIXES = ("/api", "/static", "/webhooks", "/socket.io")
LONG_NAME = "عبدالرحمن بن عبدالعزيز بن عبدالله آل عبدالمحسن القحطاني"
LONG_EMAIL = "abdulrahman.bin.abdulaziz.alqahtani.sales-department@very-long-company-name.example"
# A phone number as any page may write it: +966 50 123 4567, +966501234567, 0501234567.
PHONE_PATTERN = r"(?:\+|\b0)\d[\d \u00a0-]{7,}\d"

# Runs in the page (Playwright evaluates through the DevTools protocol, which the CSP allows):
# how far the page scrolls sideways, and the phone numbers whose element is not left to right.
CHECK = """(pattern) => {
  const wider = document.documentElement.scrollWidth - window.innerWidth;
  const phone = new RegExp(pattern, "g");
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  const turned = [];
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const element = node.parentElement;
    if (!element || element.closest("script, style, template, [hidden]")) continue;
    for (const match of node.data.matchAll(phone)) {
      if (getComputedStyle(element).direction !== "ltr") turned.push(match[0]);
    }
  }
  // A conversation's header: the contact's name must not run over the "Details" link.
  const name = document.querySelector(".thread-title h2");
  const details = document.querySelector(".details-link");
  let overlap = false;
  if (name && details && details.offsetParent) {
    const a = name.getBoundingClientRect(), b = details.getBoundingClientRect();
    overlap = a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom;
  }
  // What sticks out, to say where to look (the innermost elements are last).
  const out = [];
  if (wider > 0) {
    for (const element of document.body.querySelectorAll("*")) {
      const box = element.getBoundingClientRect();
      if (box.width && (box.right > window.innerWidth + 0.5 || box.left < -0.5)) {
        out.push(element.tagName.toLowerCase() + "." + [...element.classList].join("."));
      }
    }
  }
  return {wider: wider, turned: turned, overlap: overlap, out: out.slice(-6)};
}"""


@dataclass(frozen=True)
class Sample:
    path: str
    public: bool


def _fill(live: LiveServer, org: Organization, rule) -> str | None:
    """The rule's URL with each parameter filled by an object of `org` (None: skip it)."""
    values = {}
    for name in rule.arguments:
        if name in OBJECTS:
            values[name] = OBJECTS[name](org)
        elif name in OTHER_PARAMETERS:
            values[name] = OTHER_PARAMETERS[name][0]
        else:
            return None
    with live.app.test_request_context():
        from flask import url_for

        return url_for(rule.endpoint, **values)


def _rich_organization(live: LiveServer) -> tuple[Account, Account, str]:
    """An organization whose pages are as wide as they get; its admins in Arabic and English,
    and the page of its conversation with a long name."""
    account = live.make_account()
    with live.transaction(account.organization_id):
        admin = db.session.get(User, account.user_id)
        admin.full_name = LONG_NAME
        admin.preferred_language = "ar"
        english = make_user(admin.organization, "admin", email=LONG_EMAIL)
        english.preferred_language = "en"
        english_account = Account(account.organization_id, english.id, english.email)
        stages = crm.list_stages()
        for n in range(3):
            crm.create_customer(admin, {
                "name": f"{LONG_NAME} {n}", "phone": f"05012345{n:02d}",
                "email": f"{n}.{LONG_EMAIL}", "company": "شركة التجارة العالمية المحدودة",
                "stage_id": stages[n].id, "expected_value": "1250000.50",
                "tags": ["عميل مميز", "VIP customer", "جملة"]})
        sandbox = make_profile(admin.organization, "sandbox", display_name="رقم التجربة")
        conversation = make_conversation(sandbox, "+966501238888", contact_name=LONG_NAME,
                                         unread_count=2)
        make_message(conversation, "in", body="مرحبا " * 40)
        make_message(conversation, "out", body="https://example.com/" + "a" * 120,
                     sender_user_id=admin.id)
        make_profile(admin.organization, "cloud", display_name="خدمة العملاء الرسمية")
        path = f"/inbox/conversations/{conversation.id}"
    return account, english_account, path


def _pages(live: LiveServer, account: Account) -> list[Sample]:
    """The GET routes that answer an admin (or a visitor) a whole HTML page."""
    app: Flask = live.app
    http = live.browser(account)
    anonymous = requests.Session()
    samples = []
    with live.transaction(account.organization_id):
        org = db.session.get(Organization, account.organization_id)
        org.admin = db.session.get(User, account.user_id)  # what the walks' factories use
        rules = [rule for rule in app.url_map.iter_rules()
                 if "GET" in rule.methods and not rule.rule.startswith(SKIPPED_PREFIXES)]
        paths = [(rule, _fill(live, org, rule)) for rule in rules]
    for rule, path in paths:
        if path is None or rule.endpoint in ("foundation.logout",):
            continue
        for public, client in ((False, http), (True, anonymous)):
            answer = client.get(live.url + path, timeout=TIMEOUT, allow_redirects=False)
            if (answer.status_code in (200, 400) and "<html" in answer.text
                    and answer.headers["Content-Type"].startswith("text/html")):
                samples.append(Sample(path, public))
                break
    return samples


def _check(page: Page, path: str) -> dict:
    page.goto(path)
    page.wait_for_load_state("networkidle")
    return page.evaluate(CHECK, PHONE_PATTERN)


def test_every_page_fits_a_phone_in_both_languages(browsing, live_server):
    """At 390 px, in Arabic and in English, no page scrolls sideways and every phone number
    sits in a left-to-right element."""
    arabic, english, conversation = _rich_organization(live_server)
    samples = [*_pages(live_server, arabic), Sample(conversation, public=False)]
    assert len(samples) >= 30, [sample.path for sample in samples]
    problems = []
    for language, account, locale in (("ar", arabic, "ar-SA"), ("en", english, "en-US")):
        member = browsing.new_page(locale=locale, account=account)
        visitor = browsing.new_page(locale=locale)
        for page in (member, visitor):
            page.set_viewport_size(PHONE)
        for sample in samples:
            found = _check(visitor if sample.public else member, sample.path)
            if found["wider"] > 0 or found["turned"] or found["overlap"]:
                problems.append(f"{language} {sample.path}: {found}")
    assert not problems, "\n".join(problems)
    assert not browsing.csp_violations()
