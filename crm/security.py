"""Who is calling: login sessions, bearer tokens, rate limits, security headers.

Each way in is a session of its own (crm.foundation: UserSession): the browser's session cookie
holds its credential, a bearer token (JWT) carries it as its subject, an API key is one. Loading
any of them sets the current organization (the only place it comes from for a person) and
fails once that session has ended, whatever happened to the user's other sessions.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from urllib.parse import urlsplit

import jwt
from flask import Flask, current_app, flash, jsonify, redirect, request, session, url_for
from flask_babel import gettext
from flask_login import current_user, login_user, logout_user
from limits import parse as parse_limit
from werkzeug.exceptions import TooManyRequests

from crm.billing import gate
from crm.billing.stripe_api import PAGE_ORIGINS
from crm.config import trusted_hosts
from crm.extensions import limiter, login_manager
from crm.foundation.models import User
from crm.foundation.services import (
    API_KEY_PREFIX,
    load_api_key_user,
    load_session_user,
    open_session,
)
from crm.tenancy import current_organization_id, set_current_organization
from crm.text import clean_text
from crm.web import error_body, wants_json

JWT_ALGORITHM = "HS256"


@functools.cache
def content_security_policy(public_url: str) -> str:
    """Only our own scripts and styles (no inline script: user content can never run),
    sockets only to the app's own origin, under each name it answers to, and forms posted
    only here, whose answer may redirect to Stripe's Checkout and portal alone."""
    parts = urlsplit(public_url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    port = f":{parts.port}" if parts.port else ""
    sockets = " ".join(f"{scheme}://{host}{port}" for host in trusted_hosts(public_url))
    return ("default-src 'self'; script-src 'self'; style-src 'self'; "
            f"img-src 'self' data: blob:; connect-src 'self' {sockets}; font-src 'self'; "
            f"object-src 'none'; base-uri 'self'; form-action 'self' {' '.join(PAGE_ORIGINS)}; "
            "frame-ancestors 'none'")


def init_app(app: Flask) -> None:
    login_manager.init_app(app)
    login_manager.login_view = "foundation.login"
    login_manager.session_protection = "basic"
    login_manager.user_loader(_user_from_session)
    login_manager.unauthorized_handler(_unauthorized)
    login_manager.request_loader(_user_from_bearer)
    login_manager.localize_callback = _localize
    login_manager.login_message_category = "info"
    app.before_request(_identify_caller)
    app.before_request(_limit_organization_api)  # after the caller, hence the organization
    app.after_request(_security_headers)


def _unauthorized():
    if wants_json():
        message = gettext("Please log in to continue.")
        return jsonify(error_body(401, "unauthorized", message)), 401
    flash(gettext("Please log in to continue."), "info")
    next_path = request.full_path if request.method == "GET" else None
    target = url_for("foundation.login", next=next_path)
    if request.headers.get("HX-Request") == "true":
        # Boosted or not, a swap would put the login page inside the app's layout.
        return "", 401, {"HX-Redirect": target}
    return redirect(target)


def _posted_email() -> str:
    """The email a form or JSON body names, as accounts are looked up by it."""
    data = request.get_json(silent=True) if request.is_json else request.form
    email = data.get("email") if isinstance(data, dict) or hasattr(data, "get") else None
    # Redis keys are UTF-8: a lone surrogate (refused later, by the view) cannot be one.
    return clean_text(email.strip().lower()) if isinstance(email, str) else ""


def _awaited_email() -> str:
    """The email whose password was right, in a sign-in's second step (which posts a code)."""
    pending = awaited_second_factor()
    return pending["email"] if pending else ""


def _failed(response) -> bool:
    """Did the caller fail (a wrong password)? Our own failures, as a 503 while the database
    or Redis is down, are no guess and cost no attempt."""
    return 400 <= response.status_code < 500


def _login_limited(view, account: Callable[[], str]):
    failed = {"methods": ["POST"], "deduct_when": _failed}
    per_ip = limiter.shared_limit(lambda: current_app.config["RATELIMIT_LOGIN_PER_IP"],
                                  scope="login-ip", **failed)
    per_account = limiter.shared_limit(lambda: current_app.config["RATELIMIT_LOGIN_PER_ACCOUNT"],
                                       scope="login-account",
                                       key_func=lambda: "login-account:" + account(), **failed)
    return per_ip(per_account(view))


def login_rate_limited(view):
    """Limit login attempts per IP and per account; only failed attempts count.

    The limits are shared by every login route (page and API), so switching between them buys
    an attacker no extra attempts.
    """
    return _login_limited(view, _posted_email)


def second_factor_rate_limited(view):
    """Limit the codes of a sign-in's second step with the login's own allowances, counted on
    the account whose password was right (never on an email the post names)."""
    return _login_limited(view, _awaited_email)


def public_rate_limited(action: str, per_email: bool = False, failures_only: bool = False):
    """Limit the POSTs of a public form per IP, and per email where one is given.

    `action` names the allowance that the page and its API twin share. Forms that spend a
    one-time token count only failures (guesses): a success uses the token up anyway.
    """
    options: dict = {"methods": ["POST"]}
    if failures_only:
        options["deduct_when"] = _failed

    def decorate(view):
        limited = limiter.shared_limit(lambda: current_app.config["RATELIMIT_PUBLIC_PER_IP"],
                                       scope=f"{action}-ip", **options)(view)
        if per_email:
            limited = limiter.shared_limit(
                lambda: current_app.config["RATELIMIT_PUBLIC_PER_EMAIL"],
                scope=f"{action}-email", key_func=_posted_email, **options)(limited)
        return limited

    return decorate


def _limit_organization_api() -> None:
    """Hold an organization to its plan's API requests per minute (RATELIMIT_API_PER_ORG when
    the plan sets none) on /api, however many people and tokens it uses; past it, answer 429
    with Retry-After."""
    organization_id = current_organization_id()
    if request.blueprint != "api" or organization_id is None or not limiter.enabled:
        return
    limit = parse_limit(gate.api_rate_limit() or current_app.config["RATELIMIT_API_PER_ORG"])
    key = ("api-organization", str(organization_id))
    if limiter.limiter.hit(limit, *key):
        return
    reset_at = limiter.limiter.get_window_stats(limit, *key).reset_time
    raise TooManyRequests(retry_after=max(1, math.ceil(reset_at - time.time())))


def _localize(message: str) -> str:
    return gettext(message)


def _identify_caller() -> None:
    """Start each request with no organization, then take it from the proven identity.

    A thread serves many requests, so nothing may carry over from the previous one.
    """
    set_current_organization(None)
    if request.endpoint != "static":
        current_user._get_current_object()


def _user_from_session(credential: str) -> User | None:
    if request.blueprint == "api":
        return None  # the API authenticates by bearer token only, so it needs no CSRF token
    return load_session_user(credential, "browser")


def start_session(user: User, remember: bool = False) -> None:
    """Log the user in with a new session (the old one, and any fixation, is dropped)."""
    session.clear()
    user.current_session = open_session(user, "browser")
    login_user(user, remember=remember)


# A sign-in whose password was right, waiting for its second factor: kept in the signed
# session cookie for a few minutes, it signs nobody in (no page or API call sees a user).
SECOND_FACTOR = "second_factor"
SECOND_FACTOR_LIFETIME = 300  # seconds


def await_second_factor(user: User, remember: bool, next_url: str) -> None:
    """Remember that `user` gave the right password, until they give a code (or time runs out)."""
    session.clear()
    session[SECOND_FACTOR] = {"organization_id": user.organization_id, "user_id": user.id,
                              "email": user.email, "remember": remember, "next": next_url,
                              "until": int(time.time()) + SECOND_FACTOR_LIFETIME}


def awaited_second_factor() -> dict | None:
    """The sign-in waiting for its second factor in this browser, unless it ran out."""
    pending = session.get(SECOND_FACTOR)
    if not isinstance(pending, dict) or pending.get("until", 0) < time.time():
        return None
    return pending


def end_session() -> None:
    logout_user()
    session.clear()


def issue_token(user: User) -> str:
    """A bearer token that is a session of its own (an API login), ended by its logout."""
    now = datetime.now(UTC)
    expires_at = now + current_app.config["JWT_LIFETIME"]
    token_session = open_session(user, "api_token", expires_at=expires_at)
    claims = {"sub": token_session.credential, "iat": now, "exp": expires_at}
    return jwt.encode(claims, current_app.config["SECRET_KEY"], algorithm=JWT_ALGORITHM)


def _user_from_bearer(req) -> User | None:
    """The caller of an API request: a JWT from /api/auth/login, or an admin-made API key."""
    header = req.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    if token.startswith(API_KEY_PREFIX):
        return load_api_key_user(token)
    try:
        claims = jwt.decode(token, current_app.config["SECRET_KEY"],
                            algorithms=[JWT_ALGORITHM], options={"require": ["exp", "sub"]})
    except jwt.PyJWTError:
        return None
    subject = claims.get("sub")
    return load_session_user(subject, "api_token") if isinstance(subject, str) else None


def _security_headers(response):
    headers = response.headers
    headers.setdefault("Content-Security-Policy",
                       content_security_policy(current_app.config["PUBLIC_URL"]))
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("Referrer-Policy", "same-origin")
    if request.is_secure:
        headers.setdefault("Strict-Transport-Security", "max-age=31536000; includeSubDomains")
    return response
