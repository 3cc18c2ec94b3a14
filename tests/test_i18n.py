"""Arabic first: every message translated, layout written in logical CSS properties only."""

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po
from bs4 import BeautifulSoup
from sqlalchemy import update

from crm.customers.models import Customer, CustomerActivity
from crm.extensions import db
from crm.foundation.models import User
from crm.tenancy import organization_context
from tests.customers.factories import make_activity, make_customer
from tests.factories import login, make_user
from tests.whatsapp.factories import make_conversation, make_profile

ROOT = Path(__file__).resolve().parent.parent
KEYWORDS = {"_": None, "gettext": None, "ngettext": (1, 2), "lazy_gettext": None,
            "lazy_ngettext": (1, 2), "pgettext": ((1, "c"), 2),
            "lazy_pgettext": ((1, "c"), 2)}
METHODS = [("crm/**.py", "python"), ("templates/**.html", "jinja2"),
           ("templates/**.txt", "jinja2")]
PHYSICAL = re.compile(
    r"(margin|padding|border)-(left|right)\b|(^|[^-\w])(left|right)\s*:|"
    r"text-align:\s*(left|right)|float:\s*(left|right)|\b(ml|mr|pl|pr)-[0-9]")


def _source_messages() -> set[tuple[str, str | None]]:
    found = set()
    for _filename, _lineno, message, _comments, context in extract_from_dir(
            str(ROOT), METHODS, keywords=KEYWORDS):
        found.add((message if isinstance(message, str) else message[0], context))
    return found


def _catalog(language: str):
    with open(ROOT / "translations" / language / "LC_MESSAGES" / "messages.po", "rb") as f:
        return read_po(f)


def test_every_message_has_an_arabic_translation():
    """A string shown to users without an Arabic translation fails the build."""
    catalog = _catalog("ar")
    missing = sorted(
        msgid for msgid, context in _source_messages()
        if not (entry := catalog.get(msgid, context=context)) or entry.fuzzy
        or not _translated(entry.string))
    assert missing == [], f"{len(missing)} messages lack Arabic: {missing[:20]}"


def _translated(string) -> bool:
    return all(string) if isinstance(string, tuple) else bool(string)


def test_no_physical_left_or_right_in_styles_or_templates():
    """Layout uses inline-start/inline-end so that RTL and LTR share one stylesheet."""
    files = [*ROOT.glob("static/css/**/*.css"), *ROOT.glob("templates/**/*.html")]
    hits = [f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
            for path in files for n, line in enumerate(path.read_text().splitlines(), 1)
            if PHYSICAL.search(line)]
    assert hits == []


def test_pages_follow_the_language(client):
    """Arabic by default (rtl); Accept-Language picks English (ltr) for a visitor."""
    arabic = client.get("/login").get_data(as_text=True)
    english = client.get("/login", headers={"Accept-Language": "en"}).get_data(as_text=True)
    assert '<html lang="ar" dir="rtl">' in arabic
    assert '<html lang="en" dir="ltr">' in english


# 09:05 UTC on 2 December 2026, and 22:30 UTC that day: 3 December in Riyadh (UTC+3).
MORNING = datetime(2026, 12, 2, 9, 5, tzinfo=UTC)
LATE = datetime(2026, 12, 2, 22, 30, tzinfo=UTC)
# Digits, a slash, digits, a slash, digits: 12/2/26, or 2/12/2026 with Arabic's marks.
NUMERIC_DATE = re.compile(r"\d[\u200e\u200f]?/\d+[\u200e\u200f]?/\d")


def _text(response) -> str:
    return BeautifulSoup(response.get_data(as_text=True), "html.parser").get_text(" ")


@pytest.mark.parametrize(("language", "moment", "next_day", "last_year"), [
    ("en", "2 Dec 2026, 12:05\u202fPM", "3 Dec 2026", "1 Dec 2025"),
    ("ar", "2 ديسمبر 2026، 12:05 م", "3 ديسمبر 2026", "1 ديسمبر 2025")])
def test_dates_read_alike_in_every_country(client, org, language, moment, next_day, last_year):
    """Dates name their month, day first, in the organization's time zone (Riyadh here):
    never 12/2/26, which reads as 12 February outside the US. Customer pages, the customers
    list, the timeline, the team and the inbox list alike."""
    user = make_user(org, "admin", language=language)
    customer = make_customer(org, name="Dated")
    note = make_activity(org, customer, "note", "Called")
    make_conversation(make_profile(org, "sandbox"),
                      last_message_at=datetime(2025, 12, 1, 9, tzinfo=UTC))
    with organization_context(org.id):
        db.session.execute(update(Customer).where(Customer.id == customer.id).values(
            created_at=MORNING, last_contacted_at=LATE))
        db.session.execute(update(CustomerActivity).where(CustomerActivity.id == note.id)
                           .values(created_at=MORNING))
        db.session.execute(update(User).where(User.id == user.id).values(last_login_at=MORNING))
    login(client, user)

    shown = _text(client.get(f"/customers/{customer.id}"))
    listed = _text(client.get("/customers/"))
    team = _text(client.get("/team"))
    inbox = _text(client.get("/inbox"))

    assert shown.count(moment) == 2  # created, and the note on the timeline
    assert next_day in shown  # last contacted, late on the 2nd in UTC
    assert next_day in listed
    assert moment in team
    assert last_year in inbox
    for page in (shown, listed, team, inbox):
        assert not NUMERIC_DATE.search(page), NUMERIC_DATE.search(page)
