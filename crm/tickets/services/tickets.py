"""Tickets: creating, editing and assigning them, comments and attachments, the lists, and what
the SLA timer does when a moment comes due.

Each function validates, writes, records who did it (the timeline and the audit log) and
publishes what happened; none commits. Decisions the design left open, made here:

- Agents reach only tickets assigned to them (404 otherwise, as for another organization's);
  a ticket an agent opens is theirs unless they name someone else.
- "mine" and "unassigned" list unsolved tickets (open, pending, on hold) unless a status is
  asked for; "breaching" lists tickets past a warning and not breached, soonest due first;
  "breached" those with a clock breached that has not stopped.
- A closed ticket is final: no edit, no comment; a customer who writes again gets a new
  suggestion. A solved one reopens when the customer writes (crm/tickets/events.py).
- A public reply on a ticket of a WhatsApp conversation is sent through the WhatsApp outbox,
  with its rules: outside the 24-hour window it is refused, with WhatsApp's reason, and
  nothing is written. Attachments stay on the ticket; they are not sent on WhatsApp.
- Round-robin (a setting) gives a team's new unassigned tickets to its members in turn —
  active members who work tickets, those online first when any is.
- What the system does by itself (SLA warnings, escalations, reopening, auto-close) is on the
  timeline with no actor and leaves the version alone: only people's edits make another
  person's copy stale.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath

from flask_babel import gettext as _
from flask_babel import lazy_gettext
from sqlalchemy import func, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import selectinload

from crm import events, realtime, storage
from crm.customers.services import resolve_customer
from crm.errors import ConflictError, NotFoundError, ValidationError, file_too_large
from crm.extensions import db
from crm.foundation import notifications
from crm.foundation.models import Team, TeamMember, User
from crm.foundation.services import audit, enabled_modules
from crm.foundation.teams import manager_ids
from crm.jobs import REDIS_DOWN
from crm.models import utcnow
from crm.pagination import decode_cursor, encode_cursor, keyset_page
from crm.permissions import MATRIX, role_allows, sees_only_assigned
from crm.search import fold_text, like_pattern
from crm.tenancy import current_organization_id, get_in_organization
from crm.text import clean_text
from crm.tickets import jobs, sla
from crm.tickets.models import (
    CLOCKS,
    PRIORITIES,
    SOURCES,
    STATUSES,
    UNSOLVED_STATUSES,
    EscalationRule,
    Ticket,
    TicketAttachment,
    TicketComment,
    TicketEvent,
    TicketSettings,
    TicketType,
)
from crm.tickets.services.common import (
    SUBJECT_LENGTH,
    TEXT_LENGTH,
    check_bool,
    check_choice,
    check_id,
    check_tags,
    check_text,
    check_worker,
    collect,
    not_found,
    record,
    subject_from,
    ticket_link,
    ticket_payload,
)
from crm.tickets.services.settings import default_type, ensure_defaults, load_context
from crm.tickets.services.suggestions import clear_suggestion
from crm.versions import Expected, check_version, lock_for_edit, record_edit
from crm.whatsapp.models import Conversation, Message
from crm.whatsapp.services import access_conversation, send_text

MAX_ATTACHMENT_BYTES = 10 * 1024 * 1024
MAX_ATTACHMENTS = 10
ATTACHMENT_TYPES = frozenset({
    "image/jpeg", "image/png", "image/webp", "image/gif", "application/pdf", "text/plain",
    "text/csv", "application/zip", "application/msword",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/vnd.ms-excel",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "application/vnd.ms-powerpoint",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation"})
MAX_BULK = 500
VIEWS = ("all", "mine", "unassigned", "breaching", "breached")
# The fields people edit with update_ticket (assigning has its own function).
EDITABLE = ("subject", "description", "type_id", "priority", "status", "tags", "team_id",
            "customer_id")
WORKER_ROLES = tuple(role for role in MATRIX if role_allows(role, "ticketing", "write"))
CLOCK_LABELS = {"first_response": lazy_gettext("first response"),
                "next_response": lazy_gettext("next response"),
                "resolution": lazy_gettext("resolution")}

notifications.register("ticket_assigned", notifications.Kind(
    lazy_gettext("Ticket #%(number)s is yours"),
    lazy_gettext("%(subject)s was assigned to you."), module="ticketing"))
notifications.register("ticket_sla_warning", notifications.Kind(
    lazy_gettext("SLA warning: ticket #%(number)s"),
    lazy_gettext("%(subject)s is close to its %(clock)s target."),
    email_template="ticket_sla_warning", labels={"clock": CLOCK_LABELS},
    module="ticketing"))
notifications.register("ticket_sla_breached", notifications.Kind(
    lazy_gettext("SLA breached: ticket #%(number)s"),
    lazy_gettext("%(subject)s missed its %(clock)s target."),
    email_template="ticket_sla_breached", labels={"clock": CLOCK_LABELS},
    module="ticketing"))
notifications.register("ticket_escalated", notifications.Kind(
    lazy_gettext("Ticket #%(number)s escalated"),
    lazy_gettext("%(subject)s was escalated after missing its %(clock)s target."),
    labels={"clock": CLOCK_LABELS},
    module="ticketing"))


# -- access -------------------------------------------------------------------------------

def access_ticket(ticket_id: int, user: User) -> Ticket:
    """The ticket if `user` may see it: agents only those assigned to them; else 404."""
    ticket = get_in_organization(Ticket, ticket_id)
    if ticket is None:
        raise not_found()
    if sees_only_assigned(user) and ticket.assignee_id != user.id:
        raise not_found()
    return ticket


def access_attachment(attachment_id: int, user: User) -> TicketAttachment:
    """An attachment of a ticket `user` may see; else 404."""
    attachment = get_in_organization(TicketAttachment, attachment_id)
    if attachment is None:
        raise not_found()
    access_ticket(attachment.ticket_id, user)
    return attachment


def attachment_path(attachment: TicketAttachment) -> Path | None:
    """The stored file, if its path leads inside its organization's folder."""
    return storage.path_of(attachment.organization_id, attachment.path)


