"""Email through the outbox: written with the invitation, sent over SMTP by a job exactly once,
or written under instance/mail/ when no SMTP server is set; failures are recorded, never
retried blindly."""

from __future__ import annotations

import logging
import re
import threading
from datetime import timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage

import pytest
from aiosmtpd.controller import Controller
from flask_babel import force_locale, gettext
from sqlalchemy import select, text, update

from crm.extensions import db
from crm.foundation import services
from crm.foundation.models import OutboundEmail
from crm.jobs import enqueue, get_queue
from crm.mail import deliver_email
from crm.models import utcnow
from crm.tenancy import organization_context, set_current_organization
from crm.transaction import commit
from tests.conftest import free_port
from tests.factories import enqueues_failing, run_jobs, run_recovery

INVITEE = "newcomer@example.com"


class Inbox:
    """An aiosmtpd handler that keeps what arrives and refuses the addresses in `refused`."""

    def __init__(self):
        self.lock = threading.Lock()
        self.messages: list[EmailMessage] = []
        self.refused: set[str] = set()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        if address in self.refused:
            return "550 5.1.1 No such mailbox here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's names)
        with self.lock:
            self.messages.append(message_from_bytes(envelope.content, policy=policy.default))
        return "250 Message accepted for delivery"


@pytest.fixture
def inbox(app, monkeypatch):
    """A real SMTP server on loopback, and the app pointed at it."""
    box = Inbox()
    controller = Controller(box, hostname="127.0.0.1", port=free_port())
    controller.start()
    monkeypatch.setitem(app.config, "SMTP_HOST", controller.hostname)
    monkeypatch.setitem(app.config, "SMTP_PORT", controller.port)
    monkeypatch.setitem(app.config, "SMTP_STARTTLS", False)
    monkeypatch.setitem(app.config, "SMTP_USERNAME", "")
    try:
        yield box
    finally:
        controller.stop()


def _invite(org, language: str = "en") -> dict:
    """Invite INVITEE into `org`; what the test needs to know afterwards, as plain values."""
    with organization_context(org.id):
        invitation = services.invite_user(org.admin, INVITEE, "agent", language)
        db.session.flush()
        return {"org_id": org.id, "invitation_id": invitation.id,
                "inviter": org.admin.full_name, "organization": org.name}


def _outbox(org_id: int) -> OutboundEmail:
    with organization_context(org_id):
        return db.session.execute(select(OutboundEmail).where(
            OutboundEmail.to_address == INVITEE)).scalar_one()


def _link(message: EmailMessage) -> str:
    found = re.search(r"http://localhost/invitations/accept/\S+",
                      message.get_body(("plain",)).get_content())
    assert found, "the email carries no invitation link"
    return found.group(0)


def _opens_the_invitation(link: str, invitation_id: int) -> bool:
    """Does the link's token name this invitation (as the accept page would find it)?"""
    try:
        return services.pending_invitation(link.rsplit("/", 1)[1]).id == invitation_id
    finally:
        set_current_organization(None)


def test_an_invitation_arrives_over_smtp_with_a_working_link(app, org, inbox):
    """The invitee receives one email, addressed to them, with the subject and a single-use
    link that opens their invitation; the outbox records it as sent."""
    sent = _invite(org)
    run_jobs(app)

    [message] = inbox.messages
    assert message["To"] == INVITEE
    assert message["Subject"] == (f"{sent['inviter']} invited you to {sent['organization']} "
                                  "on Wasl")
    link = _link(message)
    assert link in message.get_body(("html",)).get_content()
    assert _opens_the_invitation(link, sent["invitation_id"])
    email = _outbox(sent["org_id"])
    assert email.status == "sent"
    assert email.sent_at is not None


def test_an_invitation_in_arabic_is_written_in_arabic(app, org, inbox):
    """The email speaks the invitee's language: an Arabic subject and a right-to-left body."""
    sent = _invite(org, "ar")
    run_jobs(app)

    [message] = inbox.messages
    with app.test_request_context(), force_locale("ar"):
        subject = gettext("%(name)s invited you to %(organization)s on Wasl",
                          name=sent["inviter"], organization=sent["organization"])
    assert message["Subject"] == subject
    assert '<html lang="ar" dir="rtl">' in message.get_body(("html",)).get_content()


