"""Walks over every route: no organization reaches another's objects, and each role gets exactly
what the permission matrix says.

Routes are read from `app.url_map` when the tests are collected, so a route that any module adds
is walked the day it is added. tests/walks_registry.py says how to make the objects its URL
names; a route whose parameter it does not know fails until the parameter is registered.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from urllib.parse import urlsplit

import pytest
from flask import Flask
from flask_login import login_user
from werkzeug.exceptions import Forbidden, NotFound

from crm.billing import gate
from crm.billing.plans import PLANS
from crm.extensions import db
from crm.foundation import services
from crm.foundation.models import ROLES, Organization, User
from crm.permissions import MATRIX, MODULE_BLUEPRINTS, SWITCHABLE, require, role_allows
from crm.tenancy import organization_context, set_current_organization
from tests.billing.factories import put_on_plan
from tests.factories import bearer, login, make_org, make_user, snapshot, url_map_app
from tests.walks_registry import BODY, OBJECTS, OTHER_PARAMETERS

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")

# Routes without @require(...), each with the reason. A new unguarded route fails
# test_every_route_is_guarded_or_listed until it is guarded or listed here.
PUBLIC = {
    "static": "stylesheets, scripts and images",
    "health.healthz": "load balancers probe it",
    "health.readyz": "load balancers probe it",
    "foundation.register": "creating a workspace is how one starts",
    "foundation.login": "the way in",
    "foundation.login_two_factor": "the way in's second step: the password was right, nobody "
                                   "is signed in yet",
    "foundation.logout": "ends whatever session there is, or none",
    "foundation.forgot_password": "for those who cannot log in",
    "foundation.reset_password": "the emailed token is the credential",
    "foundation.accept_invitation": "the emailed token is the credential",
    "foundation.confirm_email_change": "the emailed token is the credential",
    "foundation.set_language": "visitors choose a language before they log in",
    "api.openapi_json": "the API's public description",
    "api_docs.api_reference": "the same description, for people to read",
    "api.register": "creating a workspace is how one starts",
    "api.login": "the way in",
    "api.forgot_password": "for those who cannot log in",
    "api.reset_password": "the emailed token is the credential",
    "api.accept_invitation": "the emailed token is the credential",
    "api.confirm_email_change": "the emailed token is the credential",
}
LOGIN_ONLY = {
    "api.logout": "every role may end its own session",
    "api.show_me": "every role may read its own account",
    "api.show_email_change": "every role may read its own account",
    "api.request_email_change": "every role may change its own email address",
    "api.resend_email_change": "every role may change its own email address",
    "api.cancel_email_change": "every role may change its own email address",
}
# Guarded routes that change something with less than "write": each acts on the caller's own
# account only.
OWN_ACCOUNT_WRITES = {
    "foundation.profile": "one's own name and language",
    "foundation.change_password": "one's own password",
    "foundation.request_email_change": "one's own email address",
    "foundation.resend_email_change": "one's own email address",
    "foundation.cancel_email_change": "one's own email address",
    "foundation.sign_out_session": "one's own sessions",
    "foundation.sign_out_other_sessions": "one's own sessions",
    "foundation.mark_notifications_read": "one's own notifications",
    "foundation.start_two_factor": "one's own two-factor sign-in",
    "foundation.enable_two_factor": "one's own two-factor sign-in",
    "foundation.regenerate_recovery_codes": "one's own recovery codes",
    "foundation.disable_two_factor": "one's own two-factor sign-in, with password and code",
}
# Routes that another service calls with a credential of its own, never a session: whoever is
# logged in, a request without that credential is refused with 403, so the walks (which vary the
# session) do not apply. Their own tests check every credential and that nothing is stored.
SIGNED = {
    "whatsapp_webhooks.verify_profile": "Meta's subscription check: the profile's verify token",
    "whatsapp_webhooks.receive_for_profile": "Meta's deliveries: signed with the profile's app "
                                             "secret (tests/whatsapp/test_cloud.py)",
    "whatsapp_webhooks.verify_platform": "Meta's subscription check: WHATSAPP_VERIFY_TOKEN",
    "whatsapp_webhooks.receive_for_platform": "Meta's deliveries: signed with "
                                              "WHATSAPP_APP_SECRET (tests/whatsapp/test_cloud.py)",
    "billing_webhooks.receive_stripe": "Stripe's events: signed with STRIPE_WEBHOOK_SECRET "
                                       "(tests/billing/test_stripe.py)",
}


@dataclass(frozen=True)
class Route:
    endpoint: str
    rule: str
    method: str
    arguments: tuple[str, ...]

    @property
    def is_api(self) -> bool:
        return self.endpoint.startswith("api.")

    def __str__(self) -> str:
        return f"{self.method} {self.rule}"



def _routes() -> list[Route]:
    app = url_map_app()
    return sorted({Route(rule.endpoint, rule.rule, method, tuple(sorted(rule.arguments)))
                   for rule in app.url_map.iter_rules()
                   for method in rule.methods & set(METHODS)}, key=str)


def _permission(app: Flask, endpoint: str) -> tuple[str, str] | None:
    return getattr(app.view_functions[endpoint], "required_permission", None)


ROUTES = [route for route in _routes() if route.endpoint not in SIGNED]
ENDPOINTS = sorted({route.endpoint for route in ROUTES})
# Routes that name an object of an organization (any parameter not listed as something else).
PROBES = [route for route in ROUTES if set(route.arguments) - set(OTHER_PARAMETERS)]
GUARDED = [route for route in ROUTES if _permission(url_map_app(), route.endpoint)]
SWITCHABLE_ROUTES = [route for route in GUARDED
                     if _permission(url_map_app(), route.endpoint)[0] in SWITCHABLE]


# -- helpers -----------------------------------------------------------------------------------

def _url(app: Flask, route: Route, org: Organization) -> str:
    """The route's URL with objects of `org` for its parameters."""
    values = {}
    for name in route.arguments:
        if name in OBJECTS:
            values[name] = OBJECTS[name](org)
        elif name in OTHER_PARAMETERS:
            values[name] = OTHER_PARAMETERS[name][0]
        else:
            pytest.fail(f"{route}: URL parameter <{name}> is unknown to the route walks. Add "
                        f"'{name}' to OBJECTS in tests/walks_registry.py (a factory that makes "
                        "an object of an organization), or to OTHER_PARAMETERS with the reason "
                        "it names no organization's object.")
    rule = next(r for r in app.url_map.iter_rules(route.endpoint) if r.rule == route.rule)
    return rule.build(values, append_unknown=False)[1]


