"""The live inbox: after-commit subscribers that push server-rendered fragments over Socket.IO.

Who hears what. An agent sees only the conversations assigned to them, so an agent hears a
conversation's events in their own user room, and only while it is theirs. Everyone else who
may open the inbox (admins, managers, read-only members) joins, on connect, one room per
organization, language and access level (`whatsapp:<org>:<language>:<level>`), so one rendering
serves each room however many people are in it. A role change ends the user's sessions and
closes their sockets (foundation services), so nobody keeps a room their role no longer allows.

What they hear. Each event carries `swaps`: fragments and the CSS selectors they go into, which
the glue script (static/js/app.js) swaps in with htmx. The selectors say where a fragment
belongs: a bubble is appended only to an open thread that does not show it yet (a repeated
event never doubles a message), and a conversation's row goes only into lists whose filters it
matches (the list element carries its filters as data attributes, see `_list.html`).

The fragments are the same templates the pages render; `fragment_context()` gives both the same
variables.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from flask import render_template
from flask_login import current_user
from sqlalchemy import select
from sqlalchemy.orm import joinedload

from crm import events
from crm.errors import NotFoundError
from crm.extensions import db, socketio
from crm.foundation.models import User
from crm.i18n import LANGUAGES, current_language
from crm.models import utcnow
from crm.permissions import MATRIX, can, module_enabled, role_allows
from crm.realtime import add_rooms, occupied, org_room, rendering_for, user_room
from crm.tenancy import (
    current_organization_id,
    get_in_organization,
    organization_context,
    set_current_organization,
)
from crm.transaction import commit, rollback
from crm.whatsapp import inbox, services
from crm.whatsapp.channels import channel_class
from crm.whatsapp.models import Conversation, Message, WhatsAppProfile

log = logging.getLogger("crm.whatsapp.live")
LEVELS = ("read", "write")


# -- rooms -----------------------------------------------------------------------------------

def watch_room(org_id: int, language: str, level: str) -> str:
    return f"whatsapp:{org_id}:{language}:{level}"


def queue_room(org_id: int, language: str) -> str:
    """Agents who may take from the unassigned queue: they hear its conversations."""
    return f"whatsapp:{org_id}:{language}:queue"


def inbox_rooms(user: User) -> list[str]:
    """The inbox room a connecting socket joins: for agents the queue's (they hear what is
    assigned to them in their user room), none for roles without access to WhatsApp.

    An agent keeps the queue's room until their socket closes even if the organization stops
    letting agents take from the queue; the queue's events go to it only while it does.
    """
    level = MATRIX[user.role]["whatsapp"]
    if level not in LEVELS:
        return []
    if _sees_only_assigned(user):
        return [queue_room(user.organization_id, current_language())]
    return [watch_room(user.organization_id, current_language(), level)]


add_rooms(inbox_rooms)


def _sees_only_assigned(user: User) -> bool:
    # The rule of crm.permissions.sees_only_assigned(), for a user who is not the caller.
    return user.role == "agent"


@dataclass(frozen=True)
class Audience:
    """Sockets that see the same fragments: a room, its language and whether it may write."""

    room: str
    language: str
    writable: bool

    @property
    def variant(self) -> tuple[str, bool]:
        return self.language, self.writable


def _audiences(conversation: Conversation) -> list[Audience]:
    """Everyone who may see `conversation` now and has a page open: the inbox rooms and its
    assigned agent. A room nobody is in gets nothing, so nothing is rendered for it."""
    org_id = conversation.organization_id
    audiences = [Audience(watch_room(org_id, language, level), language, level == "write")
                 for language in LANGUAGES for level in LEVELS]
    assignee = conversation.assigned_user
    if assignee is not None and _sees_only_assigned(assignee) and assignee.is_active:
        audiences.append(_personal(assignee))
    if assignee is None:
        queue = _queue(org_id)
        # The inbox's setting is read only when an agent has the queue open.
        if occupied(audience.room for audience in queue) and services.agents_take_unassigned():
            audiences.extend(queue)
    listening = occupied(audience.room for audience in audiences)
    return [audience for audience in audiences if audience.room in listening]


def _queue(org_id: int) -> list[Audience]:
    return [Audience(queue_room(org_id, language), language, True) for language in LANGUAGES]


def _personal(user: User) -> Audience:
    language = user.preferred_language or user.organization.default_language
    return Audience(user_room(user.id), language,
                    role_allows(user.role, "whatsapp", "write"))


# -- rendering -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Capabilities:
    """What the conversation's channel can do besides sending (the Cloud API: neither)."""

    edit: bool
    revoke: bool


