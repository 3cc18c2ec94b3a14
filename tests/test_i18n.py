"""Arabic first: every message translated, layout written in logical CSS properties only."""

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po
from bs4 import BeautifulSoup
from sqlalchemy import update

from crm.customers import services
from crm.customers.models import Customer, CustomerActivity
from crm.customers.services import scoring
from crm.extensions import db
from crm.foundation.models import User
from crm.i18n import ltr_phone
from crm.models import utcnow
from crm.tenancy import organization_context
from tests.customers.factories import (
    make_activity,
    make_customer,
    make_field,
    make_segment,
    make_stage,
)
from tests.factories import login, make_org, make_user
from tests.whatsapp.factories import (
    make_conversation,
    make_media_message,
    make_message,
    make_profile,
)

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


def test_every_file_input_is_a_labelled_button_in_the_pages_language():
    """The browser's own file control says «Choose File / No file chosen» in English on an
    Arabic page: every template asks templates/_macros.html's file_input for its button."""
    bare = [str(path.relative_to(ROOT)) for path in ROOT.glob("templates/**/*.html")
            if path.name != "_macros.html" and 'type="file"' in path.read_text()]
    assert bare == []


def test_pages_follow_the_language(client):
    """Arabic by default (rtl); Accept-Language picks English (ltr) for a visitor."""
    arabic = client.get("/login").get_data(as_text=True)
    english = client.get("/login", headers={"Accept-Language": "en"}).get_data(as_text=True)
    assert '<html lang="ar" dir="rtl">' in arabic
    assert '<html lang="en" dir="ltr">' in english


# 09:05 UTC on 2 December 2024, and 22:30 UTC that day: 3 December in Riyadh (UTC+3). Days
# long past: a date of today reads as its time alone (the test once failed on 3 December).
MORNING = datetime(2024, 12, 2, 9, 5, tzinfo=UTC)
LATE = datetime(2024, 12, 2, 22, 30, tzinfo=UTC)
# Digits, a slash, digits, a slash, digits: 12/2/26, or 2/12/2026 with Arabic's marks.
NUMERIC_DATE = re.compile(r"\d[\u200e\u200f]?/\d+[\u200e\u200f]?/\d")


def _text(response) -> str:
    return BeautifulSoup(response.get_data(as_text=True), "html.parser").get_text(" ")


@pytest.mark.parametrize(("language", "moment", "next_day", "last_year"), [
    ("en", "2 Dec 2024, 12:05\u202fPM", "3 Dec 2024", "1 Dec 2023"),
    ("ar", "2 ديسمبر 2024، 12:05 م", "3 ديسمبر 2024", "1 ديسمبر 2023")])
def test_dates_read_alike_in_every_country(client, org, language, moment, next_day, last_year):
    """Dates name their month, day first, in the organization's time zone (Riyadh here):
    never 12/2/26, which reads as 12 February outside the US. Customer pages, the customers
    list, the timeline, the team and the inbox list alike."""
    user = make_user(org, "admin", language=language)
    customer = make_customer(org, name="Dated")
    note = make_activity(org, customer, "note", "Called")
    make_conversation(make_profile(org, "sandbox"),
                      last_message_at=datetime(2023, 12, 1, 9, tzinfo=UTC))
    with organization_context(org.id):
        db.session.execute(update(Customer).where(Customer.id == customer.id).values(
            created_at=MORNING, last_contacted_at=LATE))
        db.session.execute(update(CustomerActivity).where(CustomerActivity.id == note.id)
                           .values(created_at=MORNING))
    login(client, user)  # records the login: the time shown is set afterwards
    with organization_context(org.id):
        db.session.execute(update(User).where(User.id == user.id).values(last_login_at=MORNING))

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


# Text people wrote, marked so the test finds it: Latin with a full stop, in the Arabic UI.
MARK = "QX"
ISOLATED = re.compile("\u2068[^\u2069]*\u2069")  # FSI ... PDI: a <bdi> inside plain text


