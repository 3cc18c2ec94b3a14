"""Roles, the permission matrix and the one helper that views, API and templates use.

`@require("crm", "write")` guards a route, `can("crm", "write")` answers the same question in
code and templates. A module switched off for the organization answers 404 everywhere, as if
its routes did not exist. Agents reach only what is assigned to them: later modules narrow
their queries with `sees_only_assigned()`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Literal

from flask import abort, g
from flask_login import current_user

Level = Literal["none", "read", "write"]
AREAS = ("users", "crm", "ticketing", "whatsapp", "campaigns", "billing", "settings")
_RANK = {"none": 0, "read": 1, "write": 2}

# docs/permissions.md explains each cell.
MATRIX: dict[str, dict[str, Level]] = {
    "admin": dict.fromkeys(AREAS, "write"),
    "manager": {"users": "read", "crm": "write", "ticketing": "write", "whatsapp": "write",
                "campaigns": "write", "billing": "read", "settings": "read"},
    "agent": {"users": "none", "crm": "read", "ticketing": "write", "whatsapp": "write",
              "campaigns": "none", "billing": "none", "settings": "none"},
    "member": {"users": "none", "crm": "read", "ticketing": "read", "whatsapp": "read",
               "campaigns": "read", "billing": "none", "settings": "none"},
}
# Areas that are modules an admin can switch off; users and settings always exist.
SWITCHABLE = ("whatsapp", "crm", "ticketing", "campaigns", "billing")


def role_allows(role: str, area: str, level: Level) -> bool:
    return _RANK[MATRIX[role][area]] >= _RANK[level]


def module_enabled(area: str) -> bool:
    if area not in SWITCHABLE:
        return True
    from crm.foundation.services import enabled_modules

    if "enabled_modules" not in g:
        g.enabled_modules = enabled_modules()
    return area in g.enabled_modules


def can(area: str, level: Level = "read") -> bool:
    """May the current user act on `area` at `level` (and is the module switched on)?"""
    if not current_user.is_authenticated:
        return False
    return module_enabled(area) and role_allows(current_user.role, area, level)


def sees_only_assigned() -> bool:
    """Agents work on what is assigned to them; everyone else sees the whole organization."""
    return current_user.is_authenticated and current_user.role == "agent"


def require(area: str, level: Level = "read") -> Callable:
    """Guard a view: 401 when anonymous, 404 when the module is off, 403 when the role is short."""
    if area not in AREAS or level not in _RANK:
        raise ValueError(f"unknown permission {area}:{level}")

    def decorator(view: Callable) -> Callable:
        @wraps(view)
        def wrapped(*args, **kwargs):
            if not current_user.is_authenticated:
                from crm.extensions import login_manager

                return login_manager.unauthorized()
            if not module_enabled(area):
                abort(404)
            if not role_allows(current_user.role, area, level):
                abort(403)
            return view(*args, **kwargs)

        wrapped.required_permission = (area, level)
        return wrapped

    return decorator