def capabilities(profile: WhatsAppProfile) -> Capabilities:
    channel = channel_class(profile.provider)  # no need to decrypt its secrets
    return Capabilities(channel.supports_edit, channel.supports_revoke)


def message_actions(message: Message, caps: Capabilities, writable: bool,
                    now: datetime | None = None) -> frozenset[str]:
    """The buttons a bubble offers; the services check each again when it is used."""
    if not writable or message.deleted_at is not None:
        return frozenset()
    actions = {"reply"}
    if message.type not in ("reaction", "unsupported"):
        actions.add("forward")
    sent = message.direction == "out" and message.provider_message_id is not None
    if sent and caps.revoke:
        actions.add("delete")
    if (sent and caps.edit and message.type == "text"
            and (now or utcnow()) - message.created_at <= services.EDIT_WINDOW):
        actions.add("edit")
    if message.direction == "out" and message.status == "failed":
        actions.add("retry")
    return frozenset(actions)


def fragment_context(conversation: Conversation, writable: bool) -> dict:
    """What every inbox fragment of `conversation` needs, for pages and events alike."""
    caps = capabilities(conversation.profile)
    now = utcnow()
    return {"conversation": conversation, "writable": writable,
            "actions_for": lambda message: message_actions(message, caps, writable, now),
            "contact_sections": contact_sections, "notes_of": inbox.list_notes}


@dataclass(frozen=True)
class ContactSection:
    """A section another module adds to the contact panel (the CRM's customer card; open
    tickets later), shown while `module` is switched on.

    The panel is rendered once for many readers (live events), so a section that depends on
    who reads it renders a placeholder that loads its content with the reader's own request
    (`hx-get`, `hx-trigger="load"`); the template gets the panel's variables
    (`conversation`, `writable`).
    """

    template: str
    module: str


CONTACT_SECTIONS: list[ContactSection] = []


def add_contact_section(template: str, module: str) -> None:
    """Show `template` in the inbox's contact panel, below the conversation's details, while
    `module` is on."""
    if all(section.template != template for section in CONTACT_SECTIONS):
        CONTACT_SECTIONS.append(ContactSection(template, module))


def contact_sections() -> list[str]:
    """The templates of the sections to show now (their modules are on)."""
    return [section.template for section in CONTACT_SECTIONS if module_enabled(section.module)]


def assignable_users() -> list[User]:
    """Active members of the organization who may answer WhatsApp, by name."""
    roles = [role for role in MATRIX if role_allows(role, "whatsapp", "write")]
    return list(db.session.scalars(select(User).where(User.is_active, User.role.in_(roles))
                                   .order_by(User.full_name, User.id)))


def render_bubble(message: Message, context: dict) -> str:
    return render_template("whatsapp/_message.html", message=message, **context)


def render_row(conversation: Conversation) -> str:
    return render_template("whatsapp/_row.html", conversation=conversation)


def render_panel(context: dict, assignees: list[User] | None = None) -> str:
    """The contact panel; `assignees` saves the query when several variants are rendered."""
    if not context["writable"]:
        assignees = []
    elif assignees is None:
        assignees = assignable_users()
    return render_template("whatsapp/_panel.html", assignees=assignees, errors={}, **context)


def panel_swaps(context: dict, assignees: list[User]) -> list[dict]:
    """The contact panel and the header's resolve button, which show the status."""
    conversation_id = context["conversation"].id
    return [swap(f"#conversation-{conversation_id}-panel", render_panel(context, assignees)),
            swap(f"#conversation-{conversation_id}-resolve",
                 render_template("whatsapp/_resolve.html", **context))]


# -- swaps -----------------------------------------------------------------------------------

def swap(target: str, html: str, style: str = "outerHTML") -> dict:
    return {"target": target, "html": html, "swap": style}


def thread(conversation_id: int) -> str:
    return f"#thread-{conversation_id}-messages"


def _lists_for(conversation: Conversation) -> str:
    """The filters of a conversation list (`#conversation-rows`) that include `conversation`.

    Search results are left aside: whether a conversation matches a search is the database's
    call, so a row only changes in place there.
    """
    scopes = ['[data-scope="all"]']
    if conversation.assigned_user_id is None:
        scopes.append('[data-scope="unassigned"]')
    else:
        scopes.append(f'[data-scope="mine"][data-viewer="{conversation.assigned_user_id}"]')
    return (f":is({', '.join(scopes)})"
            f':is([data-status=""], [data-status="{conversation.status}"])'
            f':is([data-profile=""], [data-profile="{conversation.profile_id}"])'
            '[data-search=""]')


