"""Socket.IO: authenticated sockets join their organization's and their own room.

Any process (web or worker) can emit, because every one joins the Redis message queue. Events
carry server-rendered HTML fragments; the browser's glue script swaps them in with htmx.
"""

from __future__ import annotations

from flask_login import current_user
from flask_socketio import join_room

from crm.extensions import socketio
from crm.tenancy import current_organization_id
from crm.transaction import on_commit


def org_room(org_id: int) -> str:
    return f"org:{org_id}"


def user_room(user_id: int) -> str:
    return f"user:{user_id}"


@socketio.on("connect")
def _connect(auth=None) -> bool:
    if not current_user.is_authenticated:
        return False  # refused: no valid session
    join_room(org_room(current_user.organization_id))
    join_room(user_room(current_user.id))
    return True


def emit_to_org(event: str, data: dict, org_id: int | None = None) -> None:
    """Emit to every socket of the (current) organization once the transaction commits."""
    room = org_room(org_id or _require_org())
    on_commit(lambda: socketio.emit(event, data, to=room))


def emit_to_user(event: str, data: dict, user_id: int) -> None:
    room = user_room(user_id)
    on_commit(lambda: socketio.emit(event, data, to=room))


def _require_org() -> int:
    org_id = current_organization_id()
    if org_id is None:
        raise RuntimeError("no current organization to emit to")
    return org_id
