"""The foundation's hooks: what it publishes, with each payload (crm/events.py says how)."""

from __future__ import annotations

from crm.events import Payload

PUBLISHES: dict[str, Payload] = {
    # a new organization and its first admin, at registration (modules set themselves up)
    "organization.registered": ("organization_id", "user_id"),
}

# The kernel reacts to no module: modules stand on it, never the other way round.
LISTENS: dict[str, str] = {}
