"""Every write of the foundation: accounts, team, roles, module switches, audit.

Each function validates, writes, records who did it and returns the object. None commits:
the request, job or socket wrapper does (crm/transaction.py).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
import secrets
import zoneinfo
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from operator import attrgetter
from urllib.parse import urlsplit

import phonenumbers
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from babel.numbers import get_territory_currencies
from email_validator import EmailNotValidError, validate_email
from flask import current_app, has_request_context, request
from flask_babel import gettext as _
from sqlalchemy import ColumnElement, bindparam, func, or_, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import joinedload

from crm import events
from crm.billing import gate
from crm.errors import AuthenticationError, ConflictError, NotFoundError, ValidationError
from crm.extensions import db
from crm.foundation.models import (
    MODULES,
    ROLES,
    SESSION_KINDS,
    AuditEntry,
    EmailChange,
    Invitation,
    ModuleSetting,
    Organization,
    PasswordResetToken,
    User,
    UserSession,
)
from crm.mail import send_email
from crm.models import utcnow
from crm.pagination import keyset_page
from crm.realtime import disconnect_user
from crm.tenancy import (
    SKIP_TENANT_FILTER,
    current_organization_id,
    get_in_organization,
    set_current_organization,
)
from crm.text import has_control_characters
from crm.transaction import keep_on_error
from crm.validation import collect, parse_id

log = logging.getLogger("crm.foundation")
_hasher = PasswordHasher()
# A hash to verify against when no account matches, so a miss costs what a hit costs.
_DUMMY_HASH = _hasher.hash("not a password")
MIN_PASSWORD_LENGTH = 8
LANGUAGES = ("ar", "en")


# -- validation helpers -------------------------------------------------------------------

def normalize_email(raw: object, field: str = "email") -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise ValidationError({field: _("Enter an email address.")})
    try:
        return validate_email(raw.strip(), check_deliverability=False).normalized.lower()
    except EmailNotValidError:
        raise ValidationError({field: _("Enter a valid email address.")}) from None


def _required_text(raw: object, field: str, max_length: int) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise ValidationError({field: _("This field is required.")})
    if has_control_characters(raw):  # a NUL, which PostgreSQL cannot store, among them
        raise ValidationError({field: _("Remove the control characters.")})
    value = " ".join(raw.split())
    if len(value) > max_length:
        raise ValidationError({field: _("Use at most %(n)d characters.", n=max_length)})
    return value


def _check_password(raw: object, field: str = "password") -> str:
    if not isinstance(raw, str) or len(raw) < MIN_PASSWORD_LENGTH:
        raise ValidationError(
            {field: _("Use at least %(n)d characters.", n=MIN_PASSWORD_LENGTH)})
    if len(raw) > 1024:
        raise ValidationError({field: _("Use at most %(n)d characters.", n=1024)})
    return raw


def _check_choice(raw: object, field: str, choices: tuple[str, ...]) -> str:
    if raw not in choices:
        raise ValidationError({field: _("Choose one of the listed options.")})
    return raw


def _blank_as(raw: object, default: str) -> object:
    """An optional choice left out (None, or "" from a form) is the default; [] or 0 is not."""
    return default if raw is None or raw == "" else raw


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def password_matches(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


# -- one-time tokens ----------------------------------------------------------------------
# A token names its organization in clear ("<org>.<secret>") so it can be looked up under RLS;
# only the secret's SHA-256 is stored, and the lookup inside that organization verifies it.

def _issue_token() -> tuple[str, str]:
    secret = secrets.token_urlsafe(32)
    return f"{current_organization_id()}.{secret}", _digest(secret)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _open_token(token: object) -> str | None:
    """Switch to the token's organization and return the secret's digest (None if malformed)."""
    if not isinstance(token, str) or not re.fullmatch(r"\d{1,18}\.[\w-]{20,100}", token):
        return None
    org, secret = token.split(".", 1)
    set_current_organization(int(org))
    return _digest(secret)


# -- audit ----------------------------------------------------------------------------------

def audit(action: str, actor: User | None = None, target: object | None = None,
          **details) -> AuditEntry:
    entry = AuditEntry(
        actor_id=actor.id if actor else None,
        action=action,
        target_type=type(target).__tablename__ if target is not None else None,
        target_id=getattr(target, "id", None),
        details=details,
        ip_address=request.remote_addr if has_request_context() else None,
    )
    db.session.add(entry)
    log.info("%s by %s on %r %s", action, actor, target, details or "")
    return entry


# -- organizations and registration ---------------------------------------------------------

def _slug_for(name: str) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40]
    return f"{base}-{secrets.token_hex(3)}" if base else f"org-{secrets.token_hex(4)}"


@dataclass(frozen=True)
class Registration:
    organization: Organization
    user: User


def register_organization(organization_name: object, full_name: object, email: object,
                          password: object, language: object = "ar") -> Registration:
    """Create an organization and its first admin in one transaction."""
    org_name, name, address, password, language = collect({
        "organization_name": lambda: _required_text(organization_name, "organization_name", 120),
        "full_name": lambda: _required_text(full_name, "full_name", 120),
        "email": lambda: normalize_email(email),
        "password": lambda: _check_password(password),
        "language": lambda: _check_choice(_blank_as(language, "ar"), "language", LANGUAGES),
    }).values()
    # RLS shows a transaction only its own organization, so the new id is taken first and the
    # transaction switched to it before the row is written.
    org_id = db.session.execute(
        text("SELECT nextval(pg_get_serial_sequence('organizations', 'id'))")).scalar_one()
    set_current_organization(org_id)
    org = Organization(id=org_id, name=org_name, slug=_slug_for(org_name),
                       default_language=language)
    db.session.add(org)
    user = User(organization_id=org_id, email=address, full_name=name,
                password_hash=hash_password(password), role="admin",
                preferred_language=language)
    db.session.add(user)
    db.session.flush()
    audit("organization.registered", user, org)
    events.publish("organization.registered", {"organization_id": org_id, "user_id": user.id})
    return Registration(org, user)


def update_organization(actor: User, name: object, default_language: object, timezone: object,
                        country: object, currency: object = None) -> Organization:
    """Change the organization's settings; `currency` None keeps the one it has."""
    org = actor.organization

    def check_currency() -> str:
        code = org.currency if currency is None else currency
        if code not in currencies():
            raise ValidationError({"currency": _("Choose a valid currency.")})
        return code

    def check_timezone() -> str:
        if timezone not in zoneinfo.available_timezones():
            raise ValidationError({"timezone": _("Choose a valid time zone.")})
        return timezone

    def check_country() -> str:
        code = country.upper() if isinstance(country, str) else ""
        if code not in phonenumbers.SUPPORTED_REGIONS:
            raise ValidationError({"country": _("Choose a valid country.")})
        return code

    fields = ("name", "default_language", "timezone", "country", "currency")
    before = {field: getattr(org, field) for field in fields}
    org.name, org.default_language, org.timezone, org.country, org.currency = collect({
        "name": lambda: _required_text(name, "name", 120),
        "default_language": lambda: _check_choice(default_language, "default_language",
                                                  LANGUAGES),
        "timezone": check_timezone,
        "country": check_country,
        "currency": check_currency,
    }).values()
    changed = [field for field in fields if getattr(org, field) != before[field]]
    if changed:
        audit("organization.updated", actor, org,
              changes={field: [before[field], getattr(org, field)] for field in changed})
        # Modules follow the organization's clock and country (ticketing's business calendar).
        events.publish("organization.updated", {"organization_id": org.id, "fields": changed})
    return org


