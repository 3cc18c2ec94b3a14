"""The foundation's hooks: what it publishes, with each payload (crm/events.py says how)."""

from __future__ import annotations

from crm.events import Payload

PUBLISHES: dict[str, Payload] = {
    # a new organization and its first admin, at registration (modules set themselves up)
    "organization.registered": ("organization_id", "user_id"),
    # its settings changed; `fields` names them (timezone, country, default_language, ...)
    "organization.updated": ("organization_id", "fields"),
    # a member was removed by `actor_id` (modules hand their open work on)
    "user.removed": ("user_id", "actor_id"),
    # `actor_id` gave a member another role (modules hand on what it may no longer do)
    "user.role_changed": ("user_id", "actor_id", "role"),
    "team.created": ("team_id",),
    "team.updated": ("team_id",),
    "team.deleted": ("team_id",),
    # in-app notifications of `kind` (crm/foundation/notifications.py) for these users
    "notification.created": ("kind", "user_ids"),
    # these users read theirs
    "notification.read": ("user_ids",),
}

# The kernel reacts to no module, only to its own notifications: modules stand on it, never
# the other way round.
LISTENS: dict[str, str] = {
    "notification.created": "notification_views.py: the users' open bells are refreshed",
    "notification.read": "notification_views.py: the users' open bells are refreshed",
}
