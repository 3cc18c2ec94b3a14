"""Who else is in a conversation: the avatars of the teammates who have it open, and
"Sara is typing…" while one of them types.

A page that shows a conversation says so over its socket (`viewing`, with the conversation's
id, or none when it shows none any more); the server checks that the user may see it, joins
the socket to the conversation's room and records it in Redis (`presence:conversation:...`:
socket → user). Each socket in the conversation then gets the avatars of the others, rendered
in its user's language. A page whose composer is typed in says `typing` (the glue script sends
it at most every few seconds); the others in the conversation get the line that says so,
which hides itself after a few seconds unless another comes (static/css/app.css).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from flask import current_app, render_template, request
from flask_login import current_user
from flask_socketio import join_room, leave_room
from sqlalchemy import select

from crm.errors import NotFoundError
from crm.extensions import db, socketio
from crm.foundation.models import User
from crm.permissions import can
from crm.realtime import PRESENCE_TTL, on_leave, rendering_for
from crm.tenancy import organization_context, set_current_organization
from crm.transaction import rollback
from crm.whatsapp import services
from crm.whatsapp.live import swap

log = logging.getLogger("crm.whatsapp.presence")
TYPING_EVERY_SECONDS = 2  # a socket's typing is passed on at most this often


def conversation_room(org_id: int, conversation_id: int) -> str:
    return f"conversation:{org_id}:{conversation_id}"


def _viewers_key(org_id: int, conversation_id: int) -> str:
    return f"presence:conversation:{org_id}:{conversation_id}"


def _viewing_key(sid: str) -> str:
    return f"presence:viewing:{sid}"


def _redis():
    return current_app.extensions["crm.redis"]


def listen() -> None:
    """Handle the pages' presence events on the Socket.IO server of the app being created."""
    socketio.on("viewing")(viewing)
    socketio.on("typing")(typing)


@dataclass(frozen=True)
class Caller:
    """The socket's user as plain values: each handler's transaction ends before it is done."""

    id: int
    organization_id: int


def _caller() -> Caller | None:
    """The socket's user, when they may see the inbox."""
    set_current_organization(None)
    user = current_user._get_current_object()  # loading the user sets its organization
    if not user.is_authenticated or not can("whatsapp", "read"):
        return None
    return Caller(user.id, user.organization_id)


def _conversation_id(data: object) -> int | None:
    value = data.get("conversation_id") if isinstance(data, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def viewing(data: object = None) -> None:
    """The page shows conversation `conversation_id` now (None: no conversation)."""
    user = _caller()
    if user is None:
        return
    sid = request.sid
    conversation_id = _conversation_id(data)
    org_id = user.organization_id
    with organization_context(org_id):
        try:
            if conversation_id is not None:
                services.access_conversation(conversation_id, current_user._get_current_object())
        except NotFoundError:
            conversation_id = None
        finally:
            rollback()
    previous = _redis().get(_viewing_key(sid))
    current = f"{org_id}:{conversation_id}" if conversation_id is not None else None
    if previous is not None and previous.decode() == current:
        return
    forget(sid)
    if conversation_id is None:
        return
    pipe = _redis().pipeline()
    pipe.hset(_viewers_key(org_id, conversation_id), sid, user.id)
    pipe.expire(_viewers_key(org_id, conversation_id), PRESENCE_TTL)
    pipe.set(_viewing_key(sid), current, ex=PRESENCE_TTL)
    pipe.execute()
    join_room(conversation_room(org_id, conversation_id))
    _announce(org_id, conversation_id)


def forget(sid: str) -> None:
    """The socket shows its conversation no more (another one, none, or it closed)."""
    previous = _redis().getdel(_viewing_key(sid))
    if previous is None:
        return
    org_id, conversation_id = (int(part) for part in previous.decode().split(":"))
    _redis().hdel(_viewers_key(org_id, conversation_id), sid)
    leave_room(conversation_room(org_id, conversation_id), sid=sid)
    _announce(org_id, conversation_id)


on_leave(forget)


def _viewers(org_id: int, conversation_id: int) -> dict[str, int]:
    """The sockets showing the conversation, each with its user."""
    return {sid.decode(): int(user_id) for sid, user_id
            in _redis().hgetall(_viewers_key(org_id, conversation_id)).items()}


@dataclass(frozen=True)
class Reader:
    """A user in a conversation, as plain values (read in their organization's transaction,
    which ends before anything is rendered)."""

    id: int
    full_name: str
    language: str


def _readers(org_id: int, ids: set[int]) -> dict[int, Reader]:
    with organization_context(org_id):
        try:
            return {user.id: Reader(user.id, user.full_name,
                                    user.preferred_language or user.organization.default_language)
                    for user in db.session.scalars(
                        select(User).where(User.id.in_(ids), User.is_active))}
        finally:
            rollback()


def _announce(org_id: int, conversation_id: int) -> None:
    """Send every socket in the conversation the avatars of the others there."""
    viewers = _viewers(org_id, conversation_id)
    readers = _readers(org_id, set(viewers.values()))
    for sid, user_id in viewers.items():
        reader = readers.get(user_id)
        if reader is None:
            continue
        others = sorted((other for other in readers.values() if other.id != user_id),
                        key=lambda other: (other.full_name, other.id))
        with rendering_for(reader.language):
            html = render_template("whatsapp/_presence.html", conversation_id=conversation_id,
                                   others=others)
        socketio.emit("presence", {"swaps": [swap(f"#conversation-{conversation_id}-presence",
                                                  html)]}, to=sid)


def typing(data: object = None) -> None:
    """Someone types in the conversation's composer: tell the others who have it open."""
    user = _caller()
    conversation_id = _conversation_id(data)
    if user is None or conversation_id is None:
        return
    org_id = user.organization_id
    viewers = _viewers(org_id, conversation_id)
    if viewers.get(request.sid) != user.id:
        return  # it did not say it shows this conversation, or was refused it
    if not _redis().set(f"presence:typing:{request.sid}", 1, nx=True,
                        ex=TYPING_EVERY_SECONDS):
        return
    others = {sid: user_id for sid, user_id in viewers.items() if user_id != user.id}
    if not others:
        return

    readers = _readers(org_id, set(others.values()) | {user.id})
    typist = readers.get(user.id)
    for sid, user_id in others.items():
        reader = readers.get(user_id)
        if reader is None or typist is None:
            continue
        with rendering_for(reader.language):
            html = render_template("whatsapp/_typing.html", conversation_id=conversation_id,
                                   typist=typist)
        socketio.emit("typing", {"swaps": [swap(f"#conversation-{conversation_id}-typing",
                                                html)]}, to=sid)