def test_without_an_smtp_server_the_email_is_written_to_the_instance_folder(
        app, org, monkeypatch, tmp_path, caplog):
    """With SMTP_HOST empty the message is saved as an .eml under instance/mail/ and its link
    is logged, so invitations work on a laptop with no mail server."""
    monkeypatch.setitem(app.config, "SMTP_HOST", "")
    monkeypatch.setitem(app.config, "INSTANCE_PATH", tmp_path)
    caplog.set_level(logging.INFO, logger="crm.mail")
    sent = _invite(org)
    run_jobs(app)

    [path] = (tmp_path / "mail").glob("*.eml")
    message = message_from_bytes(path.read_bytes(), policy=policy.default)
    assert message["To"] == INVITEE
    link = _link(message)
    assert _opens_the_invitation(link, sent["invitation_id"])
    assert link in caplog.text
    assert _outbox(sent["org_id"]).status == "sent"


def test_a_send_cut_off_mid_flight_is_not_sent_again(app, org, inbox):
    """An email left `sending` by a worker that died is not sent when its job runs again."""
    sent = _invite(org)
    with organization_context(sent["org_id"]):
        _outbox(sent["org_id"]).status = "sending"
        db.session.flush()
    run_jobs(app)

    assert inbox.messages == []
    assert _outbox(sent["org_id"]).status == "sending"


def test_a_job_run_again_after_sending_sends_nothing(app, org, inbox):
    """RQ may run a job twice; the second run finds the email sent and leaves it."""
    sent = _invite(org)
    run_jobs(app)
    with organization_context(sent["org_id"]):
        enqueue(deliver_email, _outbox(sent["org_id"]).id, queue="mail")
    run_jobs(app)

    assert len(inbox.messages) == 1


def test_a_refused_recipient_marks_the_email_failed_with_the_error(app, org, inbox):
    """When the SMTP server refuses, the email is marked failed with the server's answer."""
    inbox.refused.add(INVITEE)
    sent = _invite(org)
    run_jobs(app)

    email = _outbox(sent["org_id"])
    assert inbox.messages == []
    assert email.status == "failed"
    assert "No such mailbox" in email.error


def test_an_unreachable_smtp_server_marks_the_email_failed(app, org, monkeypatch):
    """With no server listening, the email is marked failed with the connection error."""
    monkeypatch.setitem(app.config, "SMTP_HOST", "127.0.0.1")
    monkeypatch.setitem(app.config, "SMTP_PORT", free_port())  # nothing listens there
    monkeypatch.setitem(app.config, "SMTP_STARTTLS", False)
    sent = _invite(org)
    run_jobs(app)

    email = _outbox(sent["org_id"])
    assert email.status == "failed"
    assert "refused" in email.error.lower()


def _row_text(org_id: int) -> str:
    """Everything the outbox row of the invitation holds, as text."""
    with organization_context(org_id):
        return db.session.execute(text(
            "SELECT e::text FROM outbound_emails e WHERE to_address = :to"),
            {"to": INVITEE}).scalar_one()


def test_no_stored_email_holds_a_usable_token(app, org, inbox):
    """The outbox keeps the email without its link's token, before delivery and after; the
    invitee still receives the working link."""
    sent = _invite(org)
    queued = _row_text(sent["org_id"])
    run_jobs(app)

    [message] = inbox.messages
    link = _link(message)
    assert _opens_the_invitation(link, sent["invitation_id"])
    token = link.rsplit("/", 1)[1]
    secret = token.split(".", 1)[1]
    delivered = _row_text(sent["org_id"])
    for row in (queued, delivered):
        assert secret not in row
    assert "http://localhost/invitations/accept/…" in _outbox(sent["org_id"]).body_text


