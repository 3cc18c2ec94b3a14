"""The services of an agent's day in the inbox: starting a conversation, taking one from the
unassigned queue, private notes, labels, canned replies, and the inbox's settings and
preferences. Sending, receiving and assigning are in services.py, which this builds on.
"""

from __future__ import annotations

import logging
import re

from flask_babel import gettext as _
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from crm import events
from crm.errors import ConflictError, NotFoundError, ValidationError
from crm.extensions import db
from crm.foundation.models import User
from crm.foundation.services import audit, current_organization
from crm.i18n import isolate
from crm.models import utcnow
from crm.permissions import sees_only_assigned
from crm.search import fold_text, normalize_phone
from crm.tenancy import get_in_organization
from crm.text import clean_text
from crm.validation import collect, parse_id
from crm.versions import lock_for_edit
from crm.whatsapp import services
from crm.whatsapp.models import (
    CANNED_LANGUAGES,
    CannedReply,
    Conversation,
    ConversationNote,
    InboxPreference,
    InboxSettings,
    Message,
    WhatsAppProfile,
)

log = logging.getLogger("crm.whatsapp")
MAX_LABELS = 10
LABEL_LENGTH = 40
NOTE_LENGTH = 5000
SHORTCUT = re.compile(r"[\w-]{1,40}")


# -- starting a conversation ---------------------------------------------------------------

def start_conversation(actor: User, profile_id: object, phone: object, name: object = ""
                       ) -> Conversation:
    """The conversation with `phone` (any written form, read with the organization's country)
    on the number `profile_id`: the existing one, or a new one listed at the top.

    It is given to whoever starts it when nobody answers it yet; an agent cannot start one
    another agent answers (they would not see it), and is told who does.
    """
    values = collect({
        "profile_id": lambda: _check_profile(profile_id),
        "phone": lambda: _check_phone(phone, current_organization().country),
        "name": lambda: _check_name(name),
    })
    conversation, created = services.conversation_for(values["profile_id"], values["phone"],
                                                      None, values["name"])
    lock_for_edit(conversation)
    owner = conversation.assigned_user
    if owner is not None and owner.id != actor.id and sees_only_assigned():
        raise ConflictError(_("%(name)s already answers this conversation.",
                              name=isolate(owner.full_name)))
    if conversation.last_message_at is None:
        conversation.last_message_at = utcnow()  # listed at once, at the top
    if owner is None:
        services.assign_conversation(conversation, actor.id, actor)
    log.info("conversation %s started by %s (new: %s)", conversation.id, actor, created)
    events.publish("conversation.started", {
        "conversation_id": conversation.id, "contact_phone": conversation.contact_phone,
        "customer_id": conversation.customer_id, "actor_id": actor.id})
    return conversation


def _check_profile(raw: object) -> WhatsAppProfile:
    profile_id = parse_id(raw) if isinstance(raw, str | int) else None
    profile = get_in_organization(WhatsAppProfile, profile_id) if profile_id else None
    if profile is None or profile.is_deleted:
        raise ValidationError({"profile_id": _("Choose one of your WhatsApp numbers.")})
    return profile


def _check_phone(raw: object, country: str) -> str:
    phone = normalize_phone(raw, country)
    if phone is None:
        raise ValidationError({"phone": _("Enter a valid phone number.")})
    return phone


def _check_name(raw: object) -> str:
    if raw is None:
        return ""
    if not isinstance(raw, str):
        raise ValidationError({"name": _("Enter a name of at most %(n)d characters.", n=120)})
    name = clean_text(raw).strip()
    if len(name) > 120:
        raise ValidationError({"name": _("Enter a name of at most %(n)d characters.", n=120)})
    return name


# -- the unassigned queue ------------------------------------------------------------------

def take_conversation(conversation: Conversation, actor: User) -> Conversation:
    """Take an unassigned conversation: it is the actor's now, and leaves the others' queue.
    One someone took a moment before is refused, naming them."""
    lock_for_edit(conversation)
    owner = conversation.assigned_user
    if owner is not None and owner.id != actor.id:
        raise ConflictError(_("%(name)s took this conversation already.",
                              name=isolate(owner.full_name)))
    return services.assign_conversation(conversation, actor.id, actor)


