"""Browser tests: Debian's Chromium driven by Playwright against the live server.

One Chromium per test module; every page a test opens gets a context of its own (its own
cookies: another person), records console errors and dialogs, and is screenshotted into
`test-artifacts/` when the test fails. Emails go to a real SMTP server on loopback.
"""

from __future__ import annotations

import re
import shutil
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from email import message_from_bytes, policy
from email.message import EmailMessage

import pytest
from aiosmtpd.controller import Controller
from flask_babel import force_locale, gettext
from playwright.sync_api import (
    Browser,
    BrowserContext,
    Locator,
    Page,
    WebSocket,
    expect,
    sync_playwright,
)

from tests.conftest import ROOT, free_port
from tests.factories import run_jobs
from tests.live import Account, LiveServer, wait_until

ARTIFACTS = ROOT / "test-artifacts"
TIMEOUT_MS = 10_000
# Playwright's own browser download does not work here: Debian's Chromium, headless.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
LOCALES = {"ar": "ar-SA", "en": "en-US"}  # what a browser asks for, per language

expect.set_options(timeout=TIMEOUT_MS)


# -- the browser ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail("Chromium is missing: `make test` installs Debian's chromium package")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, headless=True,
                                              args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


class Browsing:
    """The pages one test opened, each in a context of its own, and what they reported."""

    def __init__(self, browser: Browser, live: LiveServer):
        self.browser = browser
        self.live = live
        self.contexts: list[BrowserContext] = []
        self.console_errors: list[str] = []
        self.dialogs: list[str] = []
        self.confirmed: list[str] = []

    def new_page(self, locale: str = "ar-SA", account: Account | None = None,
                 javascript: bool = True) -> Page:
        """A page in a fresh context: another person, logged in as `account` if given, in a
        browser with JavaScript off when `javascript` is false (the plain posts' path).

        The default visitor's browser asks for Arabic, as the product's users do.
        """
        context = self.browser.new_context(locale=locale, viewport=DESKTOP,
                                           base_url=self.live.url,
                                           java_script_enabled=javascript)
        context.set_default_timeout(TIMEOUT_MS)
        self.contexts.append(context)
        if account is not None:
            name, _, value = self.live.session_cookie(account).partition("=")
            context.add_cookies([{"name": name, "value": value, "url": self.live.url}])
        return self._watch(context.new_page())

    def in_each_language_and_width(self, account: Account,
                                   languages: tuple[str, ...] = ("ar", "en")
                                   ) -> Iterator[tuple[Page, str, dict[str, int]]]:
        """A page of `account` in each of `languages` (their preference and their browser's),
        at a laptop's width and then a phone's: (page, language, viewport)."""
        from crm.extensions import db
        from crm.foundation.models import User

        for language in languages:
            with self.live.transaction(account.organization_id):
                db.session.get(User, account.user_id).preferred_language = language
            page = self.new_page(locale=LOCALES[language], account=account)
            for viewport in (DESKTOP, PHONE):
                page.set_viewport_size(viewport)
                yield page, language, viewport

    def new_tab(self, page: Page) -> Page:
        """Another tab beside `page`: the same person, in the same session."""
        return self._watch(page.context.new_page())

    def _watch(self, page: Page) -> Page:
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.console_errors.append(f"pageerror: {error}"))
        page.on("dialog", self._dialog)
        return page

    def confirm_next(self, page: Page) -> None:
        """Accept the next confirm() of `page` (a button that asks first), recorded in
        `confirmed`; later dialogs are dismissed again."""
        page.remove_listener("dialog", self._dialog)

        def accept(dialog) -> None:
            self.confirmed.append(dialog.message)
            dialog.accept()
            page.on("dialog", self._dialog)

        page.once("dialog", accept)

    def csp_violations(self) -> list[str]:
        return [text for text in self.console_errors if "Content Security Policy" in text]

    def _console(self, message) -> None:
        if message.type == "error":
            self.console_errors.append(message.text)

    def _dialog(self, dialog) -> None:
        # No page of ours opens alert/prompt dialogs: recorded, dismissed, and asserted on.
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    def screenshot_all(self, prefix: str) -> None:
        for n, page in enumerate(page for context in self.contexts for page in context.pages):
            page.screenshot(path=ARTIFACTS / f"{prefix}-{n}.png", full_page=True)

    def close(self) -> None:
        for context in self.contexts:
            context.close()