def _request(client, route: Route, url: str, user: User | None):
    """Send `route` as `user` (None: anonymous) the way its callers do, with a plausible body."""
    return _send(client, route, url, _sign_in(client, route, user))


def _sign_in(client, route: Route, user: User | None) -> dict:
    """Sign `user` in the way `route`'s callers do (a session, or a bearer token: either is a
    row of its own); the headers its requests carry."""
    if route.is_api:
        return bearer(user) if user else {}
    if user:
        login(client, user)
    return {}


def _send(client, route: Route, url: str, headers: dict):
    kwargs: dict = {"method": route.method, "headers": headers}
    if route.method != "GET":
        kwargs["json" if route.is_api else "data"] = BODY
    return client.open(url, **kwargs)


def _user_with_role(org: Organization, role: str) -> User:
    return org.admin if role == "admin" else make_user(org, role)


def _ids(routes: list[Route]) -> list[str]:
    return [str(route) for route in routes]


# -- the cross-organization probe --------------------------------------------------------------

def _refused_status(app: Flask, route: Route, role: str, allowed: int) -> int:
    """What `route` answers `role` for an object it may not see: `allowed` when the matrix
    lets the role use the route, else 403 (refused before any object is looked up)."""
    permission = _permission(app, route.endpoint)
    return allowed if permission is None or role_allows(role, *permission) else 403


@pytest.mark.parametrize("role", ["admin", "agent"])
@pytest.mark.parametrize("route", PROBES, ids=_ids(PROBES))
def test_another_organizations_object_answers_404(app, client, route, role):
    """A's admin or agent asking for B's object gets 404, as for one that does not exist (or
    the 403 of a route the agent may not use at all); B is unchanged."""
    org_a, org_b = make_org(), make_org()
    for make in OBJECTS.values():
        make(org_a)
    user = _user_with_role(org_a, role)
    url = _url(app, route, org_b)
    org_b_id = org_b.id  # the request's commit expires loaded objects
    before = snapshot(org_b_id)

    response = _request(client, route, url, user)

    assert response.status_code == _refused_status(app, route, role, 404), (
        f"{route} with organization B's ids answered {response.status_code} to A's {role}; "
        "look the object up (404) before reading the body or checking anything else")
    assert snapshot(org_b_id) == before


# Routes naming a conversation or one of its messages, which agents see only when assigned.
CONVERSATION_PROBES = [route for route in PROBES
                       if {"conversation_id", "message_id"} & set(route.arguments)]


