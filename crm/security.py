"""Who is calling: login sessions, bearer tokens, rate limits, security headers.

A login session stores "<org>.<user>.<nonce>"; a bearer token (JWT) carries the same string as
its subject. Loading either sets the current organization (the only place it comes from for a
person), and a rotated nonce (logout, password change, removal) ends both at once.
"""

from __future__ import annotations

import functools
import uuid
from datetime import UTC, datetime
from urllib.parse import urlsplit

import jwt
from flask import Flask, current_app, request, session
from flask_login import current_user, login_user, logout_user

from crm.config import trusted_hosts
from crm.extensions import limiter, login_manager
from crm.foundation.models import User
from crm.foundation.services import load_session_user
from crm.tenancy import set_current_organization

JWT_ALGORITHM = "HS256"


@functools.cache
def content_security_policy(public_url: str) -> str:
    """Only our own scripts and styles (no inline script: user content can never run), and
    sockets only to the app's own origin, under each name it answers to."""
    parts = urlsplit(public_url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    port = f":{parts.port}" if parts.port else ""
    sockets = " ".join(f"{scheme}://{host}{port}" for host in trusted_hosts(public_url))
    return ("default-src 'self'; script-src 'self'; style-src 'self'; "
            f"img-src 'self' data: blob:; connect-src 'self' {sockets}; font-src 'self'; "
            "object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'")


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
    app.after_request(_security_headers)


def _unauthorized():
    from flask import flash, jsonify, redirect, url_for
    from flask_babel import gettext

    from crm.web import error_body, wants_json

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


def _login_account_key() -> str:
    data = request.get_json(silent=True) if request.is_json else request.form
    email = data.get("email") if isinstance(data, dict) or hasattr(data, "get") else None
    return "login-account:" + (email.strip().lower() if isinstance(email, str) else "")


def login_rate_limited(view):
    """Limit login attempts per IP and per account; only failed attempts count.

    The limits are shared by every login route (page and API), so switching between them buys
    an attacker no extra attempts.
    """
    failed = {"methods": ["POST"], "deduct_when": lambda response: response.status_code >= 400}
    per_ip = limiter.shared_limit(lambda: current_app.config["RATELIMIT_LOGIN_PER_IP"],
                                  scope="login-ip", **failed)
    per_account = limiter.shared_limit(lambda: current_app.config["RATELIMIT_LOGIN_PER_ACCOUNT"],
                                       scope="login-account", key_func=_login_account_key,
                                       **failed)
    return per_ip(per_account(view))


def _localize(message: str) -> str:
    from flask_babel import gettext

    return gettext(message)


def _identify_caller() -> None:
    """Start each request with no organization, then take it from the proven identity.

    A thread serves many requests, so nothing may carry over from the previous one.
    """
    set_current_organization(None)
    if request.endpoint != "static":
        current_user._get_current_object()


def _user_from_session(session_id: str) -> User | None:
    if request.blueprint == "api":
        return None  # the API authenticates by bearer token only, so it needs no CSRF token
    return load_session_user(session_id)


def start_session(user: User, remember: bool = False) -> None:
    """Log the user in with a fresh session (the old one, and any fixation, is dropped)."""
    session.clear()
    login_user(user, remember=remember)


def end_session() -> None:
    logout_user()
    session.clear()


def issue_token(user: User) -> str:
    now = datetime.now(UTC)
    claims = {"sub": user.get_id(), "iat": now, "exp": now + current_app.config["JWT_LIFETIME"],
              "jti": uuid.uuid4().hex}
    return jwt.encode(claims, current_app.config["SECRET_KEY"], algorithm=JWT_ALGORITHM)


def _user_from_bearer(req) -> User | None:
    header = req.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        return None
    try:
        claims = jwt.decode(token.strip(), current_app.config["SECRET_KEY"],
                            algorithms=[JWT_ALGORITHM], options={"require": ["exp", "sub"]})
    except jwt.PyJWTError:
        return None
    subject = claims.get("sub")
    return load_session_user(subject) if isinstance(subject, str) else None


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