# -- creating -----------------------------------------------------------------------------

def create_ticket(actor: User, data: Mapping, source: str = "manual") -> Ticket:
    """Open a ticket: subject, description, type_id, priority, customer_id, conversation_id,
    assignee_id, team_id, tags. From a conversation (the inbox), the subject and description
    default to the customer's last message and the customer to the conversation's."""
    settings = ensure_defaults()
    values = collect({
        "conversation": lambda: _conversation(data.get("conversation_id"), actor),
        "subject": lambda: check_text(data.get("subject"), "subject", SUBJECT_LENGTH,
                                      required=not data.get("conversation_id")),
        "description": lambda: check_text(data.get("description"), "description",
                                          TEXT_LENGTH, single_line=False),
        "priority": lambda: check_choice(data.get("priority") or "normal", "priority",
                                         PRIORITIES),
        "type": lambda: _type(data.get("type_id")),
        "customer_id": lambda: _customer(data.get("customer_id")),
        "assignee": lambda: check_worker(data.get("assignee_id")),
        "team_id": lambda: _team(data.get("team_id")),
        "tags": lambda: check_tags(data.get("tags")),
        "source": lambda: check_choice(source, "source", SOURCES),
    })
    conversation = values["conversation"]
    if conversation is not None:
        subject, description = _from_conversation(conversation)
        values["subject"] = values["subject"] or subject
        values["description"] = values["description"] or description
        values["customer_id"] = values["customer_id"] or conversation.customer_id
    assignee = values["assignee"] or (actor if sees_only_assigned(actor) else None)
    now = utcnow()
    ticket = Ticket(
        number=_next_number(), subject=values["subject"], description=values["description"],
        type_id=values["type"].id if values["type"] else None, priority=values["priority"],
        status="open", customer_id=values["customer_id"],
        conversation_id=conversation.id if conversation else None,
        assignee_id=assignee.id if assignee else None, team_id=values["team_id"],
        tags=values["tags"], source=values["source"], created_by_id=actor.id if actor else None,
        created_at=now, sla_paused_seconds=0, next_response_pause_base=0,
        escalated_rule_ids=[])
    if ticket.assignee_id is None and ticket.team_id is not None and settings.round_robin:
        ticket.assignee_id = _round_robin(ticket.team_id)
    db.session.add(ticket)
    db.session.flush()
    sla.start(ticket, load_context(), now)
    jobs.watch(ticket.next_deadline_at)
    record(ticket, "created", actor, source=ticket.source)
    audit("ticket.created", actor, ticket, number=ticket.number, subject=ticket.subject)
    if conversation is not None:
        clear_suggestion(conversation.id)
    events.publish("ticket.opened", ticket_payload(ticket))
    if ticket.assignee_id is not None:
        _notify_assigned(ticket, actor)
    return ticket


def _next_number() -> int:
    """The organization's next ticket number; the counter row stays locked until commit."""
    return db.session.execute(
        update(TicketSettings).values(last_number=TicketSettings.last_number + 1)
        .returning(TicketSettings.last_number)).scalar_one()


def _conversation(raw: object, actor: User):
    """The conversation a ticket is about, if WhatsApp is on and `actor` may see it."""
    conversation_id = check_id(raw, "conversation_id")
    if conversation_id is None:
        return None

    if "whatsapp" not in enabled_modules():
        raise ValidationError({"conversation_id": _("Choose a conversation.")})
    try:
        return access_conversation(conversation_id, actor)
    except NotFoundError:
        raise ValidationError({"conversation_id": _("Choose a conversation.")}) from None


