"""The foundation's JSON API: accounts, tokens and the team. Thin: every write is a service;
bodies and answers are declared in crm/foundation/schemas.py."""

from __future__ import annotations

from flask import Response, current_app
from flask_babel import gettext as _
from flask_babel import lazy_gettext
from flask_login import current_user, login_required

from crm.api.helpers import decode_cursor, encode_cursor
from crm.api.kit import Page, PageQuery, answer, no_content, parse, parse_query
from crm.api.openapi import Endpoints
from crm.errors import NotFoundError
from crm.foundation import schemas, services, two_factor
from crm.foundation.models import User
from crm.permissions import require
from crm.security import issue_token, login_rate_limited, public_rate_limited
from crm.web import me

auth = Endpoints("auth", lazy_gettext("Logging in"))
users = Endpoints("users", lazy_gettext("Users"))
api_keys = Endpoints("api-keys", lazy_gettext("API keys"))


def _token(user: User) -> dict:
    lifetime = current_app.config["JWT_LIFETIME"]
    return {"access_token": issue_token(user), "token_type": "Bearer",
            "expires_in": int(lifetime.total_seconds()), "user": user}


# -- auth ---------------------------------------------------------------------------------

@auth.post("/auth/register", "Create an organization and its first admin", public=True,
           body=schemas.NewOrganization, answers={201: schemas.Registration}, errors=(429,))
@public_rate_limited("register", per_email=True)
def register() -> Response:
    body = parse(schemas.NewOrganization)
    registration = services.register_organization(
        body.organization_name, body.full_name, body.email, body.password, body.language)
    return answer(schemas.Registration,
                  _token(registration.user) | {"organization": registration.organization}, 201)


@auth.post("/auth/login", "Exchange email and password (and, for a member with two-factor "
           "sign-in, a code) for a bearer token", public=True,
           body=schemas.Credentials, answers={200: schemas.Token}, errors=(401, 429))
@login_rate_limited
def login() -> Response:
    body = parse(schemas.Credentials)
    user = two_factor.log_in(body.email, body.password, body.organization_slug, body.code)
    return answer(schemas.Token, _token(user))


@auth.post("/auth/logout", "End the caller's token; their other tokens and sessions go on",
           answers={204: None}, errors=(409,))
@login_required
def logout() -> Response:
    services.logout(me())
    return no_content()


@auth.post("/auth/forgot-password", "Email a password reset link if an account has this "
           "address", public=True, body=schemas.PasswordResetRequest,
           answers={202: schemas.Accepted}, errors=(429,))
@public_rate_limited("forgot-password", per_email=True)
def forgot_password() -> Response:
    body = parse(schemas.PasswordResetRequest)
    # A malformed address is a 422 (it says nothing about accounts); a well-formed one is
    # always 202, whether or not an account has it.
    services.request_password_reset(services.normalize_email(body.email))
    return answer(schemas.Accepted, {"status": "accepted"}, 202)


@auth.post("/auth/reset-password", "Set a new password with the emailed token", public=True,
           body=schemas.PasswordReset, answers={200: schemas.Done}, errors=(429,))
@public_rate_limited("reset-password", failures_only=True)
def reset_password() -> Response:
    body = parse(schemas.PasswordReset)
    services.reset_password(body.token, body.password)
    return answer(schemas.Done, {"status": "ok"})


@auth.post("/auth/confirm-email", "Change an account's email address with the token sent to "
           "the new one; its other sessions end", public=True, body=schemas.EmailConfirmation,
           answers={200: schemas.User}, errors=(409, 429))
@public_rate_limited("confirm-email", failures_only=True)
def confirm_email_change() -> Response:
    body = parse(schemas.EmailConfirmation)
    by = me() if current_user.is_authenticated else None  # the member's own token stays
    return answer(schemas.User, services.confirm_email_change(body.token, by))


@auth.post("/auth/accept-invitation", "Join an organization with the emailed invitation "
           "token", public=True, body=schemas.InvitationAcceptance,
           answers={201: schemas.Token}, errors=(402, 409, 429))
@public_rate_limited("accept-invitation", failures_only=True)
def accept_invitation() -> Response:
    body = parse(schemas.InvitationAcceptance)
    user = services.accept_invitation(body.token, body.full_name, body.password)
    return answer(schemas.Token, _token(user), 201)