@functools.cache
def currencies() -> frozenset[str]:
    """The currencies in use today in the countries whose phone numbers we read."""
    return frozenset(code for region in phonenumbers.SUPPORTED_REGIONS
                     for code in get_territory_currencies(region))


# -- login ------------------------------------------------------------------------------------

def login_candidates(email: str) -> list[tuple[int, int]]:
    """(organization_id, user_id) of active accounts with this email, in any organization.

    The one cross-organization read, done by a SECURITY DEFINER function that returns nothing
    but these ids (migrations/: wasl_login_candidates).
    """
    rows = db.session.execute(
        text("SELECT organization_id, user_id FROM wasl_login_candidates(:e)"), {"e": email})
    return [(row.organization_id, row.user_id) for row in rows]


def check_credentials(email: object, password: object, organization_slug: object = None
                      ) -> User:
    """Return the active user these credentials name, or raise AuthenticationError.

    Only the password: signing in is crm/foundation/two_factor.py `log_in`, which asks for
    the second factor of those who have one and records the login.
    """
    try:
        address = normalize_email(email)
    except ValidationError:
        address = ""
    password = password if isinstance(password, str) else ""
    matches = [user for user in _users_for_login(address) if
               password_matches(user.password_hash, password)]
    if not address or not matches:
        password_matches(_DUMMY_HASH, password)
        _record_failed_login(address)
        raise AuthenticationError(_("The email or password is incorrect."))
    if organization_slug:
        matches = [u for u in matches if u.organization.slug == organization_slug]
    if len(matches) != 1:
        raise ValidationError(
            {"organization_slug": _("This email belongs to several workspaces; "
                                    "enter the workspace address.")})
    user = matches[0]
    set_current_organization(user.organization_id)
    return user


