"""Pages of the foundation: sign-up, login, passwords, profile, team, settings, audit log.

Thin by design: each view reads the form, calls one service and picks the answer. Forms work
as plain posts; an htmx request (not a boosted one) gets the changed fragment instead of the
page (STYLE.md "one template, two entry points").
"""

from __future__ import annotations

import functools
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import phonenumbers
from babel import Locale
from flask import (
    Blueprint,
    abort,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_babel import LazyString, lazy_gettext
from flask_babel import gettext as _
from flask_login import current_user

from crm.billing.gate import PlanLimitError
from crm.errors import AuthenticationError, ConflictError, ServiceError, ValidationError
from crm.foundation import services, two_factor
from crm.foundation.models import MODULE_LABELS, ROLES, Invitation, User
from crm.foundation.two_factor import SecondFactorRequiredError
from crm.i18n import current_language, isolate, timezone_name
from crm.permissions import (
    MATRIX,
    can,
    in_plan,
    installed_areas,
    installed_modules,
    module_enabled,
    require,
)
from crm.security import (
    await_second_factor,
    awaited_second_factor,
    end_session,
    login_rate_limited,
    public_rate_limited,
    second_factor_rate_limited,
    start_session,
)
from crm.validation import parse_id
from crm.web import fragment, is_htmx, me, page, see_other

blueprint = Blueprint("foundation", __name__)

ROLE_LABELS = {"admin": lazy_gettext("Admin"), "manager": lazy_gettext("Manager"),
               "agent": lazy_gettext("Agent"), "member": lazy_gettext("Member")}
AREA_LABELS = {"users": lazy_gettext("the team"), "settings": lazy_gettext("settings"),
               "crm": lazy_gettext("customers and the pipeline"),
               "whatsapp": lazy_gettext("WhatsApp conversations"),
               "ticketing": lazy_gettext("tickets"), "campaigns": lazy_gettext("campaigns"),
               "billing": lazy_gettext("billing")}
# What the matrix cannot say: agents answer the conversations assigned to them.
ROLE_NOTES = {"agent": lazy_gettext("Agents answer the conversations assigned to them; their "
                                    "dashboard counts their own work.")}
# Language names are written in their own language, so everyone finds theirs.
LANGUAGE_CHOICES = (("ar", "العربية"), ("en", "English"))
STATUS_LABELS = {"pending": lazy_gettext("Pending"), "expired": lazy_gettext("Expired"),
                 "accepted": lazy_gettext("Accepted"), "revoked": lazy_gettext("Revoked")}
AUDIT_ACTIONS = {
    "organization.registered": lazy_gettext("Workspace created"),
    "organization.updated": lazy_gettext("Settings changed"),
    "settings.module_switched": lazy_gettext("Module switched on or off"),
    "user.login": lazy_gettext("Logged in"),
    "user.login_failed": lazy_gettext("Failed login"),
    "user.logout": lazy_gettext("Logged out"),
    "user.password_reset_requested": lazy_gettext("Password reset requested"),
    "user.password_reset": lazy_gettext("Password reset"),
    "user.password_changed": lazy_gettext("Password changed"),
    "user.email_change_requested": lazy_gettext("Email change requested"),
    "user.email_change_resent": lazy_gettext("Email change link sent again"),
    "user.email_change_cancelled": lazy_gettext("Email change cancelled"),
    "user.email_changed": lazy_gettext("Email address changed"),
    "user.role_changed": lazy_gettext("Role changed"),
    "user.removed": lazy_gettext("Removed from the team"),
    "invitation.sent": lazy_gettext("Invitation sent"),
    "invitation.resent": lazy_gettext("Invitation sent again"),
    "invitation.revoked": lazy_gettext("Invitation revoked"),
    "invitation.accepted": lazy_gettext("Invitation accepted"),
    "user.session_ended": lazy_gettext("Signed out a session"),
    "user.other_sessions_ended": lazy_gettext("Signed out of the other sessions"),
    "api_key.created": lazy_gettext("API key created"),
    "api_key.revoked": lazy_gettext("API key revoked"),
    "user.two_factor_enabled": lazy_gettext("Two-factor authentication turned on"),
    "user.two_factor_disabled": lazy_gettext("Two-factor authentication turned off"),
    "user.two_factor_reset": lazy_gettext("Two-factor authentication reset by an admin"),
    "user.two_factor_failed": lazy_gettext("Wrong two-factor code"),
    "user.recovery_codes_regenerated": lazy_gettext("New recovery codes made"),
}
# The organization's settings, as an audited change names them.
SETTING_LABELS = {"name": lazy_gettext("Organization name"),
                  "default_language": lazy_gettext("Default language"),
                  "timezone": lazy_gettext("Time zone"), "country": lazy_gettext("Country"),
                  "currency": lazy_gettext("Currency")}
# An entry's `changes` is either a map of settings to their old and new values (the
# organization's, named above) or a list of the fields a change made (a module's, named here).
FIELD_LABELS: dict[str, LazyString] = {}
TARGET_LABELS = {"users": lazy_gettext("User"), "invitations": lazy_gettext("Invitation"),
                 "organizations": lazy_gettext("Organization"),
                 "user_sessions": lazy_gettext("API key")}


def add_audit_labels(actions: Mapping[str, LazyString],
                     targets: Mapping[str, LazyString] | None = None,
                     fields: Mapping[str, LazyString] | None = None) -> None:
    """Name a module's audited actions, the tables of what they act on, and the fields an
    entry's `changes` list, in the audit log (the kernel names no module's)."""
    AUDIT_ACTIONS.update(actions)
    TARGET_LABELS.update(targets or {})
    FIELD_LABELS.update(fields or {})

# Words in a user agent that name a browser or a system, most specific first (Edge and Opera
# say "Chrome" too, Chrome says "Safari", Android says "Linux", an iPhone "Mac OS X").
_BROWSERS = (("Edg/", "Edge"), ("OPR/", "Opera"), ("Firefox/", "Firefox"),
             ("Chrome/", "Chrome"), ("Safari/", "Safari"))
_SYSTEMS = (("Android", "Android"), ("iPhone", "iOS"), ("iPad", "iOS"), ("Windows", "Windows"),
            ("Mac OS X", "macOS"), ("CrOS", "ChromeOS"), ("Linux", "Linux"))
SHOWN_USER_AGENT = 60
_TIMEZONE_REGIONS = ("Africa", "America", "Antarctica", "Asia", "Atlantic", "Australia",
                     "Europe", "Indian", "Pacific")
LANGUAGE_COOKIE_AGE = timedelta(days=365)


@blueprint.app_context_processor
def _labels() -> dict:
    """Labels for foundation pages and for its emails, which other blueprints and jobs send."""
    return {"role_labels": ROLE_LABELS, "module_labels": MODULE_LABELS,
            "status_labels": STATUS_LABELS, "language_choices": LANGUAGE_CHOICES,
            "role_choices": [(role, ROLE_LABELS[role]) for role in ROLES]}


# -- the dashboard: modules add their cards and their onboarding steps -----------------------

@dataclass(frozen=True)
class DashboardCard:
    """A card on the dashboard: its template, who may see it, the data it shows (for the
    current user: an agent's own numbers) and the Socket.IO events after which it is fetched
    again (crm/realtime.py; the page's script fires `realtime:<event>`).

    Tickets and campaigns add theirs the same way when they land (tickets breaching their SLA
    soon, the campaign running now), as crm/whatsapp/dashboard.py and crm/customers/views.py do.
    """

    template: str
    area: str
    level: str = "read"
    data: Callable[[], dict] = dict
    events: tuple[str, ...] = ()
    order: int = 50  # the work first: inbox 10, pipeline 20, tasks 30 (tickets, campaigns after)


@dataclass(frozen=True)
class OnboardingStep:
    """A step of a new organization's checklist, shown to whoever may take it until every
    step is done; `new_window` opens it beside the page (the sandbox beside the inbox)."""

    key: str
    label: LazyString
    url: Callable[[], str]
    done: Callable[[], bool]
    area: str = "settings"
    level: str = "write"
    new_window: bool = False
    method: str = "get"  # "post": a one-click form (creating the sandbox number first)
    module: str | None = None  # the module a settings step leads into: left out while off


_dashboard_cards: list[DashboardCard] = []
_onboarding_steps: list[OnboardingStep] = []
# The dashboard refreshes its cards at least this often (tasks fall due without any event).
DASHBOARD_REFRESH_SECONDS = 60


def add_dashboard_card(card: DashboardCard) -> None:
    """Show `card` on the dashboard to everyone whose role reaches its area and level."""
    _dashboard_cards.append(card)
    _dashboard_cards.sort(key=lambda added: added.order)


def add_onboarding_step(step: OnboardingStep, position: int | None = None) -> None:
    """Add `step` to the checklist (at `position`, else last)."""
    _onboarding_steps.insert(len(_onboarding_steps) if position is None else position, step)


# -- helpers ----------------------------------------------------------------------------------

def _safe_next(target: str | None) -> str:
    """Where to go after a form: a path on this site, never another site (open redirect).

    Browsers drop tabs and newlines from addresses and read a backslash as a slash, so
    "/\t/evil.example" or "/\\evil.example" would leave the site.
    """
    if (target and target.startswith("/") and target.isprintable() and "\\" not in target
            and not target.startswith("//")):
        parts = urlsplit(target)
        if not parts.scheme and not parts.netloc:
            return target
    return url_for("foundation.dashboard")


def _invalid_link(message: str) -> tuple[str, int]:
    return render_template("foundation/invalid_link.html", message=message), 400


def _link_refused(exc: ValidationError) -> bool:
    """Did the service refuse the link itself (rather than what was typed)?"""
    return "token" in exc.fields


# -- account: register, login, logout --------------------------------------------------------

@blueprint.route("/register", methods=["GET", "POST"])
@public_rate_limited("register", per_email=True)
def register():
    if current_user.is_authenticated:
        return see_other("foundation.dashboard")
    if request.method == "GET":
        return page("foundation/register.html", values={"language": current_language()})
    form = request.form
    try:
        registration = services.register_organization(
            form.get("organization_name"), form.get("full_name"), form.get("email"),
            form.get("password"), form.get("language"))
    except ValidationError as exc:
        return page("foundation/register.html", 422, errors=exc.fields, values=form,
                     error=exc.message)
    start_session(registration.user)
    flash(_("Welcome to Wasl! Your workspace is ready."), "success")
    return see_other("foundation.dashboard")


@blueprint.route("/login", methods=["GET", "POST"])
@login_rate_limited
def login():
    if current_user.is_authenticated:
        return see_other("foundation.dashboard")
    next_url = request.values.get("next", "")
    if request.method == "GET":
        return page("foundation/login.html", next_url=next_url)
    form = request.form
    try:
        user = two_factor.log_in(form.get("email"), form.get("password"),
                                 form.get("organization_slug") or None)
    except SecondFactorRequiredError as exc:
        await_second_factor(exc.user, bool(form.get("remember")), next_url)
        return see_other("foundation.login_two_factor")
    except AuthenticationError as exc:
        return page("foundation/login.html", 422, values=form, error=exc.message,
                     next_url=next_url, show_workspace=bool(form.get("organization_slug")))
    except ValidationError as exc:
        return page("foundation/login.html", 422, values=form, errors=exc.fields,
                     error=exc.message, next_url=next_url, show_workspace=True)
    start_session(user, remember=bool(form.get("remember")))
    return redirect(_safe_next(next_url), 303)


@blueprint.route("/login/two-factor", methods=["GET", "POST"])
@second_factor_rate_limited  # the password's allowance: guessing codes costs attempts too
def login_two_factor():
    """A sign-in's second step: the code from the app, or a recovery code."""
    if current_user.is_authenticated:
        return see_other("foundation.dashboard")
    pending = awaited_second_factor()
    user = pending and two_factor.pending_login(pending["organization_id"], pending["user_id"])
    if not user:
        flash(_("Your sign-in took too long. Log in again."), "info")
        return see_other("foundation.login")
    recovery = bool(request.values.get("recovery"))  # a recovery code's field, not the app's
    if request.method == "GET":
        return page("foundation/login_two_factor.html", recovery=recovery)
    try:
        two_factor.complete_login(user, request.form.get("code"))
    except ValidationError as exc:
        return page("foundation/login_two_factor.html", 422, errors=exc.fields,
                    recovery=recovery)
    start_session(user, remember=pending["remember"])
    return redirect(_safe_next(pending["next"]), 303)


@blueprint.post("/logout")
def logout():
    if current_user.is_authenticated:
        services.logout(me())
    end_session()
    flash(_("You have been logged out."), "info")
    return see_other("foundation.login")


# -- passwords ----------------------------------------------------------------------------------

@blueprint.route("/forgot-password", methods=["GET", "POST"])
@public_rate_limited("forgot-password", per_email=True)
def forgot_password():
    if request.method == "GET":
        return page("foundation/forgot_password.html")
    services.request_password_reset(request.form.get("email"))
    # The same answer whether or not the account exists, so the page reveals no one.
    flash(_("If an account exists for this email, we sent a link to reset the password."),
          "success")
    return see_other("foundation.forgot_password")


@blueprint.route("/reset-password/<token>", methods=["GET", "POST"])
@public_rate_limited("reset-password", failures_only=True)
def reset_password(token: str):
    form = request.form
    try:
        if request.method == "GET":
            services.pending_password_reset(token)
            return page("foundation/reset_password.html", token=token)
        services.reset_password(token, form.get("password"),
                                form.get("password_confirmation", ""))
    except ValidationError as exc:
        if _link_refused(exc):
            return _invalid_link(exc.fields["token"])
        return page("foundation/reset_password.html", 422, errors=exc.fields, token=token)
    flash(_("Your password has been changed. Log in with the new one."), "success")
    return see_other("foundation.login")


# -- dashboard and profile -------------------------------------------------------------------

def _cards() -> dict:
    """What the dashboard's cards show to the current user, and the events that refresh them."""
    cards = [(card, card.data()) for card in _dashboard_cards if can(card.area, card.level)]
    events = sorted({event for card, _data in cards for event in card.events})
    return {"counts": services.dashboard_counts(), "cards": cards,
            "refresh_on": [f"realtime:{event} from:body throttle:2s" for event in events]
            + ["realtime:reconnected from:body", f"every {DASHBOARD_REFRESH_SECONDS}s"]}


def _checklist() -> list[tuple[OnboardingStep, bool]]:
    """The steps the current user may take, each with whether it is done; none once all are."""
    steps = [(step, step.done()) for step in _onboarding_steps if can(step.area, step.level)
             and (step.module is None or module_enabled(step.module))]
    return [] if all(done for _step, done in steps) else steps


@blueprint.get("/")
@require("users", "none")
def dashboard():
    cards = _cards()
    return render_template("foundation/dashboard.html", checklist=_checklist(), **cards)


@blueprint.get("/dashboard/cards")
@require("users", "none")
def dashboard_cards():
    """The cards alone, fetched again when something they count changes."""
    return render_template("foundation/_dashboard_cards.html", **_cards())


def profile_page(status: int = 200, **context) -> tuple[str, int]:
    context.setdefault("values", {"full_name": current_user.full_name,
                                  "preferred_language": current_language()})
    context.setdefault("password_errors", {})
    context.setdefault("email_errors", {})
    context.setdefault("email_values", {})
    context.setdefault("recovery_errors", {})
    context.setdefault("disable_errors", {})
    return page("foundation/profile.html", status, **_sessions(),
                email_change=services.pending_email_change(me()),
                recovery_codes_left=two_factor.recovery_codes_left(me()), **context)


@blueprint.route("/profile", methods=["GET", "POST"])
@require("users", "none")
def profile():
    if request.method == "GET":
        return profile_page()
    form = request.form
    try:
        services.update_profile(me(), form.get("full_name"), form.get("preferred_language"))
    except ValidationError as exc:
        return profile_page(422, errors=exc.fields, values=form)
    flash(_("Your profile has been saved."), "success")
    return see_other("foundation.profile")


@blueprint.post("/profile/password")
@require("users", "none")
def change_password():
    form = request.form
    try:
        services.change_password(me(), form.get("current_password"), form.get("new_password"),
                                 form.get("new_password_confirmation", ""))
    except ValidationError as exc:
        return profile_page(422, password_errors=exc.fields)
    flash(_("Your password has been changed. Your other sessions were signed out."), "success")
    return see_other("foundation.profile")


@blueprint.post("/profile/email")
@require("users", "none")
@public_rate_limited("email-change")  # each ask mails two addresses and checks a password
def request_email_change():
    form = request.form
    try:
        change = services.request_email_change(me(), form.get("new_email"),
                                               form.get("current_password"))
    except ValidationError as exc:
        return profile_page(422, email_errors=exc.fields, email_values=form)
    flash(_("We sent a link to %(email)s. Your address changes once you open it.",
            email=change.new_email), "success")
    return see_other("foundation.profile", _anchor="email")


@blueprint.post("/profile/email/resend")
@require("users", "none")
@public_rate_limited("email-change")  # each sends a mail
def resend_email_change():
    return _email_change_answer(services.resend_email_change,
                                _("We sent the link again. The earlier one no longer works."))


@blueprint.post("/profile/email/cancel")
@require("users", "none")
def cancel_email_change():
    return _email_change_answer(services.cancel_email_change,
                                _("The change of email address was cancelled."))


def _email_change_answer(change: Callable[[User], object], done: str):
    """Run `change` on the waiting change of address, flash `done` or the refusal."""
    try:
        change(me())
    except ConflictError as exc:  # nothing waits any more: confirmed, expired or cancelled
        flash(exc.message, "error")
    else:
        flash(done, "success")
    return see_other("foundation.profile", _anchor="email")


@blueprint.get("/confirm-email/<token>")
def confirm_email_change(token: str):
    """The link sent to the new address: opening it, signed in or not, makes the change."""
    by = me() if current_user.is_authenticated else None
    try:
        user = services.confirm_email_change(token, by)
    except ValidationError as exc:
        return _invalid_link(exc.fields["token"])
    except ConflictError as exc:  # the address was taken meanwhile
        return render_template("foundation/invalid_link.html", message=exc.message), exc.status
    return render_template("foundation/email_changed.html", email=user.email,
                           signed_in=by is not None and by is user)


def device_name(user_agent: str | None) -> str:
    """A session's device in words ("Firefox on Windows"), or its user agent, cut short."""
    if not user_agent:
        return _("Unknown device")
    browser = next((name for word, name in _BROWSERS if word in user_agent), None)
    system = next((name for word, name in _SYSTEMS if word in user_agent), None)
    if browser and system:
        return _("%(browser)s on %(system)s", browser=browser, system=system)
    return user_agent[:SHOWN_USER_AGENT]


def _sessions_answer():
    """Answer a change to the sessions: htmx gets the list, a plain post the profile."""
    if is_htmx():
        return fragment("foundation/_sessions.html", **_sessions())
    return see_other("foundation.profile")


def _sessions() -> dict:
    return {"sessions": services.list_sessions(me()), "device_name": device_name}


@blueprint.post("/profile/sessions/<int:session_id>/end")
@require("users", "none")
def sign_out_session(session_id: int):
    user = me()
    services.end_session(user, services.access_session(user, session_id))
    flash(_("That session was signed out."), "success")
    return _sessions_answer()


@blueprint.post("/profile/sessions/end-others")
@require("users", "none")
def sign_out_other_sessions():
    services.end_other_sessions(me())
    flash(_("Your other sessions were signed out."), "success")
    return _sessions_answer()


@blueprint.post("/language")
def set_language():
    language = request.form.get("language")
    response = redirect(_safe_next(request.form.get("next")), 303)
    if current_user.is_authenticated:
        services.set_language(me(), language)
    elif language in services.LANGUAGES:
        response.set_cookie("lang", language, max_age=LANGUAGE_COOKIE_AGE, httponly=True,
                            samesite="Lax", secure=request.is_secure)
    else:
        abort(400)
    return response


# -- team ---------------------------------------------------------------------------------------

def _with_invitations(context: dict) -> dict:
    """Fill what the invitations section shows, keeping what the caller already set."""
    if "invitations" not in context:
        context["invitations"] = services.list_invitations()
    context.setdefault("invite_errors", {})
    context.setdefault("invite_values", {"language": me().organization.default_language})
    return context


def _members() -> dict:
    """One page of the team, from the `cursor` (an id) on."""
    users, next_cursor = services.list_users(parse_id(request.args.get("cursor")))
    return {"users": users, "next_cursor": next_cursor}


@dataclass(frozen=True)
class RoleSummary:
    """What a role may do, read from the permission matrix (crm/permissions.py)."""

    role: str
    changes: list[str]
    reads: list[str]
    note: str | None


def role_summaries() -> list[RoleSummary]:
    """Each role's areas it changes and areas it only reads, among those the app has."""
    summaries = []
    for role in ROLES:
        levels = {area: MATRIX[role][area] for area in installed_areas()}
        summaries.append(RoleSummary(
            role, [str(AREA_LABELS[a]) for a, level in levels.items() if level == "write"],
            [str(AREA_LABELS[a]) for a, level in levels.items() if level == "read"],
            ROLE_NOTES.get(role)))
    return summaries


def _team_page(status: int = 200, **context) -> tuple[str, int]:
    return render_template("foundation/team.html", **_members(), roles=role_summaries(),
                           **_with_invitations(context)), status


def team_answer(template: str | None, status: int = 200, **context):
    """Answer a team change: htmx gets the changed fragment, a plain post the page."""
    if is_htmx():
        return fragment(template, status, **context)
    if status < 400:
        return see_other("foundation.team")
    return _team_page(status, **context)


def _invitations_answer(status: int = 200, **context):
    return team_answer("foundation/_invitations.html", status, **_with_invitations(context))


@blueprint.get("/team")
@require("users", "read")
def team():
    if is_htmx():  # "Load more": the next rows only
        return render_template("foundation/_member_rows.html", **_members())
    return _team_page()


@blueprint.post("/team/<int:user_id>/role")
@require("users", "write")
def change_role(user_id: int):
    user = services.access_user(user_id)
    try:
        services.change_role(me(), user, request.form.get("role"))
    except ServiceError as exc:
        flash(exc.message, "error")
        return team_answer("foundation/_member_row.html", exc.status, user=user)
    flash(_("%(name)s is now %(role)s.", name=isolate(user.full_name), role=ROLE_LABELS[user.role]),
          "success")
    return team_answer("foundation/_member_row.html", user=user)


@blueprint.post("/team/<int:user_id>/remove")
@require("users", "write")
def remove_user(user_id: int):
    user = services.access_user(user_id)
    try:
        if user.id == current_user.id:
            raise ConflictError(_("You cannot remove yourself from the team."))
        services.remove_user(me(), user)
    except ServiceError as exc:
        flash(exc.message, "error")
        return team_answer("foundation/_member_row.html", exc.status, user=user)
    flash(_("%(name)s was removed from the team.", name=isolate(user.full_name)), "success")
    return team_answer(None)


@blueprint.post("/team/invitations")
@require("users", "write")
def invite_user():
    form = request.form
    try:
        invitation = services.invite_user(me(), form.get("email"), form.get("role"),
                                          form.get("language"))
    except ServiceError as exc:
        return _invitations_answer(exc.status, invite_errors=exc.fields, invite_values=form,
                                   invite_error=exc.message, invite_error_code=exc.code)
    flash(_("Invitation sent to %(email)s.", email=invitation.email), "success")
    return _invitations_answer()


@blueprint.post("/team/invitations/<int:invitation_id>/resend")
@require("users", "write")
def resend_invitation(invitation_id: int):
    invitation = services.access_invitation(invitation_id)
    return _change_invitation(services.resend_invitation, invitation,
                              _("Invitation sent again to %(email)s.", email=invitation.email))


@blueprint.post("/team/invitations/<int:invitation_id>/revoke")
@require("users", "write")
def revoke_invitation(invitation_id: int):
    invitation = services.access_invitation(invitation_id)
    return _change_invitation(services.revoke_invitation, invitation,
                              _("The invitation to %(email)s was revoked.", email=invitation.email))


def _change_invitation(change: Callable[[User, Invitation], object], invitation: Invitation,
                       done: str):
    """Run `change` on a pending invitation, flash `done` or the refusal, answer the list."""
    try:
        change(me(), invitation)
    except ServiceError as exc:
        flash(exc.message, "error")
        return _invitations_answer(exc.status)
    flash(done, "success")
    return _invitations_answer()


@blueprint.route("/invitations/accept/<token>", methods=["GET", "POST"])
@public_rate_limited("accept-invitation", failures_only=True)
def accept_invitation(token: str):
    try:
        invitation = services.pending_invitation(token)
        if request.method == "GET":
            return _accept_page(invitation, token)
        user = services.accept_invitation(token, request.form.get("full_name"),
                                          request.form.get("password"))
    except ValidationError as exc:
        if _link_refused(exc):
            return _invalid_link(exc.fields["token"])
        return _accept_page(invitation, token, 422, errors=exc.fields, values=request.form)
    except (ConflictError, PlanLimitError) as exc:  # a member already, or no seat left
        return _accept_page(invitation, token, exc.status, error=exc.message,
                            error_code=exc.code)
    start_session(user)
    flash(_("Welcome to %(organization)s!",
            organization=isolate(services.current_organization().name)),
          "success")
    return see_other("foundation.dashboard")


def _accept_page(invitation, token: str, status: int = 200, **context) -> tuple[str, int]:
    return page("foundation/accept_invitation.html", status, invitation=invitation, token=token,
                 organization=services.current_organization(), **context)


# -- settings and audit log ------------------------------------------------------------------

@functools.cache
def _timezone_names() -> tuple[str, ...]:
    regional = sorted(name for name in zoneinfo.available_timezones()
                      if name.split("/", 1)[0] in _TIMEZONE_REGIONS)
    return ("UTC", *regional)


@functools.cache
def _timezone_choices(language: str, day: date) -> tuple[tuple[str, str], ...]:
    """Time zones named in `language` with their offset on `day` («توقيت مصر (UTC+02:00)»),
    sorted by offset then name; the IANA name stays the value, so a search finds a zone by
    its name in either language. Cached per day: offsets change with daylight saving."""
    moment = datetime.combine(day, time(12), UTC)
    choices = []
    for zone in _timezone_names():
        offset = moment.astimezone(ZoneInfo(zone)).utcoffset() or timedelta(0)
        minutes = int(offset.total_seconds()) // 60
        sign = "+" if minutes >= 0 else "-"
        shown = f"UTC{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
        name = timezone_name(zone, language)
        choices.append((minutes, name, zone, f"{name} ({shown})"))
    choices.sort()
    return tuple((zone, label) for _minutes, _name, zone, label in choices)


@functools.cache
def _currency_choices(language: str) -> tuple[tuple[str, str], ...]:
    """Currencies named in `language` with their code, sorted by name."""
    names = Locale.parse(language).currencies
    return tuple(sorted(((code, f"{names.get(code, code)} ({code})")
                         for code in services.currencies()), key=lambda choice: choice[1]))


@functools.cache
def _country_choices(language: str) -> tuple[tuple[str, str], ...]:
    """Phone regions with their names in `language`, sorted by name."""
    names = Locale.parse(language).territories
    return tuple(sorted(((code, names.get(code, code)) for code in phonenumbers.SUPPORTED_REGIONS),
                        key=lambda choice: choice[1]))


def _settings_page(status: int = 200, **context) -> tuple[str, int]:
    org = me().organization
    context.setdefault("values", {"name": org.name, "default_language": org.default_language,
                                  "timezone": org.timezone, "country": org.country,
                                  "currency": org.currency})
    language = current_language()
    zones = _timezone_choices(language, date.today())
    return page("foundation/settings.html", status, organization=org, timezone_choices=zones,
                 timezone_label=dict(zones).get(org.timezone, org.timezone),
                 country_choices=_country_choices(language),
                 currency_choices=_currency_choices(language),
                 enabled_modules=services.enabled_modules(), modules=installed_modules(),
                 outside_plan=[module for module in installed_modules() if not in_plan(module)],
                 **context)


@blueprint.get("/settings")
@require("settings", "read")
def settings():
    return _settings_page()


@blueprint.post("/settings")
@require("settings", "write")
def update_settings():
    form = request.form
    try:
        services.update_organization(me(), form.get("name"), form.get("default_language"),
                                     form.get("timezone"), form.get("country"),
                                     form.get("currency"))
    except ValidationError as exc:
        return _settings_page(422, errors=exc.fields, values=form, error=exc.message)
    flash(_("Settings saved."), "success")
    return see_other("foundation.settings")


@blueprint.post("/settings/modules")
@require("settings", "write")
def update_modules():
    chosen = set(request.form.getlist("modules"))
    for module in installed_modules():
        services.set_module_enabled(me(), module, module in chosen)
    flash(_("Modules saved."), "success")
    return see_other("foundation.settings")


def _api_keys_page(status: int = 200, **context) -> tuple[str, int]:
    members, _next = services.list_users(limit=500)
    return page("foundation/api_keys.html", status, keys=services.list_api_keys(),
                 members=[(str(user.id), user.full_name) for user in members], **context)


@blueprint.get("/settings/api-keys")
@require("settings", "write")
def api_keys():
    return _api_keys_page()


@blueprint.post("/settings/api-keys")
@require("settings", "write")
def create_api_key():
    form = request.form
    try:
        key = services.create_api_key(me(), form.get("name"), form.get("user_id"))
    except ValidationError as exc:
        return _api_keys_page(422, errors=exc.fields, values=form)
    # Shown in this answer only: a redirect would have to carry the secret in the session
    # cookie, which is signed, not encrypted.
    return _api_keys_page(201, new_key=key)


@blueprint.post("/settings/api-keys/<int:key_id>/revoke")
@require("settings", "write")
def revoke_api_key(key_id: int):
    key = services.access_api_key(key_id)
    services.revoke_api_key(me(), key)
    flash(_("The key %(name)s was revoked.", name=key.name), "success")
    if is_htmx():
        return fragment("foundation/_api_keys.html", keys=services.list_api_keys())
    return see_other("foundation.api_keys")


def _setting_value(field: str, value: object) -> object:
    """A changed setting's value as the viewer reads it: a language, a country or a time zone
    by its name in their language (the log keeps the codes); any other as it was."""
    language = current_language()
    if not isinstance(value, str):
        return value
    if field == "default_language":
        return Locale.parse(language).languages.get(value, value)
    if field == "country":
        return Locale.parse(language).territories.get(value, value)
    if field == "timezone":
        return timezone_name(value, language)
    return value


@blueprint.get("/settings/audit")
@require("settings", "write")
def audit_log():
    action = request.args.get("action") if request.args.get("action") in AUDIT_ACTIONS else None
    filters = {"action": action, "actor": parse_id(request.args.get("actor"))}
    # The filter's choices, and the names of the members entries act on.
    people = {user.id: user for user in services.everyone()}
    entries, next_cursor = services.list_audit(parse_id(request.args.get("cursor")),
                                               action=action, actor_id=filters["actor"])
    template = "foundation/_audit_rows.html" if is_htmx() else "foundation/audit_log.html"
    return render_template(template, entries=entries, next_cursor=next_cursor, people=people,
                           filters=filters, action_labels=AUDIT_ACTIONS,
                           action_choices=sorted(AUDIT_ACTIONS.items(), key=lambda a: str(a[1])),
                           target_labels=TARGET_LABELS, setting_labels=SETTING_LABELS,
                           field_labels=FIELD_LABELS, setting_value=_setting_value)


add_onboarding_step(OnboardingStep(
    "team", lazy_gettext("Invite your team"), lambda: url_for("foundation.team") + "#invitations",
    services.team_invited, "users", "write"))
