"""What ticketing's services share: field checks, the timeline, who may work tickets."""

from __future__ import annotations

import logging

from flask_babel import gettext as _

from crm.customers.services import (  # the field checks every module's forms and API share
    check_bool,
    check_datetime,
    check_id,
    check_int,
    check_tags,
    check_text,
    not_found,
)
from crm.errors import ValidationError
from crm.extensions import db
from crm.foundation.models import User
from crm.permissions import role_allows
from crm.tenancy import get_in_organization
from crm.tickets.models import Ticket, TicketEvent
from crm.validation import collect

__all__ = ["check_bool", "check_datetime", "check_id", "check_int", "check_tags", "check_text",
           "collect", "not_found"]
log = logging.getLogger("crm.tickets")
SUBJECT_LENGTH = 200
TEXT_LENGTH = 20_000


def check_choice(raw: object, field: str, choices: tuple[str, ...]) -> str:
    if raw not in choices:
        raise ValidationError({field: _("Choose one of the listed options.")})
    return raw


def check_worker(raw: object, field: str = "assignee_id") -> User | None:
    """An active member who works tickets (admin, manager, agent), or None for nobody."""
    user_id = check_id(raw, field)
    if user_id is None:
        return None
    user = get_in_organization(User, user_id)
    if user is None or not user.is_active or not role_allows(user.role, "ticketing", "write"):
        raise ValidationError({field: _("Choose a member who works on tickets.")})
    return user


def record(ticket: Ticket, kind: str, actor: User | None = None, source_key: str | None = None,
           **details) -> TicketEvent:
    """Add to the ticket's timeline: who did what (`kind`), with what (`details`)."""
    event = TicketEvent(ticket_id=ticket.id, actor_id=actor.id if actor else None, kind=kind,
                        details=details, source_key=source_key)
    db.session.add(event)
    return event


def ticket_payload(ticket: Ticket) -> dict:
    """What ticket.* events carry (the CRM reads ticket_id, customer_id and subject)."""
    return {"ticket_id": ticket.id, "number": ticket.number, "subject": ticket.subject,
            "status": ticket.status, "priority": ticket.priority,
            "customer_id": ticket.customer_id, "conversation_id": ticket.conversation_id,
            "assignee_id": ticket.assignee_id, "team_id": ticket.team_id,
            "source": ticket.source}


def subject_from(text: str) -> tuple[str, str]:
    """A subject (the first line, spaces folded) and a description (all of it) from what a
    customer wrote."""
    text = text.strip()
    first_line = " ".join(text.splitlines()[0].split()) if text else ""
    return first_line[:SUBJECT_LENGTH], text[:TEXT_LENGTH]


def ticket_link(ticket: Ticket) -> str:
    """The ticket's page (notifications link to it; the pages serve it)."""
    return f"/tickets/{ticket.id}"