def _users_for_login(address: str) -> list[User]:
    users = []
    for org_id, user_id in login_candidates(address) if address else []:
        set_current_organization(org_id)
        user = get_in_organization(User, user_id)
        if user is not None:
            users.append(user)
    set_current_organization(None)
    return users


def _record_failed_login(address: str) -> None:
    """A failed login is audited in each organization that has an account with this email.

    The answer is an error, which normally rolls the request back; this record must stay.
    """
    keep_on_error()
    for org_id, user_id in login_candidates(address) if address else []:
        set_current_organization(org_id)
        db.session.add(AuditEntry(action="user.login_failed", target_type="users",
                                  target_id=user_id, details={},
                                  ip_address=request.remote_addr if has_request_context()
                                  else None))
        db.session.flush()
    set_current_organization(None)


# -- sessions ---------------------------------------------------------------------------------
# Every way in is a UserSession, ended on its own. Its credential names the organization like
# the emailed tokens ("<org>.<secret>"), so it is looked up under RLS; an API key is
# "wasl_" + that, so people and secret scanners recognise it.

API_KEY_PREFIX = "wasl_"
# What logging in starts; API keys are made by admins and outlive their user's logouts.
LOGIN_KINDS = ("browser", "api_token")
# How stale last_seen_at may get: refreshing it on every request would write on every read.
SESSION_SEEN_INTERVAL = timedelta(minutes=1)
USER_AGENT_LENGTH = 255


def _client() -> dict[str, str | None]:
    """Where this request comes from: its address and browser (nothing outside a request)."""
    if not has_request_context():
        return {}
    return {"ip_address": request.remote_addr,
            "user_agent": request.user_agent.string[:USER_AGENT_LENGTH] or None}


def _new_session(user: User, kind: str, **fields) -> UserSession:
    """A session of `user`, its credential (never stored) set on it."""
    credential, digest = _issue_token()
    record = UserSession(organization_id=user.organization_id, user_id=user.id, kind=kind,
                         token_hash=digest, **_client(), **fields)
    db.session.add(record)
    db.session.flush()
    record.credential = credential
    return record


def open_session(user: User, kind: str, expires_at: datetime | None = None) -> UserSession:
    """Sign the user in: a browser session or an API token, and the login recorded.

    Every flow that signs someone in (login, registration, accepting an invitation) comes
    here, so nobody who is signed in shows as never having logged in.
    """
    user.last_login_at = utcnow()
    return _new_session(user, kind, expires_at=expires_at, last_seen_at=user.last_login_at)


def _live() -> ColumnElement[bool]:
    """Not ended, not expired, and for a browser, seen since `:seen_since` (`_seen_since()`)."""
    return (UserSession.ended_at.is_(None)
            & or_(UserSession.expires_at.is_(None), UserSession.expires_at > func.now())
            & or_(UserSession.kind != "browser",
                  UserSession.last_seen_at >= bindparam("seen_since")))


def _seen_since() -> datetime:
    """The oldest last visit a browser session may have and still be live."""
    return utcnow() - current_app.config["SESSION_IDLE_LIFETIME"]


# The user and the live session a digest names, and what their organization has switched off
# (every request's guard asks that next: it comes in the same round trip). Built once:
# building it on every request cost more than running it. It names the organization itself
# (the credential's, as RLS is set to) rather than through the ORM's tenant criteria, which
# cost as much CPU as the rest of the statement on every request.
_ORG = bindparam("org")
_SESSION_USER = (
    select(User, UserSession, select(func.array_agg(ModuleSetting.module))
           .where(ModuleSetting.organization_id == _ORG, ~ModuleSetting.is_enabled)
           .scalar_subquery())
    .join(UserSession, UserSession.user_id == User.id)
    .where(UserSession.organization_id == _ORG, User.organization_id == _ORG,
           UserSession.token_hash == bindparam("digest"), UserSession.kind == bindparam("kind"),
           _live(), User.is_active)
    .execution_options(**{SKIP_TENANT_FILTER: True}))


def load_session_user(credential: object, kind: str) -> User | None:
    """The active user a live session of `kind` names, with it as their current session.

    Sets the current organization to the session's: the only place a person's comes from.
    """
    digest = _open_token(credential)
    found = digest and db.session.execute(_SESSION_USER, {
        "digest": digest, "kind": kind, "org": current_organization_id(),
        "seen_since": _seen_since()}).first()
    if not found:
        set_current_organization(None)
        return None
    user, record, off = found
    record.credential = credential
    user.current_session = record
    user.enabled_modules = _enabled(off or ())
    if record.last_seen_at is None or utcnow() - record.last_seen_at >= SESSION_SEEN_INTERVAL:
        record.last_seen_at = utcnow()
        record.ip_address = _client().get("ip_address", record.ip_address)
    return user