# -- users --------------------------------------------------------------------------------

@users.get("/users", "List the organization's active users", query=PageQuery,
           answers={200: Page[schemas.User]})
@require("users", "read")
def list_users() -> Response:
    query = parse_query(PageQuery)
    rows, last_id = services.list_users(decode_cursor(query.cursor), query.limit)
    return answer(Page[schemas.User], {"items": rows, "next_cursor": encode_cursor(last_id)})


@users.get("/users/me", "The caller", answers={200: schemas.User})
@login_required
def show_me() -> Response:
    return answer(schemas.User, me())


@users.get("/users/me/email-change", "The caller's change of email address waiting for its "
           "link", answers={200: schemas.EmailChange}, errors=(404,))
@login_required
def show_email_change() -> Response:
    change = services.pending_email_change(me())
    if change is None:
        raise NotFoundError(_("No change of email address is waiting."))
    return answer(schemas.EmailChange, change)


@users.post("/users/me/email-change", "Ask to log in with another address: a link to confirm "
            "goes to it, a notice to the current one", body=schemas.EmailChangeRequest,
            answers={202: schemas.EmailChange})
@login_required
@public_rate_limited("email-change")
def request_email_change() -> Response:
    body = parse(schemas.EmailChangeRequest)
    change = services.request_email_change(me(), body.new_email, body.current_password)
    return answer(schemas.EmailChange, change, 202)


@users.post("/users/me/email-change/link", "Send a new confirmation link (the earlier one "
            "stops working)", answers={202: schemas.EmailChange}, errors=(409,))
@login_required
@public_rate_limited("email-change")
def resend_email_change() -> Response:
    return answer(schemas.EmailChange, services.resend_email_change(me()), 202)


@users.delete("/users/me/email-change", "Cancel the waiting change of email address",
              answers={204: None}, errors=(409,))
@login_required
def cancel_email_change() -> Response:
    services.cancel_email_change(me())
    return no_content()


@users.get("/users/<int:user_id>", "One user of the organization",
           answers={200: schemas.User})
@require("users", "read")
def show_user(user_id: int) -> Response:
    return answer(schemas.User, services.access_user(user_id))


# A verb route, kept as the seed shipped it (docs/api.md): an invitation is not yet a user.
@users.post("/users/invite", "Invite someone by email with a role", body=schemas.NewInvitation,
            answers={201: schemas.Invitation}, errors=(409,))
@require("users", "write")
def invite_user() -> Response:
    body = parse(schemas.NewInvitation)
    invitation = services.invite_user(me(), body.email, body.role, body.language)
    return answer(schemas.Invitation, invitation, 201)


@users.patch("/users/<int:user_id>/role", "Change a user's role", body=schemas.RoleChange,
             answers={200: schemas.User}, errors=(409,))
@require("users", "write")
def change_role(user_id: int) -> Response:
    user = services.access_user(user_id)  # first, so another organization's id is a plain 404
    body = parse(schemas.RoleChange)
    return answer(schemas.User, services.change_role(me(), user, body.role))


@users.delete("/users/<int:user_id>", "Remove a user; their tokens and sessions stop at once",
              answers={204: None}, errors=(409,))
@require("users", "write")
def remove_user(user_id: int) -> Response:
    services.remove_user(me(), services.access_user(user_id))
    return no_content()


# -- API keys -----------------------------------------------------------------------------

@api_keys.get("/api-keys", "The organization's API keys (never the keys themselves)",
              answers={200: Page[schemas.ApiKey]})
@require("settings", "write")
def list_api_keys() -> Response:
    return answer(Page[schemas.ApiKey], {"items": services.list_api_keys(), "next_cursor": None})


@api_keys.post("/api-keys", "Create a key that acts as a member; the key is answered once",
               body=schemas.NewApiKeyRequest, answers={201: schemas.NewApiKey})
@require("settings", "write")
def create_api_key() -> Response:
    body = parse(schemas.NewApiKeyRequest)
    return answer(schemas.NewApiKey, services.create_api_key(me(), body.name, body.user_id),
                  201)


@api_keys.delete("/api-keys/<int:key_id>", "Revoke a key; it stops at once",
                 answers={204: None})
@require("settings", "write")
def revoke_api_key(key_id: int) -> Response:
    services.revoke_api_key(me(), services.access_api_key(key_id))
    return no_content()