@pytest.mark.parametrize("route", CONVERSATION_PROBES, ids=_ids(CONVERSATION_PROBES))
def test_a_conversation_not_assigned_to_an_agent_answers_404_to_them(app, client, route):
    """An agent asking for a conversation (or a message of one) of their own organization that
    is not assigned to them gets 404, as for one that does not exist, and nothing changes; the
    admin asking for the same is served."""
    org = make_org()
    agent = _user_with_role(org, "agent")
    url = _url(app, route, org)  # the factories' conversations are the admin's
    org_id = org.id
    headers = _sign_in(client, route, agent)  # the session it starts is no change
    before = snapshot(org_id)

    response = _send(client, route, url, headers)

    assert response.status_code == _refused_status(app, route, "agent", 404), (
        f"{route} answered {response.status_code} to an agent for a conversation not "
        "assigned to them; look it up with access_conversation (404)")
    assert snapshot(org_id) == before
    assert _request(client, route, url, org.admin).status_code != 404


# -- the permission matrix ---------------------------------------------------------------------

@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_every_route_is_guarded_or_listed(app, endpoint):
    """Every route carries @require(area, level), or is listed as public or login-only."""
    if _permission(app, endpoint) is None:
        assert endpoint in PUBLIC or endpoint in LOGIN_ONLY, (
            f"{endpoint} has no @require(area, level) guard: guard it, or list it in PUBLIC or "
            "LOGIN_ONLY in tests/test_walks.py with the reason")
    else:
        assert endpoint not in PUBLIC, f"{endpoint} is guarded: remove it from PUBLIC"
        assert endpoint not in LOGIN_ONLY, f"{endpoint} is guarded: remove it from LOGIN_ONLY"


def test_unguarded_lists_name_existing_routes(app):
    """PUBLIC, LOGIN_ONLY, OWN_ACCOUNT_WRITES and SIGNED name only endpoints that exist."""
    assert (set(PUBLIC) | set(LOGIN_ONLY) | set(OWN_ACCOUNT_WRITES) | set(SIGNED)
            <= set(app.view_functions))


WRITES = [route for route in GUARDED if route.method != "GET"]


@pytest.mark.parametrize("route", WRITES, ids=_ids(WRITES))
def test_routes_that_change_something_require_write(app, route):
    """A guarded POST, PUT, PATCH or DELETE requires the "write" level of its area, so a
    read-only role can never change anything through it."""
    area, level = _permission(app, route.endpoint)
    assert level == "write" or route.endpoint in OWN_ACCOUNT_WRITES, (
        f"{route} changes something but is guarded with ({area!r}, {level!r}); require "
        "'write', or list it in OWN_ACCOUNT_WRITES with the reason")


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("route", ROUTES, ids=_ids(ROUTES))
def test_each_role_gets_what_the_matrix_says(app, client, route, role):
    """A role the matrix allows is served (never 403); a role it does not allow gets 403."""
    org = make_org()
    user = _user_with_role(org, role)
    response = _request(client, route, _url(app, route, org), user)

    permission = _permission(app, route.endpoint)
    allowed = permission is None or role_allows(role, *permission)
    status = response.status_code
    assert status < 500, f"{route} as {role} answered {status}"
    if route.endpoint not in PUBLIC:
        assert status != 401, f"{route} refused a logged-in {role}"
    if allowed:
        assert status != 403, f"{route} refused {role}, which the matrix allows {permission}"
    else:
        assert status == 403, f"{route} answered {status} to {role}; the matrix says 403"


@pytest.mark.parametrize("route", [r for r in ROUTES if r.endpoint not in PUBLIC],
                         ids=_ids([r for r in ROUTES if r.endpoint not in PUBLIC]))
def test_routes_that_need_a_login_refuse_anonymous_callers(app, client, route):
    """Without a session or token, a page redirects to the login page and the API answers 401."""
    org = make_org()
    response = _request(client, route, _url(app, route, org), None)

    if route.is_api:
        assert response.status_code == 401
    else:
        assert response.status_code == 302
        login_path = app.url_map.bind("localhost").build(app.login_manager.login_view)
        assert urlsplit(response.location).path == login_path


# -- module switches ---------------------------------------------------------------------------

@pytest.mark.parametrize("route", SWITCHABLE_ROUTES, ids=_ids(SWITCHABLE_ROUTES))
def test_a_switched_off_module_answers_404(app, client, route):
    """With its module switched off, a module's route answers 404 even to the admin."""
    org = make_org()
    url = _url(app, route, org)
    assert _request(client, route, url, org.admin).status_code != 404

    with organization_context(org.id):
        services.set_module_enabled(org.admin, _permission(app, route.endpoint)[0], False)
        db.session.flush()
    assert _request(client, route, url, org.admin).status_code == 404


# The API's paths of each module; its pages are those of its blueprint (MODULE_BLUEPRINTS).
MODULE_API_PREFIXES = {"whatsapp": "/api/whatsapp/", "crm": "/api/crm/",
                       "ticketing": "/api/tickets", "campaigns": "/api/campaigns"}