def _end_sessions(user: User, kinds: tuple[str, ...], keep: UserSession | None = None
                  ) -> list[int]:
    """End the user's live sessions of `kinds`, but `keep`; the ids of those ended."""
    query = update(UserSession).where(UserSession.user_id == user.id,
                                      UserSession.kind.in_(kinds), UserSession.ended_at.is_(None))
    if keep is not None:
        query = query.where(UserSession.id != keep.id)
    return list(db.session.scalars(query.values(ended_at=utcnow()).returning(UserSession.id)))


def _end_other_sessions(user: User, keep: UserSession | None) -> list[int]:
    """End every login of the user but `keep` (the one the request runs as, if theirs), and
    close their pages."""
    ended = _end_sessions(user, LOGIN_KINDS, keep)
    disconnect_user(user.organization_id, user.id, ended)
    return ended


def end_all_sessions(user: User, kinds: tuple[str, ...] = LOGIN_KINDS) -> None:
    """Sign the user out everywhere: every browser session, API token and open socket.

    API keys stay unless `kinds` names them: admins make and revoke them for integrations.
    """
    _end_sessions(user, kinds)
    disconnect_user(user.organization_id, user.id)


def logout(user: User) -> None:
    """End the session this request runs as (this browser, or this API token) only."""
    current = user.current_session
    if current.kind == "api_key":
        raise ConflictError(_("An API key cannot log out; an admin revokes it in the settings."))
    _end_one(current)
    audit("user.logout", user, user)


def _end_one(record: UserSession) -> None:
    record.ended_at = utcnow()
    disconnect_user(record.organization_id, record.user_id, [record.id])


def list_sessions(user: User) -> list[UserSession]:
    """The user's live browser sessions and API tokens, the most recently seen first."""
    return list(db.session.scalars(
        select(UserSession).where(UserSession.user_id == user.id,
                                  UserSession.kind.in_(LOGIN_KINDS), _live())
        .order_by(UserSession.last_seen_at.desc(), UserSession.id.desc()).limit(100),
        {"seen_since": _seen_since()}))


def access_session(user: User, session_id: int) -> UserSession:
    """One of the user's own live sessions, or 404 (a colleague's looks the same)."""
    record = get_in_organization(UserSession, session_id)
    if record is None:
        raise NotFoundError(_("Not found."))
    if record.user_id != user.id or record.kind not in LOGIN_KINDS:
        raise NotFoundError(_("Not found."))
    if record.ended_at is not None:
        raise NotFoundError(_("Not found."))
    return record


def end_session(user: User, record: UserSession) -> None:
    """Sign one of the user's sessions out (a lost phone, a shared computer)."""
    _end_one(record)
    audit("user.session_ended", user, user, session_id=record.id)


def end_other_sessions(user: User) -> None:
    """Sign the user out of every session but this one."""
    ended = _end_other_sessions(user, user.current_session)
    audit("user.other_sessions_ended", user, user, sessions=len(ended))


# -- API keys ---------------------------------------------------------------------------------

def _active_member(raw: object, field: str) -> User:
    """The active member of the organization a form or JSON body names by id."""
    user_id = parse_id(raw)
    user = get_in_organization(User, user_id) if user_id else None
    if user is None or not user.is_active:
        raise ValidationError({field: _("Choose a member of the team.")})
    return user


def create_api_key(actor: User, name: object, user_id: object) -> UserSession:
    """Make a named key that acts as an active member; its credential is shown this once."""
    name, user = collect({"name": lambda: _required_text(name, "name", 120),
                          "user_id": lambda: _active_member(user_id, "user_id")}).values()
    key = _new_session(user, "api_key", name=name, created_by_id=actor.id)
    key.credential = API_KEY_PREFIX + key.credential
    audit("api_key.created", actor, key, name=name, user_id=user.id)
    return key


def load_api_key_user(key: object) -> User | None:
    """The user a live API key acts as (None for anything else); records that it was used."""
    if not isinstance(key, str) or not key.startswith(API_KEY_PREFIX):
        return None
    return load_session_user(key.removeprefix(API_KEY_PREFIX), "api_key")


def list_api_keys() -> list[UserSession]:
    return list(db.session.scalars(
        select(UserSession).options(joinedload(UserSession.user))
        .where(UserSession.kind == "api_key", UserSession.ended_at.is_(None))
        .order_by(UserSession.id.desc())))


