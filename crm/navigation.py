"""The sidebar: each module adds its entries; the layout shows those the user may reach.

The work comes first (Inbox, Customers, Pipeline, then Tickets and Campaigns as they land),
the administration after (Team, Settings, Audit log, Billing): each entry names its place
(`order`) and its icon (templates/_icons.html). An entry with a `badge` shows a count that the
page fetches after loading and again after the Socket.IO events the entry names (the Inbox's
unread conversations), so no page pays for it while rendering.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import Flask
from flask_babel import LazyString, lazy_gettext

from crm.permissions import can, module_enabled

WORK, ADMINISTRATION = "work", "administration"


@dataclass(frozen=True)
class NavItem:
    endpoint: str
    label: LazyString
    area: str
    level: str = "read"
    icon: str = "dot"
    order: int = 50  # work 10-49, administration 50-99
    badge: str | None = None  # the endpoint answering the badge (out of band, by its id)
    badge_events: tuple[str, ...] = ()
    # The module a settings entry (area "settings") leads into: hidden while it is off.
    module: str | None = None

    @property
    def group(self) -> str:
        return WORK if self.order < 50 else ADMINISTRATION


_items: list[NavItem] = []


def add(item: NavItem) -> None:
    _items.append(item)
    _items.sort(key=lambda added: added.order)


def visible_items() -> list[NavItem]:
    return [item for item in _items if can(item.area, item.level)
            and (item.module is None or module_enabled(item.module))]


def init_app(app: Flask) -> None:
    app.jinja_env.globals["navigation"] = visible_items


add(NavItem("foundation.dashboard", lazy_gettext("Dashboard"), "users", "none", "home", 0))
add(NavItem("foundation.team", lazy_gettext("Team"), "users", "read", "team", 60))
add(NavItem("foundation.settings", lazy_gettext("Settings"), "settings", "read", "settings", 70))
add(NavItem("foundation.audit_log", lazy_gettext("Audit log"), "settings", "write", "shield",
            80))