def _from_conversation(conversation) -> tuple[str, str]:
    """A subject and description from the customer's last text message (the subject its
    first line), else from the conversation's contact."""
    body = db.session.scalar(
        select(Message.body).where(Message.conversation_id == conversation.id,
                                   Message.direction == "in", Message.body != "")
        .order_by(Message.id.desc()).limit(1)) or ""
    subject, description = subject_from(body)
    if subject:
        return subject, description
    contact = conversation.contact_name or conversation.contact_phone or ""
    return _("WhatsApp conversation with %(contact)s", contact=contact)[:SUBJECT_LENGTH], ""


def _type(raw: object) -> TicketType | None:
    type_id = check_id(raw, "type_id")
    if type_id is None:
        return default_type()
    ticket_type = get_in_organization(TicketType, type_id)
    if ticket_type is None:
        raise ValidationError({"type_id": _("Choose a ticket type.")})
    return ticket_type


def _customer(raw: object) -> int | None:
    """A customer of the organization (a merged one's survivor); reads, never writes, the
    CRM's tables."""
    customer_id = check_id(raw, "customer_id")
    if customer_id is None:
        return None

    customer = resolve_customer(customer_id)
    if customer is None:
        raise ValidationError({"customer_id": _(
            "This customer does not exist. Choose one from the list.")})
    return customer.id


def _team(raw: object) -> int | None:
    team_id = check_id(raw, "team_id")
    if team_id is not None and get_in_organization(Team, team_id) is None:
        raise ValidationError({"team_id": _("Choose a team.")})
    return team_id


# -- editing ------------------------------------------------------------------------------

def update_ticket(actor: User, ticket: Ticket, data: Mapping,
                  expected_version: Expected = None) -> Ticket:
    """Change the fields `data` names (subject, description, type_id, priority, status, tags,
    team_id, customer_id); with `expected_version`, a ticket someone edited meanwhile is
    refused (StaleVersionError). Status moves the SLA clocks: pending and on hold pause
    them, open resumes them, solved stops them until the ticket closes or reopens."""
    checks = {
        "subject": lambda: check_text(data["subject"], "subject", SUBJECT_LENGTH,
                                      required=True),
        "description": lambda: check_text(data["description"], "description", TEXT_LENGTH,
                                          single_line=False),
        "type_id": lambda: _type_id(data["type_id"]),
        "priority": lambda: check_choice(data["priority"], "priority", PRIORITIES),
        "status": lambda: check_choice(data["status"], "status", STATUSES),
        "tags": lambda: check_tags(data["tags"]),
        "team_id": lambda: _team(data["team_id"]),
        "customer_id": lambda: _customer(data["customer_id"]),
    }
    values = collect({name: check for name, check in checks.items() if name in data})
    lock_for_edit(ticket)
    check_version(ticket, expected_version)
    _refuse_closed(ticket)
    changes = {name: [getattr(ticket, name), value] for name, value in values.items()
               if getattr(ticket, name) != value}
    if not changes:
        return ticket
    ctx, now = load_context(), utcnow()
    for name, (_old, new) in changes.items():
        if name != "status":
            setattr(ticket, name, new)
    if "status" in changes:
        _set_status(ticket, changes["status"][1], ctx, now)
    elif changes.keys() & {"priority", "type_id"}:
        sla.recompute(ticket, ctx, now)
    if "team_id" in changes and ticket.assignee_id is None and ticket.team_id is not None:
        _route_to_team(ticket, None)
    record_edit(ticket, actor)
    _announce_changes(ticket, actor, changes)
    audit("ticket.updated", actor, ticket, changes=list(changes))
    return ticket


def _type_id(raw: object) -> int | None:
    type_id = check_id(raw, "type_id")
    if type_id is not None and get_in_organization(TicketType, type_id) is None:
        raise ValidationError({"type_id": _("Choose a ticket type.")})
    return type_id


def _refuse_closed(ticket: Ticket) -> None:
    if ticket.status == "closed":
        raise ConflictError(_("This ticket is closed. Open a new one instead."))


def _set_status(ticket: Ticket, status: str, ctx: sla.SlaContext, now: datetime) -> None:
    """Move the ticket to `status`, and its clocks with it."""
    ticket.status = status
    if status in UNSOLVED_STATUSES:
        ticket.solved_at = None
    if status == "solved":
        ticket.solved_at = now
        sla.pause(ticket, ctx, now)
    elif status == "closed":
        ticket.closed_at = now
        sla.refresh(ticket, ctx, now)
    elif status == "open":
        sla.resume(ticket, ctx, now)
    else:
        sla.pause(ticket, ctx, now)
    jobs.watch(ticket.next_deadline_at)