def row_swaps(conversation: Conversation, html: str, moved: bool) -> list[dict]:
    """Put a conversation's new row where lists show it: at the top when it `moved` (a new
    message, a new assignee), in place otherwise; and out of lists it no longer matches."""
    row = f"#conversation-row-{conversation.id}"
    matches = _lists_for(conversation)
    searches = f'#conversation-rows[data-search="1"] > {row}'
    if moved:
        return [swap(searches, html),
                swap(f'#conversation-rows[data-search=""] > {row}', "", "delete"),
                swap(f"#conversation-rows{matches}", html, "afterbegin")]
    return [swap(f"{searches}, #conversation-rows{matches} > {row}", html),
            swap(f'#conversation-rows[data-search=""]:not({matches}) > {row}', "", "delete")]


def bubble_swaps(message: Message, html: str, append: bool) -> list[dict]:
    """Replace the message's bubble where it is shown; with `append`, also add it to the end
    of its open thread when that does not show it yet."""
    swaps = [swap(f"#message-{message.id}", html)]
    if append:
        swaps.append(swap(f"{thread(message.conversation_id)}:not(:has(> #message-{message.id}))",
                          html, "beforeend"))
    return swaps


# -- broadcasting ----------------------------------------------------------------------------

def broadcast(event: str, conversation: Conversation,
              build: Callable[[dict], list[dict]], **data) -> None:
    """Emit `event` to everyone who may see `conversation`, with the swaps `build` makes from
    the fragment context of each audience (rendered once per language and access level)."""
    rendered: dict[tuple[str, bool], list[dict]] = {}
    for audience in _audiences(conversation):
        if audience.variant not in rendered:
            with rendering_for(audience.language):
                rendered[audience.variant] = build(fragment_context(conversation,
                                                                    audience.writable))
        payload = {"conversation_id": conversation.id, **data,
                   "swaps": rendered[audience.variant]}
        if "markAsRead" in payload and not audience.writable:
            payload.pop("markAsRead")  # reading a conversation is not reading it for the team
        socketio.emit(event, payload, to=audience.room)


def _message(payload: dict) -> Message | None:
    """The event's message with its conversation, assignee and number, in one query: every
    message sent or moved on is announced (a campaign's thousands too)."""
    conversation = joinedload(Message.conversation)
    message = get_in_organization(Message, payload["message_id"], options=[
        conversation.joinedload(Conversation.assigned_user),
        conversation.joinedload(Conversation.profile)])
    if message is None:
        log.info("event for message %s that is gone", payload["message_id"])
    return message


def _conversation(payload: dict) -> Conversation | None:
    return get_in_organization(Conversation, payload["conversation_id"])


@events.subscribe("message.received")
def on_message_received(payload: dict) -> None:
    """A contact wrote: the bubble joins open threads, the row moves to the top."""
    message = _message(payload)
    if message is None or message.type == "reaction":
        return  # a reaction shows on its message (message.updated)
    conversation = message.conversation

    def build(context: dict) -> list[dict]:
        return [*bubble_swaps(message, render_bubble(message, context), append=True),
                *row_swaps(conversation, render_row(conversation), moved=True)]

    broadcast("newMessage", conversation, build, message_id=message.id,
              markAsRead={"selector": thread(conversation.id),
                          "conversation_id": conversation.id},
              # For the browser's notification while the page is hidden: text, not markup.
              notify={"title": conversation.contact_name or conversation.contact_phone or "",
                      "body": conversation.last_message_preview})


def _nobody_online() -> bool:
    """No page of the organization is open (every socket joins its organization's room):
    an announcement of ours would render for nobody, so it reads nothing either — a
    campaign announces each of its thousands of messages twice, sent and its status."""
    return not occupied([org_room(current_organization_id())])


@events.subscribe("message.sent")
def on_message_sent(payload: dict) -> None:
    """One of ours left: every open thread shows it, the row moves to the top."""
    if _nobody_online():
        return
    message = _message(payload)
    if message is not None:
        _announce_outbound("messageSent", message)


def _announce_outbound(event: str, message: Message) -> None:
    conversation = message.conversation

    def build(context: dict) -> list[dict]:
        return [*bubble_swaps(message, render_bubble(message, context), append=True),
                *row_swaps(conversation, render_row(conversation), moved=True)]

    broadcast(event, conversation, build, message_id=message.id, status=message.status)


@events.subscribe("message.status")
def on_message_status(payload: dict) -> None:
    """Ticks moved on: replace the bubble's status. A message that failed (or whose fate is
    unknown) may never have been announced as sent, so it is shown whole."""
    if _nobody_online():
        return
    message = _message(payload)
    if message is None:
        return
    if message.status in ("failed", "unknown"):
        _announce_outbound("messageStatus", message)
        return

    def build(context: dict) -> list[dict]:
        html = render_template("whatsapp/_message_status.html", message=message, **context)
        return [swap(f"#message-{message.id}-status", html)]

    broadcast("messageStatus", message.conversation, build, message_id=message.id,
              status=message.status)


