"""The CRM's hooks: what it publishes, with each payload, and what it listens to (the
catalogue below; crm/events.py says how).

Reactions to WhatsApp messages and the set-up of a new organization run as RQ jobs (they log,
link and rescore: work that must not hold up a webhook); the others in-process after the
publishing transaction commits (crm/events.py). None acts for an organization that switched
the CRM off.
"""

from __future__ import annotations

import logging

from crm.billing.gate import PlanLimitError
from crm.customers import services
from crm.customers.models import Customer
from crm.customers.services import scoring
from crm.errors import ValidationError
from crm.events import Payload, subscribe
from crm.extensions import db
from crm.foundation.services import enabled_modules
from crm.search import normalize_phone
from crm.whatsapp.services import link_customer

log = logging.getLogger("crm.customers")

PUBLISHES: dict[str, Payload] = {
    # added by a person, an import, the API or a WhatsApp contact (source: models.SOURCES)
    "customer.created": ("customer_id", "source"),
    # edited; `fields` names the columns that changed ("custom_fields" for any custom one)
    "customer.updated": ("customer_id", "fields"),
    "customer.deleted": ("customer_id",),
    # `merged_id` was merged into `survivor_id`, which keeps its activities and conversations
    "customer.merged": ("survivor_id", "merged_id"),
    # a card placed on the board: its column and place, and the column it came from
    "customer.moved": ("customer_id", "stage_id", "from_stage_id", "position"),
    # the pipeline stage changed, on the board or elsewhere (either side may be None)
    "customer.stage_changed": ("customer_id", "from_stage_id", "to_stage_id"),
    "customer.activity_added": ("customer_id", "activity_id"),
    "customer.activity_updated": ("customer_id", "activity_id"),
    # the pipeline's stages were added, renamed, reordered or removed
    "sales_stages.changed": (),
    # a CSV import went on (each batch) or ended; status: CustomerImport.status
    "customer_import.progress": ("import_id", "status", "processed_rows", "total_rows"),
}

LISTENS: dict[str, str] = {
    "organization.registered": "the default pipeline and scoring rules, and the nightly "
                               "rescoring (a job)",
    "message.received": "the contact becomes a customer (an unknown number, named after its "
                        "WhatsApp profile, source whatsapp), the conversation is linked to "
                        "them, the message is an activity logged once and counts as contact "
                        "(a job)",
    "message.sent": "the message is an activity of the conversation's customer (a job)",
    "conversation.started": "someone opened a chat: it is linked at once to the customer "
                            "with its number, if there is one",
    "ticket.opened": "an activity, and the ticket scores; payload ticket_id, customer_id, "
                     "subject (what ticketing publishes)",
    "ticket.closed": "an activity; payload ticket_id, customer_id, subject",
    "user.removed": "the member's open tasks go to the admin who removed them, whether the "
                    "CRM is on or not (a job)",
    "customer.stage_changed": "live.py: open boards swap in the columns it left and joined",
    "customer.moved": "live.py: open boards swap in a column whose order changed",
}


def _crm_on() -> bool:
    return "crm" in enabled_modules()


@subscribe("organization.registered", job=True)
def set_up_organization(payload: dict) -> None:
    """A job, so that registering waits for nothing (first use would create them too)."""
    services.list_stages()  # creates the defaults and schedules the nightly rescoring


@subscribe("message.received", job=True)
def whatsapp_message_received(payload: dict) -> None:
    if not _crm_on():
        return
    customer = _customer_for(payload, create=True)
    if customer is not None:
        _log_message(customer, payload, "whatsapp_in")


@subscribe("message.sent", job=True)
def whatsapp_message_sent(payload: dict) -> None:
    if not _crm_on():
        return
    customer = _customer_for(payload, create=False)
    if customer is not None:
        _log_message(customer, payload, "whatsapp_out")


def _customer_for(payload: dict, *, create: bool) -> Customer | None:
    """The customer a conversation is with: the one it is linked to (past merges followed),
    else the one with its phone number, else (for an inbound message) a new one. The
    conversation is linked to whichever it is."""
    customer = services.resolve_customer(payload.get("customer_id"))
    phone = normalize_phone(payload.get("contact_phone") or "", None)
    if customer is None:
        customer = services.customer_by_phone(phone)
    if customer is None and create:
        customer = _create_from_whatsapp(payload, phone)
    if customer is not None and customer.id != payload.get("customer_id"):
        link_customer(payload["conversation_id"], customer.id)
    return customer


def _create_from_whatsapp(payload: dict, phone: str | None) -> Customer | None:
    data = {"name": _profile_name(payload) or phone or payload.get("contact_user_id")
            or "WhatsApp", "phone": phone}
    try:
        with db.session.begin_nested():
            return services.create_customer(None, data, source="whatsapp")
    except services.DuplicateCustomerError as exc:  # created meanwhile by a parallel delivery
        return services.resolve_customer(exc.existing_id)
    except ValidationError as exc:  # a required custom field, say
        log.warning("WhatsApp contact %s not added as a customer: %s", phone, exc.fields)
        return None
    except PlanLimitError:  # the plan's customers are all taken: the conversation stays
        log.info("WhatsApp contact %s not added as a customer: over the plan's limit", phone)
        return None


def _profile_name(payload: dict) -> str:
    try:
        return services.check_text((payload.get("contact_name") or "")[:160], "name", 160)
    except ValidationError:  # control characters in a profile name
        return ""


def _log_message(customer: Customer, payload: dict, type_: str) -> None:
    activity = services.log_automatic(
        customer, type_, payload.get("body") or "",
        {"message_id": payload["message_id"], "conversation_id": payload["conversation_id"],
         "message_type": payload.get("type")},
        source_key=f"wa:{payload['message_id']}")
    if activity is None:
        return  # a redelivered event: logged the first time
    services.touch_contact(customer, activity.created_at)
    scoring.recompute_score(customer)


@subscribe("conversation.started")
def whatsapp_conversation_started(payload: dict) -> None:
    """Someone opened a chat with a number: link it to the customer who has that number,
    at once (in-process), so the inbox shows who they talk to from the first moment."""
    if not _crm_on() or payload.get("customer_id"):
        return
    customer = services.customer_by_phone(payload.get("contact_phone"))
    if customer is not None:
        link_customer(payload["conversation_id"], customer.id)


@subscribe("user.removed", job=True)
def hand_over_removed_members_tasks(payload: dict) -> None:
    services.hand_over_tasks(payload["user_id"], payload["actor_id"])


@subscribe("ticket.opened")
def ticket_opened(payload: dict) -> None:
    _log_ticket(payload, "ticket_opened")


@subscribe("ticket.closed")
def ticket_closed(payload: dict) -> None:
    _log_ticket(payload, "ticket_closed")


def _log_ticket(payload: dict, type_: str) -> None:
    """Payload: ticket_id, customer_id, subject (what the ticketing module will publish)."""
    if not _crm_on():
        return
    customer = services.resolve_customer(payload.get("customer_id"))
    if customer is None:
        return
    activity = services.log_automatic(
        customer, type_, payload.get("subject") or "", {"ticket_id": payload.get("ticket_id")},
        source_key=f"{type_}:{payload.get('ticket_id')}")
    if activity is not None:
        scoring.recompute_score(customer)
