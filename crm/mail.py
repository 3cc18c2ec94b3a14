"""Email through an outbox: rendered and stored in the business transaction, sent by an RQ job.

With SMTP_HOST unset (the embedded default) messages are written to `instance/mail/` and their
links logged, so invitations and password resets work on a laptop with no mail server.
"""

from __future__ import annotations

import logging
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import make_msgid

from flask import current_app, render_template
from flask_babel import force_locale
from sqlalchemy import select

from crm.extensions import db
from crm.foundation.models import OutboundEmail
from crm.jobs import enqueue
from crm.models import utcnow

log = logging.getLogger("crm.mail")


def send_email(to: str, template: str, language: str, **context) -> OutboundEmail:
    """Render `templates/email/<template>.{txt,html}` in `language` and queue it for delivery."""
    with force_locale(language):
        subject = render_template(f"email/{template}.subject.txt", **context).strip()
        text = render_template(f"email/{template}.txt", **context)
        html = render_template(f"email/{template}.html", language=language, **context)
    email = OutboundEmail(to_address=to, subject=subject, body_text=text, body_html=html)
    db.session.add(email)
    db.session.flush()
    enqueue(deliver_email, email.id, queue="mail")
    return email


def deliver_email(email_id: int) -> None:
    """Send one queued email exactly once; a rerun after a crash leaves it for an operator."""
    email = db.session.execute(
        select(OutboundEmail).where(OutboundEmail.id == email_id,
                                    OutboundEmail.status == "queued")
        .with_for_update(skip_locked=True)
    ).scalar_one_or_none()
    if email is None:
        return
    email.status = "sending"
    db.session.commit()  # mark before the message leaves, so a crash cannot send it twice
    try:
        _transport(_build_message(email))
    except (OSError, smtplib.SMTPException) as exc:
        email.status = "failed"
        email.error = str(exc)[:500]
        log.warning("email %s to %s failed: %s", email.id, email.to_address, exc)
        return
    email.status = "sent"
    email.sent_at = utcnow()


def _build_message(email: OutboundEmail) -> EmailMessage:
    message = EmailMessage()
    message["From"] = current_app.config["MAIL_FROM"]
    message["To"] = email.to_address
    message["Subject"] = email.subject
    message["Message-ID"] = make_msgid(domain="wasl.local")
    message.set_content(email.body_text)
    message.add_alternative(email.body_html, subtype="html")
    return message


def _transport(message: EmailMessage) -> None:
    config = current_app.config
    if not config["SMTP_HOST"]:
        _write_to_folder(message)
        return
    with smtplib.SMTP(config["SMTP_HOST"], config["SMTP_PORT"], timeout=30) as smtp:
        if config["SMTP_STARTTLS"]:
            smtp.starttls(context=ssl.create_default_context())
        if config["SMTP_USERNAME"]:
            smtp.login(config["SMTP_USERNAME"], config["SMTP_PASSWORD"])
        smtp.send_message(message)


def _write_to_folder(message: EmailMessage) -> None:
    folder = current_app.config["INSTANCE_PATH"] / "mail"
    folder.mkdir(parents=True, exist_ok=True)
    name = message["Message-ID"].strip("<>").replace("@", "_")
    (folder / f"{name}.eml").write_bytes(bytes(message))
    log.info("email to %s written to %s: %s\n%s", message["To"], folder, message["Subject"],
             message.get_body(("plain",)).get_content())
