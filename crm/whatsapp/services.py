"""Every write of the WhatsApp module: inbound messages, the outbox, conversations. Numbers
(profiles) are in profiles.py, the jobs in jobs.py.

Inbound messages and status updates from any channel come through `receive_inbound` and
`apply_status`, idempotent by the provider's message id, so a redelivered webhook changes
nothing. Outbound messages are written `queued` (the outbox) and sent at most once by the
`send_message` job (crm/whatsapp/jobs.py says how).
"""

from __future__ import annotations

import logging
import re
from datetime import datetime, timedelta
from operator import attrgetter

from flask_babel import gettext as _
from sqlalchemy import (
    BigInteger,
    Integer,
    Text,
    bindparam,
    cast,
    delete,
    func,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.orm import selectinload
from sqlalchemy.orm.attributes import set_committed_value

from crm import events, realtime
from crm.errors import ConflictError, NotFoundError, ValidationError, file_too_large
from crm.extensions import db
from crm.foundation.models import User
from crm.foundation.services import audit, current_organization
from crm.jobs import enqueue
from crm.models import utcnow
from crm.pagination import keyset_page
from crm.permissions import role_allows, sees_only_assigned
from crm.search import search_terms
from crm.tenancy import get_in_organization
from crm.text import clean_text
from crm.validation import parse_id
from crm.versions import Expected, check_version, lock_for_edit, record_edit
from crm.whatsapp import media
from crm.whatsapp.channels import channel_for
from crm.whatsapp.channels.base import (
    ChannelError,
    DeliveryUncertainError,
    InboundMessage,
    StatusUpdate,
)
from crm.whatsapp.models import (
    CONVERSATION_STATUSES,
    STATUS_RANK,
    Conversation,
    InboxSettings,
    Message,
    WhatsAppProfile,
)

log = logging.getLogger("crm.whatsapp")
SERVICE_WINDOW = timedelta(hours=24)
PREVIEW_LENGTH = 200
QUEUE = "whatsapp"
# The jobs this module enqueues (crm/whatsapp/jobs.py, which builds on this module).
SEND_JOB = "crm.whatsapp.jobs:send_message"
MEDIA_JOB = "crm.whatsapp.jobs:download_media"
RECEIPT_JOB = "crm.whatsapp.jobs:send_read_receipt"


# -- access -------------------------------------------------------------------------------

def access_conversation(conversation_id: int, user: User) -> Conversation:
    """The conversation if `user` may see it: agents what is assigned to them, and what is
    unassigned while the organization lets agents take from the queue."""
    conversation = get_in_organization(Conversation, conversation_id)
    if conversation is None:
        raise NotFoundError(_("Not found."))
    if sees_only_assigned(user) and not agent_sees(conversation, user):
        raise NotFoundError(_("Not found."))
    return conversation


def agent_sees(conversation: Conversation, agent: User) -> bool:
    """May an agent see the conversation: theirs, or in the queue agents take from?"""
    if conversation.assigned_user_id == agent.id:
        return True
    return conversation.assigned_user_id is None and agents_take_unassigned()


def agents_take_unassigned() -> bool:
    """Does the organization let agents see the unassigned queue and take from it (the
    default)?"""
    value = db.session.scalar(select(InboxSettings.agents_take_unassigned))
    return True if value is None else value


def access_message(message_id: int, user: User) -> Message:
    message = get_in_organization(Message, message_id)
    if message is None:
        raise NotFoundError(_("Not found."))
    access_conversation(message.conversation_id, user)
    return message


# -- inbound --------------------------------------------------------------------------------

# A contact as (column, value): ("contact_phone", "+9665...") or ("contact_user_id", "US.1...").
Contact = tuple[str, str]


def contact_of(phone: str | None, user_id: str | None) -> Contact:
    """How a conversation's contact is keyed: by phone, else by WhatsApp's user id."""
    if phone:
        return "contact_phone", phone
    if user_id:
        return "contact_user_id", user_id
    raise ValidationError({"to": _("A phone number or WhatsApp user id is required.")})


def conversation_for(profile: WhatsAppProfile, phone: str | None, user_id: str | None,
                     name: str = "") -> tuple[Conversation, bool]:
    """The conversation with this contact on this number (created on first contact), and
    whether it was created now."""
    contact = contact_of(phone, user_id)
    conversations, created = conversations_for(profile, {contact: name})
    return conversations[contact], contact in created


def conversations_for(profile: WhatsAppProfile, contacts: dict[Contact, str]
                      ) -> tuple[dict[Contact, Conversation], set[Contact]]:
    """The conversations with these contacts (each with the name to give it if it is new) on
    this number, and which were created now; two statements per kind of key, however many.

    Concurrent deliveries for a new contact race to create it; the unique index decides and
    the loser reads the winner's row (the SELECT is a new statement, which sees it).
    """
    conversations: dict[Contact, Conversation] = {}
    created: set[Contact] = set()
    for column in ("contact_phone", "contact_user_id"):
        names = {value: name for (kind, value), name in contacts.items() if kind == column}
        if not names:
            continue
        new = db.session.scalars(
            insert(Conversation)
            .values([{"organization_id": profile.organization_id, "profile_id": profile.id,
                      column: value, "contact_name": (name or "")[:120]}
                     for value, name in names.items()])
            .on_conflict_do_nothing(index_elements=["organization_id", "profile_id", column],
                                    index_where=text(f"{column} IS NOT NULL"))
            .returning(getattr(Conversation, column)))
        created |= {(column, value) for value in new}
        for conversation in db.session.scalars(
                select(Conversation).where(Conversation.profile_id == profile.id,
                                           getattr(Conversation, column).in_(names))
                .execution_options(populate_existing=True)):
            contact = (column, getattr(conversation, column))
            conversations[contact] = conversation
            if contact not in created and names[contact[1]] and not conversation.contact_name:
                conversation.contact_name = names[contact[1]][:120]
    return conversations, created


def receive_inbound(profile: WhatsAppProfile, inbound: InboundMessage) -> Message | None:
    """Store a message a contact sent; None when this delivery was already stored."""
    return receive_many(profile, [inbound])[0]


def receive_many(profile: WhatsAppProfile, inbounds: list[InboundMessage]
                 ) -> list[Message | None]:
    """Store messages contacts sent to `profile`, in order: for each, the message, or None when
    it was stored before (a redelivery). A handful of statements however many there are (the
    ingest job applies deliveries in batches; the other channels one by one)."""
    if not inbounds:
        return []
    contacts: dict[Contact, str] = {}
    for inbound in inbounds:
        contact = contact_of(inbound.contact_phone, inbound.contact_user_id)
        contacts[contact] = inbound.contact_name or contacts.get(contact, "")
    conversations, created = conversations_for(profile, contacts)
    stored = _insert_inbound(profile, inbounds, conversations)
    received = []
    for inbound, message in zip(inbounds, stored, strict=True):
        if message is not None:
            conversation = conversations[contact_of(inbound.contact_phone,
                                                    inbound.contact_user_id)]
            set_committed_value(message, "conversation", conversation)
            received.append((inbound, message, conversation))
    _count_unread([message for inbound, message, _c in received if inbound.type != "reaction"])
    for inbound, message, conversation in received:
        _after_receiving(profile, inbound, message, conversation)
    for contact in created:
        if profile.auto_assign:
            auto_assign(conversations[contact])
    return stored


def _insert_inbound(profile: WhatsAppProfile, inbounds: list[InboundMessage],
                    conversations: dict[Contact, Conversation]) -> list[Message | None]:
    """Insert the messages not stored before; each inbound's new message, or None."""
    replies = _message_ids_for(profile, {inbound.reply_to_provider_id for inbound in inbounds})
    rows = {}
    for inbound in inbounds:  # the first of two copies in one batch is the one kept
        conversation = conversations[contact_of(inbound.contact_phone, inbound.contact_user_id)]
        rows.setdefault(inbound.provider_message_id, {
            "organization_id": profile.organization_id, "conversation_id": conversation.id,
            "profile_id": profile.id, "direction": "in", "type": inbound.type,
            "body": inbound.body or "", "content": inbound.content or {},
            "provider_message_id": inbound.provider_message_id, "status": "received",
            "reply_to_id": replies.get(inbound.reply_to_provider_id),
            "is_forwarded": inbound.is_forwarded, "provider_timestamp": inbound.timestamp})
    new = {message.provider_message_id: message for message in db.session.scalars(
        insert(Message).values(list(rows.values()))
        .on_conflict_do_nothing(index_elements=["organization_id", "profile_id",
                                                "provider_message_id"],
                                index_where=text("provider_message_id IS NOT NULL"))
        .returning(Message))}
    stored = [new.pop(inbound.provider_message_id, None) for inbound in inbounds]
    for inbound, message in zip(inbounds, stored, strict=True):
        if message is not None and inbound.reply_to_provider_id and not message.reply_to_id:
            # It answers a message that arrived in the same batch.
            message.reply_to_id = _message_id_for(profile, inbound.reply_to_provider_id)
    return stored


def _message_ids_for(profile: WhatsAppProfile, provider_ids: set[str | None]) -> dict[str, int]:
    provider_ids.discard(None)
    if not provider_ids:
        return {}
    return dict(db.session.execute(select(Message.provider_message_id, Message.id).where(
        Message.profile_id == profile.id, Message.provider_message_id.in_(provider_ids))).all())


def _message_id_for(profile: WhatsAppProfile, provider_message_id: str | None) -> int | None:
    return _message_ids_for(profile, {provider_message_id}).get(provider_message_id)


def _count_unread(messages: list[Message]) -> None:
    """Move each conversation's summary on to its last new message: unread counted in the
    database (concurrent batches both count), reopened if resolved; the outcome is put into the
    loaded conversations, which the live inbox then shows."""
    summaries: dict[int, tuple[Conversation, Message, int]] = {}
    for message in messages:
        conversation = message.conversation
        count = summaries[conversation.id][2] if conversation.id in summaries else 0
        summaries[conversation.id] = (conversation, message, count + 1)
    if not summaries:
        return
    now = utcnow()
    # In id order: the few ids are joined to the primary key in that order, so two batches
    # touching the same conversations lock them alike (a deadlock would only cost a retry).
    ids, previews, counts = zip(*((conversation.id, preview(message), count)
                                  for conversation, message, count in sorted(
                                      summaries.values(), key=lambda summary: summary[0].id)),
                                strict=True)
    outcome = db.session.execute(_COUNT_UNREAD, {"now": now, "ids": list(ids),
                                                 "previews": list(previews),
                                                 "counts": list(counts)})
    for conversation_id, unread, status, preview_ in outcome:
        conversation = summaries[conversation_id][0]
        for key, value in {"last_message_at": now, "last_inbound_at": now,
                           "last_message_preview": preview_, "unread_count": unread,
                           "status": status}.items():
            set_committed_value(conversation, key, value)


_COUNT_UNREAD = text("""
    UPDATE conversations AS c
    SET last_message_at = :now, last_inbound_at = :now, last_message_preview = v.preview,
        unread_count = c.unread_count + v.count,
        status = CASE WHEN c.status = 'resolved' THEN 'open' ELSE c.status END
    FROM unnest(:ids, :previews, :counts) AS v(id, preview, count)
    WHERE c.id = v.id
    RETURNING c.id, c.unread_count, c.status, c.last_message_preview""").bindparams(
    bindparam("ids", type_=ARRAY(BigInteger)), bindparam("previews", type_=ARRAY(Text)),
    bindparam("counts", type_=ARRAY(Integer)))


def _after_receiving(profile: WhatsAppProfile, inbound: InboundMessage, message: Message,
                     conversation: Conversation) -> None:
    if inbound.type == "reaction":
        _apply_reaction(profile, inbound)
    if inbound.contact_name and conversation.contact_name != inbound.contact_name[:120]:
        conversation.contact_name = inbound.contact_name[:120]
    if inbound.content.get("media_id"):
        enqueue(MEDIA_JOB, message.id, queue=QUEUE)
    events.publish("message.received", message_payload(message, conversation))


def _apply_reaction(profile: WhatsAppProfile, inbound: InboundMessage) -> None:
    """Show a reaction on the message it reacts to (an empty emoji removes it)."""
    target_id = _message_id_for(profile, inbound.content.get("message_id"))
    target = db.session.get(Message, target_id) if target_id else None
    if target is None:
        return
    reactions = target.content.get("reactions")
    # Ours alone write this key; rows stored before ingest filtered provider keys may hold
    # anything under it.
    reactions = dict(reactions) if isinstance(reactions, dict) else {}
    emoji = inbound.content.get("emoji") or ""
    if emoji:
        reactions["contact"] = emoji
    else:
        reactions.pop("contact", None)
    target.content = {**target.content, "reactions": reactions}
    events.publish("message.updated", {"message_id": target.id,
                                       "conversation_id": target.conversation_id})


def _touch(conversation: Conversation, message: Message) -> None:
    """Our message is the conversation's latest."""
    conversation.last_message_at = utcnow()
    conversation.last_message_preview = preview(message)


def preview(message: Message) -> str:
    if message.body:
        return message.body[:PREVIEW_LENGTH]
    return f"[{message.type}]"


def apply_status(profile: WhatsAppProfile, update_: StatusUpdate) -> Message | None:
    """Move a sent message's status forward (never back); settle an `unknown` one."""
    query = select(Message).where(Message.profile_id == profile.id, Message.direction == "out")
    if update_.our_message_id:
        # Our id, echoed back; the provider id must agree once we know it (another app on the
        # same number could echo numbers of its own).
        query = query.where(Message.id == update_.our_message_id,
                            (Message.provider_message_id.is_(None))
                            | (Message.provider_message_id == update_.provider_message_id))
    else:
        query = query.where(Message.provider_message_id == update_.provider_message_id)
    message = db.session.scalar(query.with_for_update())
    if message is None:
        log.info("status %s for unknown message %s ignored", update_.status,
                 update_.provider_message_id)
        return None
    if message.provider_message_id is None:
        message.provider_message_id = update_.provider_message_id
    if STATUS_RANK[update_.status] <= STATUS_RANK[message.status]:
        _stamp(message, update_)  # a late "delivered" after "read" only fills its timestamp
        return message
    message.status = update_.status
    _stamp(message, update_)
    if update_.status == "failed":
        message.error_code = update_.error_code
        message.error_message = (update_.error_message or "")[:500] or None
    events.publish("message.status", {"message_id": message.id,
                                      "conversation_id": message.conversation_id,
                                      "status": message.status})
    return message


def _stamp(message: Message, update_: StatusUpdate) -> None:
    column = {"sent": "sent_at", "delivered": "delivered_at", "read": "read_at",
              "failed": "failed_at"}[update_.status]
    if getattr(message, column) is None:
        setattr(message, column, update_.timestamp)


# -- outbound: the outbox ------------------------------------------------------------------

def window_open(conversation: Conversation, now: datetime | None = None) -> bool:
    """Inside WhatsApp's 24-hour customer service window (free-form messages allowed)?"""
    if conversation.profile.provider != "cloud":
        return True  # the window is a Business API rule; linked devices and the sandbox have none
    last = conversation.last_inbound_at
    return last is not None and (now or utcnow()) - last < SERVICE_WINDOW


def queue_outbound(conversation: Conversation, sender: User | None, *, type_: str = "text",
                   body: str = "", content: dict | None = None, reply_to: Message | None = None,
                   is_forwarded: bool = False, send_now: bool = True) -> Message:
    """Write an outbound message to the outbox; the `send_message` job sends it. `sender`
    None: Wasl sends it by itself (a campaign, a confirmation). `send_now` False: the caller
    runs `send_message` itself once this is committed (a campaign paces its sends); should
    it die first, the recovery job sends the message."""
    if type_ != "template" and not window_open(conversation):
        raise ValidationError({"text": _("The 24-hour window has closed: only an approved "
                                         "template can be sent until the customer writes.")})
    message = Message(conversation_id=conversation.id, profile_id=conversation.profile_id,
                      direction="out", type=type_, body=body, content=content or {},
                      status="queued", sender_user_id=sender.id if sender else None,
                      reply_to_id=reply_to.id if reply_to else None, is_forwarded=is_forwarded)
    db.session.add(message)
    db.session.flush()
    _touch(conversation, message)
    if send_now:
        enqueue(SEND_JOB, message.id, queue=QUEUE, job_id=send_job_id(message.id))
    return message


def queue_outbound_many(items: list[tuple[Conversation, str, str, dict]]) -> list[Message]:
    """Write many of Wasl's own outbound messages, (conversation, type, body, content) each,
    to the outbox in one INSERT, nothing enqueued: the caller sends them itself once this is
    committed, as `queue_outbound(..., send_now=False)` does for one (a campaign's batch)."""
    messages = []
    for conversation, type_, body, content in items:
        if type_ != "template" and not window_open(conversation):
            raise ValidationError({"text": _("The 24-hour window has closed: only an approved "
                                             "template can be sent until the customer "
                                             "writes.")})
        messages.append(Message(conversation=conversation, profile_id=conversation.profile_id,
                                direction="out", type=type_, body=body, content=content,
                                status="queued", reply_to=None, is_forwarded=False))
    db.session.add_all(messages)
    for message in messages:
        _touch(message.conversation, message)
    db.session.flush()
    return messages


def withdraw_unsent(message_ids: list[int]) -> None:
    """Delete outbound messages still `queued` that their sender will not send after all (a
    campaign's batch cut short): they never left, and the outbox must not send them."""
    db.session.execute(delete(Message).where(Message.id.in_(message_ids),
                                             Message.direction == "out",
                                             Message.status == "queued")
                       .execution_options(synchronize_session=False))


def send_job_id(message_id: int) -> str:
    """The RQ job id of a message's send: the recovery job sees whether it waits or runs."""
    return f"whatsapp-send-{message_id}"


def send_text(conversation: Conversation, sender: User, body: object,
              reply_to: Message | None = None) -> Message:
    if not isinstance(body, str) or not body.strip():
        raise ValidationError({"text": _("Write a message first.")})
    if len(body) > 4096:
        raise ValidationError({"text": _("Use at most %(n)d characters.", n=4096)})
    return queue_outbound(conversation, sender, body=body.strip(), reply_to=reply_to)


def retry_message(message: Message, actor: User) -> Message:
    """Send a failed message again (a person decided to; `unknown` ones are never retried)."""
    if message.direction != "out" or message.status != "failed":
        raise ConflictError(_("Only a failed message can be sent again."))
    message.status = "queued"
    message.error_code = message.error_message = message.failed_at = None
    enqueue(SEND_JOB, message.id, queue=QUEUE, job_id=send_job_id(message.id))
    log.info("message %s retried by %s", message.id, actor)
    return message


def mark_conversation_read(conversation: Conversation, actor: User) -> None:
    """Clear the unread count and send read receipts for what the contact sent."""
    if conversation.unread_count == 0:
        return
    conversation.unread_count = 0
    latest = db.session.scalar(
        select(Message.id).where(Message.conversation_id == conversation.id,
                                 Message.direction == "in", Message.read_at.is_(None))
        .order_by(Message.id.desc()).limit(1))
    db.session.execute(update(Message).where(
        Message.conversation_id == conversation.id, Message.direction == "in",
        Message.read_at.is_(None)).values(read_at=utcnow()))
    if latest is not None:
        enqueue(RECEIPT_JOB, latest, queue=QUEUE)
    events.publish("conversation.updated", {"conversation_id": conversation.id})


def message_payload(message: Message, conversation: Conversation) -> dict:
    return {"message_id": message.id, "conversation_id": conversation.id,
            "profile_id": conversation.profile_id, "direction": message.direction,
            "contact_phone": conversation.contact_phone,
            "contact_user_id": conversation.contact_user_id,
            "contact_name": conversation.contact_name, "type": message.type,
            "body": message.body, "customer_id": conversation.customer_id}


# -- conversations -------------------------------------------------------------------------

FILTERS = ("mine", "unassigned", "all")


def list_conversations(user: User, *, scope: str = "all", status: str | None = None,
                       profile_id: int | None = None, search: str = "", unread: bool = False,
                       after: tuple[datetime, int] | None = None, limit: int = 30
                       ) -> tuple[list[Conversation], tuple[datetime, int] | None]:
    """Conversations newest first, keyset-paginated on (last_message_at, id). Agents get
    theirs, or the unassigned queue when the organization lets them take from it; `unread`:
    only those not resolved with messages nobody read."""
    query = (select(Conversation).options(selectinload(Conversation.assigned_user),
                                          selectinload(Conversation.profile))
             .where(Conversation.last_message_at.is_not(None)))
    if scope == "unassigned" and (not sees_only_assigned() or agents_take_unassigned()):
        query = query.where(Conversation.assigned_user_id.is_(None))
    elif sees_only_assigned() or scope == "mine":
        query = query.where(Conversation.assigned_user_id == user.id)
    if status:
        query = query.where(Conversation.status == status)
    if profile_id:
        query = query.where(Conversation.profile_id == profile_id)
    if unread:
        query = query.where(Conversation.unread_count > 0, Conversation.status != "resolved")
    if search.strip():
        query = query.where(Conversation.id.in_(_search_ids(search.strip())))
    if after:
        query = query.where(tuple_(Conversation.last_message_at, Conversation.id) <
                            tuple_(after[0], after[1]))
    return keyset_page(
        query.order_by(Conversation.last_message_at.desc(), Conversation.id.desc()), limit,
        lambda last: (last.last_message_at, last.id))


def _search_ids(term: str):
    """Ids of conversations whose contact name, number or messages match (crm/search.py: the
    search runs in a SECURITY DEFINER function so that its trigram indexes serve it)."""
    text_pattern, digit_patterns = search_terms(term, current_organization().country)
    return select(func.wasl_matching_conversations(
        text_pattern, cast(digit_patterns, ARRAY(Text))).column_valued("id"))


def list_messages(conversation: Conversation, before_id: int | None = None, limit: int = 50
                  ) -> tuple[list[Message], int | None]:
    """A thread's messages, newest page first (returned oldest to newest for display)."""
    query = (select(Message).options(selectinload(Message.reply_to), selectinload(Message.sender))
             .where(Message.conversation_id == conversation.id, Message.type != "reaction")
             .order_by(Message.id.desc()))
    if before_id:
        query = query.where(Message.id < before_id)
    rows, before = keyset_page(query, limit, attrgetter("id"))
    return list(reversed(rows)), before


def link_customer(conversation_id: int, customer_id: int | None) -> None:
    """Attach a conversation to its CRM customer (the CRM calls this; None detaches it)."""
    conversation = get_in_organization(Conversation, conversation_id)
    if conversation is not None and conversation.customer_id != customer_id:
        conversation.customer_id = customer_id
        events.publish("conversation.updated", {"conversation_id": conversation.id})


def relink_customer(old_customer_id: int, new_customer_id: int | None) -> None:
    """Move every conversation of a merged (or, with None, deleted) customer."""
    db.session.execute(update(Conversation).where(Conversation.customer_id == old_customer_id)
                       .values(customer_id=new_customer_id)
                       .execution_options(synchronize_session=False))


def unread_total(user: User) -> int:
    """Unread messages in the conversations `user` works on (agents: assigned to them)."""
    query = select(func.coalesce(func.sum(Conversation.unread_count), 0))
    if sees_only_assigned():
        query = query.where(Conversation.assigned_user_id == user.id)
    return int(db.session.scalar(query))


def set_status(conversation: Conversation, status: object, actor: User,
               expected_version: Expected = None) -> Conversation:
    """Open, set pending or resolve a conversation; with `expected_version`, one someone
    assigned or set meanwhile is refused (StaleVersionError, crm/versions.py)."""
    if status not in CONVERSATION_STATUSES:
        raise ValidationError({"status": _("Choose one of the listed options.")})
    lock_for_edit(conversation)
    check_version(conversation, expected_version)
    if conversation.status != status:
        conversation.status = status
        record_edit(conversation, actor)
    events.publish("conversation.updated", {"conversation_id": conversation.id})
    return conversation


def assign_conversation(conversation: Conversation, assignee_id: object, actor: User,
                        expected_version: Expected = None) -> Conversation:
    """Assign, transfer (another assignee) or unassign (None) a conversation; with
    `expected_version`, one someone assigned or set meanwhile is refused (StaleVersionError,
    crm/versions.py)."""
    assignee = None
    if assignee_id not in (None, ""):
        number = parse_id(assignee_id)
        assignee = get_in_organization(User, number) if number else None
        if assignee is None or not assignee.is_active or not role_allows(
                assignee.role, "whatsapp", "write"):
            raise ValidationError({"assignee_id": _("Choose a member who answers WhatsApp.")})
    lock_for_edit(conversation)
    check_version(conversation, expected_version)
    previous = conversation.assigned_user_id
    conversation.assigned_user_id = assignee.id if assignee else None
    if previous != conversation.assigned_user_id:
        record_edit(conversation, actor)
        audit("whatsapp.conversation_assigned", actor, conversation,
              assignee_id=conversation.assigned_user_id, previous_id=previous)
        events.publish("conversation.assigned", {
            "conversation_id": conversation.id, "assignee_id": conversation.assigned_user_id,
            "previous_assignee_id": previous, "actor_id": actor.id if actor else None})
    return conversation


def release_conversations(user_id: int, actor_id: int | None) -> None:
    """Put the conversations of a member who can no longer answer them (removed, or given a
    role that does not answer WhatsApp) back in the unassigned queue, as `actor_id`
    unassigning each (its timeline, audit and live updates); nothing if they can again."""
    user = get_in_organization(User, user_id)
    if user is None or (user.is_active and role_allows(user.role, "whatsapp", "write")):
        return
    actor = get_in_organization(User, actor_id) if actor_id else None
    for conversation in db.session.scalars(select(Conversation).where(
            Conversation.assigned_user_id == user_id).order_by(Conversation.id)):
        assign_conversation(conversation, None, actor)


def auto_assign(conversation: Conversation) -> None:
    """Give a new conversation to the online agent with the fewest open conversations."""
    online = realtime.online_user_ids(conversation.organization_id)
    if not online:
        return
    load = dict(db.session.execute(
        select(User.id, func.count(Conversation.id))
        .outerjoin(Conversation, (Conversation.assigned_user_id == User.id)
                   & (Conversation.status != "resolved"))
        .where(User.id.in_(online), User.is_active, User.role == "agent")
        .group_by(User.id)).all())
    if load:
        chosen = min(load, key=lambda user_id: (load[user_id], user_id))
        conversation.assigned_user_id = chosen
        events.publish("conversation.assigned", {
            "conversation_id": conversation.id, "assignee_id": chosen,
            "previous_assignee_id": None, "actor_id": None})


# -- sending more than text -----------------------------------------------------------------

def send_media(conversation: Conversation, sender: User, upload, caption: object = "",
               reply_to: Message | None = None) -> Message:
    """Send an uploaded file (image, video, audio, document) within WhatsApp's limits."""
    if upload is None or not getattr(upload, "filename", ""):
        raise ValidationError({"file": _("Choose a file to send.")})
    mime_type = (upload.mimetype or "").split(";")[0].strip()
    kind = media.kind_of(mime_type)
    if kind is None:
        raise ValidationError({"file": _("This type of file cannot be sent on WhatsApp.")})
    data = upload.read(media.MAX_UPLOAD_BYTES + 1)
    limit = media.ALLOWED_UPLOADS[kind][1]
    if len(data) > limit:
        raise file_too_large(limit)
    if not data:
        raise ValidationError({"file": _("The file is empty.")})
    text_ = caption.strip()[:1024] if isinstance(caption, str) else ""
    message = queue_outbound(conversation, sender, type_=kind, body=text_, reply_to=reply_to,
                             content={"mime_type": mime_type,
                                      # as werkzeug does with bytes that are not UTF-8
                                      "filename": clean_text(upload.filename)[:200],
                                      "size": len(data)})
    message.content = {**message.content, "path": media.store(message, data, mime_type)}
    return message


def send_template(conversation: Conversation, sender: User, name: object, language: object,
                  parameters: object = (), body: str | None = None) -> Message:
    """Send an approved template (the only kind allowed outside the 24-hour window); the
    thread shows `body`, its text as filled in, when the caller knows it (else its name)."""
    fields = {}
    if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9_]{1,512}", name):
        fields["template_name"] = _("Enter the template's name as approved by WhatsApp.")
    if not isinstance(language, str) or not re.fullmatch(r"[a-z]{2,3}(_[A-Z]{2})?", language):
        fields["template_language"] = _("Enter a language code such as ar or en_US.")
    if not isinstance(parameters, list | tuple) or not all(
            isinstance(p, str) and len(p) <= 1024 for p in parameters):
        fields["template_parameters"] = _("Parameters must be a list of texts.")
    if fields:
        raise ValidationError(fields)
    return queue_outbound(conversation, sender, type_="template", body=body or name,
                          content={"template": {"name": name, "language": language,
                                                "parameters": list(parameters)}})


