"""Socket.IO: authenticated sockets join their organization's and their own room.

Any process (web or worker) can emit, because every one joins the Redis message queue. Events
carry server-rendered HTML fragments; the browser's glue script swaps them in with htmx.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import socketio as socketio_server
from flask import Flask, current_app, has_request_context, request
from flask_babel import force_locale
from flask_login import current_user
from flask_socketio import ConnectionRefusedError as SocketRefused
from flask_socketio import join_room
from flask_wtf.csrf import generate_csrf
from redis.connection import parse_url

from crm import outages
from crm.extensions import socketio
from crm.keys import key
from crm.permissions import role_allows
from crm.tenancy import current_organization_id
from crm.transaction import on_commit

log = logging.getLogger("crm.realtime")

RESYNC = "resync"  # to a process's sockets: events may have been lost, fetch again


def init_app(app: Flask) -> None:
    """Serve Socket.IO through the Redis message queue, to pages of our own origin only.

    Origins are checked against the host the page was served from (engine.io's default;
    `X-Forwarded-Proto/Host` are honoured behind a proxy), so another site cannot open a socket
    with a user's cookie. Passing `cors_allowed_origins=[]` would switch that check off.
    """
    url = app.config["REDIS_URL"]
    socketio.init_app(app, client_manager=ResyncingRedisManager(url, channel=message_channel(url)),
                      async_mode="threading", manage_session=False)
    # In place of Flask-WTF's own, which it gives templates both ways.
    app.jinja_env.globals["csrf_token"] = csrf_token
    app.context_processor(lambda: {"csrf_token": csrf_token})


# Set while rendering for readers other than the caller (`rendering_for`).
_for_others: ContextVar[bool] = ContextVar("rendering_for_others", default=False)


def csrf_token() -> str:
    """The CSRF token a form rendered now carries: the caller's, but none in a fragment
    rendered for others. Their page's own token goes in htmx's header (the body's hx-headers),
    which the server reads when the form's field is empty; a token in the field is read first,
    and the caller's session's (or a job's made-up one) was refused for everyone else."""
    return "" if _for_others.get() else generate_csrf()


class ResyncingRedisManager(socketio_server.RedisManager):
    """The Redis message queue, telling this process's sockets to "resync" once its listener
    has subscribed again after losing Redis.

    A socket stays connected to its web process through a Redis outage, but what other
    processes published meanwhile is lost, and so is what they publish after Redis is back
    until the listener subscribes again (it retries with a pause growing up to a minute):
    the page would never know. On "resync" pages fetch again what they show, as after a
    reconnect (static/js/app.js).
    """

    def _redis_connect(self) -> None:
        super()._redis_connect()
        # Subscribe confirmations included: `_listen` sees each (re)subscription.
        self.pubsub = self.redis.pubsub()

    def _listen(self) -> Iterator[bytes]:
        # python-socketio's own, but that a subscription after the first one resyncs.
        channel = self.channel.encode("utf-8")
        subscribed = False
        for message in self._redis_listen_with_retries():
            if message["channel"] != channel:
                continue
            if message["type"] == "subscribe":
                if subscribed:
                    log.warning("realtime: subscribed to %s again; sockets resync", self.channel)
                    self.server.emit(RESYNC, {}, namespace="/", ignore_queue=True)
                subscribed = True
            elif message["type"] == "message" and "data" in message:
                yield message["data"]


def message_channel(redis_url: str) -> str:
    """The pub/sub channel of this deployment, named after its Redis database.

    Redis pub/sub ignores database numbers: deployments that share a Redis server on different
    databases would otherwise hear each other's emits, and `org:5` of one is `org:5` of the other.
    """
    return f"wasl-socketio-{parse_url(redis_url).get('db', 0)}"


def org_room(org_id: int) -> str:
    return f"org:{org_id}"


def user_room(user_id: int) -> str:
    return f"user:{user_id}"


def admins_room(org_id: int) -> str:
    """The organization's admins (settings:write): pairing codes and the like go there only."""
    return f"org:{org_id}:admins"


# Modules that need rooms of their own (e.g. the inbox's per-language rooms) add a function
# that names them for a user; a socket joins them on connect, after its session is checked.
_room_sources: list[Callable[[object], Iterable[str]]] = []


def add_rooms(rooms_of: Callable[[object], Iterable[str]]) -> None:
    """Have every socket that connects also join the rooms `rooms_of(user)` names."""
    _room_sources.append(rooms_of)


def rooms_for(user) -> list[str]:
    """The rooms a socket of `user` joins on connect (in the request of the connection)."""
    rooms = [org_room(user.organization_id), user_room(user.id)]
    if role_allows(user.role, "settings", "write"):
        rooms.append(admins_room(user.organization_id))
    for rooms_of in _room_sources:
        rooms.extend(rooms_of(user))
    return rooms


@socketio.on("connect")
def _connect(auth=None) -> bool:
    """Let in a socket with a live session, into its rooms.

    While the database or Redis is down it is refused as "unavailable" (the page's script
    tries again a little later), rather than left unanswered by an error.
    """
    try:
        return _join_rooms()
    except outages.ERRORS as exc:
        outages.outage_of(exc, "opening a socket")
        raise SocketRefused("unavailable") from None


def _join_rooms() -> bool:
    if not current_user.is_authenticated:
        return False  # refused: no valid session
    rooms = rooms_for(current_user)
    for room in rooms:
        join_room(room)
    arrive(current_user.organization_id, current_user.id, request.sid, rooms,
           current_user.current_session.id)
    return True


# Modules that keep something per socket (the inbox: which conversation it shows) forget it
# when the socket closes.
_leave_hooks: list[Callable[[str], None]] = []


def on_leave(forget: Callable[[str], None]) -> None:
    """Call `forget(sid)` whenever a socket closes."""
    _leave_hooks.append(forget)


@socketio.on("disconnect")
def _disconnect(*_reason) -> None:
    try:
        leave(request.sid)
        for forget in _leave_hooks:
            forget(request.sid)
    except outages.ERRORS as exc:
        # Redis is down: the socket's entries expire by themselves (PRESENCE_TTL).
        outages.outage_of(exc, "closing a socket")


# Presence: who has a page open, and which rooms have anyone in them (so that events nobody
# would hear are not rendered). A socket's entries outlive a crashed web process for at most
# PRESENCE_TTL in the per-socket key; the organization's set is pruned of them when read, a
# room's set keeps them until then (a stale entry costs a rendering, never a missed event).
PRESENCE_TTL = 24 * 3600


def _presence_key(org_id: int) -> str:
    return key("presence", org=org_id)


def _socket_key(sid: str) -> str:
    return key("presence", "socket", sid)


def _room_key(room: str) -> str:
    return key("presence", "room", room)


def _redis():
    return current_app.extensions["crm.redis"]


def arrive(org_id: int, user_id: int, sid: str, rooms: list[str],
           session_id: int | None = None) -> None:
    """Record that socket `sid` of the user (of their session `session_id`) is open and in
    `rooms`."""
    pipe = _redis().pipeline()
    pipe.sadd(_presence_key(org_id), f"{user_id}:{sid}")
    pipe.set(_socket_key(sid), json.dumps({"org": org_id, "user": user_id,
                                           "session": session_id, "rooms": rooms}),
             ex=PRESENCE_TTL)
    for room in rooms:
        pipe.sadd(_room_key(room), sid)
    pipe.execute()


def leave(sid: str) -> None:
    """Forget socket `sid` (closed)."""
    redis = _redis()
    owner = redis.getdel(_socket_key(sid))
    if not owner:
        return
    socket = json.loads(owner)
    pipe = redis.pipeline()
    pipe.srem(_presence_key(socket["org"]), f"{socket['user']}:{sid}")
    for room in socket["rooms"]:
        pipe.srem(_room_key(room), sid)
    pipe.execute()


_occupancy: ContextVar[dict[str, bool] | None] = ContextVar("room_occupancy", default=None)


def occupied(rooms: Iterable[str]) -> set[str]:
    """Those of `rooms` that some open page has joined (in one Redis round trip, or none when
    an `occupancy_snapshot` already knows them)."""
    rooms = list(rooms)
    known = _occupancy.get()
    if known is None:
        known = {}
    unknown = [room for room in rooms if room not in known]
    if unknown:
        pipe = _redis().pipeline(transaction=False)
        for room in unknown:
            pipe.scard(_room_key(room))
        known.update((room, bool(count))
                     for room, count in zip(unknown, pipe.execute(), strict=True))
    return {room for room in rooms if known[room]}


@contextmanager
def occupancy_snapshot() -> Iterator[None]:
    """Ask Redis about each room once in the block: for many events sent at once (a batch of
    webhook deliveries), whose audience changes no faster than the batch is sent."""
    token = _occupancy.set({})
    try:
        yield
    finally:
        _occupancy.reset(token)


@contextmanager
def rendering_for(language: str) -> Iterator[None]:
    """Render in `language` for readers other than the caller, or outside any request (jobs),
    where `url_for` needs a request context to build paths."""
    with ExitStack() as stack:
        if not has_request_context():
            stack.enter_context(current_app.test_request_context())
        stack.enter_context(force_locale(language))
        token = _for_others.set(True)
        stack.callback(_for_others.reset, token)
        yield


@contextmanager
def broadcasting_many() -> Iterator[None]:
    """Send many events at once (a job applying a batch): one request context to render in,
    and each room's occupancy asked once."""
    with ExitStack() as stack:
        if not has_request_context():
            stack.enter_context(current_app.test_request_context())
        stack.enter_context(occupancy_snapshot())
        yield


@dataclass(frozen=True)
class OpenSocket:
    """An open socket, whose user and login session it belongs to."""

    sid: str
    user_id: int
    session_id: int | None


def _sockets(org_id: int) -> list[OpenSocket]:
    """The organization's open sockets (in two Redis round trips); forgets closed ones."""
    redis = _redis()
    entries = [member.decode() for member in redis.smembers(_presence_key(org_id))]
    sids = [entry.split(":", 1)[1] for entry in entries]
    owners = redis.mget([_socket_key(sid) for sid in sids]) if sids else []
    alive = []
    for entry, sid, owner in zip(entries, sids, owners, strict=True):
        if owner:
            socket = json.loads(owner)
            alive.append(OpenSocket(sid, socket["user"], socket.get("session")))
        else:
            redis.srem(_presence_key(org_id), entry)
    return alive


def online_user_ids(org_id: int) -> set[int]:
    """Users of the organization with at least one page open right now."""
    return {socket.user_id for socket in _sockets(org_id)}


def disconnect_user(org_id: int, user_id: int,
                    session_ids: Collection[int] | None = None) -> None:
    """Close the open sockets of a user (only those of `session_ids`, when given) after commit,
    in whichever web process holds them."""

    def close() -> None:
        for socket in _sockets(org_id):
            if socket.user_id == user_id and (session_ids is None
                                              or socket.session_id in session_ids):
                socketio.server.disconnect(socket.sid, namespace="/")

    on_commit(close)


def emit_to_org(event: str, data: dict, org_id: int | None = None) -> None:
    """Emit to every socket of the (current) organization once the transaction commits."""
    room = org_room(org_id or _require_org())
    on_commit(lambda: socketio.emit(event, data, to=room))


def emit_to_admins(event: str, data: dict, org_id: int) -> None:
    """Emit to the organization's admins only, once the transaction commits."""
    room = admins_room(org_id)
    on_commit(lambda: socketio.emit(event, data, to=room))


def emit_to_user(event: str, data: dict, user_id: int) -> None:
    room = user_room(user_id)
    on_commit(lambda: socketio.emit(event, data, to=room))


def _require_org() -> int:
    org_id = current_organization_id()
    if org_id is None:
        raise RuntimeError("no current organization to emit to")
    return org_id