def access_api_key(key_id: int) -> UserSession:
    """The organization's live API key with this id, or 404."""
    key = get_in_organization(UserSession, key_id)
    if key is None or key.kind != "api_key" or key.ended_at is not None:
        raise NotFoundError(_("Not found."))
    return key


def revoke_api_key(actor: User, key: UserSession) -> None:
    key.ended_at = utcnow()
    audit("api_key.revoked", actor, key, name=key.name)


# -- passwords ----------------------------------------------------------------------------

def request_password_reset(email: object) -> None:
    """Email a single-use reset link if an account exists; the caller's answer never tells."""
    try:
        address = normalize_email(email)
    except ValidationError:
        return
    for user in _users_for_login(address):
        set_current_organization(user.organization_id)
        token, digest = _issue_token()
        db.session.add(PasswordResetToken(
            user_id=user.id, token_hash=digest,
            expires_at=utcnow() + current_app.config["PASSWORD_RESET_LIFETIME"]))
        send_email(user.email, "password_reset", _language_of(user), user=user,
                   link=_external_url("foundation.reset_password", token=token), token=token)
        audit("user.password_reset_requested", user, user)
        db.session.flush()
    set_current_organization(None)


def pending_password_reset(token: object) -> PasswordResetToken:
    """The reset a link names, if it can still be used."""
    digest = _open_token(token)
    record = digest and db.session.execute(
        select(PasswordResetToken).where(PasswordResetToken.token_hash == digest)
        .with_for_update()).scalar_one_or_none()
    if not record or record.used_at or record.expires_at <= utcnow() or not record.user.is_active:
        set_current_organization(None)
        raise ValidationError({"token": _("This reset link is invalid or has expired.")})
    return record


def _check_repeat(password: object, repeat: object, field: str) -> None:
    """A form's second typing of a new password; None where there is none (the API)."""
    if repeat is not None and repeat != password:
        raise ValidationError({field: _("The two passwords do not match.")})


def reset_password(token: object, new_password: object, repeat: object = None) -> User:
    """Set a new password with a reset link; `repeat` is the form's second typing of it."""
    record = pending_password_reset(token)  # first: a dead link is a page of its own
    new_password = collect({
        "password": lambda: _check_password(new_password),
        "password_confirmation": lambda: _check_repeat(new_password, repeat,
                                                       "password_confirmation"),
    })["password"]
    record.used_at = utcnow()
    user = record.user
    user.password_hash = hash_password(new_password)
    end_all_sessions(user)
    audit("user.password_reset", user, user)
    return user


def _check_current_password(user: User, password: object) -> None:
    if not isinstance(password, str) or not password_matches(user.password_hash, password):
        raise ValidationError({"current_password": _("The current password is incorrect.")})


def change_password(user: User, current_password: object, new_password: object,
                    repeat: object = None) -> None:
    """Change the password, every mistake reported at once; `repeat` is the form's second
    typing of the new one."""
    new_password = collect({
        "current_password": lambda: _check_current_password(user, current_password),
        "new_password": lambda: _check_password(new_password, "new_password"),
        "new_password_confirmation": lambda: _check_repeat(new_password, repeat,
                                                           "new_password_confirmation"),
    })["new_password"]
    user.password_hash = hash_password(new_password)
    # This one stays: the person who typed both passwords is here.
    _end_other_sessions(user, user.current_session)
    audit("user.password_changed", user, user)


# -- email address -----------------------------------------------------------------------
# A member signs in with a new address once they open the link sent to it; until then the old
# one goes on working, and it is told that a change was asked for.

def pending_email_change(user: User) -> EmailChange | None:
    """The member's change of address waiting for its link, if any (at most one)."""
    return db.session.scalar(select(EmailChange).where(
        EmailChange.user_id == user.id, EmailChange.confirmed_at.is_(None),
        EmailChange.cancelled_at.is_(None), EmailChange.expires_at > utcnow())
        .order_by(EmailChange.id.desc()).limit(1))


def _address_in_use(address: str, user: User | None = None) -> bool:
    """Does another account of the organization (a removed one too: it can come back) have
    this address?"""
    query = select(User.id).where(User.email == address)
    if user is not None:
        query = query.where(User.id != user.id)
    return db.session.scalar(query.limit(1)) is not None


def _check_new_email(user: User, raw: object) -> str:
    address = normalize_email(raw, "new_email")
    if address == user.email:
        raise ValidationError({"new_email": _("This is already your email address.")})
    if _address_in_use(address, user):
        raise ValidationError({"new_email": _("Another account already uses this address.")})
    return address


