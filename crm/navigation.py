"""The sidebar: each module adds its entries; the layout shows those the user may reach."""

from __future__ import annotations

from dataclasses import dataclass

from flask import Flask
from flask_babel import LazyString, lazy_gettext

from crm.permissions import can


@dataclass(frozen=True)
class NavItem:
    endpoint: str
    label: LazyString
    area: str
    level: str = "read"
    icon: str = "dot"


_items: list[NavItem] = []


def add(item: NavItem) -> None:
    _items.append(item)


def visible_items() -> list[NavItem]:
    return [item for item in _items if can(item.area, item.level)]


def init_app(app: Flask) -> None:
    app.jinja_env.globals["navigation"] = visible_items


add(NavItem("foundation.dashboard", lazy_gettext("Dashboard"), "users", "none", "home"))
add(NavItem("foundation.team", lazy_gettext("Team"), "users", "read", "users"))
add(NavItem("foundation.settings", lazy_gettext("Settings"), "settings", "read", "settings"))
add(NavItem("foundation.audit_log", lazy_gettext("Audit log"), "settings", "write", "shield"))
