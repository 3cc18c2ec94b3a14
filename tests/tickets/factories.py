"""Factories for ticketing's tests: objects made through the real services, usable after a
commit too (ids are read without loading)."""

from __future__ import annotations

import io
import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime, timedelta

from sqlalchemy import select
from werkzeug.datastructures import FileStorage

from crm.extensions import db
from crm.foundation import teams
from crm.foundation.models import Organization, Team, User
from crm.models import utcnow
from crm.tenancy import organization_context
from crm.tickets import services, sla
from crm.tickets.models import Holiday, Ticket, TicketAttachment
from tests.foundation import ident

_sequence = itertools.count(1)


@contextmanager
def acting_as(org: Organization) -> Iterator[None]:
    """Run the block as `org`, writing what it left pending before leaving it (RLS would
    refuse it later, outside the organization)."""
    with organization_context(ident(org)):
        yield
        db.session.flush()


def make_ticket(org: Organization, actor: User | None = None, source: str = "manual",
                **data) -> Ticket:
    """A ticket of `org` opened by `actor` (its admin by default); `data` as the service
    takes it (subject, priority, assignee_id, ...)."""
    data.setdefault("subject", f"Ticket {next(_sequence)}")
    with organization_context(ident(org)):
        ticket = services.create_ticket(actor or org.admin, data, source=source)
        db.session.flush()
    return ticket


def make_team(org: Organization, members: list[User] = (), manager: User | None = None,
              name: str | None = None) -> Team:
    with organization_context(ident(org)):
        team = teams.create_team(org.admin, {
            "name": name or f"Team {next(_sequence)}", "member_ids": [m.id for m in members],
            "manager_id": manager.id if manager else None})
        db.session.flush()
    return team


def upload(data: bytes = b"%PDF-1.4 test", filename: str = "invoice.pdf",
           mime_type: str = "application/pdf") -> FileStorage:
    return FileStorage(io.BytesIO(data), filename=filename, content_type=mime_type)


def reload_ticket(org: Organization, ticket: Ticket) -> Ticket:
    """The ticket as the database has it now."""
    with organization_context(ident(org)):
        return db.session.scalars(select(Ticket).where(Ticket.id == ident(ticket))
                                  .execution_options(populate_existing=True)).one()


def set_deadline(org: Organization, ticket: Ticket, moment: datetime) -> None:
    """Move the ticket's next deadline (as if its time had come), leaving the rest alone."""
    with organization_context(ident(org)):
        db.session.get(Ticket, ident(ticket)).next_deadline_at = moment
        db.session.flush()


def backdate(org: Organization, ticket: Ticket, by: timedelta) -> Ticket:
    """Make the ticket as old as if it had been opened `by` earlier, its clocks computed
    again (so what was due in hours may be overdue now)."""
    with organization_context(ident(org)):
        row = db.session.get(Ticket, ident(ticket))
        row.created_at -= by
        sla.recompute(row, services.load_context(), utcnow())
        db.session.flush()
    return row


def make_attachment(ticket: Ticket, data: bytes = b"%PDF-1.4 test"):
    """An internal note on the ticket with one file attached; the attachment."""
    with organization_context(ticket.organization_id):
        ticket = db.session.get(Ticket, ident(ticket))
        admin = db.session.scalar(select(User).where(User.role == "admin").order_by(User.id))
        comment = services.add_comment(admin, ticket, "", False, [upload(data)])
        db.session.flush()
        return comment.attachments[0] if comment.attachments else db.session.scalars(
            select(TicketAttachment).where(TicketAttachment.comment_id == comment.id)).one()


def make_suggestion(conversation, body: str = "عندي مشكلة في الطلب"):
    """A "create a ticket?" suggestion for the conversation, as a customer's message makes."""
    from crm.tickets.services.suggestions import suggest

    with organization_context(conversation.organization_id):
        suggestion = suggest(ident(conversation), 1, body, None)
        db.session.flush()
    return suggestion


def make_escalation_rule(org: Organization, **data):
    with organization_context(ident(org)):
        rule = services.create_escalation_rule(org.admin, {
            "metric": "resolution", "minutes_after": 30, "raise_priority": True,
            "notify": True, **data})
        db.session.flush()
    return rule


def make_holiday(org: Organization, day: date | None = None, name: str = "Company day"
                 ) -> Holiday:
    """A day off of the organization's own (its defaults made too), on a day of its own."""
    with organization_context(ident(org)):
        holiday = services.add_holiday(org.admin, {
            "day": (day or date(2030, 1, 1 + next(_sequence) % 28)).isoformat(), "name": name})
        db.session.flush()
    return holiday


def make_type(org: Organization, name_en: str | None = None):
    with organization_context(ident(org)):
        ticket_type = services.create_type(org.admin, {
            "name_ar": "تركيب", "name_en": name_en or f"Installation {next(_sequence)}"})
        db.session.flush()
    return ticket_type


def make_keyword(org: Organization, word: str | None = None):
    with organization_context(ident(org)):
        keyword = services.add_keyword(org.admin, word or f"fault{next(_sequence)}")
        db.session.flush()
    return keyword