def request_email_change(user: User, new_email: object, current_password: object
                         ) -> EmailChange:
    """Ask to sign in with `new_email`: a link to confirm goes to it, a notice to the old one.

    It replaces any change still waiting, whose link stops working.
    """
    address = collect({
        "new_email": lambda: _check_new_email(user, new_email),
        "current_password": lambda: _check_current_password(user, current_password),
    })["new_email"]
    waiting = pending_email_change(user)
    if waiting is not None:
        waiting.cancelled_at = utcnow()
    change = EmailChange(user_id=user.id, old_email=user.email, new_email=address,
                         token_hash="", expires_at=utcnow())
    db.session.add(change)
    _send_email_change(user, change)
    send_email(user.email, "email_change_notice", _language_of(user), user=user,
               new_email=address, link=_external_url("foundation.profile"))
    audit("user.email_change_requested", user, user, old_email=user.email, new_email=address)
    return change


def _send_email_change(user: User, change: EmailChange) -> None:
    """Send the confirmation link to the new address, with a new token and a new expiry."""
    token, change.token_hash = _issue_token()
    change.expires_at = utcnow() + current_app.config["EMAIL_CHANGE_LIFETIME"]
    db.session.flush()
    send_email(change.new_email, "email_change_confirm", _language_of(user), user=user,
               link=_external_url("foundation.confirm_email_change", token=token),
               token=token)


def _waiting_change(user: User) -> EmailChange:
    change = pending_email_change(user)
    if change is None:
        raise ConflictError(_("No change of email address is waiting."))
    return change


def resend_email_change(user: User) -> EmailChange:
    """Send the link again (a new one: the earlier link stops working)."""
    change = _waiting_change(user)
    _send_email_change(user, change)
    audit("user.email_change_resent", user, user, new_email=change.new_email)
    return change


def cancel_email_change(user: User) -> None:
    change = _waiting_change(user)
    change.cancelled_at = utcnow()
    audit("user.email_change_cancelled", user, user, new_email=change.new_email)


def confirm_email_change(token: object, by: User | None = None) -> User:
    """Apply the change a link names: the member signs in with the new address from now on,
    and their other sessions end as after a password change (`by`'s stays when the member
    opened the link in a browser signed in as them)."""
    digest = _open_token(token)
    change = digest and db.session.execute(
        select(EmailChange).where(EmailChange.token_hash == digest).with_for_update()
    ).scalar_one_or_none()
    if (not change or change.confirmed_at or change.cancelled_at
            or change.expires_at <= utcnow() or not change.user.is_active):
        set_current_organization(None)
        raise ValidationError({"token": _("This confirmation link is invalid or has expired.")})
    user = change.user
    taken = ConflictError(_("Another account now uses %(email)s: the address was not changed.",
                            email=change.new_email))
    if _address_in_use(change.new_email, user):
        raise taken
    user.email, change.confirmed_at = change.new_email, utcnow()
    try:
        db.session.flush()
    except IntegrityError:  # taken by a concurrent change or invitation, between check and write
        raise taken from None
    same = by is not None and (by.organization_id, by.id) == (user.organization_id, user.id)
    _end_other_sessions(user, by.current_session if same else None)
    _expire_password_resets(user)
    audit("user.email_changed", user, user, old_email=change.old_email,
          new_email=change.new_email)
    return user


def _expire_password_resets(user: User) -> None:
    """Reset links sent to the old address stop working: the account is no longer theirs."""
    db.session.execute(update(PasswordResetToken).where(
        PasswordResetToken.user_id == user.id, PasswordResetToken.used_at.is_(None))
        .values(used_at=utcnow()))


def update_profile(user: User, full_name: object, preferred_language: object) -> User:
    user.full_name, user.preferred_language = collect({
        "full_name": lambda: _required_text(full_name, "full_name", 120),
        "preferred_language": lambda: _check_choice(preferred_language, "preferred_language",
                                                    LANGUAGES),
    }).values()
    return user


def set_language(user: User, language: object) -> None:
    user.preferred_language = _check_choice(language, "language", LANGUAGES)


# -- team ---------------------------------------------------------------------------------

def access_user(user_id: int) -> User:
    """The organization's user with this id, or 404 (another organization's looks the same)."""
    user = get_in_organization(User, user_id)
    if user is None or not user.is_active:
        raise NotFoundError(_("Not found."))
    return user


def _admin_count() -> int:
    return db.session.scalar(select(func.count()).select_from(User).where(
        User.role == "admin", User.is_active))


def _ensure_not_last_admin(user: User) -> None:
    if user.role == "admin" and _admin_count() <= 1:
        raise ConflictError(_("The organization needs at least one admin."))