def inbox_settings() -> InboxSettings:
    """The organization's inbox rules (unsaved defaults when never changed)."""
    return db.session.scalar(select(InboxSettings)) or InboxSettings(agents_take_unassigned=True)


def update_inbox_settings(actor: User, agents_take_unassigned: bool) -> InboxSettings:
    settings = inbox_settings()
    if settings.id is None:
        db.session.add(settings)
    settings.agents_take_unassigned = bool(agents_take_unassigned)
    db.session.flush()
    audit("whatsapp.inbox_settings_changed", actor, settings,
          agents_take_unassigned=settings.agents_take_unassigned)
    return settings


# -- preferences -----------------------------------------------------------------------------

def enter_sends(user: User) -> bool:
    """Does Enter send in `user`'s composer (else Shift+Enter does)?"""
    value = db.session.scalar(select(InboxPreference.enter_sends)
                              .where(InboxPreference.user_id == user.id))
    return True if value is None else value


def set_enter_sends(user: User, value: bool) -> None:
    preference = db.session.scalar(select(InboxPreference)
                                   .where(InboxPreference.user_id == user.id))
    if preference is None:
        preference = InboxPreference(user_id=user.id)
        db.session.add(preference)
    preference.enter_sends = bool(value)
    db.session.flush()


# -- collisions ------------------------------------------------------------------------------

def latest_message_id(conversation: Conversation) -> int:
    """The newest message of the conversation (0: none): what a composer was opened after."""
    return db.session.scalar(select(Message.id).where(Message.conversation_id == conversation.id)
                             .order_by(Message.id.desc()).limit(1)) or 0


def replied_since(conversation: Conversation, seen_id: object, user: User) -> Message | None:
    """A message a teammate sent in the conversation after `seen_id`, the newest message the
    sender's composer knew of; None when nobody did (or no id was given)."""
    after = parse_id(seen_id) if isinstance(seen_id, str | int) else None
    if after is None:
        return None
    return db.session.scalar(
        select(Message).where(Message.conversation_id == conversation.id, Message.id > after,
                              Message.direction == "out", Message.sender_user_id != user.id)
        .order_by(Message.id.desc()).limit(1))


# -- private notes and labels ----------------------------------------------------------------

def add_note(conversation: Conversation, actor: User, body: object) -> ConversationNote:
    """Leave a private note in the conversation, for the team only: it is never sent."""
    if not isinstance(body, str) or not clean_text(body).strip():
        raise ValidationError({"note": _("Write the note first.")})
    text = clean_text(body).strip()
    if len(text) > NOTE_LENGTH:
        raise ValidationError({"note": _("Use at most %(n)d characters.", n=NOTE_LENGTH)})
    note = ConversationNote(conversation_id=conversation.id, author_id=actor.id, body=text)
    db.session.add(note)
    db.session.flush()
    log.info("note %s added to conversation %s by %s", note.id, conversation.id, actor)
    events.publish("conversation.updated", {"conversation_id": conversation.id})
    return note


def list_notes(conversation: Conversation, limit: int = 20) -> list[ConversationNote]:
    """The conversation's latest private notes, newest first."""
    return list(db.session.scalars(
        select(ConversationNote).options(selectinload(ConversationNote.author))
        .where(ConversationNote.conversation_id == conversation.id)
        .order_by(ConversationNote.id.desc()).limit(limit)))


def set_labels(conversation: Conversation, actor: User, raw: object) -> Conversation:
    """Label the conversation: `raw` is the whole list, comma-separated (Arabic commas too)."""
    labels = check_labels(raw)
    lock_for_edit(conversation)
    if labels != conversation.labels:
        conversation.labels = labels
        log.info("conversation %s labelled %s by %s", conversation.id, labels, actor)
        events.publish("conversation.updated", {"conversation_id": conversation.id})
    return conversation


