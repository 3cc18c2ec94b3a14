"""Email through an outbox: stored in the business transaction, sent by an RQ job.

`send_email` renders it at once; `queue_email` stores what to render it from and leaves the
rendering to the delivery job, for jobs that notify by the hundred (the SLA timer). The
deliveries a transaction queues are enqueued together after its commit.

With SMTP_HOST unset (the embedded default) messages are written to `instance/mail/` and their
links logged, so invitations and password resets work on a laptop with no mail server. The
outbox row never holds a usable one-time token (see send_email).

An email whose job was lost (Redis down as it was committed) is enqueued again by the recovery
job (crm/recovery.py). One whose job died while handing it to SMTP is never sent again (it may
have arrived, and its link is no longer kept anyway): once its lease is up it is `failed`,
with a reason saying so, rather than left `sending`, which would look like a send still under
way and hide it. Someone (the person who invited, an operator reading the failed emails) can
then ask for a new one.
"""

from __future__ import annotations

import logging
import smtplib
import ssl
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import make_msgid

from flask import current_app, render_template
from flask_babel import force_locale
from markupsafe import escape
from sqlalchemy import inspect, select

from crm import recovery
from crm.crypto import decrypt_json, encrypt
from crm.extensions import db
from crm.foundation.models import OutboundEmail
from crm.jobs import JOB_TIMEOUT, JobCall, enqueue_many_now
from crm.models import utcnow
from crm.tenancy import current_organization_id
from crm.transaction import on_commit_collect

log = logging.getLogger("crm.mail")
REDACTED = "…"  # what the stored copy shows in place of a link's one-time token
QUEUE = "mail"
# Longer than any delivery job may run (RQ stops it at JOB_TIMEOUT): past it, it is dead.
LEASE = timedelta(seconds=JOB_TIMEOUT) + timedelta(minutes=5)
_DELIVERIES = "mail.deliveries"
_DATETIME = "datetime"  # how a stored context marks an aware datetime: {"datetime": iso}
CUT_OFF = ("The worker sending this email stopped before the mail server answered: it may "
           "have been delivered. It is not sent again.")


def send_email(to: str, template: str, language: str, link: str | None = None,
               token: str | None = None, **context) -> OutboundEmail:
    """Render `templates/email/<template>.{txt,html}` in `language` and queue it for delivery.

    A `link` carrying a one-time `token` is stored apart, encrypted, until the email is sent;
    the stored bodies show it with the token left out, so no row holds a usable token.
    """
    shown = link.replace(token, REDACTED) if link and token else link
    subject, text, html = _render(template, language, shown, context)
    email = OutboundEmail(to_address=to, subject=subject, body_text=text, body_html=html,
                          secrets=encrypt({"link": link, "shown": shown}) if token else None)
    db.session.add(email)
    db.session.flush()
    _deliver_after_commit(email)
    return email


def queue_email(to: str, template: str, language: str, link: str | None = None,
                **context) -> None:
    """Queue `template` for delivery, rendered by the delivery job rather than now: for the
    emails a job writes by the hundred (the SLA timer's), whose rendering would slow its
    transaction. `context` holds JSON values and aware datetimes; no one-time token."""
    email = OutboundEmail(to_address=to, template=template, language=language,
                          context=_to_json({**context, "link": link}))
    db.session.add(email)  # its id comes with the next flush, at the latest the commit's
    _deliver_after_commit(email)


def _render(template: str, language: str, link: str | None, context: dict
            ) -> tuple[str, str, str]:
    """The subject, text and HTML of `template` in `language`."""
    with force_locale(language):
        subject = render_template(f"email/{template}.subject.txt", link=link,
                                  **context).strip()
        text = render_template(f"email/{template}.txt", link=link, **context)
        html = render_template(f"email/{template}.html", language=language, link=link,
                               **context)
    return subject, text, html


def _to_json(context: dict) -> dict:
    return {name: {_DATETIME: value.isoformat()} if isinstance(value, datetime) else value
            for name, value in context.items()}


def _from_json(stored: dict) -> dict:
    return {name: datetime.fromisoformat(value[_DATETIME])
            if isinstance(value, dict) and value.keys() == {_DATETIME} else value
            for name, value in stored.items()}


def _deliver_after_commit(email: OutboundEmail) -> None:
    """Enqueue the email's delivery after commit, with the others of the same transaction
    in one Redis round trip."""
    on_commit_collect(_DELIVERIES, (email, current_organization_id()), _enqueue_deliveries)


