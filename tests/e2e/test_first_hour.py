"""A new team's first hour, in Arabic, in Chromium (issue 10): register, make a sandbox number,
write as the customer and answer, find the conversation by a number typed in Arabic digits, add
a customer, import Excel's Arabic CSV, export the list, run `crm seed-demo` beside the server,
and log in again. Each step checks what the person sees, where the issue's bugs showed."""

from __future__ import annotations

import csv
import io
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
import requests
from babel.dates import get_month_names
from playwright.sync_api import Locator, Page, expect

from tests.conftest import ROOT
from tests.e2e.conftest import (
    Browsing,
    expect_dashboard,
    expect_direction,
    expect_settled,
    log_in,
    open_live,
    screenshot,
    translated,
    unique_email,
    user_menu,
)
from tests.factories import run_jobs
from tests.live import TIMEOUT, LiveServer

pytestmark = [pytest.mark.e2e, pytest.mark.live, pytest.mark.xdist_group("e2e")]

# Any month as an Arabic date names it; a date written d/m/y in either digits is ambiguous.
MONTH = re.compile("|".join(get_month_names("abbreviated", locale="ar").values()))
_GAP = r"[\s\u200e\u200f]*[/.-][\s\u200e\u200f]*"  # Babel puts direction marks beside a /
NUMERIC_DATE = re.compile(rf"[0-9٠-٩]{{1,4}}{_GAP}[0-9٠-٩]{{1,2}}{_GAP}[0-9٠-٩]{{1,4}}")
CUSTOMER_PHONE, CUSTOMER_NAME = "0551234567", "سارة"
LOCAL_DIGITS = "٠٥٥١٢٣"  # the start of CUSTOMER_PHONE as typed on an Arabic keyboard
IMPORTED = (("خالد العنزي", "0503334455"), ("منى الحربي", "0504445566"))


@dataclass(frozen=True)
class Owner:
    """Who registers the workspace."""

    email: str
    password: str
    name: str


class Journey:
    """The person's browser tab, the live server, and the app's own Arabic for a message."""

    def __init__(self, browsing: Browsing, live: LiveServer, page: Page):
        self.browsing, self.live, self.page = browsing, live, page

    def ar(self, message: str) -> str:
        return translated(self.live, message, "ar")

    def sidebar(self, label: str) -> None:
        self.page.locator(".sidebar").get_by_role("link", name=self.ar(label), exact=True).click()

    def button(self, label: str, within: Page | Locator | None = None) -> Locator:
        return (within or self.page).get_by_role("button", name=self.ar(label), exact=True)

    def link(self, label: str, within: Page | Locator | None = None) -> Locator:
        return (within or self.page).get_by_role("link", name=self.ar(label), exact=True)

    def field(self, label: str, within: Page | Locator | None = None) -> Locator:
        return (within or self.page).get_by_label(self.ar(label), exact=True)


def register(journey: Journey, owner: Owner) -> None:
    """Step 1: the Arabic registration page, the dashboard, and the login recorded."""
    page = journey.page
    page.goto("/register")
    expect_direction(page, "ar", "rtl")
    journey.field("Organization name").fill("مخبز النور")
    journey.field("Your full name").fill(owner.name)
    journey.field("Email").fill(owner.email)
    journey.field("Password").fill(owner.password)
    journey.button("Create the workspace").click()
    expect_dashboard(page, journey.live, "ar")
    expect_direction(page, "ar", "rtl")

    journey.sidebar("Team")
    me = page.locator("#members tr", has_text=owner.email)
    expect(me).to_contain_text(owner.name)
    expect(me).not_to_contain_text(journey.ar("Never"))  # registering is a login
    expect(me).to_contain_text(MONTH)