def _announce_changes(ticket: Ticket, actor: User | None, changes: dict) -> None:
    """The timeline entry and the events of a change (`changes`: field → [old, new])."""
    record(ticket, "updated", actor, changes=changes)
    payload = {**ticket_payload(ticket), "changes": sorted(changes)}
    events.publish("ticket.updated", payload)
    if "status" in changes and ticket.status == "solved":
        events.publish("ticket.solved", payload)
    elif "status" in changes and ticket.status == "closed":
        events.publish("ticket.closed", payload)


# -- assigning -----------------------------------------------------------------------------

def assign_ticket(actor: User, ticket: Ticket, assignee_id: object,
                  expected_version: Expected = None) -> Ticket:
    """Assign the ticket to someone who works tickets, or unassign it (None)."""
    assignee = check_worker(assignee_id)
    lock_for_edit(ticket)
    check_version(ticket, expected_version)
    _refuse_closed(ticket)
    if _assign(ticket, assignee.id if assignee else None, actor):
        record_edit(ticket, actor)
    return ticket


def release_tickets(user_id: int, actor_id: int | None) -> None:
    """Unassign the tickets that are not closed (a solved one reopens when the customer
    writes) of a member who can no longer work them (removed, or given a role that does not),
    as `actor_id`; closed ones keep their name. Nothing if they can again."""
    user = get_in_organization(User, user_id)
    if user is None or (user.is_active and user.role in WORKER_ROLES):
        return
    actor = get_in_organization(User, actor_id) if actor_id else None
    for ticket in db.session.scalars(select(Ticket).where(
            Ticket.assignee_id == user_id, Ticket.status != "closed").order_by(Ticket.id)
            .with_for_update()):
        if _assign(ticket, None, actor):
            record_edit(ticket, actor)


def _assign(ticket: Ticket, assignee_id: int | None, actor: User | None) -> bool:
    """Give the ticket to `assignee_id`: timeline, audit, events, and the new assignee told.
    Whether anything changed."""
    previous = ticket.assignee_id
    if previous == assignee_id:
        return False
    ticket.assignee_id = assignee_id
    record(ticket, "assigned", actor, assignee_id=assignee_id, previous_id=previous)
    audit("ticket.assigned", actor, ticket, assignee_id=assignee_id, previous_id=previous)
    events.publish("ticket.assigned", {**ticket_payload(ticket), "previous_assignee_id": previous,
                                       "actor_id": actor.id if actor else None})
    if assignee_id is not None:
        _notify_assigned(ticket, actor)
    return True


def _notify_assigned(ticket: Ticket, actor: User | None) -> None:
    if actor is None or ticket.assignee_id != actor.id:
        notifications.notify([ticket.assignee_id], "ticket_assigned", _params(ticket),
                             ticket_link(ticket))


def _route_to_team(ticket: Ticket, actor: User | None) -> None:
    """An unassigned ticket of a team goes round the team when the setting says so."""
    if ensure_defaults().round_robin:
        _assign(ticket, _round_robin(ticket.team_id), actor)


def _round_robin(team_id: int) -> int | None:
    """The team's next member in turn (the team row locked, so two tickets created at once
    go to two people)."""
    team = db.session.scalar(select(Team).where(Team.id == team_id).with_for_update())
    candidates = list(db.session.scalars(
        select(User.id).join(TeamMember, TeamMember.user_id == User.id)
        .where(TeamMember.team_id == team_id, User.is_active, User.role.in_(WORKER_ROLES))
        .order_by(User.id)))
    try:
        online = sorted(realtime.online_user_ids(current_organization_id()) & set(candidates))
    except REDIS_DOWN:  # who is online is not known for a moment: anyone of the team will do
        online = []
    pool = online or candidates
    if not pool:
        return None
    last = team.last_assigned_user_id
    chosen = next((user_id for user_id in pool if last is None or user_id > last), pool[0])
    team.last_assigned_user_id = chosen
    return chosen


def bulk_assign(actor: User, ticket_ids: object, assignee_id: object) -> list[Ticket]:
    """Assign many tickets at once (those of them `actor` may see and that are not closed)."""
    assignee = check_worker(assignee_id)
    changed = []
    for ticket in _bulk(actor, ticket_ids):
        if _assign(ticket, assignee.id if assignee else None, actor):
            record_edit(ticket, actor)
            changed.append(ticket)
    return changed


