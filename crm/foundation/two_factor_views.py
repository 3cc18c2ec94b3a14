"""Two-factor sign-in on the profile (turning it on and off, recovery codes) and the team
page (an admin resets a member's). Routes of the foundation blueprint; the sign-in's second
step is beside the login, in views.py. The services are in two_factor.py.
"""

from __future__ import annotations

from flask import flash, request
from flask_babel import gettext as _

from crm.errors import ServiceError, ValidationError
from crm.foundation import services, two_factor
from crm.foundation.views import blueprint, profile_page, team_answer
from crm.i18n import isolate
from crm.permissions import require
from crm.web import me, page, see_other

SECRET_GROUP = 4  # the key typed by hand is shown in groups of four characters


def _codes_page(codes: list[str], status: int = 201) -> tuple[str, int]:
    """The recovery codes, in this answer only (they are kept hashed)."""
    return page("foundation/recovery_codes.html", status, codes=codes,
                codes_text="\n".join(codes) + "\n")


def _setup_page(secret: str, status: int = 200, **context) -> tuple[str, int]:
    user = me()
    groups = " ".join(secret[i:i + SECRET_GROUP] for i in range(0, len(secret), SECRET_GROUP))
    return page("foundation/two_factor_setup.html", status, secret_groups=groups,
                qr_code=two_factor.setup_qr_code(user, secret), **context)


@blueprint.post("/profile/two-factor/setup")
@require("users", "none")
def start_two_factor():
    try:
        two_factor.start_setup(me())
    except ServiceError as exc:
        flash(exc.message, "error")
        return see_other("foundation.profile")
    return see_other("foundation.two_factor_setup")


@blueprint.get("/profile/two-factor")
@require("users", "none")
def two_factor_setup():
    secret = two_factor.setup_secret(me())
    if secret is None:  # on already, or not started: the profile says which
        return see_other("foundation.profile")
    return _setup_page(secret)


@blueprint.post("/profile/two-factor")
@require("users", "none")
def enable_two_factor():
    user = me()
    try:
        codes = two_factor.enable(user, request.form.get("code"))
    except ValidationError as exc:
        return _setup_page(two_factor.setup_secret(user), 422, errors=exc.fields)
    except ServiceError as exc:
        flash(exc.message, "error")
        return see_other("foundation.profile")
    flash(_("Two-factor authentication is on."), "success")
    return _codes_page(codes)


@blueprint.post("/profile/two-factor/recovery-codes")
@require("users", "none")
def regenerate_recovery_codes():
    try:
        codes = two_factor.regenerate_recovery_codes(me(), request.form.get("code"))
    except ValidationError as exc:
        return profile_page(422, recovery_errors=exc.fields)
    flash(_("New recovery codes were made; the old ones no longer work."), "success")
    return _codes_page(codes)


@blueprint.post("/profile/two-factor/disable")
@require("users", "none")
def disable_two_factor():
    form = request.form
    try:
        two_factor.disable(me(), form.get("password"), form.get("code"))
    except ValidationError as exc:
        return profile_page(422, disable_errors=exc.fields)
    flash(_("Two-factor authentication is off."), "success")
    return see_other("foundation.profile")


@blueprint.post("/team/<int:user_id>/two-factor/reset")
@require("users", "write")
def reset_two_factor(user_id: int):
    user = services.access_user(user_id)
    try:
        two_factor.reset(me(), user)
    except ServiceError as exc:
        flash(exc.message, "error")
        return team_answer("foundation/_member_row.html", exc.status, user=user)
    flash(_("Two-factor authentication of %(name)s was reset: their password alone signs "
            "them in until they turn it on again.", name=isolate(user.full_name)), "success")
    return team_answer("foundation/_member_row.html", user=user)