def customer_writes_and_team_replies(journey: Journey) -> Page:
    """Steps 2 and 3: a sandbox number, the customer's message live in the inbox (another tab),
    the reply back on the customer's side. The inbox tab, for the search."""
    page = journey.page
    journey.sidebar("WhatsApp numbers")
    journey.button("Create a sandbox number").click()
    expect(page.locator("h1")).to_have_text(journey.ar("Sandbox"))
    journey.link("All numbers").click()
    expect(page.locator(".numbers-list")).to_contain_text(journey.ar("Sandbox"))
    journey.link("Open the sandbox").click()
    journey.field("Customer's phone number").fill(CUSTOMER_PHONE)
    journey.field("Customer's name").fill(CUSTOMER_NAME)
    journey.button("Open the chat").click()
    expect(page.locator("#sandbox-chat-title")).to_be_visible()

    inbox = journey.browsing.new_tab(page)
    open_live(inbox, "/inbox")
    question = "السلام عليكم، أين order رقم 42؟"
    page.locator("#sandbox-text").fill(question)
    journey.button("Send", page.locator("#sandbox-form")).click()
    expect(page.locator("#sandbox-chat")).to_contain_text(question)

    row = inbox.locator(".conversation-row", has_text=CUSTOMER_NAME)
    expect(row).to_be_visible()  # arrived without a reload
    expect_settled(row)  # its link opens the thread in place only once htmx wired it
    row.get_by_role("link").click()
    said = inbox.locator(".thread-messages .message-text", has_text=question)
    expect(said).to_have_attribute("dir", "auto")  # Arabic around an English word

    answer = "أهلًا سارة، الطلب 42 يصلك غدًا"
    inbox.locator(".composer textarea[name=text]").fill(answer)
    inbox.locator(".composer").get_by_role("button", name="إرسال").click()
    expect(inbox.locator("article.bubble-out").last).to_contain_text(answer)
    with journey.live.app.app_context():
        run_jobs(journey.live.app, ("whatsapp",))  # the outbox sends; the sandbox delivers
    expect(page.locator("#sandbox-chat")).to_contain_text(answer)
    screenshot(page, "first-hour-sandbox-ar")
    return inbox


def search_inbox_in_arabic_digits(journey: Journey, inbox: Page) -> None:
    """Step 4: the customer's number typed the local way, in Arabic-Indic digits."""
    search = inbox.get_by_label(journey.ar("Search names, numbers and messages"))
    rows = inbox.locator("#conversation-rows .conversation-row")
    search.fill("٠٥٩٩٩")  # nobody's: the list empties, so the search ran
    expect(rows).to_have_count(0)
    search.fill("")
    search.press_sequentially(LOCAL_DIGITS)
    expect(inbox).to_have_url(re.compile(re.escape(f"q={quote(LOCAL_DIGITS)}")))
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text(CUSTOMER_NAME)
    screenshot(inbox, "first-hour-inbox-search-ar")


def add_a_customer(journey: Journey) -> None:
    """Step 5: a customer typed in, on their page, created on a date that names its month."""
    page = journey.page
    journey.sidebar("Customers")
    journey.link("New customer", page.locator(".page-header")).click()
    journey.field("Name").fill("نورة الشهري")
    journey.field("Phone").fill("0501112233")
    journey.button("Save").click()
    expect(page.locator("h1")).to_have_text("نورة الشهري")
    created = page.locator("dl.facts dt", has_text=journey.ar("Created")).locator(
        "xpath=following-sibling::dd[1]")
    expect(created).to_contain_text(MONTH)
    expect(created).not_to_contain_text(NUMERIC_DATE)