def _replace_bubble(event: str, payload: dict) -> None:
    message = _message(payload)
    if message is None:
        return

    def build(context: dict) -> list[dict]:
        return bubble_swaps(message, render_bubble(message, context), append=False)

    broadcast(event, message.conversation, build, message_id=message.id)


@events.subscribe("message.updated")
def on_message_updated(payload: dict) -> None:
    """Edited, reacted to, or its media arrived: replace the bubble where it is shown."""
    _replace_bubble("messageUpdated", payload)


@events.subscribe("message.deleted")
def on_message_deleted(payload: dict) -> None:
    _replace_bubble("messageDeleted", payload)


@events.subscribe("conversation.updated")
def on_conversation_updated(payload: dict) -> None:
    """Status or unread count changed: the row changes in place, the contact panel too."""
    conversation = _conversation(payload)
    if conversation is None:
        return
    assignees = assignable_users()

    def build(context: dict) -> list[dict]:
        return [*row_swaps(conversation, render_row(conversation), moved=False),
                *panel_swaps(context, assignees)]

    broadcast("conversationUpdated", conversation, build)


@events.subscribe("conversation.assigned")
def on_conversation_assigned(payload: dict) -> None:
    """New assignee: the row goes to the top of the lists that now include it; an agent who
    lost the conversation sees it leave their inbox, and nothing more of it."""
    conversation = _conversation(payload)
    if conversation is None:
        return
    assignees = assignable_users()

    def build(context: dict) -> list[dict]:
        return [*row_swaps(conversation, render_row(conversation), moved=True),
                *panel_swaps(context, assignees)]

    broadcast("conversationAssigned", conversation, build,
              assignee_id=conversation.assigned_user_id)
    previous = payload.get("previous_assignee_id")
    if previous and previous != conversation.assigned_user_id:
        _withdraw(conversation, previous)
    if previous is None and conversation.assigned_user_id is not None:
        _leave_queue(conversation)


def _leave_queue(conversation: Conversation) -> None:
    """Someone took a conversation from the queue: it leaves the agents' unassigned lists,
    and the page of every other agent who had it open."""
    rooms = occupied(audience.room for audience in _queue(conversation.organization_id))
    for room in rooms:
        language = room.split(":")[2]
        with rendering_for(language):
            notice = render_template("whatsapp/_withdrawn.html",
                                     conversation_id=conversation.id)
        socketio.emit("conversationAssigned", {
            "conversation_id": conversation.id,
            "swaps": [swap(f'#conversation-rows[data-scope="unassigned"] > '
                           f"#conversation-row-{conversation.id}", "", "delete"),
                      swap(f"#conversation-{conversation.id}"
                           f':not([data-viewer="{conversation.assigned_user_id}"])', notice)]},
            to=room)


def _withdraw(conversation: Conversation, user_id: int) -> None:
    """Take a conversation off the page of an agent it is no longer assigned to."""
    user = get_in_organization(User, user_id)
    if user is None or not _sees_only_assigned(user):
        return  # managers and admins still see it, and heard the assignment
    audience = _personal(user)
    with rendering_for(audience.language):
        notice = render_template("whatsapp/_withdrawn.html", conversation_id=conversation.id)
    socketio.emit("conversationAssigned", {
        "conversation_id": conversation.id,
        "swaps": [swap(f"#conversation-row-{conversation.id}", "", "delete"),
                  swap(f"#conversation-{conversation.id}", notice)]}, to=audience.room)


# -- the client's events ---------------------------------------------------------------------

def listen() -> None:
    """Handle the pages' inbox events on the Socket.IO server of the app being created.

    Called when the blueprint is registered, after realtime.init_app made the server: a
    decorator run at import would reach only the server of the first app this process made.
    """
    socketio.on("markAsRead")(mark_as_read)


def mark_as_read(data: object = None) -> None:
    """The page says a conversation it shows open and visible got a message: it is read."""
    set_current_organization(None)
    user = current_user._get_current_object()  # loading the user sets its organization
    conversation_id = data.get("conversation_id") if isinstance(data, dict) else None
    if (not user.is_authenticated or not isinstance(conversation_id, int)
            or isinstance(conversation_id, bool) or not can("whatsapp", "write")):
        return
    with organization_context(user.organization_id):
        try:
            services.mark_conversation_read(services.access_conversation(conversation_id, user),
                                            user)
            commit()
        except NotFoundError:
            rollback()
        except Exception:
            rollback()
            raise
