"""What ticketing publishes and listens to.

Published by the services (payload: ticket_id, number, subject, status, priority, customer_id,
conversation_id, assignee_id, team_id, source): ticket.opened, ticket.updated (+ `changes`,
the fields that changed), ticket.solved and ticket.closed (+ `changes`), ticket.assigned
(+ previous_assignee_id, actor_id), ticket.comment_added (+ comment_id, public);
ticket.suggested (conversation_id, suggestion_id: a conversation now offers "create a
ticket?"). The CRM puts ticket.opened and ticket.closed on the customer's timeline.

Listened to, each doing nothing for an organization that switched ticketing off, and each
working with the CRM and WhatsApp switched off (a ticket needs neither):
- organization.registered: the defaults (types, SLA policy, hours, holidays, keywords).
- organization.updated: a new time zone moves open tickets' clocks; a new country brings its
  holidays.
- message.received (WhatsApp): the customer's message goes on the timeline of the
  conversation's tickets (reopening a solved one, bringing a pending one back); a
  conversation without one gets a suggestion when the message holds a support keyword.
- customer.merged: tickets follow the surviving customer. (A deleted customer's tickets lose
  their customer by the foreign key.)

Reactions to messages and organizations run as RQ jobs (they must not hold up a webhook or a
settings page); the merge in-process, after the merge commits.
"""

from __future__ import annotations

from crm.events import subscribe
from crm.foundation.services import enabled_modules
from crm.tickets.services import settings, suggestions, tickets


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


@subscribe("customer.merged")
def customer_merged(payload: dict) -> None:
    tickets.move_customer(payload["merged_id"], payload["survivor_id"])