def bulk_set_status(actor: User, ticket_ids: object, status: object) -> list[Ticket]:
    """Set the status of many tickets at once (close them, say); those changed."""
    status = check_choice(status, "status", STATUSES)
    ctx, now, changed = load_context(), utcnow(), []
    for ticket in _bulk(actor, ticket_ids):
        if ticket.status == status:
            continue
        changes = {"status": [ticket.status, status]}
        _set_status(ticket, status, ctx, now)
        record_edit(ticket, actor)
        _announce_changes(ticket, actor, changes)
        audit("ticket.updated", actor, ticket, changes=["status"])
        changed.append(ticket)
    return changed


def _bulk(actor: User, raw: object) -> list[Ticket]:
    if (not isinstance(raw, list | tuple) or len(raw) > MAX_BULK
            or not all(check_id(item, "ticket_ids") for item in raw)):
        raise ValidationError({"ticket_ids": _("Choose at most %(n)d tickets.", n=MAX_BULK)})
    query = (select(Ticket).where(Ticket.id.in_([int(item) for item in raw]),
                                  Ticket.status != "closed")
             .order_by(Ticket.id).with_for_update())
    if sees_only_assigned(actor):
        query = query.where(Ticket.assignee_id == actor.id)
    return list(db.session.scalars(query))


# -- comments and attachments -----------------------------------------------------------------

def add_comment(actor: User, ticket: Ticket, body: object, public: object,
                uploads: Iterable = ()) -> TicketComment:
    """A public reply (the customer's; on WhatsApp when the ticket has a conversation) or an
    internal note, with attachments. The first public reply stops the first-response clock,
    a later one the next-response clock."""
    uploads = list(uploads)
    values = collect({
        "public": lambda: check_bool(public, "public"),
        "body": lambda: check_text(body, "body", TEXT_LENGTH, single_line=False),
        "files": lambda: _read_uploads(uploads),
    })
    if not values["body"] and not values["files"]:
        raise ValidationError({"body": _("Write a reply or attach a file.")})
    _refuse_closed(ticket)
    message = None
    if values["public"] and values["body"]:
        message = _send_on_whatsapp(ticket, actor, values["body"])
    comment = TicketComment(ticket_id=ticket.id, author_id=actor.id, is_public=values["public"],
                            body=values["body"], message_id=message.id if message else None)
    db.session.add(comment)
    db.session.flush()
    for filename, mime_type, data in values["files"]:
        _store_attachment(ticket, comment, actor, filename, mime_type, data)
    if values["public"]:
        sla.responded(ticket, load_context(), utcnow())
        jobs.watch(ticket.next_deadline_at)
    record(ticket, "reply" if values["public"] else "note", actor, comment_id=comment.id)
    audit("ticket.replied" if values["public"] else "ticket.noted", actor, ticket,
          comment_id=comment.id, attachments=len(values["files"]))
    events.publish("ticket.comment_added", {**ticket_payload(ticket), "comment_id": comment.id,
                                            "public": comment.is_public})
    return comment


def _send_on_whatsapp(ticket: Ticket, actor: User, body: str):
    """Queue the reply in the WhatsApp outbox when the ticket has a conversation and WhatsApp
    is on; its refusal (the 24-hour window, its length) is the reply's."""
    if ticket.conversation_id is None or "whatsapp" not in enabled_modules():
        return None

    conversation = get_in_organization(Conversation, ticket.conversation_id)
    if conversation is None:
        return None
    try:
        return send_text(conversation, actor, body)
    except ValidationError as exc:
        raise ValidationError({"body": exc.fields.get("text", exc.message)}) from None


def _read_uploads(uploads: list) -> list[tuple[str, str, bytes]]:
    if len(uploads) > MAX_ATTACHMENTS:
        raise ValidationError({"file": _("Attach at most %(n)d files.", n=MAX_ATTACHMENTS)})
    return [_read_upload(upload) for upload in uploads]


def _read_upload(upload) -> tuple[str, str, bytes]:
    """(name, type, bytes) of an uploaded file of an allowed type and size."""
    if upload is None or not getattr(upload, "filename", ""):
        raise ValidationError({"file": _("Choose a file to attach.")})
    mime_type = (upload.mimetype or "").split(";")[0].strip().lower()
    if mime_type not in ATTACHMENT_TYPES:
        raise ValidationError({"file": _("This type of file cannot be attached.")})
    data = upload.read(MAX_ATTACHMENT_BYTES + 1)
    if len(data) > MAX_ATTACHMENT_BYTES:
        raise file_too_large(MAX_ATTACHMENT_BYTES)
    if not data:
        raise ValidationError({"file": _("The file is empty.")})
    # The name as shown, never a path: only its last part, bytes that are not UTF-8 replaced.
    name = os.path.basename(clean_text(upload.filename).replace("\\", "/"))[:200] or "file"
    return name, mime_type, data