def _not_isolated(html: str) -> list[str]:
    """User text (marked) that no element with dir="auto", <bdi> or Unicode isolate holds,
    and text fields showing it with no direction of their own."""
    soup = BeautifulSoup(html, "html.parser")
    found = []
    for node in soup.find_all(string=re.compile(MARK)):
        if node.parent.name == "title" or MARK not in ISOLATED.sub("", node):
            continue  # the browser's title bar has no markup
        holder = next(p for p in node.parents if p.name == "bdi" or p.has_attr("dir"))
        if holder.name != "bdi" and holder["dir"] != "auto":
            found.append(f"<{node.parent.name} class={node.parent.get('class')}> {node.strip()}")
    found += [f"<input name={field.get('name')}>" for field in soup.find_all(
        "input", value=re.compile(MARK)) if field.get("type") != "hidden"
        and not field.has_attr("dir")]
    return found


def test_text_people_write_takes_its_own_direction(client):
    """An English note in the Arabic UI keeps its full stop at its end: every element holding
    user-written text (names, notes, messages, tags, field values, stages, segments, the
    organization, file names) has dir="auto", and user text inside a sentence is isolated."""
    org = make_org("QX Org.")
    agent = make_user(org, "agent")
    stage = make_stage(org, name_ar="QX مرحلة.", name_en="QX Stage.")
    make_field(org, "city", "text", label="QX City")
    make_field(org, "size", "choice", label="QX Size", choices=["QX big.", "small"])
    customer = make_customer(org, name="QX Customer.", company="QX Co.", notes="QX notes.",
                             tags=["QX-tag."], owner_id=agent.id,
                             custom_fields={"city": "QX Town.", "size": "QX big."})
    make_activity(org, customer, "note", "QX note.")
    segment = make_segment(org, "QX Segment.")
    profile = make_profile(org, "sandbox", display_name="QX Number.")
    conversation = make_conversation(profile, contact_name="QX Contact.",
                                     assigned_user_id=agent.id,
                                     last_message_preview="QX message.")
    first = make_message(conversation, body="QX message.")
    with organization_context(org.id):
        db.session.execute(update(User).where(User.id.in_((org.admin.id, agent.id))).values(
            full_name="QX Member."))
        services.add_activity(org.admin, customer, "task", "QX task.",
                              due_at=utcnow().isoformat(), assignee_id=org.admin.id)
        services.update_customer(org.admin, customer, {"stage_id": stage.id})
        scoring.save_rules(org.admin, [{"kind": "stage_reached", "points": 15,
                                        "params": {"stage_id": stage.id}}])
        scoring.recompute_score(customer)
        db.session.flush()
    make_message(conversation, "out", body="QX reply.", sender_user_id=org.admin.id,
                 reply_to_id=first.id)
    make_media_message(conversation, mime_type="application/pdf", data=b"%PDF-1.4",
                       filename="QX report.pdf")
    login(client, org.admin)

    pages = ["/", "/team", "/settings", "/settings/audit", "/profile", "/customers/",
             f"/customers/{customer.id}", f"/customers/{customer.id}/edit",
             "/customers/board", "/customers/segments", "/customers/new",
             "/customers/settings/stages", "/customers/settings/fields",
             "/customers/settings/scoring", "/inbox", f"/inbox/conversations/{conversation.id}",
             f"/inbox/messages/{first.id}/forward", "/whatsapp/numbers",
             f"/whatsapp/numbers/{profile.id}", f"/customers/{customer.id}/merge?q=QX",
             f"/whatsapp/sandbox?profile={profile.id}&phone=0501234567&name=QX Sandbox."]
    found = {}
    for url in pages:
        response = client.get(url)
        assert response.status_code == 200, url
        if problems := _not_isolated(response.get_data(as_text=True)):
            found[url] = problems
    flashed = client.post(f"/customers/segments/{segment.id}/delete", follow_redirects=True)
    assert "QX Segment." in flashed.get_data(as_text=True)  # "The segment ... was deleted."
    if problems := _not_isolated(flashed.get_data(as_text=True)):
        found["a flash"] = problems
    assert found == {}, "\n".join(f"{url}: {problem}" for url, problems in found.items()
                                   for problem in problems)


@pytest.mark.parametrize(("stored", "shown"), [
    ("+966544443322", '<span class="ltr phone" dir="ltr">+966 54 444 3322</span>'),
    ("<b>", '<span class="ltr phone" dir="ltr">&lt;b&gt;</span>'),
    (None, ""), ("", "")])
def test_a_phone_number_is_one_left_to_right_unit(stored, shown):
    """`ltr_phone` writes a number as people read it, isolated left to right and marked as a
    phone (.phone never wraps), escaped; no number gives nothing."""
    assert ltr_phone(stored) == shown
