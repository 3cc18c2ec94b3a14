"""Tickets, live: after-commit subscribers that push server-rendered fragments over Socket.IO.

Who hears what. Agents see only the tickets assigned to them, so an agent hears a ticket's
events in their own user room, and only while it is theirs (one who loses a ticket is told to
let it go). Everyone else who may read tickets (admins, managers, read-only members) joins on
connect one room per organization, language and access level (`tickets:<org>:<lang>:<level>`),
so one rendering serves each room however many people are in it; a room nobody is in gets
nothing, and nothing is rendered for it.

What they hear: `ticketCreated`, `ticketUpdated`, `ticketAssigned` and `commentAdded`, each
with `swaps` (fragments and the CSS selectors they go into, which static/js/app.js swaps in
with htmx): the ticket's row in lists whose view it belongs to, and on the ticket's own page its
fields, SLA badges, the new comment and a timeline that reloads itself. The sections other
pages show (a customer's tickets, a conversation's) get a placeholder that reloads itself, so
each reader sees only what their own permissions allow.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import render_template, url_for
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from crm import events
from crm.extensions import db, socketio
from crm.foundation.models import User
from crm.i18n import LANGUAGES, current_language
from crm.permissions import MATRIX, module_enabled, role_allows
from crm.realtime import add_rooms, occupied, rendering_for, user_room
from crm.tenancy import get_in_organization
from crm.tickets import views
from crm.tickets.models import Ticket, TicketComment
from crm.whatsapp.live import broadcast
from crm.whatsapp.models import Conversation

LEVELS = ("read", "write")


def watch_room(org_id: int, language: str, level: str) -> str:
    return f"tickets:{org_id}:{language}:{level}"


def _sees_only_assigned(user: User) -> bool:
    # The rule of crm.permissions.sees_only_assigned(), for a user who is not the caller.
    return user.role == "agent"


def ticket_rooms(user: User) -> list[str]:
    """The tickets room a connecting socket joins: none for agents (they hear their tickets
    in their user room) or for roles without access to tickets."""
    level = MATRIX[user.role]["ticketing"]
    if _sees_only_assigned(user) or level not in LEVELS:
        return []

    return [watch_room(user.organization_id, current_language(), level)]


add_rooms(ticket_rooms)


@dataclass(frozen=True)
class Audience:
    room: str
    language: str
    writable: bool
    viewer_id: int | None = None  # an agent's own room: their "mine" list


def _personal(user: User) -> Audience:
    return Audience(user_room(user.id), user.preferred_language
                    or user.organization.default_language,
                    role_allows(user.role, "ticketing", "write"), user.id)


def _audiences(ticket: Ticket) -> list[Audience]:
    """Everyone who may see the ticket now and has a page open."""
    audiences = [Audience(watch_room(ticket.organization_id, language, level), language,
                          level == "write") for language in LANGUAGES for level in LEVELS]
    assignee = ticket.assignee
    if assignee is not None and _sees_only_assigned(assignee) and assignee.is_active:
        audiences.append(_personal(assignee))
    listening = occupied(audience.room for audience in audiences)
    return [audience for audience in audiences if audience.room in listening]


# -- swaps -----------------------------------------------------------------------------------

def swap(target: str, html: str, style: str = "outerHTML") -> dict:
    return {"target": target, "html": html, "swap": style}


def _lists_for(ticket: Ticket, viewer_id: int | None) -> list[str]:
    """Unfiltered lists the ticket belongs to at the top of: all, unassigned, the assignee's
    "mine" (views of SLA states are ordered by due time, and filtered lists are the
    database's call: they change in place only)."""
    lists = ['#ticket-rows[data-view="all"][data-filtered=""]']
    if ticket.status in ("open", "pending", "on_hold"):
        if ticket.assignee_id is None:
            lists.append('#ticket-rows[data-view="unassigned"][data-filtered=""]')
        elif viewer_id in (None, ticket.assignee_id):
            lists.append(f'#ticket-rows[data-view="mine"][data-viewer="{ticket.assignee_id}"]'
                         '[data-filtered=""]')
    return lists


def _reloading(element_id: str, url: str, tag: str = "section") -> str:
    """A placeholder that fetches its element again for whoever reads it."""
    return (f'<{tag} id="{element_id}" hx-get="{url}" hx-trigger="load" '
            f'hx-swap="outerHTML"></{tag}>')


def _page_swaps(ticket: Ticket, context: dict) -> list[dict]:
    """The ticket's own page: its fields, badges and timeline."""
    return [
        swap(f"#ticket-{ticket.id}-fields", render_template("tickets/_fields.html", **context)),
        swap(f"#ticket-{ticket.id}-sla", render_template("tickets/_sla.html", **context)),
        swap(f"#ticket-{ticket.id}-timeline", _reloading(
            f"ticket-{ticket.id}-timeline",
            url_for("tickets.ticket_timeline", ticket_id=ticket.id))),
    ]


def _section_swaps(ticket: Ticket) -> list[dict]:
    swaps = []
    if ticket.customer_id:
        swaps.append(swap(f"#customer-{ticket.customer_id}-tickets", _reloading(
            f"customer-{ticket.customer_id}-tickets",
            url_for("tickets.customer_tickets", customer_id=ticket.customer_id))))
    if ticket.conversation_id:
        swaps.append(swap(f"#conversation-{ticket.conversation_id}-tickets", _reloading(
            f"conversation-{ticket.conversation_id}-tickets",
            url_for("tickets.conversation_tickets", conversation_id=ticket.conversation_id))))
    return swaps


def _row_swaps(ticket: Ticket, html: str, viewer_id: int | None, moved: bool) -> list[dict]:
    row = f"#ticket-row-{ticket.id}"
    swaps = [swap(row, html)]
    if moved:
        swaps += [swap(f"{target}:not(:has(> {row}))", html, "afterbegin")
                  for target in _lists_for(ticket, viewer_id)]
    return swaps


# -- broadcasting ----------------------------------------------------------------------------

def _broadcast(event: str, ticket: Ticket, moved: bool, extra=None) -> None:
    """Emit `event` to everyone who may see the ticket, rendered once per audience kind."""
    audiences = _audiences(ticket)
    if not audiences:
        return
    rendered: dict[tuple, list[dict]] = {}
    shared = None
    for audience in audiences:
        key = (audience.language, audience.writable, audience.viewer_id)
        if key not in rendered:
            with rendering_for(audience.language):
                if shared is None:
                    shared = views.shared_choices()
                context = {**views.template_context(), **shared,
                           **views.ticket_context(ticket, audience.writable), "errors": {}}
                row = render_template("tickets/_row.html", **context)
                rendered[key] = [*_row_swaps(ticket, row, audience.viewer_id, moved),
                                 *_page_swaps(ticket, context), *_section_swaps(ticket),
                                 *(extra(context) if extra else [])]
        socketio.emit(event, {"ticket_id": ticket.id, "swaps": rendered[key]}, to=audience.room)


def _ticket(payload: dict) -> Ticket | None:
    return get_in_organization(Ticket, payload["ticket_id"])


@events.subscribe("ticket.opened")
def on_ticket_opened(payload: dict) -> None:
    ticket = _ticket(payload)
    if ticket is not None:
        _broadcast("ticketCreated", ticket, moved=True)


@events.subscribe("ticket.updated")
def on_ticket_updated(payload: dict) -> None:
    ticket = _ticket(payload)
    if ticket is not None:
        _broadcast("ticketUpdated", ticket, moved=False)


@events.subscribe("ticket.assigned")
def on_ticket_assigned(payload: dict) -> None:
    """New assignee: the row joins their "mine"; an agent who lost the ticket lets it go."""
    ticket = _ticket(payload)
    if ticket is None:
        return
    _broadcast("ticketAssigned", ticket, moved=True)
    previous = payload.get("previous_assignee_id")
    if previous and previous != ticket.assignee_id:
        _withdraw(ticket, previous)


def _withdraw(ticket: Ticket, user_id: int) -> None:
    user = get_in_organization(User, user_id)
    if user is None or not _sees_only_assigned(user):
        return  # managers and admins still see it, and heard the assignment
    audience = _personal(user)
    if not occupied([audience.room]):
        return
    with rendering_for(audience.language):
        notice = render_template("tickets/_withdrawn.html", ticket_id=ticket.id)
    socketio.emit("ticketAssigned", {"ticket_id": ticket.id, "swaps": [
        swap(f"#ticket-row-{ticket.id}", "", "delete"),
        swap(f"#ticket-{ticket.id}-page", notice)]}, to=audience.room)


@events.subscribe("ticket.suggested")
def on_ticket_suggested(payload: dict) -> None:
    """A keyword suggested a ticket: the conversation's open panels reload their tickets
    section (through the inbox's own audiences: only those who may see the conversation)."""
    if not module_enabled("whatsapp"):
        return

    conversation = get_in_organization(Conversation, payload["conversation_id"])
    if conversation is None:
        return
    section = f"conversation-{conversation.id}-tickets"

    def build(_context: dict) -> list[dict]:  # rendered where links can be built (jobs too)
        return [swap(f"#{section}", _reloading(section, url_for(
            "tickets.conversation_tickets", conversation_id=conversation.id)))]

    broadcast("ticketSuggested", conversation, build)


@events.subscribe("ticket.comment_added")
def on_comment_added(payload: dict) -> None:
    """A reply or note joins the thread of every open page of the ticket, once."""
    ticket = _ticket(payload)
    comment = db.session.scalar(select(TicketComment).options(
        selectinload(TicketComment.attachments), selectinload(TicketComment.author))
        .where(TicketComment.id == payload["comment_id"])) if ticket else None
    if comment is None:
        return

    def thread(context: dict) -> list[dict]:
        html = render_template("tickets/_comment.html", comment=comment, **context)
        return [swap(f"#ticket-{ticket.id}-comments:not(:has(> #comment-{comment.id}))", html,
                     "beforeend")]

    _broadcast("commentAdded", ticket, moved=False, extra=thread)