def _store_attachment(ticket: Ticket, comment: TicketComment | None, actor: User,
                      filename: str, mime_type: str, data: bytes) -> TicketAttachment:
    attachment = TicketAttachment(ticket_id=ticket.id, comment_id=comment.id if comment else None,
                                  filename=filename, mime_type=mime_type, size=len(data),
                                  uploaded_by_id=actor.id)
    db.session.add(attachment)
    db.session.flush()
    month = attachment.created_at.strftime("%Y-%m")
    attachment.path = storage.store(
        ticket.organization_id,
        PurePosixPath("tickets") / month / f"{attachment.id}{storage.extension_for(mime_type)}",
        data)
    return attachment


def list_comments(ticket: Ticket, after_id: int | None = None, limit: int = 100
                  ) -> list[TicketComment]:
    """The ticket's comments, oldest first, with their attachments and authors."""
    query = (select(TicketComment).options(selectinload(TicketComment.attachments),
                                           selectinload(TicketComment.author))
             .where(TicketComment.ticket_id == ticket.id).order_by(TicketComment.id).limit(limit))
    if after_id:
        query = query.where(TicketComment.id > after_id)
    return list(db.session.scalars(query))


def list_timeline(ticket: Ticket, before_id: int | None = None, limit: int = 50
                  ) -> tuple[list[TicketEvent], int | None]:
    """What happened on the ticket, newest first, keyset-paginated by id."""
    query = (select(TicketEvent).options(selectinload(TicketEvent.actor))
             .where(TicketEvent.ticket_id == ticket.id).order_by(TicketEvent.id.desc()))
    if before_id:
        query = query.where(TicketEvent.id < before_id)
    return keyset_page(query, limit, lambda event: event.id)


def sla_summary(ticket: Ticket) -> dict:
    """The ticket's clocks as the API and the badges show them."""
    return {"first_response_due_at": ticket.first_response_due_at,
            "next_response_due_at": ticket.next_response_due_at
            if ticket.next_response_started_at else None,
            "resolution_due_at": ticket.resolution_due_at,
            "breached": [clock for clock in CLOCKS if getattr(ticket, f"{clock}_breached_at")],
            "paused": ticket.is_paused and ticket.status not in ("solved", "closed"),
            "status": ticket.sla_status}


# -- lists ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class TicketFilters:
    view: str = "all"
    status: str | None = None
    priority: str | None = None
    type_id: int | None = None
    tag: str | None = None
    customer_id: int | None = None
    assignee_id: int | None = None
    team_id: int | None = None
    conversation_id: int | None = None
    search: str = ""


def parse_filters(params: Mapping, *, strict: bool = False) -> TicketFilters:
    """Filters from a query string or JSON; with `strict` (the API) a bad value is a 422,
    else it is ignored (a page keeps showing what it can)."""
    checks = {
        "view": lambda: check_choice(params.get("view") or "all", "view", VIEWS),
        "status": lambda: params.get("status") and check_choice(params["status"], "status",
                                                                STATUSES),
        "priority": lambda: params.get("priority") and check_choice(params["priority"],
                                                                    "priority", PRIORITIES),
        "tag": lambda: check_text(params.get("tag"), "tag", 40) or None,
        "search": lambda: check_text(params.get("search"), "search", 100),
        **{name: (lambda name=name: check_id(params.get(name), name))
           for name in ("type_id", "customer_id", "assignee_id", "team_id", "conversation_id")},
    }
    if strict:
        values = collect(checks)
    else:
        values = {}
        for name, check in checks.items():
            with suppress(ValidationError):
                values[name] = check()
    return TicketFilters(**{name: value for name, value in values.items()
                            if value not in (None, "")})


def list_tickets(user: User, filters: TicketFilters, after: str | None = None, limit: int = 50,
                 *, related: bool = False) -> tuple[list[Ticket], str | None]:
    """A page of tickets `user` may see, newest first ("breaching": soonest due first), and
    the next page's cursor. Each filter has an index that leads with the organization.

    `related` loads each one's assignee, type and team with it, for pages that show them;
    the API answers their ids only, and each was a round trip (a quarter of its time).
    """
    query = select(Ticket)
    if related:
        query = query.options(selectinload(Ticket.assignee), selectinload(Ticket.type),
                              selectinload(Ticket.team))
    if sees_only_assigned(user):
        query = query.where(Ticket.assignee_id == user.id)
    query = _view(query, filters, user)
    for name in ("status", "priority", "type_id", "customer_id", "assignee_id", "team_id",
                 "conversation_id"):
        if getattr(filters, name) is not None:
            query = query.where(getattr(Ticket, name) == getattr(filters, name))
    if filters.tag:
        query = query.where(Ticket.tags.contains([filters.tag]))
    if filters.search.strip():
        query = query.where(Ticket.id.in_(_search_ids(filters.search.strip())))
    if filters.view == "breaching":
        key = decode_cursor(after, "due", (datetime, int))
        if key:
            query = query.where(tuple_(Ticket.sla_due_at, Ticket.id) > tuple_(*key))
        rows, last = keyset_page(query.order_by(Ticket.sla_due_at, Ticket.id), limit,
                                 lambda t: (t.sla_due_at, t.id))
        return rows, encode_cursor("due", last)
    key = decode_cursor(after, "id", (int,))
    if key:
        query = query.where(Ticket.id < key[0])
    rows, last = keyset_page(query.order_by(Ticket.id.desc()), limit, lambda t: (t.id,))
    return rows, encode_cursor("id", last)