def change_role(actor: User, user: User, role: object) -> User:
    role = _check_choice(role, "role", ROLES)
    if role == user.role:
        return user
    if role != "admin":
        _lock_admins()
        _ensure_not_last_admin(user)
    previous, user.role = user.role, role
    _start_again(user, keep=actor.current_session if actor is user else None)
    audit("user.role_changed", actor, user, previous=previous, role=role)
    # Modules hand on the work the new role may no longer do.
    events.publish("user.role_changed", {"user_id": user.id, "actor_id": actor.id,
                                         "role": role})
    return user


def _start_again(user: User, keep: UserSession | None) -> None:
    """After a role change: end the user's logins but `keep`, and close every open page of
    theirs, `keep`'s too, so that each reconnects (or logs in) into the new role's rooms."""
    _end_sessions(user, LOGIN_KINDS, keep)
    disconnect_user(user.organization_id, user.id)


def remove_user(actor: User, user: User) -> None:
    """Deactivate a user: their sessions, tokens and API keys stop at once; history stays,
    and their open work goes back to the team (the modules' `user.removed` listeners).

    The keys are revoked, not just refused, so inviting the person back revives none.
    """
    _lock_admins()
    _ensure_not_last_admin(user)
    user.is_active = False
    end_all_sessions(user, SESSION_KINDS)
    audit("user.removed", actor, user, email=user.email)
    # Modules hand the member's work on: nothing may stay with someone who cannot log in.
    events.publish("user.removed", {"user_id": user.id, "actor_id": actor.id})


def _lock_admins() -> None:
    """Serialize admin changes, so two concurrent demotions cannot leave no admin."""
    db.session.execute(select(User.id).where(User.role == "admin").with_for_update())


def list_users(after_id: int | None = None, limit: int = 50) -> tuple[list[User], int | None]:
    query = select(User).where(User.is_active).order_by(User.id)
    if after_id:
        query = query.where(User.id > after_id)
    return keyset_page(query, limit, attrgetter("id"))


# -- invitations ---------------------------------------------------------------------------

def invite_user(actor: User, email: object, role: object, language: object = None) -> Invitation:
    address, role, language = collect({
        "email": lambda: normalize_email(email),
        "role": lambda: _check_choice(role, "role", ROLES),
        "language": lambda: _check_choice(
            _blank_as(language, actor.organization.default_language), "language", LANGUAGES),
    }).values()
    if db.session.scalar(select(User.id).where(User.email == address, User.is_active)):
        raise ConflictError(_("This person is already a member of the team."),
                            {"email": _("Already a member.")})
    gate.ensure_within("users")  # told now, though the seat is taken on acceptance
    for pending in db.session.scalars(select(Invitation).where(
            Invitation.email == address, Invitation.accepted_at.is_(None),
            Invitation.revoked_at.is_(None))):
        pending.revoked_at = utcnow()  # a new invitation replaces any earlier one
    invitation = Invitation(email=address, role=role, language=language, invited_by_id=actor.id,
                            token_hash="", expires_at=utcnow())
    db.session.add(invitation)
    _send_invitation(invitation, actor)
    audit("invitation.sent", actor, invitation, email=address, role=role)
    return invitation


def _send_invitation(invitation: Invitation, actor: User) -> None:
    token, invitation.token_hash = _issue_token()
    invitation.expires_at = utcnow() + current_app.config["INVITATION_LIFETIME"]
    invitation.last_sent_at = utcnow()
    db.session.flush()
    send_email(invitation.email, "invitation", invitation.language, invitation=invitation,
               inviter=actor, organization=actor.organization,
               link=_external_url("foundation.accept_invitation", token=token), token=token)


def access_invitation(invitation_id: int) -> Invitation:
    invitation = get_in_organization(Invitation, invitation_id)
    if invitation is None:
        raise NotFoundError(_("Not found."))
    return invitation


def resend_invitation(actor: User, invitation: Invitation) -> Invitation:
    if invitation.status not in ("pending", "expired"):
        raise ConflictError(_("This invitation can no longer be sent."))
    _send_invitation(invitation, actor)
    audit("invitation.resent", actor, invitation, email=invitation.email)
    return invitation


def revoke_invitation(actor: User, invitation: Invitation) -> None:
    if invitation.status == "accepted":
        raise ConflictError(_("This invitation was already accepted."))
    invitation.revoked_at = invitation.revoked_at or utcnow()
    audit("invitation.revoked", actor, invitation, email=invitation.email)


def list_invitations() -> list[Invitation]:
    return list(db.session.scalars(select(Invitation).where(
        Invitation.accepted_at.is_(None), Invitation.revoked_at.is_(None))
        .order_by(Invitation.id.desc()).limit(200)))


