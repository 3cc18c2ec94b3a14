"""The bell and the notifications page: each user's in-app notifications (the kinds modules
register in crm/foundation/notifications.py), with a live unread count. Routes of the
foundation blueprint.

The bell loads itself after the page (one query that no page render pays for), and is swapped
anew in the user's own room whenever their notifications change.
"""

from __future__ import annotations

from flask import render_template, request

from crm import events
from crm.extensions import socketio
from crm.foundation import notifications
from crm.foundation.models import User
from crm.foundation.views import blueprint
from crm.permissions import require
from crm.realtime import occupied, rendering_for, user_room
from crm.tenancy import get_in_organization
from crm.validation import parse_id
from crm.web import htmx_response, is_htmx, me, page, see_other

PAGE = 30


@blueprint.get("/notifications/bell")
@require("users", "none")
def notification_bell():
    return render_template("foundation/_bell.html", unread=notifications.unread_count(me()))


@blueprint.get("/notifications")
@require("users", "none")
def list_notifications():
    before = parse_id(request.args.get("cursor"))
    shown, next_before = notifications.list_notifications(me(), before, PAGE)
    context = {"notifications": shown, "before": next_before, "render": notifications.render,
               "link_of": notifications.link_of,
               "paged": bool(before)}
    if is_htmx():
        return render_template("foundation/_notification_items.html", **context)
    return page("foundation/notifications.html", **context)


@blueprint.post("/notifications/read")
@require("users", "none")
def mark_notifications_read():
    """Mark one notification read (`notification_id`), or all of them."""
    raw = request.form.get("notification_id")
    notifications.mark_read(me(), None if raw is None else [parse_id(raw) or 0])
    if is_htmx():
        return htmx_response("", trigger="notificationsChanged", reswap="none")
    return see_other("foundation.list_notifications")


def _refresh_bells(payload: dict) -> None:
    """Send each user whose notifications changed their bell, in their language."""
    for user_id in payload.get("user_ids", []):
        room = user_room(user_id)
        user = get_in_organization(User, user_id) if occupied([room]) else None
        if user is None:
            continue
        with rendering_for(user.preferred_language or user.organization.default_language):
            html = render_template("foundation/_bell.html",
                                   unread=notifications.unread_count(user))
        socketio.emit("notificationsChanged", {"target": "#notification-bell", "html": html,
                                               "swap": "outerHTML"}, to=room)


events.subscribe("notification.created")(_refresh_bells)
events.subscribe("notification.read")(_refresh_bells)