def open_tickets_of_customer(user: User, customer_id: int, other_than_conversation: int,
                             limit: int) -> list[Ticket]:
    """The customer's unsolved tickets `user` may see that are not of this conversation (the
    inbox's panel lists those of the conversation already), newest first."""
    query = (select(Ticket).where(Ticket.customer_id == customer_id,
                                  Ticket.status.in_(UNSOLVED_STATUSES),
                                  Ticket.conversation_id.is_distinct_from(
                                      other_than_conversation))
             .order_by(Ticket.id.desc()).limit(limit))
    if sees_only_assigned(user):
        query = query.where(Ticket.assignee_id == user.id)
    return list(db.session.scalars(query))


def tickets_among(user: User, ticket_ids: Iterable[int]) -> list[Ticket]:
    """The tickets of these ids that `user` may see (a list's rows asking for their badges
    again); the others are left out, as a list would leave them."""
    query = select(Ticket).where(Ticket.id.in_(list(ticket_ids))).order_by(Ticket.id)
    if sees_only_assigned(user):
        query = query.where(Ticket.assignee_id == user.id)
    return list(db.session.scalars(query))


def _view(query, filters: TicketFilters, user: User):
    unsolved = filters.status is None
    if filters.view == "mine":
        query = query.where(Ticket.assignee_id == user.id)
    elif filters.view == "unassigned":
        query = query.where(Ticket.assignee_id.is_(None))
    elif filters.view == "breaching":
        return query.where(Ticket.sla_status == "warning")
    elif filters.view == "breached":
        return query.where(Ticket.sla_status == "breached")
    else:
        return query
    return query.where(Ticket.status.in_(UNSOLVED_STATUSES)) if unsolved else query


def _search_ids(term: str):
    """Ids of tickets whose subject or customer's name matches (Arabic letter variants
    folded), or whose number it is (#12, ١٢): a SECURITY DEFINER function, so that the
    trigram indexes serve it under RLS (crm/search.py)."""
    folded = fold_text(term)
    digits = folded.lstrip("#").strip()
    number = int(digits) if digits.isascii() and digits.isdigit() and len(digits) < 10 else None
    return select(func.wasl_matching_tickets(like_pattern(folded), number).column_valued())


# -- what comes from elsewhere ----------------------------------------------------------------

def customer_wrote(conversation_id: int, message_id: int, body: str) -> list[Ticket]:
    """A customer's message in a conversation with tickets: it goes on the timeline of each
    that is not closed (once, however often the event comes), reopens a solved one, brings a
    pending one back to open, and starts the next-response clock. The tickets it went to."""
    tickets = list(db.session.scalars(
        select(Ticket).where(Ticket.conversation_id == conversation_id,
                             Ticket.status != "closed").order_by(Ticket.id).with_for_update()))
    ctx, now, touched = load_context(), utcnow(), []
    for ticket in tickets:
        logged = db.session.execute(
            insert(TicketEvent).values(
                organization_id=ticket.organization_id, ticket_id=ticket.id,
                kind="customer_message", details={"message_id": message_id,
                                                  "body": body[:TEXT_LENGTH]},
                source_key=f"wa:{message_id}:{ticket.id}")
            .on_conflict_do_nothing(index_elements=["organization_id", "source_key"],
                                    index_where=TicketEvent.source_key.is_not(None))
            .returning(TicketEvent.id)).scalar()
        touched.append(ticket)
        if logged is None:
            continue  # a redelivered event: handled the first time
        changes = {}
        if ticket.status in ("solved", "pending"):
            changes["status"] = [ticket.status, "open"]
            _set_status(ticket, "open", ctx, now)
        sla.customer_wrote(ticket, ctx, now)
        jobs.watch(ticket.next_deadline_at)
        if changes:
            _announce_changes(ticket, None, changes)
        else:
            events.publish("ticket.updated", {**ticket_payload(ticket), "changes": []})
    return touched