def pending_invitation(token: object) -> Invitation:
    """The invitation a link names, if it can still be accepted."""
    digest = _open_token(token)
    invitation = digest and db.session.execute(
        select(Invitation).where(Invitation.token_hash == digest).with_for_update()
    ).scalar_one_or_none()
    if not invitation or invitation.status != "pending":
        set_current_organization(None)
        raise ValidationError({"token": _("This invitation is invalid or has expired.")})
    return invitation


def current_organization() -> Organization | None:
    """The organization this request, job or link acts for."""
    org_id = current_organization_id()
    return db.session.get(Organization, org_id) if org_id is not None else None


def accept_invitation(token: object, full_name: object, password: object) -> User:
    invitation = pending_invitation(token)
    name, password = collect({"full_name": lambda: _required_text(full_name, "full_name", 120),
                              "password": lambda: _check_password(password)}).values()
    if db.session.scalar(select(User.id).where(User.email == invitation.email, User.is_active)):
        raise ConflictError(_("This person is already a member of the team."))
    gate.ensure_within("users")
    user = db.session.scalar(select(User).where(User.email == invitation.email))
    if user is None:  # a removed member who is invited back keeps their history
        user = User(email=invitation.email)
        db.session.add(user)
    user.full_name, user.role, user.is_active = name, invitation.role, True
    user.password_hash = hash_password(password)
    user.preferred_language = invitation.language
    invitation.accepted_at = utcnow()
    try:
        db.session.flush()
    except IntegrityError:
        raise ConflictError(_("This person is already a member of the team.")) from None
    audit("invitation.accepted", user, invitation, email=invitation.email)
    return user


# -- modules --------------------------------------------------------------------------------

def enabled_modules() -> frozenset[str]:
    return _enabled(db.session.scalars(select(ModuleSetting.module)
                                       .where(~ModuleSetting.is_enabled)))


def _enabled(switched_off: Iterable[str]) -> frozenset[str]:
    """The modules on, given those switched off (a module without a setting is on)."""
    off = set(switched_off)
    return frozenset(m for m in MODULES if m not in off)


def set_module_enabled(actor: User, module: object, enabled: bool) -> None:
    module = _check_choice(module, "module", MODULES)
    setting = db.session.scalar(select(ModuleSetting).where(ModuleSetting.module == module))
    if setting is None:
        setting = ModuleSetting(module=module, is_enabled=enabled)
        db.session.add(setting)
    changed = setting.is_enabled != enabled or setting.id is None
    setting.is_enabled = enabled
    if changed:
        audit("settings.module_switched", actor, None, module=module, enabled=enabled)


def list_audit(before_id: int | None = None, limit: int = 50, action: str | None = None,
               actor_id: int | None = None) -> tuple[list[AuditEntry], int | None]:
    """A page of the audit log, newest first: of one `action`, of one actor's, or all."""
    query = (select(AuditEntry).options(joinedload(AuditEntry.actor))
             .order_by(AuditEntry.id.desc()))
    if before_id:
        query = query.where(AuditEntry.id < before_id)
    if action:
        query = query.where(AuditEntry.action == action)
    if actor_id:
        query = query.where(AuditEntry.actor_id == actor_id)
    return keyset_page(query, limit, attrgetter("id"))


def everyone() -> list[User]:
    """Every member the organization has had, removed ones too (the audit log names them)."""
    return list(db.session.scalars(select(User).order_by(User.full_name, User.id)))


# -- helpers ------------------------------------------------------------------------------

def _language_of(user: User) -> str:
    return user.preferred_language or user.organization.default_language


def _external_url(endpoint: str, **values) -> str:
    """An absolute URL on PUBLIC_URL, never on the request's Host, which the caller chooses."""
    base = urlsplit(current_app.config["PUBLIC_URL"])
    adapter = current_app.url_map.bind(base.netloc, script_name=base.path or "/",
                                       url_scheme=base.scheme or "https")
    return adapter.build(endpoint, values, force_external=True)


def team_invited() -> bool:
    """Has anyone besides the first member joined or been invited (the checklist's step)?"""
    return bool(db.session.scalar(select(
        select(User.id).offset(1).exists() | select(Invitation.id).exists())))


def dashboard_counts() -> dict[str, int]:
    return {
        "users": db.session.scalar(select(func.count()).select_from(User).where(User.is_active)),
        "invitations": db.session.scalar(select(func.count()).select_from(Invitation).where(
            Invitation.accepted_at.is_(None), Invitation.revoked_at.is_(None),
            Invitation.expires_at > utcnow())),
    }