def _enqueue_deliveries(emails: list[tuple[OutboundEmail, int | None]]) -> None:
    calls = []
    for email, org_id in emails:
        email_id = inspect(email).identity[0]  # known since the flush; nothing to load
        calls.append(JobCall(f"{__name__}:deliver_email", (email_id,), org_id,
                             "mail: deliver", delivery_job_id(email_id)))
    enqueue_many_now(calls, QUEUE)


def delivery_job_id(email_id: int) -> str:
    """The RQ job id of an email's delivery: the recovery job sees whether it waits or runs."""
    return f"mail-deliver-{email_id}"


def deliver_email(email_id: int) -> None:
    """Send one queued email exactly once; a rerun after a crash leaves it for an operator."""
    email = db.session.execute(
        select(OutboundEmail).where(OutboundEmail.id == email_id,
                                    OutboundEmail.status == "queued")
        .with_for_update(skip_locked=True)
    ).scalar_one_or_none()
    if email is None:
        return
    if email.body_text is None:
        _render_queued(email)
    secrets = decrypt_json(email.secrets)
    # Mark before the message leaves, so a crash cannot send it twice; an email that left
    # "queued" is never sent again, so its link is no longer kept either.
    email.status, email.secrets = "sending", None
    email.claimed_until = utcnow() + LEASE
    db.session.commit()
    try:
        _transport(_build_message(email, secrets), email, secrets.get("link"))
    except (OSError, smtplib.SMTPException) as exc:
        email.status = "failed"
        email.error = str(exc)[:500]
        log.warning("email %s to %s failed: %s", email.id, email.to_address, exc)
        return
    email.status = "sent"
    email.sent_at = utcnow()


def _render_queued(email: OutboundEmail) -> None:
    """Render an email queued unrendered (queue_email), as its organization (the job's)."""
    context = _from_json(email.context or {})
    link = context.pop("link", None)
    email.subject, email.body_text, email.body_html = _render(email.template, email.language,
                                                              link, context)


def recover_outbox() -> None:
    """Enqueue again the emails whose job was lost; fail those a dead job left `sending` past
    their lease (a task of the recovery job)."""
    recovery.enqueue_again(recovery.stuck("wasl_outbound_emails_unsent",
                                          recovery.queued_before()),
                           f"{__name__}:deliver_email", QUEUE, delivery_job_id)
    recovery.settle_lease_over(OutboundEmail, "wasl_outbound_emails_lease_over", _cut_off)


def _cut_off(email: OutboundEmail) -> None:
    log.warning("email %s to %s: its delivery was cut off; marked failed", email.id,
                email.to_address)
    email.status, email.error = "failed", CUT_OFF


def _build_message(email: OutboundEmail, secrets: dict) -> EmailMessage:
    text, html = email.body_text, email.body_html
    if secrets:  # put the token back into the link, in both bodies
        text = text.replace(secrets["shown"], secrets["link"])
        html = html.replace(str(escape(secrets["shown"])), str(escape(secrets["link"])))
    message = EmailMessage()
    message["From"] = current_app.config["MAIL_FROM"]
    message["To"] = email.to_address
    message["Subject"] = email.subject
    message["Message-ID"] = make_msgid(domain="wasl.local")
    message.set_content(text)
    message.add_alternative(html, subtype="html")
    return message


def _transport(message: EmailMessage, email: OutboundEmail, link: str | None) -> None:
    config = current_app.config
    if not config["SMTP_HOST"]:
        _write_to_folder(message, email, link)
        return
    with smtplib.SMTP(config["SMTP_HOST"], config["SMTP_PORT"], timeout=30) as smtp:
        if config["SMTP_STARTTLS"]:
            smtp.starttls(context=ssl.create_default_context())
        if config["SMTP_USERNAME"]:
            smtp.login(config["SMTP_USERNAME"], config["SMTP_PASSWORD"])
        smtp.send_message(message)


def _write_to_folder(message: EmailMessage, email: OutboundEmail, link: str | None) -> None:
    """Write the message to instance/mail/email-<outbox id>.eml and log where, with its link
    (the one thing a developer needs from it); the body stays out of the log."""
    folder = current_app.config["INSTANCE_PATH"] / "mail"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"email-{email.id}.eml"
    path.write_bytes(bytes(message))
    log.info("email %s to %s written to %s: %s%s", email.id, email.to_address, path,
             email.subject, f"\n{link}" if link else "")
