"""In-app notifications (the bell), and their emails: a kernel piece every module uses.

A notification stores its `kind` and `params`, never its text: the text is rendered when it
is shown, in the reader's language (`render`). Modules register their kinds in KINDS with
lazy strings; a kind with an email template is also emailed, through the outbox
(crm/mail.py), in each recipient's language, its link built on PUBLIC_URL; the mail job
renders it (`queue_email`), so a job that notifies many people stays quick.
`notification.created` is published for the live bell.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from operator import attrgetter

from flask import current_app
from sqlalchemy import func, select, update

from crm import events
from crm.extensions import db
from crm.foundation.models import Notification, User
from crm.foundation.services import _language_of
from crm.i18n import isolate
from crm.mail import queue_email
from crm.models import utcnow
from crm.pagination import keyset_page
from crm.permissions import module_enabled


@dataclass(frozen=True)
class Kind:
    """How a kind of notification reads: title and body with %(param)s placeholders; `labels`
    translates params that hold a key (a clock's name); other text params are user text,
    isolated in the sentence. `module` is the switchable module its link leads into."""

    title: object  # lazy strings
    body: object
    email_template: str | None = None
    labels: Mapping[str, Mapping[str, object]] = field(default_factory=dict)
    module: str | None = None


KINDS: dict[str, Kind] = {}


def register(kind: str, definition: Kind) -> None:
    KINDS[kind] = definition


def notify(user_ids: Iterable[int], kind: str, params: dict, link: str | None = None, *,
           email_context: Mapping | None = None) -> list[Notification]:
    """Notify each of these users (once each, active ones only) of `kind`; email them too
    when the kind has a template (`email_context` adds to what the template gets)."""
    ids = sorted({user_id for user_id in user_ids if user_id is not None})
    users = list(db.session.scalars(select(User).where(User.id.in_(ids), User.is_active)
                                    .order_by(User.id))) if ids else []
    notes = [Notification(user_id=user.id, kind=kind, params=params, link=link)
             for user in users]
    db.session.add_all(notes)
    template = KINDS[kind].email_template
    for user in users if template else ():  # rendered by the mail job, not in this one
        queue_email(user.email, template, _language_of(user), link=_public_link(link),
                    **params, **(email_context or {}))
    db.session.flush()  # the notes and the emails, in one round trip each
    if notes:
        events.publish("notification.created", {"kind": kind,
                                                "user_ids": [user.id for user in users]})
    return notes


def _public_link(path: str | None) -> str | None:
    """An emailed link: on PUBLIC_URL, never the request's host."""
    return f"{current_app.config['PUBLIC_URL'].rstrip('/')}{path}" if path else None


def render(notification: Notification) -> tuple[str, str]:
    """The notification's title and body in the current language."""
    kind = KINDS[notification.kind]
    values = {}
    for name, value in notification.params.items():
        if name in kind.labels:
            values[name] = str(kind.labels[name].get(value, value))
        else:
            values[name] = isolate(value) if isinstance(value, str) else value
    return str(kind.title) % values, str(kind.body) % values


def link_of(notification: Notification) -> str | None:
    """Where the notification leads, unless its module is switched off (its pages 404)."""
    module = KINDS[notification.kind].module
    return notification.link if module is None or module_enabled(module) else None


def list_notifications(user: User, before_id: int | None = None, limit: int = 30
                       ) -> tuple[list[Notification], int | None]:
    """The user's notifications, newest first."""
    query = (select(Notification).where(Notification.user_id == user.id)
             .order_by(Notification.id.desc()))
    if before_id:
        query = query.where(Notification.id < before_id)
    return keyset_page(query, limit, attrgetter("id"))


def unread_count(user: User) -> int:
    return db.session.scalar(select(func.count()).select_from(Notification).where(
        Notification.user_id == user.id, Notification.read_at.is_(None)))


def mark_read(user: User, notification_ids: Iterable[int] | None = None) -> int:
    """Mark the user's notifications read (these, or all); how many were unread."""
    query = update(Notification).where(Notification.user_id == user.id,
                                       Notification.read_at.is_(None))
    if notification_ids is not None:
        query = query.where(Notification.id.in_(list(notification_ids)))
    count = db.session.execute(query.values(read_at=utcnow())
                               .execution_options(synchronize_session=False)).rowcount
    if count:
        events.publish("notification.read", {"user_ids": [user.id]})
    return count