def move_customer(old_customer_id: int, new_customer_id: int) -> int:
    """Tickets of a merged customer follow the survivor; how many moved."""
    return db.session.execute(
        update(Ticket).where(Ticket.customer_id == old_customer_id)
        .values(customer_id=new_customer_id)
        .execution_options(synchronize_session=False)).rowcount


# -- the SLA timer --------------------------------------------------------------------------

def process_due(ticket_ids: list[int], now: datetime) -> int:
    """Do what has come due by `now` for these tickets of the current organization:
    warnings, breaches, escalations, closing solved tickets. Tickets another worker holds are
    skipped (it does them). How many were done."""
    ctx = load_context()
    tickets = list(db.session.scalars(
        select(Ticket).where(Ticket.id.in_(ticket_ids), Ticket.next_deadline_at <= now)
        .order_by(Ticket.id).with_for_update(skip_locked=True)))
    for ticket in tickets:
        for happening in sla.advance(ticket, ctx, now):
            _act(ticket, happening, ctx, now)
    return len(tickets)


def recompute_clocks(after_id: int, limit: int) -> int | None:
    """Compute again the clocks of the next `limit` tickets not closed after `after_id` (a
    settings change); the last id done, or None when there were none."""
    ctx, now = load_context(), utcnow()
    tickets = list(db.session.scalars(
        select(Ticket).where(Ticket.id > after_id, Ticket.status != "closed")
        .order_by(Ticket.id).limit(limit).with_for_update()))
    for ticket in tickets:
        sla.recompute(ticket, ctx, now)
        jobs.watch(ticket.next_deadline_at)
    return tickets[-1].id if tickets else None


def _act(ticket: Ticket, happening: sla.Happening, ctx: sla.SlaContext, now: datetime) -> None:
    if happening.kind == "auto_close":
        _set_status(ticket, "closed", ctx, now)
        _announce_changes(ticket, None, {"status": ["solved", "closed"]})
        return
    clock = happening.clock
    if happening.kind == "warning":
        record(ticket, "sla_warning", clock=clock)
        _notify_sla(ticket, "ticket_sla_warning", [ticket.assignee_id], clock)
    elif happening.kind == "breach":
        record(ticket, "sla_breached", clock=clock)
        _notify_sla(ticket, "ticket_sla_breached", _breach_recipients(ticket), clock)
        events.publish("ticket.updated", {**ticket_payload(ticket), "changes": ["sla"]})
    else:
        _escalate(ticket, happening, ctx, now)


def _notify_sla(ticket: Ticket, kind: str, user_ids: Iterable[int | None], clock: str) -> None:
    notifications.notify(user_ids, kind, {**_params(ticket), "clock": clock}, ticket_link(ticket),
                         email_context={"due_at": getattr(ticket, f"{clock}_due_at")})


def _params(ticket: Ticket) -> dict:
    return {"number": ticket.number, "subject": ticket.subject}


def _breach_recipients(ticket: Ticket) -> set[int]:
    """The assignee and the team's managers; with neither, the organization's admins and
    managers, so that a breach is never heard by nobody."""
    recipients = {ticket.assignee_id} | manager_ids([ticket.team_id])
    recipients.discard(None)
    return recipients or set(db.session.scalars(select(User.id).where(
        User.is_active, User.role.in_(("admin", "manager")))))


def _escalate(ticket: Ticket, happening: sla.Happening, ctx: sla.SlaContext,
              now: datetime) -> None:
    """Apply an escalation rule: raise the priority one step, reassign, notify."""
    rule = get_in_organization(EscalationRule, happening.rule.id)
    if rule is None:
        return  # deleted since the rule was read
    changes = {}
    if rule.raise_priority and ticket.priority != PRIORITIES[-1]:
        raised = PRIORITIES[PRIORITIES.index(ticket.priority) + 1]
        changes["priority"] = [ticket.priority, raised]
        ticket.priority = raised
        sla.recompute(ticket, ctx, now)
        jobs.watch(ticket.next_deadline_at)
    if rule.team_id is not None and rule.team_id != ticket.team_id:
        changes["team_id"] = [ticket.team_id, rule.team_id]
        ticket.team_id = rule.team_id
    if rule.assignee_id is not None:
        _assign(ticket, rule.assignee_id, None)
    elif rule.team_id is not None:
        _assign(ticket, None, None)
        _route_to_team(ticket, None)
    record(ticket, "escalated", rule_id=rule.id, clock=happening.clock, changes=changes)
    if rule.notify:
        notifications.notify({ticket.assignee_id} | manager_ids([ticket.team_id]),
                             "ticket_escalated", {**_params(ticket), "clock": happening.clock},
                             ticket_link(ticket))
    events.publish("ticket.updated", {**ticket_payload(ticket),
                                      "changes": sorted(changes) or ["sla"]})