def test_the_embedded_mail_writer_logs_the_link_once_and_not_the_body(
        app, org, monkeypatch, tmp_path, caplog):
    """With no SMTP server the log shows where the email went and its link, once; the body
    stays out of the log."""
    monkeypatch.setitem(app.config, "SMTP_HOST", "")
    monkeypatch.setitem(app.config, "INSTANCE_PATH", tmp_path)
    caplog.set_level(logging.INFO, logger="crm.mail")
    _invite(org)
    run_jobs(app)

    [path] = (tmp_path / "mail").glob("*.eml")
    link = _link(message_from_bytes(path.read_bytes(), policy=policy.default))
    assert caplog.text.count(link) == 1
    assert "If you did not expect this invitation" not in caplog.text


def test_the_email_has_a_real_button_and_a_link_that_wraps(app, org, inbox):
    """The HTML email shows the action as a button, the fallback address wrapped so it stays on
    a phone's screen, and its content's language and direction follow the email's."""
    _invite(org, "ar")
    run_jobs(app)

    [message] = inbox.messages
    html = message.get_body(("html",)).get_content()
    link = re.escape(_link(message))
    button = re.search(rf'<a href="{link}"[^>]*style="([^"]*)"', html)
    assert button, html
    assert "display:inline-block" in button.group(1)
    assert "background-color:" in button.group(1)
    shown = re.search(rf'<[^>]+style="([^"]*)"[^>]*>\s*{link}\s*<', html)
    assert shown, html
    assert "word-break:break-all" in shown.group(1)
    assert re.search(r'<table[^>]* lang="ar" dir="rtl"', html), html


# -- recovery (crm/recovery.py) ----------------------------------------------------------------

def _change_outbox(org_id: int, **values) -> None:
    with organization_context(org_id):
        db.session.execute(update(OutboundEmail).where(OutboundEmail.to_address == INVITEE)
                           .values(**values))


def test_an_email_whose_job_was_lost_is_sent_by_the_recovery_job_once(app, org, inbox,
                                                                      monkeypatch):
    """Redis refused the email's job: once the email has waited a minute, the recovery job
    enqueues it again, once however often it runs, and it is delivered once."""
    with enqueues_failing(monkeypatch):
        sent = _invite(org)
        commit()
    run_jobs(app)
    run_recovery(app)  # not a minute old: its job may still be on the way
    run_jobs(app)
    assert inbox.messages == []

    _change_outbox(sent["org_id"], created_at=utcnow() - timedelta(minutes=2))
    run_recovery(app)
    run_recovery(app)
    run_jobs(app)
    run_recovery(app)
    run_jobs(app)

    [message] = inbox.messages
    assert _opens_the_invitation(_link(message), sent["invitation_id"])
    assert _outbox(sent["org_id"]).status == "sent"


def test_an_email_left_sending_past_its_lease_is_failed_and_never_sent_again(app, org, inbox):
    """A worker died while the email was being handed to SMTP: while its lease holds it is
    left alone; then it is marked failed with a reason an operator can act on (it may have
    arrived), and it is never sent again."""
    sent = _invite(org)
    commit()
    get_queue("mail").empty()  # the job died with its worker
    _change_outbox(sent["org_id"], status="sending", secrets=None,
                   claimed_until=utcnow() + timedelta(minutes=1))

    run_recovery(app)
    assert _outbox(sent["org_id"]).status == "sending"

    _change_outbox(sent["org_id"], claimed_until=utcnow() - timedelta(seconds=1))
    run_recovery(app)
    run_jobs(app)

    email = _outbox(sent["org_id"])
    assert email.status == "failed"
    assert "may have been delivered" in email.error
    assert inbox.messages == []


def test_an_english_email_is_wrapped_left_to_right(app, org, inbox):
    """An email in English is laid out in English: its wrapper says lang="en" dir="ltr"
    (not the Arabic default), in <html> and on the table mail clients keep."""
    _invite(org, "en")
    run_jobs(app)

    [message] = inbox.messages
    html = message.get_body(("html",)).get_content()
    assert '<html lang="en" dir="ltr">' in html
    assert re.search(r'<table[^>]* lang="en" dir="ltr"', html), html
    assert 'dir="rtl"' not in html