def _owner(route: Route) -> str | None:
    """The switchable module a route belongs to, whatever permission guards it."""
    for module in SWITCHABLE:
        if (route.rule.startswith(MODULE_API_PREFIXES[module]) if route.is_api
                else route.endpoint.split(".")[0] == MODULE_BLUEPRINTS[module]):
            return module
    return None


# A module's own settings, guarded by the "settings" area, which is never switched off.
MODULE_SETTINGS_ROUTES = [route for route in GUARDED if _owner(route)
                          and _permission(url_map_app(), route.endpoint)[0] not in SWITCHABLE]


@pytest.mark.parametrize("route", MODULE_SETTINGS_ROUTES, ids=_ids(MODULE_SETTINGS_ROUTES))
def test_a_switched_off_modules_settings_answer_404(app, client, route):
    """A module's settings pages and API, guarded by the settings permission, answer 404 too
    when the module is switched off: its pages are gone from the navigation, and nothing
    reaches them by address; nothing changes."""
    org = make_org()
    url = _url(app, route, org)
    with organization_context(org.id):
        services.set_module_enabled(org.admin, _owner(route), False)
        db.session.flush()
    org_id = org.id
    headers = _sign_in(client, route, org.admin)  # the session it starts is no change
    before = snapshot(org_id)

    assert _send(client, route, url, headers).status_code == 404
    assert snapshot(org_id) == before


@pytest.mark.parametrize("route", SWITCHABLE_ROUTES, ids=_ids(SWITCHABLE_ROUTES))
def test_a_module_not_in_the_plan_answers_403_on_pages_and_402_on_the_api(
        app, client, route, monkeypatch):
    """On a plan without the route's module, even the admin is refused: a page with 403, the
    API with 402 plan_module (crm/billing/gate.py); nothing changes."""
    module = _permission(app, route.endpoint)[0]
    monkeypatch.setitem(app.config, "STRIPE_SECRET_KEY", "sk_test_walk")
    monkeypatch.setattr(gate, "PLANS", {**PLANS, "free": replace(
        PLANS["free"], modules=PLANS["free"].modules - {module})})
    org = make_org()
    put_on_plan(org, "free")
    url = _url(app, route, org)
    org_id = org.id
    headers = _sign_in(client, route, org.admin)
    before = snapshot(org_id)

    response = _send(client, route, url, headers)

    if route.is_api:
        assert (response.status_code, response.json["error"]["code"]) == (402, "plan_module")
    else:
        assert response.status_code == 403
    assert snapshot(org_id) == before


@require("crm", "write")
def _write_customers() -> str:
    return "written"


def _call_as(app: Flask, user: User | None):
    """Call the test-only guarded view in a request of its own, as `user` (None: anonymous)."""
    with app.app_context(), app.test_request_context("/walk-probe"):
        if user is not None:
            set_current_organization(user.organization_id)
            login_user(user)
        return _write_customers()


def test_require_marks_the_view_with_its_permission():
    """The walks read `required_permission` from every guarded view."""
    assert _write_customers.required_permission == ("crm", "write")


def test_require_serves_roles_the_matrix_allows(app, org):
    """A role with write access to the module gets the view."""
    allowed = [role for role in ROLES if MATRIX[role]["crm"] == "write"]
    assert allowed
    for role in allowed:
        assert _call_as(app, _user_with_role(org, role)) == "written"


def test_require_refuses_roles_below_the_level(app, org):
    """A role with read access (or none) gets 403."""
    refused = [role for role in ROLES if MATRIX[role]["crm"] != "write"]
    assert refused
    for role in refused:
        with pytest.raises(Forbidden):
            _call_as(app, _user_with_role(org, role))


def test_require_hides_a_switched_off_module(app, org, other_org):
    """A module switched off for the organization answers 404, even to its admin; other
    organizations keep it."""
    with organization_context(org.id):
        services.set_module_enabled(org.admin, "crm", False)
        db.session.flush()
    with pytest.raises(NotFound):
        _call_as(app, org.admin)
    assert _call_as(app, other_org.admin) == "written"


def test_require_sends_anonymous_callers_to_the_login_page(app):
    """Without a session the guarded view redirects to the login page."""
    response = _call_as(app, None)
    assert response.status_code == 302
    assert urlsplit(response.location).path == app.url_map.bind("localhost").build(
        app.login_manager.login_view)


def test_require_refuses_an_unknown_permission():
    """A typo in an area or level fails at import, not silently at request time."""
    with pytest.raises(ValueError, match="unknown permission"):
        require("customers", "read")
    with pytest.raises(ValueError, match="unknown permission"):
        require("crm", "admin")
