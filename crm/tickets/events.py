"""Ticketing's hooks: what it publishes, with each payload, and what it listens to.

Listeners do nothing for an organization that switched ticketing off, and work with the CRM
and WhatsApp switched off (a ticket needs neither). Reactions to messages and organizations
run as RQ jobs (they must not hold up a webhook or a settings page); the merge in-process,
after the merge commits.
"""

from __future__ import annotations

from crm.events import Payload, subscribe
from crm.foundation.services import enabled_modules
from crm.tickets.services import settings, suggestions, tickets

# Every ticket.* event but ticket.suggested carries services.common.ticket_payload().
TICKET = ("ticket_id", "number", "subject", "status", "priority", "customer_id",
          "conversation_id", "assignee_id", "team_id", "source")

PUBLISHES: dict[str, Payload] = {
    "ticket.opened": TICKET,
    # `changes`: the fields that changed ("sla" when only its clocks moved)
    "ticket.updated": (*TICKET, "changes"),
    "ticket.solved": (*TICKET, "changes"),
    "ticket.closed": (*TICKET, "changes"),
    "ticket.assigned": (*TICKET, "previous_assignee_id", "actor_id"),
    "ticket.comment_added": (*TICKET, "comment_id", "public"),
    # a conversation now offers "create a ticket?" (a support keyword in its last message)
    "ticket.suggested": ("conversation_id", "suggestion_id"),
}

LISTENS: dict[str, str] = {
    "organization.registered": "the defaults: types, SLA policy, hours, holidays, keywords "
                               "(a job)",
    "organization.updated": "a new time zone moves open tickets' clocks; a new country brings "
                            "its holidays (a job)",
    "message.received": "the customer's message goes on the timeline of the conversation's "
                        "tickets (reopening a solved one, bringing a pending one back); a "
                        "conversation without one gets a suggestion when the message holds a "
                        "support keyword (a job)",
    "user.removed": "the member's tickets that are not closed go back to the unassigned ones, "
                    "whether the module is on or not (a job)",
    "user.role_changed": "the same, when the new role does not work tickets (a job)",
    "customer.merged": "tickets follow the surviving customer (a deleted customer's lose "
                       "theirs by the foreign key)",
    "ticket.opened": "live.py: open lists and panels show the new ticket (ticketCreated)",
    "ticket.updated": "live.py: the ticket's row and page swap in (ticketUpdated)",
    "ticket.assigned": "live.py: the ticket's row, and the assignee's lists (ticketAssigned)",
    "ticket.suggested": "live.py: the inbox panel of the conversation offers a ticket",
    "ticket.comment_added": "live.py: the ticket's timeline gains the comment (commentAdded)",
}


def _ticketing_on() -> bool:
    return "ticketing" in enabled_modules()


@subscribe("organization.registered", job=True)
def set_up_organization(payload: dict) -> None:
    settings.ensure_defaults()


@subscribe("organization.updated", job=True)
def organization_updated(payload: dict) -> None:
    fields = payload.get("fields", [])
    if "country" in fields:
        settings.country_changed()
    elif "timezone" in fields:
        settings.recompute_later()


@subscribe("message.received", job=True)
def message_received(payload: dict) -> None:
    if not _ticketing_on() or payload.get("direction") != "in":
        return
    body = payload.get("body") or ""
    if tickets.customer_wrote(payload["conversation_id"], payload["message_id"], body):
        return
    if body:
        suggestions.suggest(payload["conversation_id"], payload["message_id"], body,
                            payload.get("customer_id"))


@subscribe("user.removed", job=True)
@subscribe("user.role_changed", job=True)
def release_tickets_of_a_member(payload: dict) -> None:
    tickets.release_tickets(payload["user_id"], payload["actor_id"])


@subscribe("customer.merged")
def customer_merged(payload: dict) -> None:
    tickets.move_customer(payload["merged_id"], payload["survivor_id"])
