"""The request around every view: one transaction, HTMX-aware responses, errors, health checks,
and the page kit every module's views answer with (`me`, `see_other`, `page`, `fragment`,
`htmx_response`, `form_text`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    g,
    jsonify,
    make_response,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_babel import force_locale
from flask_babel import gettext as _
from flask_login import current_user
from sqlalchemy import text
from werkzeug.exceptions import HTTPException, InternalServerError, SecurityError
from werkzeug.routing import IntegerConverter

from crm import json_input, outages
from crm.errors import ServiceError, ValidationError, file_too_large
from crm.extensions import db
from crm.i18n import language_without_database
from crm.jobs import redis
from crm.permissions import can
from crm.transaction import commit, kept_on_error, rollback
from crm.validation import BIGINT_MAX

if TYPE_CHECKING:
    from crm.foundation.models import User

log = logging.getLogger("crm.web")
health = Blueprint("health", __name__)


class IdConverter(IntegerConverter):
    """`<int:...>` for BIGINT ids. A number no BIGINT holds names no object, so it is read as
    0, which names none either: a 404 like any missing object, never a 500.

    Refusing it here instead (IntegerConverter's `max`) would make werkzeug answer 405 when
    another rule of the same path takes other methods (GET and DELETE /api/users/<id>).
    """

    def to_python(self, value: str) -> int:
        number = super().to_python(value)
        return number if number <= BIGINT_MAX else 0


def init_app(app: Flask) -> None:
    app.url_map.converters["int"] = IdConverter  # before any blueprint adds its rules
    app.request_class = json_input.Request
    app.json = json_input.JSONProvider(app)  # every JSON body is read with a depth limit
    app.after_request(_finish_transaction)
    # Last of all, after Flask-Limiter's, which would stretch a 503's Retry-After to the reset
    # of the limit the request was checked against.
    app.after_request_funcs.setdefault(None, []).insert(0, _keep_retry_after)
    app.teardown_request(_discard_transaction)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(SecurityError, _untrusted_host)
    app.register_error_handler(ServiceError, _service_error)
    app.register_error_handler(InternalServerError, _internal_error)
    for error in outages.ERRORS:
        app.register_error_handler(error, _unavailable)
    app.jinja_env.globals.update(can=can)
    app.register_blueprint(health)
    _probes_from_any_host(app)


HEALTH_PATHS = frozenset({"/healthz", "/readyz"})


def _probes_from_any_host(app: Flask) -> None:
    """Answer health probes whatever Host they name; every other path keeps TRUSTED_HOSTS.

    Load balancers probe an instance by its IP address. The probes build no link and read
    nothing a Host header could steer, so they are answered as if sent to PUBLIC_URL.
    """
    public_host = urlsplit(app.config["PUBLIC_URL"]).netloc
    inner = app.wsgi_app

    def wsgi(environ, start_response):
        if environ.get("PATH_INFO") in HEALTH_PATHS:
            environ["HTTP_HOST"] = public_host
        return inner(environ, start_response)

    app.wsgi_app = wsgi


def is_htmx() -> bool:
    """Did htmx ask for a fragment? Boosted links and forms (hx-boost) want the whole page."""
    return (request.headers.get("HX-Request") == "true"
            and request.headers.get("HX-Boosted") != "true"
            and request.headers.get("HX-History-Restore-Request") != "true")


# -- the page kit ---------------------------------------------------------------------------

def me() -> User:
    """The logged-in user itself (services need the object, not Flask-Login's proxy)."""
    return current_user._get_current_object()


def see_other(endpoint: str, **values: Any) -> Response:
    """Answer a form that worked: 303 to the page `url_for(endpoint, **values)` builds."""
    return redirect(url_for(endpoint, **values), 303)


def page(template: str, status: int = 200, **context: Any) -> tuple[str, int]:
    """Render a page with a form; `errors` and `values` default to empty."""
    context.setdefault("errors", {})
    context.setdefault("values", {})
    return render_template(template, **context), status


def fragment(template: str | None, status: int = 200, **context: Any) -> Response:
    """An htmx answer: `template` rendered (nothing for None), and the flashes."""
    return htmx_response(render_template(template, **context) if template else "", status)


def flashes() -> str:
    """The flash area, to swap in out of band: the messages flashed since the last page."""
    return render_template("_flashes.html", oob=True)


def came_from() -> str | None:
    """The page of this site the request came from (its Referer), as a path and query to
    link back to; None when there is none, or it is another site's."""
    parts = urlsplit(request.referrer or "")
    path = parts.path
    if (parts.netloc != request.host or not path.startswith("/") or path.startswith("//")
            or "\\" in path or not path.isprintable()):
        return None
    return f"{path}?{parts.query}" if parts.query else path


def htmx_response(body: str = "", status: int = 200, *,
                  trigger: str | list[str] | dict[str, Any] | None = None,
                  retarget: str | None = None, reswap: str | None = None,
                  refresh: bool = False, with_flashes: bool = True) -> Response:
    """An htmx answer: `body`, the flash area out of band, and the headers that steer htmx.

    `trigger` (an event name, several, or names with their details) sets HX-Trigger: the
    browser fires those events on <body>, and whatever depends on the change refreshes
    itself (`hx-trigger="customersChanged from:body"`) without the server knowing its id.
    `retarget` and `reswap` send the body elsewhere, or nowhere ("none"); `refresh` reloads
    the page, which shows the flashes itself. A read brings the flash area only when something
    was flashed (`_flashes_due`).
    """
    headers = {}
    if trigger:
        headers["HX-Trigger"] = (json.dumps(trigger) if isinstance(trigger, dict)
                                 else trigger if isinstance(trigger, str) else ", ".join(trigger))
    if retarget:
        headers["HX-Retarget"] = retarget
    if reswap:
        headers["HX-Reswap"] = reswap
    if refresh:
        headers["HX-Refresh"] = "true"
    if with_flashes and not refresh and _flashes_due():
        body += flashes()
    return make_response(body, status, headers)


def _flashes_due() -> bool:
    """Whether an htmx answer brings the flash area: an action's answer always does (it
    replaces what an earlier one said); a read only with something to say, since reads come
    on their own (a list refreshed by the event an action sent, a poll) and an empty area
    would wipe the action's message as soon as it showed."""
    return request.method not in ("GET", "HEAD") or bool(session.get("_flashes"))


def form_text(name: str) -> str:
    """A text field of the posted form ("" when absent); a NUL, which PostgreSQL cannot
    store, is a 422 on the field."""
    value = request.form.get(name, "")
    if "\x00" in value:
        raise ValidationError({name: _("Remove the control characters.")})
    return value


# What a form adds to the file it carries: its other fields and the multipart framing.
FORM_ALLOWANCE = 64 * 1024


def upload_body_limit(file_limit: int) -> int:
    """The body limit of a request carrying one file of up to `file_limit` bytes."""
    return file_limit + FORM_ALLOWANCE


def allow_uploads(blueprint: Blueprint, endpoints: Collection[str], file_limit: int) -> None:
    """Raise the body limit for a blueprint's upload forms; the services check each file's own.

    The hook runs before every other: CSRF protection reads the form, and with it the body.
    """
    body_limit = upload_body_limit(file_limit)

    def allow() -> None:
        if request.endpoint in endpoints:
            request.max_content_length = body_limit
            g.upload_file_limit = file_limit  # what a 413 names as the limit

    def install(state) -> None:
        state.app.before_request_funcs.setdefault(None, []).insert(0, allow)

    blueprint.record_once(install)


def wants_json() -> bool:
    return request.blueprint == "api" or request.path.startswith("/api/")


def _finish_transaction(response: Response) -> Response:
    if kept_on_error() or response.status_code < 400:
        commit()
    else:
        rollback()
    response.vary.add("HX-Request")
    return response


def _discard_transaction(exc: BaseException | None) -> None:
    if exc is not None:
        rollback()


def error_body(status: int, code: str, message: str, fields: dict | None = None) -> dict:
    return {"error": {"code": code, "message": message, "fields": fields or {}}}


_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
          405: "method_not_allowed", 409: "conflict", 413: "too_large", 415: "unsupported_media",
          422: "validation_error", 429: "rate_limited"}


def _messages() -> dict[int, str]:
    return {
        400: _("The request could not be understood."),
        401: _("Please log in to continue."),
        403: _("You do not have permission to do this."),
        404: _("The page you are looking for does not exist."),
        405: _("This action is not allowed here."),
        429: _("Too many attempts. Please wait a moment and try again."),
    }


def _http_error(exc: HTTPException):
    status = exc.code or 500
    message = _too_large() if status == 413 else _messages().get(status, exc.description or "")
    # Keep the one header an error may carry that a client acts on (429's Retry-After).
    headers = {key: value for key, value in exc.get_headers() if key == "Retry-After"}
    if wants_json():
        return jsonify(error_body(status, _CODES.get(status, "error"), message)), status, headers
    if status >= 500:
        message = _("Something went wrong on our side. Please try again.")
    return render_template("errors/error.html", status=status, message=message), status, headers


def _too_large() -> str:
    """What a 413 says: the file limit of an upload form, else the request's body limit."""
    if (file_limit := g.get("upload_file_limit")) is not None:
        return file_too_large(file_limit).fields["file"]
    limit = request.max_content_length or 0
    if limit >= 1024 * 1024:
        return _("The request is too large: at most %(mb)d MB.", mb=limit // (1024 * 1024))
    return _("The request is too large: at most %(kb)d KB.", kb=limit // 1024)


def _untrusted_host(exc: SecurityError):
    """Refuse a request for a host not in TRUSTED_HOSTS, in words only: a page's links would
    need a host to be built on."""
    message = _messages()[400]
    if wants_json():
        return jsonify(error_body(400, _CODES[400], message)), 400
    return message, 400, {"Content-Type": "text/plain; charset=utf-8"}


def _service_error(exc: ServiceError):
    if wants_json():
        return jsonify(error_body(exc.status, exc.code, exc.message, exc.fields)), exc.status
    return render_template("errors/error.html", status=exc.status, message=exc.message), exc.status


# -- our own failures: answered without the database --------------------------------------

def _unavailable(exc: Exception):
    """Answer 503 with Retry-After while PostgreSQL or Redis is down (an error of any other
    kind is raised again, to be answered as a 500)."""
    outages.outage_of(exc, f"{request.method} {request.path}")
    retry_after = current_app.config["UNAVAILABLE_RETRY_AFTER"]
    return _failure(503, "unavailable", lambda: _(
        "The service is temporarily unavailable. Please try again in a few seconds."),
        retry_after=retry_after)


def _internal_error(exc: InternalServerError):
    """Answer 500 for an error nothing else answered; an outage met at commit is a 503."""
    original = exc.original_exception
    if original is not None and outages.unavailable_service(original):
        return _unavailable(original)
    return _failure(500, "error", lambda: _("Something went wrong on our side. Please try again."))


def _failure(status: int, code: str, message: Callable[[], str], retry_after: int | None = None):
    """Answer a failure of ours in the language known without a query, with a page built from
    nothing the database holds: it may be down, or the request's transaction unusable.

    Machines get JSON: the API, and webhooks (Meta retries a delivery answered with an error).
    """
    headers = {}
    if retry_after:
        headers["Retry-After"] = g.retry_after = str(retry_after)
    with force_locale(language_without_database()):
        said = message()
        if wants_json() or request.path.startswith("/webhooks/"):
            return jsonify(error_body(status, code, said)), status, headers
        # Without the context processors: Flask-Login's would load the user.
        page = current_app.jinja_env.get_template("errors/failure.html").render(
            request=request, status=status, message=said, retry_after=retry_after)
    return page, status, headers


def _keep_retry_after(response: Response) -> Response:
    if retry_after := g.get("retry_after"):
        response.headers["Retry-After"] = retry_after
    return response


@health.get("/healthz")
def healthz():
    return {"status": "ok"}


@health.get("/readyz")
def readyz():
    checks = {}
    try:
        db.session.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        checks["database"] = f"error: {type(exc).__name__}"
    try:
        redis().ping()
        checks["redis"] = "ok"
    except Exception as exc:  # noqa: BLE001
        checks["redis"] = f"error: {type(exc).__name__}"
    ready = all(v == "ok" for v in checks.values())
    return {"status": "ok" if ready else "unavailable", "checks": checks}, (200 if ready else 503)
