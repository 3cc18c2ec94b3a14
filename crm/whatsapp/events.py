"""The WhatsApp module's hooks: what it publishes, with each payload, and what it listens to
(the catalogue below; crm/events.py says how)."""

from __future__ import annotations

from crm.events import Payload, subscribe
from crm.whatsapp import services

# What services.message_payload() holds: the message, its conversation and the contact.
MESSAGE: Payload = ("message_id", "conversation_id", "profile_id", "direction", "contact_phone",
                    "contact_user_id", "contact_name", "type", "body", "customer_id")

PUBLISHES: dict[str, Payload] = {
    # a contact wrote (a reaction too: type "reaction"), kept once however often Meta delivers
    "message.received": MESSAGE,
    # an agent's message left through its channel (the send job, after the provider said yes)
    "message.sent": MESSAGE,
    # the provider said sent, delivered, read or failed
    "message.status": ("message_id", "conversation_id", "status"),
    # edited, reacted to, or its media arrived (or failed to)
    "message.updated": ("message_id", "conversation_id"),
    # deleted for everyone
    "message.deleted": ("message_id", "conversation_id"),
    # its status, read state or customer changed
    "conversation.updated": ("conversation_id",),
    # an agent opened a chat with a number from the inbox or a customer's page
    "conversation.started": ("conversation_id", "contact_phone", "customer_id", "actor_id"),
    # (re)assigned by a person (`actor_id`) or to the agent online with least to do (None)
    "conversation.assigned": ("conversation_id", "assignee_id", "previous_assignee_id",
                              "actor_id"),
    # a number was connected, disconnected or changed state
    "whatsapp.profile_changed": ("profile_id",),
}

LISTENS: dict[str, str] = {
    "customer.merged": "conversations follow the surviving customer",
    "customer.deleted": "conversations are detached from the customer",
    "user.removed": "the member's conversations go back to the unassigned queue, whether "
                    "the module is on or not (switched on again, it must not find them with "
                    "someone gone) (a job)",
    "user.role_changed": "the same, when the new role does not answer WhatsApp (a job)",
    "message.received": "live.py: the bubble joins open threads, the row moves to the top",
    "message.sent": "live.py: the bubble joins open threads, the row moves to the top",
    "message.status": "live.py: the ticks of the bubble change",
    "message.updated": "live.py: the bubble is rendered again",
    "message.deleted": "live.py: the bubble shows as deleted",
    "conversation.updated": "live.py: the row and the header are rendered again",
    "conversation.assigned": "live.py: the row moves between the lists; the assignee is told",
}


@subscribe("customer.merged")
def follow_merged_customer(payload: dict) -> None:
    services.relink_customer(payload["merged_id"], payload["survivor_id"])


@subscribe("user.removed", job=True)
@subscribe("user.role_changed", job=True)
def release_conversations_of_a_member(payload: dict) -> None:
    services.release_conversations(payload["user_id"], payload["actor_id"])


@subscribe("customer.deleted")
def detach_deleted_customer(payload: dict) -> None:
    services.relink_customer(payload["customer_id"], None)