@pytest.fixture
def browsing(request, browser, live_server) -> Iterator[Browsing]:
    """Open pages with `browsing.new_page()`; a failed test leaves screenshots behind."""
    ARTIFACTS.mkdir(exist_ok=True)
    prefix = "failed-" + re.sub(r"\W+", "_", request.node.name)
    for stale in ARTIFACTS.glob(f"{prefix}-*.png"):
        stale.unlink()
    session = Browsing(browser, live_server)
    try:
        yield session
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            session.screenshot_all(prefix)
    finally:
        session.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Let fixtures see whether the test itself failed (for the failure screenshots)."""
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.rep_call = report


def scrolls_sideways(page: Page) -> bool:
    """Is the page wider than its window (the mistake a phone shows first)?"""
    return page.evaluate("() => document.documentElement.scrollWidth"
                         " > document.documentElement.clientWidth")


def screenshot(page: Page, name: str) -> None:
    """Save the whole page as `test-artifacts/<name>.png`."""
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / f"{name}.png", full_page=True)


def _socket_io_connected(payload: str | bytes) -> bool:
    # Engine.IO's message ("4") carrying Socket.IO's CONNECT ("0") for the main namespace.
    return isinstance(payload, str) and payload.startswith("40")


def open_live(page: Page, path: str) -> WebSocket:
    """Open `path`, wait until its Socket.IO connection has joined its rooms, return it.

    The server answers a connection only after its connect handler has put the socket in its
    rooms, so what is emitted from then on reaches the page. The answer is read from the
    websocket's frames: a script waiting in the page would need eval, which the CSP refuses.
    """
    connected: list[str | bytes] = []

    def socket_io(websocket: WebSocket) -> bool:
        if "/socket.io/" not in websocket.url:
            return False
        # Listening from the moment the socket opens: the answer may come before goto returns.
        websocket.on("framereceived", lambda payload: connected.append(payload)
                     if _socket_io_connected(payload) else None)
        return True

    with page.expect_websocket(socket_io) as opened:
        page.goto(path)
    if not connected:
        opened.value.wait_for_event("framereceived", _socket_io_connected)
    return opened.value


@contextmanager
def expect_live_update(page: Page, socket: WebSocket, event: str) -> Iterator[None]:
    """Wait for the live `event` the action inside causes to reach the page (the user's own
    page gets it too, after the answer), and for its swap to settle: a change made on the
    part it replaces before that would be made on markup about to go, or not yet wired."""
    with socket.expect_event("framereceived", lambda payload: isinstance(payload, str)
                             and payload.startswith(f'42["{event}"')):
        yield
    expect_page_settled(page)


def expect_settled(fragment: Locator) -> None:
    """Wait until htmx has settled a swapped-in `fragment`: it wires the new elements' hx-*
    attributes only then, so a change made before that sends nothing. The app settles in the
    swap's own task (templates/base.html, defaultSettleDelay 0), so this costs one look; it
    keeps the tests right should a settle delay come back."""
    expect(fragment).not_to_have_class(re.compile(r"\bhtmx-added\b"))


def expect_page_settled(page: Page) -> None:
    """The same for whatever the last swap brought in, a boosted page's body included: call it
    once something of the new part is seen (before the swap there is nothing to wait for)."""
    expect(page.locator(".htmx-added")).to_have_count(0)


def translated(live: LiveServer, message: str, language: str) -> str:
    """What the live app itself says for `message` in `language` (catalogs are still growing)."""
    with live.app.test_request_context(), force_locale(language):
        return gettext(message)


# -- pages every flow goes through ---------------------------------------------------------

def unique_email(who: str) -> str:
    return f"{who}-{uuid.uuid4().hex[:10]}@e2e.example"


def submit(page: Page, action: str) -> None:
    """Press the submit button of the form posting to `action` (pages hold other forms too)."""
    page.locator(f"form[action='{action}'] button[type='submit']").click()


def expect_dashboard(page: Page, live: LiveServer, language: str) -> None:
    expect(page).to_have_url(f"{live.url}/")
    expect(page.locator("html")).to_have_attribute("lang", language)
    expect(page.locator("h1")).to_have_text(translated(live, "Dashboard", language))


def expect_direction(page: Page, language: str, direction: str) -> None:
    html = page.locator("html")
    expect(html).to_have_attribute("lang", language)
    expect(html).to_have_attribute("dir", direction)


def user_menu(page: Page) -> Locator:
    return page.locator(".user-menu summary")


def log_in(page: Page, email: str, password: str) -> None:
    page.locator("input[name='email']").fill(email)
    page.locator("input[name='password']").fill(password)
    submit(page, "/login")


# -- email ---------------------------------------------------------------------------------

class Mailbox:
    """The messages a real SMTP server on loopback received."""

    def __init__(self):
        self._lock = threading.Lock()
        self._messages: list[EmailMessage] = []

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802 (aiosmtpd's name)
        message = message_from_bytes(envelope.original_content or envelope.content,
                                     policy=policy.default)
        with self._lock:
            self._messages.append(message)
        return "250 Message accepted for delivery"

    def to(self, address: str) -> list[EmailMessage]:
        with self._lock:
            return [message for message in self._messages if message["To"] == address]


@pytest.fixture(scope="module")
def smtp_server() -> Iterator[tuple[Controller, Mailbox]]:
    mailbox = Mailbox()
    controller = Controller(mailbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield controller, mailbox
    finally:
        controller.stop()


@pytest.fixture
def mailbox(live_server, smtp_server) -> Iterator[Mailbox]:
    """Point the live server's email at the loopback SMTP server for this test."""
    controller, box = smtp_server
    config = live_server.app.config
    saved = {key: config[key] for key in ("SMTP_HOST", "SMTP_PORT", "SMTP_STARTTLS")}
    config.update(SMTP_HOST=controller.hostname, SMTP_PORT=controller.port, SMTP_STARTTLS=False)
    try:
        yield box
    finally:
        config.update(saved)


def receive_email(live: LiveServer, mailbox: Mailbox, address: str) -> EmailMessage:
    """Deliver the queued emails until one reaches `address`; that message."""

    def arrived() -> list[EmailMessage]:
        # In this process: quicker than a `crm worker` process, which creates the app anew.
        with live.app.app_context():
            run_jobs(live.app, ("mail",))
        return mailbox.to(address)

    messages = wait_until(arrived, f"an email reaching {address}")
    assert len(messages) == 1, f"{len(messages)} emails reached {address}"
    return messages[0]


def link_in(message: EmailMessage, live: LiveServer) -> str:
    """The one link to the live server in the plain-text part of `message`."""
    text = message.get_body(("plain",)).get_content()
    links = re.findall(re.escape(live.url) + r"/\S+", text)
    assert len(links) == 1, f"expected one link in the email, found {links}"
    return links[0]
