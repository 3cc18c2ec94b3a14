"""Tests of the foundation's pages, and the helpers they share."""

from __future__ import annotations

import re

from flask_babel import force_locale, gettext
from markupsafe import escape
from sqlalchemy import inspect, select

from crm.extensions import db
from crm.foundation.models import AuditEntry, Organization, OutboundEmail
from crm.tenancy import organization_context
from tests.factories import PASSWORD, delivered_text

HTMX = {"HX-Request": "true"}


def arabic(message: str, **variables) -> str:
    """`message` as an Arabic page shows it (translated and HTML-escaped)."""
    with force_locale("ar"):
        return str(escape(gettext(message, **variables)))


def log_in(client, email: str, password: str = PASSWORD, **extra):
    """Log in through the login form, as a person would."""
    return client.post("/login", data={"email": email, "password": password, **extra})


def ident(obj) -> int:
    """An object's id without loading it (a commit expires it, and RLS hides it outside its
    organization)."""
    return inspect(obj).identity[0]


def emails_to(org: Organization, address: str) -> list[OutboundEmail]:
    """The emails queued for `address` by `org`, newest first."""
    with organization_context(ident(org)):
        return list(db.session.scalars(select(OutboundEmail).where(
            OutboundEmail.to_address == address).order_by(OutboundEmail.id.desc())))


def link_in(email: OutboundEmail) -> str:
    """The path of the first link in an email's text, as delivered."""
    text = delivered_text(email)
    match = re.search(r"https?://[^/\s]+(/\S+)", text)
    assert match, text
    return match.group(1)


def audit_actions(org: Organization) -> list[str]:
    with organization_context(ident(org)):
        return list(db.session.scalars(select(AuditEntry.action).order_by(AuditEntry.id)))


def reload(org: Organization, model: type, obj) -> object:
    """`obj` as the database has it now, loaded in its organization."""
    with organization_context(ident(org)):
        db.session.expire_all()
        return db.session.get(model, ident(obj))
