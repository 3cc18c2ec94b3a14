"""The foundation's JSON API: accounts, tokens and the team. Thin: every write is a service."""

from __future__ import annotations

from datetime import UTC, datetime

from flask import current_app
from flask_login import current_user, login_required

from crm.api import blueprint as api
from crm.api import openapi
from crm.api.helpers import decode_cursor, json_body, page, page_limit
from crm.api.openapi import CURSOR_PARAMETERS, list_of, operation, path_id, ref
from crm.foundation import services
from crm.foundation.models import ROLES, Invitation, Organization, User, UserSession
from crm.permissions import require
from crm.security import issue_token, login_rate_limited, public_rate_limited

# -- serialization ------------------------------------------------------------------------


def iso(value: datetime | None) -> str | None:
    """An ISO 8601 UTC timestamp ("...Z"), or None."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def user_json(user: User) -> dict:
    return {"id": user.id, "email": user.email, "full_name": user.full_name, "role": user.role,
            "preferred_language": user.preferred_language,
            "last_login_at": iso(user.last_login_at), "created_at": iso(user.created_at)}


def organization_json(org: Organization) -> dict:
    return {"id": org.id, "name": org.name, "slug": org.slug,
            "default_language": org.default_language, "timezone": org.timezone,
            "country": org.country, "created_at": iso(org.created_at)}


def invitation_json(invitation: Invitation) -> dict:
    return {"id": invitation.id, "email": invitation.email, "role": invitation.role,
            "language": invitation.language, "status": invitation.status,
            "expires_at": iso(invitation.expires_at), "created_at": iso(invitation.created_at)}


def api_key_json(key: UserSession) -> dict:
    return {"id": key.id, "name": key.name, "user_id": key.user_id,
            "created_at": iso(key.created_at), "last_used_at": iso(key.last_seen_at)}


def _token_body(user: User) -> dict:
    lifetime = current_app.config["JWT_LIFETIME"]
    return {"access_token": issue_token(user), "token_type": "Bearer",
            "expires_in": int(lifetime.total_seconds()), "user": user_json(user)}


def _me() -> User:
    return current_user._get_current_object()


# -- auth ---------------------------------------------------------------------------------

@api.post("/auth/register")
@public_rate_limited("register", per_email=True)
def register():
    data = json_body()
    registration = services.register_organization(
        data.get("organization_name"), data.get("full_name"), data.get("email"),
        data.get("password"), data.get("language"))
    body = _token_body(registration.user)
    body["organization"] = organization_json(registration.organization)
    return body, 201


@api.post("/auth/login")
@login_rate_limited
def login():
    data = json_body()
    user = services.authenticate(data.get("email"), data.get("password"),
                                 data.get("organization_slug"))
    return _token_body(user)


@api.post("/auth/logout")
@login_required
def logout():
    services.logout(_me())
    return "", 204


@api.post("/auth/forgot-password")
@public_rate_limited("forgot-password", per_email=True)
def forgot_password():
    data = json_body()
    # A malformed address is a 422 (it says nothing about accounts); a well-formed one is
    # always 202, whether or not an account has it.
    services.request_password_reset(services.normalize_email(data.get("email")))
    return {"status": "accepted"}, 202


@api.post("/auth/reset-password")
@public_rate_limited("reset-password", failures_only=True)
def reset_password():
    data = json_body()
    services.reset_password(data.get("token"), data.get("password"))
    return {"status": "ok"}


@api.post("/auth/accept-invitation")
@public_rate_limited("accept-invitation", failures_only=True)
def accept_invitation():
    data = json_body()
    user = services.accept_invitation(data.get("token"), data.get("full_name"),
                                      data.get("password"))
    return _token_body(user), 201


# -- users --------------------------------------------------------------------------------

@api.get("/users")
@require("users", "read")
def list_users():
    users, last_id = services.list_users(decode_cursor(), page_limit())
    return page(users, last_id, user_json)


@api.get("/users/me")
@login_required
def show_me():
    return user_json(_me())


@api.get("/users/<int:user_id>")
@require("users", "read")
def show_user(user_id: int):
    return user_json(services.access_user(user_id))


@api.post("/users/invite")
@require("users", "write")
def invite_user():
    data = json_body()
    invitation = services.invite_user(_me(), data.get("email"), data.get("role"),
                                      data.get("language"))
    return invitation_json(invitation), 201


@api.patch("/users/<int:user_id>/role")
@require("users", "write")
def change_role(user_id: int):
    user = services.access_user(user_id)  # first, so another organization's id is a plain 404
    return user_json(services.change_role(_me(), user, json_body().get("role")))


@api.delete("/users/<int:user_id>")
@require("users", "write")
def remove_user(user_id: int):
    services.remove_user(_me(), services.access_user(user_id))
    return "", 204


# -- API keys -----------------------------------------------------------------------------

@api.get("/api-keys")
@require("settings", "write")
def list_api_keys():
    return {"items": [api_key_json(key) for key in services.list_api_keys()],
            "next_cursor": None}


@api.post("/api-keys")
@require("settings", "write")
def create_api_key():
    data = json_body()
    key = services.create_api_key(_me(), data.get("name"), data.get("user_id"))
    return {**api_key_json(key), "key": key.credential}, 201


@api.delete("/api-keys/<int:key_id>")
@require("settings", "write")
def revoke_api_key(key_id: int):
    services.revoke_api_key(_me(), services.access_api_key(key_id))
    return "", 204


# -- the document -------------------------------------------------------------------------

def _object(properties: dict, required: tuple[str, ...] | None = None) -> dict:
    return {"type": "object", "properties": properties,
            "required": list(properties if required is None else required)}


_TEXT = {"type": "string", "minLength": 1}
_EMAIL = {"type": "string", "format": "email"}
_PASSWORD = {"type": "string", "minLength": services.MIN_PASSWORD_LENGTH, "maxLength": 1024}
_LANGUAGE = {"type": "string", "enum": list(services.LANGUAGES)}
_OPTIONAL_LANGUAGE = {**_LANGUAGE, "enum": [*services.LANGUAGES, "", None], "nullable": True,
                      "description": "Absent, empty or null: the default."}
_ROLE = {"type": "string", "enum": list(ROLES)}
_TIME = {"type": "string", "format": "date-time"}
_OPTIONAL_TIME = {**_TIME, "nullable": True}
_ID = {"type": "integer", "format": "int64"}
_API_KEY_PROPERTIES = {"id": _ID, "name": {"type": "string"},
                       "user_id": {**_ID, "description": "The member the key acts as."},
                       "created_at": _TIME, "last_used_at": _OPTIONAL_TIME}
_TOKEN_PROPERTIES = {"access_token": {"type": "string"},
                     "token_type": {"type": "string", "enum": ["Bearer"]},
                     "expires_in": {"type": "integer", "description": "Seconds."},
                     "user": ref("User")}

SCHEMAS = {
    "User": _object({"id": _ID, "email": {"type": "string"}, "full_name": {"type": "string"},
                     "role": _ROLE,
                     "preferred_language": {**_LANGUAGE, "enum": [*services.LANGUAGES, None],
                                            "nullable": True,
                                            "description": "Null: the organization's default."},
                     "last_login_at": _OPTIONAL_TIME, "created_at": _TIME}),
    "Organization": _object({"id": _ID, "name": {"type": "string"}, "slug": {"type": "string"},
                             "default_language": _LANGUAGE, "timezone": {"type": "string"},
                             "country": {"type": "string"}, "created_at": _TIME}),
    "Invitation": _object({"id": _ID, "email": {"type": "string"}, "role": _ROLE,
                           "language": _LANGUAGE,
                           "status": {"type": "string",
                                      "enum": ["pending", "accepted", "revoked", "expired"]},
                           "expires_at": _TIME, "created_at": _TIME}),
    "Token": _object(_TOKEN_PROPERTIES),
    "ApiKey": _object(_API_KEY_PROPERTIES),
    "NewApiKey": _object({**_API_KEY_PROPERTIES,
                          "key": {"type": "string", "pattern": "^wasl_",
                                  "description": "The key itself, answered this once: send it "
                                                 "as the bearer token."}}),
    "Registration": _object({**_TOKEN_PROPERTIES, "organization": ref("Organization")}),
}

_USER_ID = (path_id("user_id"),)
openapi.register({
    "/api/auth/register": {"post": operation(
        "Create an organization and its first admin", tag="auth", status=201, public=True,
        response=ref("Registration"), errors=(429,),
        body=_object({"organization_name": _TEXT, "full_name": _TEXT, "email": _EMAIL,
                      "password": _PASSWORD, "language": _OPTIONAL_LANGUAGE},
                     ("organization_name", "full_name", "email", "password")))},
    "/api/auth/login": {"post": operation(
        "Exchange email and password for a bearer token", tag="auth", status=200, public=True,
        response=ref("Token"), errors=(401, 429),
        body=_object({"email": _EMAIL, "password": {"type": "string"},
                      "organization_slug": {"type": "string", "nullable": True,
                                            "description": "Needed when the email belongs "
                                                           "to several organizations."}},
                     ("email", "password")))},
    "/api/auth/logout": {"post": operation(
        "End the caller's token; their other tokens and sessions go on", tag="auth",
        status=204, errors=(409,))},
    "/api/auth/forgot-password": {"post": operation(
        "Email a password reset link if an account has this address", tag="auth", status=202,
        public=True, response=_object({"status": {"type": "string", "enum": ["accepted"]}}),
        errors=(429,),
        body=_object({"email": _EMAIL}))},
    "/api/auth/reset-password": {"post": operation(
        "Set a new password with the emailed token", tag="auth", status=200, public=True,
        response=_object({"status": {"type": "string", "enum": ["ok"]}}), errors=(429,),
        body=_object({"token": {"type": "string"}, "password": _PASSWORD}))},
    "/api/auth/accept-invitation": {"post": operation(
        "Join an organization with the emailed invitation token", tag="auth", status=201,
        public=True, response=ref("Token"), errors=(409, 429),
        body=_object({"token": {"type": "string"}, "full_name": _TEXT,
                      "password": _PASSWORD}))},
    "/api/users": {"get": operation(
        "List the organization's active users", tag="users", status=200, permission=True,
        response=list_of("User"), parameters=CURSOR_PARAMETERS, errors=(422,))},
    "/api/users/me": {"get": operation(
        "The caller", tag="users", status=200, response=ref("User"))},
    "/api/users/{user_id}": {
        "get": operation("One user of the organization", tag="users", status=200,
                         permission=True, response=ref("User"), parameters=_USER_ID),
        "delete": operation("Remove a user; their tokens and sessions stop at once",
                            tag="users", status=204, permission=True, parameters=_USER_ID,
                            errors=(409,)),
    },
    "/api/users/{user_id}/role": {"patch": operation(
        "Change a user's role", tag="users", status=200, permission=True,
        response=ref("User"), parameters=_USER_ID, errors=(409,),
        body=_object({"role": _ROLE}))},
    "/api/api-keys": {
        "get": operation("The organization's API keys (never the keys themselves)",
                         tag="api-keys", status=200, permission=True, response=list_of("ApiKey")),
        "post": operation("Create a key that acts as a member; the key is answered once",
                          tag="api-keys", status=201, permission=True, response=ref("NewApiKey"),
                          body=_object({"name": _TEXT, "user_id": _ID})),
    },
    "/api/api-keys/{key_id}": {"delete": operation(
        "Revoke a key; it stops at once", tag="api-keys", status=204, permission=True,
        parameters=(path_id("key_id"),))},
    "/api/users/invite": {"post": operation(
        "Invite someone by email with a role", tag="users", status=201, permission=True,
        response=ref("Invitation"), errors=(409,),
        body=_object({"email": _EMAIL, "role": _ROLE, "language": _OPTIONAL_LANGUAGE},
                     ("email", "role")))},
}, SCHEMAS)
