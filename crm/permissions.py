"""Roles, the permission matrix and the one helper that views, API and templates use.

`@require("crm", "write")` guards a route, `can("crm", "write")` answers the same question in
code and templates. A module switched off for the organization answers 404 everywhere, as if
its routes did not exist. A module its plan does not include (crm/billing/gate.py) answers 403
on pages and 402 on the API, saying to upgrade; so does every write of a read-only organization
(a payment overdue past its grace), billing's own excepted, so it can pay. Agents reach only
what is assigned to them: later modules narrow their queries with `sees_only_assigned()`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Literal

from flask import abort, current_app, g, request
from flask_login import current_user

from crm.billing import gate
from crm.errors import ServiceError
from crm.extensions import login_manager

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
               "campaigns": "none", "billing": "none", "settings": "none"},
}
# Areas that are modules an admin can switch off; users and settings always exist, and so does
# billing: an organization must always be able to see its plan and pay.
SWITCHABLE = ("whatsapp", "crm", "ticketing", "campaigns")
# The blueprint each module registers: a module whose blueprint the app lacks is not there yet
# (tickets and campaigns land later), and no page offers it.
MODULE_BLUEPRINTS = {"whatsapp": "whatsapp", "crm": "customers", "ticketing": "tickets",
                     "campaigns": "campaigns"}


def installed_modules() -> tuple[str, ...]:
    """The switchable modules this app has, in SWITCHABLE's order."""
    return tuple(module for module in SWITCHABLE
                 if MODULE_BLUEPRINTS[module] in current_app.blueprints)


def installed_areas() -> tuple[str, ...]:
    """The areas of the permission matrix that exist in this app."""
    modules = installed_modules()
    return tuple(area for area in AREAS if area not in SWITCHABLE or area in modules)


def role_allows(role: str, area: str, level: Level) -> bool:
    return _RANK[MATRIX[role][area]] >= _RANK[level]


def module_enabled(area: str) -> bool:
    if area not in SWITCHABLE:
        return True
    # cycle: foundation.services -> realtime -> permissions
    from crm.foundation.services import enabled_modules

    if "enabled_modules" not in g:
        # The caller's session load read them already (crm.foundation.services).
        loaded = getattr(current_user, "enabled_modules", None)
        g.enabled_modules = loaded if loaded is not None else enabled_modules()
    return area in g.enabled_modules


def in_plan(area: str) -> bool:
    """Does the organization's plan include `area` (always, for what is not a module)?"""
    return area not in SWITCHABLE or gate.allows(area)


def can(area: str, level: Level = "read") -> bool:
    """May the current user act on `area` at `level` (and is the module switched on and in
    the plan)?"""
    if not current_user.is_authenticated:
        return False
    return (module_enabled(area) and role_allows(current_user.role, area, level)
            and in_plan(area))


def sees_only_assigned(user=None) -> bool:
    """Agents work on what is assigned to them; everyone else sees the whole organization.

    Of `user` when given (a service told who acts), else of the signed-in user.
    """
    user = current_user if user is None else user
    return user.is_authenticated and user.role == "agent"


def require(area: str, level: Level = "read") -> Callable:
    """Guard a view: 401 when anonymous, 404 when the module is off, 403 when the role is short;
    then the plan: a module not in it, or a write while read-only, is refused (402 on the API,
    403 on pages)."""
    if area not in AREAS or level not in _RANK:
        raise ValueError(f"unknown permission {area}:{level}")

    def decorator(view: Callable) -> Callable:
        @wraps(view)
        def wrapped(*args, **kwargs):
            if not current_user.is_authenticated:
                return login_manager.unauthorized()
            if not module_enabled(area):
                abort(404)
            if not role_allows(current_user.role, area, level):
                abort(403)
            _check_plan(area, level)
            return view(*args, **kwargs)

        wrapped.required_permission = (area, level)
        return wrapped

    return decorator


def require_settings(module: str, level: Level = "write") -> Callable:
    """Guard a module's own settings: the settings permission at `level`, and the module
    switched on (404 when off, as for its other pages; the "settings" area never is)."""
    if module not in SWITCHABLE:
        raise ValueError(f"{module} is not a module")

    def decorator(view: Callable) -> Callable:
        return require("settings", level)(require(module, "read")(view))

    return decorator


def _check_plan(area: str, level: Level) -> None:
    if not in_plan(area):
        _refuse(gate.ModuleNotInPlanError(area))
    if (level == "write" and area != "billing" and request.method not in _SAFE_METHODS
            and gate.read_only()):
        _refuse(gate.ReadOnlyError())


_SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def _refuse(error: ServiceError) -> None:
    """Raise a plan refusal: the API's 402 as it is; a page's as 403, which is what a page
    answers for what the user may not do here (its message says to upgrade)."""
    # cycle: web -> i18n -> foundation.services -> realtime -> permissions
    from crm.web import wants_json

    if not wants_json():
        error.status = 403
    raise error
