"""Tickets on the dashboard: the team's queue and its SLA (or, for an agent, their own).

Each number is that of the tickets list it links to (crm/tickets/services/tickets.py's views):
open (status open), unassigned and mine (unsolved), breaching soon (a clock past its warning)
and breached. Two statements whatever the number of tickets: the counts, a sum over the few
rows of `ticket_counts` (tickets per assignee, status and SLA status, kept by triggers on
`tickets`; counting the tickets took 8–13 ms at 100,000), and the soonest to breach from
`ix_tickets_breaching` in due order.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from crm.extensions import db
from crm.foundation.models import User
from crm.foundation.views import DashboardCard, add_dashboard_card
from crm.models import counted
from crm.permissions import sees_only_assigned
from crm.tickets import badges
from crm.tickets.models import UNSOLVED_STATUSES, Ticket, TicketCount
from crm.web import me

# Socket.IO events after which the card counts again (crm/tickets/live.py); SLA warnings
# fire without one, and the dashboard refreshes every minute anyway.
EVENTS = ("ticketCreated", "ticketUpdated", "ticketAssigned")
SOONEST = 3  # tickets breaching soon the card names


@dataclass(frozen=True)
class TicketNumbers:
    """What the tickets card shows; `open` and `unassigned` are None for an agent (they see
    only their own tickets: mine is all of them)."""

    open: int | None
    unassigned: int | None
    mine: int
    breaching: int
    breached: int


def ticket_numbers(user: User) -> TicketNumbers:
    """The team's unsolved tickets and their SLA, or an agent's own: a few rows of
    `ticket_counts`."""
    agent = sees_only_assigned(user)
    unsolved = TicketCount.status.in_(UNSOLVED_STATUSES)
    own = (TicketCount.assignee_id == user.id,) if agent else ()
    counts = [_count(TicketCount.assignee_id == user.id, unsolved),
              _count(TicketCount.sla_status == "warning", *own),
              _count(TicketCount.sla_status == "breached", *own)]
    if not agent:
        counts += [_count(TicketCount.status == "open"),
                   _count(TicketCount.assignee_id == 0, unsolved)]
    mine, breaching, breached, *team = db.session.execute(select(*counts)).one()
    opened, unassigned = team or (None, None)
    return TicketNumbers(opened, unassigned, mine, breaching, breached)


def _count(*conditions):
    return counted(TicketCount.n, *conditions)


def breaching_soon(user: User, limit: int = SOONEST
                   ) -> list[tuple[Ticket, badges.Badge | None]]:
    """The tickets whose SLA breaches soonest (an agent's own), each with the clock that
    warns."""
    query = (select(Ticket).where(Ticket.sla_status == "warning")
             .order_by(Ticket.sla_due_at, Ticket.id).limit(limit))
    if sees_only_assigned(user):
        query = query.where(Ticket.assignee_id == user.id)
    return [(ticket, _warning(ticket)) for ticket in db.session.scalars(query)]


def _warning(ticket: Ticket) -> badges.Badge | None:
    shown = badges.badges(ticket)
    return next((badge for badge in shown if badge.state == "warning"), shown[0] if shown
                else None)


def _tickets_card() -> dict:
    user = me()
    return {"numbers": ticket_numbers(user), "soonest": breaching_soon(user)}


add_dashboard_card(DashboardCard("tickets/_dashboard_card.html", "ticketing", "read",
                                 _tickets_card, EVENTS, order=40))