def import_windows_arabic_csv(journey: Journey, folder: Path) -> None:
    """Step 6: Excel's Arabic CSV, read as Windows-1256, imported by the worker; an imported
    customer's score has no recency points."""
    page, live = journey.page, journey.live
    sheet = folder / "عملاء.csv"
    lines = ["الاسم;الجوال", *(f"{name};{phone}" for name, phone in IMPORTED)]
    sheet.write_bytes("\r\n".join(lines).encode("cp1256"))
    journey.sidebar("Customers")
    journey.link("Import CSV").click()
    journey.field("CSV file").set_input_files(sheet)
    journey.button("Upload and preview").click()
    detected = journey.ar("Detected encoding: %(encoding)s") % {
        "encoding": journey.ar("Windows-1256 (Arabic)")}
    expect(page.get_by_text(detected)).to_be_visible()
    expect(page.locator("table")).to_contain_text(IMPORTED[0][0])
    journey.button("Start the import").click()
    expect(page.locator("h2#progress-title")).to_be_visible()
    worker = live.run_worker()
    assert worker.returncode == 0, worker.stderr
    expect(page.locator("h2#progress-title")).to_have_text(journey.ar("Import finished"))

    journey.link("See the customers").click()
    for name, _phone in IMPORTED:
        expect(page.locator("#customer-rows")).to_contain_text(name)
    page.locator("#customer-rows").get_by_role("link", name=IMPORTED[0][0]).click()
    expect(page.locator("h1")).to_have_text(IMPORTED[0][0])
    no_contact = journey.ar("no contact for %(days)d days").split("%(days)d")[0]
    score = page.locator("section[id$='-score']")
    expect(score).to_be_visible()
    expect(score).not_to_contain_text(no_contact)  # imported just now: no decay, no "-1 days"
    screenshot(page, "first-hour-imported-customer-ar")


def export_the_list(journey: Journey) -> None:
    """Step 7: the list's CSV, downloaded as a person does, whole and readable by Excel."""
    page = journey.page
    journey.sidebar("Customers")
    with page.expect_download() as downloading:
        journey.link("Export these customers (CSV)").click()
    download = downloading.value
    assert download.failure() is None  # Chromium fails a download answered 500 or cut short
    assert download.suggested_filename == "customers.csv"
    data = Path(download.path()).read_bytes()
    assert data.startswith("\ufeff".encode())  # UTF-8 with a BOM: Excel reads the Arabic
    header, *rows = csv.reader(io.StringIO(data.decode("utf-8-sig")))
    assert header[:2] == [journey.ar("Name"), journey.ar("Phone")]
    exported = {row[0]: row[1] for row in rows}
    assert {"نورة الشهري", CUSTOMER_NAME, *(name for name, _phone in IMPORTED)} <= exported.keys()
    for name, phone in IMPORTED:  # behind the apostrophe that stops Excel running "+…"
        assert exported[name] == f"'+966{phone[1:]}"


def seed_demo_beside_the_server(journey: Journey, owner: Owner) -> None:
    """Step 8: `crm seed-demo` in a process of its own; the server and its database go on, and
    the owner logs out and in again."""
    live, page = journey.live, journey.page
    seeded = subprocess.run([sys.executable, "-m", "crm", "seed-demo"], cwd=ROOT,
                            env=live.environment(), capture_output=True, text=True,
                            timeout=60, check=False)
    assert seeded.returncode == 0, seeded.stderr
    assert requests.get(f"{live.url}/readyz", timeout=TIMEOUT).status_code == 200

    user_menu(page).click()
    journey.button("Log out").click()
    expect(page).to_have_url(re.compile(r"/login$"))
    log_in(page, owner.email, owner.password)
    expect_dashboard(page, live, "ar")
    journey.sidebar("Customers")
    expect(page.locator("#customer-rows")).to_contain_text(IMPORTED[1][0])


def test_a_new_teams_first_hour(browsing, live_server, tmp_path):
    """A new owner, in Arabic, from registration to logging in again after `crm seed-demo`
    ran beside the server: every page answers, and the issue's bugs stay fixed."""
    owner = Owner(unique_email("owner"), "a long enough password", "سارة أحمد")
    page = browsing.new_page()  # ar-SA
    server_errors: list[str] = []
    page.context.on("response", lambda response: server_errors.append(
        f"{response.status} {response.url}") if response.status >= 500 else None)
    journey = Journey(browsing, live_server, page)

    register(journey, owner)
    inbox = customer_writes_and_team_replies(journey)
    search_inbox_in_arabic_digits(journey, inbox)
    add_a_customer(journey)
    import_windows_arabic_csv(journey, tmp_path)
    export_the_list(journey)
    seed_demo_beside_the_server(journey, owner)

    assert server_errors == []
    assert browsing.console_errors == []
    assert browsing.csp_violations() == []
    assert browsing.dialogs == []