def forward_message(message: Message, target: Conversation, actor: User) -> Message:
    if message.deleted_at or message.type in ("reaction", "unsupported"):
        raise ValidationError({"message_id": _("This message cannot be forwarded.")})
    content = {k: v for k, v in message.content.items() if k not in ("reactions", "media_id")}
    return queue_outbound(target, actor, type_=message.type, body=message.body,
                          content=content, is_forwarded=True)


EDIT_WINDOW = timedelta(minutes=15)


def edit_message(message: Message, new_text: object, actor: User) -> Message:
    """Change a sent text message, where the channel allows it and within WhatsApp's window."""
    _check_changeable(message, "supports_edit")
    if message.type != "text":
        raise ValidationError({"text": _("Only text messages can be edited.")})
    if utcnow() - message.created_at > EDIT_WINDOW:
        raise ValidationError({"text": _("Messages can be edited for 15 minutes after sending.")})
    if not isinstance(new_text, str) or not new_text.strip():
        raise ValidationError({"text": _("Write a message first.")})
    if len(new_text) > 4096:
        raise ValidationError({"text": _("Use at most %(n)d characters.", n=4096)})
    _call_channel(message, lambda channel: channel.edit(message, new_text.strip()))
    message.body = new_text.strip()
    message.edited_at = utcnow()
    events.publish("message.updated", {"message_id": message.id,
                                       "conversation_id": message.conversation_id})
    return message


def delete_message(message: Message, actor: User) -> Message:
    """Delete a sent message for everyone, where the channel allows it."""
    _check_changeable(message, "supports_revoke")
    _call_channel(message, lambda channel: channel.revoke(message))
    message.deleted_at = utcnow()
    events.publish("message.deleted", {"message_id": message.id,
                                       "conversation_id": message.conversation_id})
    return message


class UnsupportedActionError(ValidationError):
    """The channel has no such call (the Cloud API cannot edit or delete): 422."""


def _check_changeable(message: Message, capability: str) -> None:
    profile = message.conversation.profile
    if not getattr(channel_for(profile), capability):
        raise UnsupportedActionError(
            {"message_id": _("This WhatsApp connection cannot edit or delete messages.")})
    if message.direction != "out" or message.deleted_at or not message.provider_message_id:
        raise ValidationError({"message_id": _("Only your sent messages can be changed.")})


def _call_channel(message: Message, call) -> None:
    try:
        call(channel_for(message.conversation.profile))
    except ChannelError as exc:
        raise ConflictError(_("WhatsApp refused the change: %(reason)s", reason=exc.message)
                            ) from None
    except DeliveryUncertainError:
        raise ConflictError(_("WhatsApp could not be reached. Please try again.")) from None