def check_labels(raw: object) -> list[str]:
    if raw is None:
        return []
    if not isinstance(raw, str):
        raise ValidationError({"labels": _("Separate labels with commas.")})
    labels: list[str] = []
    seen: set[str] = set()
    for part in re.split(r"[,،]", clean_text(raw)):
        label = " ".join(part.split())
        if not label or fold_text(label) in seen:
            continue
        if len(label) > LABEL_LENGTH:
            raise ValidationError({"labels": _("A label has at most %(n)d characters.",
                                               n=LABEL_LENGTH)})
        seen.add(fold_text(label))
        labels.append(label)
    if len(labels) > MAX_LABELS:
        raise ValidationError({"labels": _("Use at most %(n)d labels.", n=MAX_LABELS)})
    return labels


# -- canned replies --------------------------------------------------------------------------

def list_canned_replies(search: str = "", limit: int = 200) -> list[CannedReply]:
    """The organization's saved replies by shortcut; with `search`, those whose shortcut
    starts with it, then those whose text holds it (Arabic letter variants folded)."""
    replies = list(db.session.scalars(select(CannedReply)
                                      .order_by(CannedReply.shortcut, CannedReply.language)
                                      .limit(limit)))
    term = fold_text(search.strip().lstrip("/"))
    if not term:
        return replies
    first = [reply for reply in replies if fold_text(reply.shortcut).startswith(term)]
    then = [reply for reply in replies
            if reply not in first and term in fold_text(reply.body)]
    return first + then


def access_canned_reply(reply_id: int) -> CannedReply:
    reply = get_in_organization(CannedReply, reply_id)
    if reply is None:
        raise NotFoundError(_("Not found."))
    return reply


def save_canned_reply(actor: User, shortcut: object, language: object, body: object,
                      reply: CannedReply | None = None) -> CannedReply:
    """Add a saved reply, or change `reply`; its shortcut is unique per language."""
    values = collect({
        "shortcut": lambda: _check_shortcut(shortcut),
        "language": lambda: _check_language(language),
        "body": lambda: _check_body(body),
    })
    taken = db.session.scalar(select(CannedReply.id).where(
        CannedReply.shortcut == values["shortcut"], CannedReply.language == values["language"]))
    if taken is not None and (reply is None or taken != reply.id):
        raise ValidationError({"shortcut": _("Another reply in this language has this "
                                             "shortcut.")})
    if reply is None:
        reply = CannedReply(**values)
        db.session.add(reply)
    else:
        for key, value in values.items():
            setattr(reply, key, value)
    db.session.flush()
    log.info("canned reply %s saved by %s", reply.id, actor)
    return reply


def delete_canned_reply(actor: User, reply: CannedReply) -> None:
    db.session.delete(reply)
    db.session.flush()
    log.info("canned reply %s deleted by %s", reply.id, actor)


def _check_shortcut(raw: object) -> str:
    value = raw.strip().lstrip("/") if isinstance(raw, str) else ""
    if not SHORTCUT.fullmatch(value):
        raise ValidationError({"shortcut": _("Use letters, digits and dashes, without "
                                             "spaces (at most 40).")})
    return value.lower()


def _check_language(raw: object) -> str:
    if raw not in CANNED_LANGUAGES:
        raise ValidationError({"language": _("Choose one of the listed options.")})
    return raw


def _check_body(raw: object) -> str:
    text = clean_text(raw).strip() if isinstance(raw, str) else ""
    if not text:
        raise ValidationError({"body": _("Write the reply's text.")})
    if len(text) > 4096:
        raise ValidationError({"body": _("Use at most %(n)d characters.", n=4096)})
    return text


def fill_reply(reply: CannedReply, conversation: Conversation, agent: User) -> str:
    """The reply's text for this conversation: `{name}` is the contact's name, `{agent}`
    the agent's; other braces stay as written."""
    name = conversation.contact_name or ""
    return (reply.body.replace("{name}", name).replace("{agent}", agent.full_name)).strip()
