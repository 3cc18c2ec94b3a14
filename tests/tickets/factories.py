"""Factories for ticketing's tests: objects made through the real services, usable after a
commit too (ids are read without loading)."""

from __future__ import annotations

import io
import itertools
from datetime import datetime, timedelta

from sqlalchemy import select
from werkzeug.datastructures import FileStorage

from crm.extensions import db
from crm.foundation import teams
from crm.foundation.models import Organization, Team, User
from crm.models import utcnow
from crm.tenancy import organization_context
from crm.tickets import services, sla
from crm.tickets.models import Ticket
from tests.foundation import ident

_sequence = itertools.count(1)


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
