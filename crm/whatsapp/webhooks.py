"""WhatsApp Cloud API webhooks: Meta's subscription check, then signed messages and statuses.

Two doors, one handler. `/webhooks/whatsapp/<profile_id>` serves an organization that connects
its own Meta app (the profile's verify token and app secret); `/webhooks/whatsapp` serves the
platform's own Meta app (WHATSAPP_VERIFY_TOKEN, WHATSAPP_APP_SECRET), to which customers'
numbers are connected, and whose changes are routed by `metadata.phone_number_id` to the
numbers whose token the Graph API answered for (see WhatsAppProfile).

The organization comes only from a verified source: the profile the URL names (checked by its
own app secret) or the phone number id inside a delivery signed by the platform. The signature
(X-Hub-Signature-256: "sha256=" + HMAC-SHA256 of the raw body with the app secret) is checked
before the body is parsed, and the whole body is parsed before it is kept, so a forged or
malformed delivery leaves nothing behind. A delivery is kept for its organization (one row per
organization when a platform delivery names several) and applied by a job
(crm/whatsapp/ingest.py): Meta hears back as soon as it is safely stored. A delivery naming no
number of ours is answered 200 and dropped, or Meta would retry it for days.

Each number accepts WHATSAPP_WEBHOOK_PER_PROFILE deliveries through either door; over that it
is answered 429, which Meta retries later, so one flooding number cannot swamp the others.
A successful handshake on a number's own door, or a signed delivery for it on either door,
records that Meta verified its webhook.
"""

from __future__ import annotations

import hashlib
import hmac
import logging

from flask import Blueprint, Response, abort, current_app, jsonify, request
from limits import parse
from sqlalchemy import text

from crm import json_input
from crm.crypto import decrypt_json
from crm.extensions import csrf, db, limiter
from crm.tenancy import get_in_organization, organization_context, set_current_organization
from crm.web import error_body
from crm.whatsapp import ingest, profiles
from crm.whatsapp.models import WhatsAppProfile

log = logging.getLogger("crm.whatsapp.webhooks")
blueprint = Blueprint("whatsapp_webhooks", __name__)
# Meta signs the body; it cannot send a CSRF token (and no session is involved).
csrf.exempt(blueprint)

PATH = "/webhooks/whatsapp"
SIGNATURE_HEADER = "X-Hub-Signature-256"
LIMIT_SCOPE = "whatsapp-webhook"


def webhook_url(profile: WhatsAppProfile) -> str:
    """The absolute URL to paste into Meta's dashboard for this profile: built from PUBLIC_URL,
    never from the request (whose Host header anyone can set)."""
    return f"{current_app.config['PUBLIC_URL'].rstrip('/')}{PATH}/{profile.id}"


# -- routes ----------------------------------------------------------------------------------
# Answers go to Meta's servers, not to people, so their wording is not translated.

@blueprint.get(f"{PATH}/<int:profile_id>")
def verify_profile(profile_id: int):
    profile = _cloud_profile(profile_id)
    if profile is None:
        return _refuse(404, "not_found", "No such webhook.")
    answer = _verify(profile.verify_token)
    if answer.status_code == 200:
        profiles.webhook_reached(profile)
    return answer


@blueprint.post(f"{PATH}/<int:profile_id>")
def receive_for_profile(profile_id: int):
    profile = _cloud_profile(profile_id)
    if profile is None:
        return _refuse(404, "not_found", "No such webhook.")
    app_secret = decrypt_json(profile.secrets).get("app_secret") or ""
    if not _signed(app_secret):
        return _refuse(403, "forbidden", "Invalid signature.")
    _document, changes = _parsed()
    if not _within_limit({profile.organization_id: [profile.id]}):
        return _too_many()
    profiles.webhook_reached(profile)
    if changes:
        ingest.accept(profile.organization_id, request.get_data(cache=True), profile.id)
    return _ok()


@blueprint.get(PATH)
def verify_platform():
    return _verify(current_app.config["WHATSAPP_VERIFY_TOKEN"])


@blueprint.post(PATH)
def receive_for_platform():
    if not _signed(current_app.config["WHATSAPP_APP_SECRET"]):
        return _refuse(403, "forbidden", "Invalid signature.")
    document, changes = _parsed()
    routes = ingest.platform_routes(changes)
    by_organization: dict[int, list[int]] = {}
    for route in routes.values():
        by_organization.setdefault(route.organization_id, []).append(route.profile_id)
    if not _within_limit(by_organization):
        return _too_many()
    for route in routes.values():
        if not route.webhook_verified:
            with organization_context(route.organization_id):
                profiles.webhook_reached(get_in_organization(WhatsAppProfile, route.profile_id))
    if routes:
        ingest.accept_platform(request.get_data(cache=True), document, routes)
    return _ok()


def _ok():
    return jsonify({"status": "ok"})


def _refuse(status: int, code: str, message: str) -> Response:
    response = jsonify(error_body(status, code, message))
    response.status_code = status
    return response


def _too_many() -> Response:
    response = _refuse(429, "too_many_requests", "Too many deliveries for this number.")
    response.headers["Retry-After"] = str(parse(_limit_text()).get_expiry())
    return response


def _verify(expected_token: str) -> Response:
    """Meta's subscription check: echo hub.challenge when hub.verify_token is ours."""
    token = request.args.get("hub.verify_token", "")
    if (request.args.get("hub.mode") != "subscribe" or not expected_token
            or not hmac.compare_digest(token.encode(), expected_token.encode())):
        return _refuse(403, "forbidden", "Verification failed.")
    return Response(request.args.get("hub.challenge", ""), mimetype="text/plain")


def _signed(app_secret: str) -> bool:
    """Is the raw body signed with `app_secret`? (An unset secret verifies nothing.)"""
    signature = request.headers.get(SIGNATURE_HEADER, "")
    if not app_secret or not signature.startswith("sha256="):
        return False
    expected = "sha256=" + hmac.new(app_secret.encode(), request.get_data(cache=True),
                                    hashlib.sha256).hexdigest()
    return hmac.compare_digest(signature.encode(), expected.encode())


def _parsed() -> tuple[dict, list[ingest.Change]]:
    """The delivery and its changes; a 400 answer if it is not in Meta's shape."""
    try:
        document = json_input.loads(request.get_data(cache=True))
        return document, ingest.parse_delivery(document)
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        log.warning("malformed WhatsApp webhook refused: %s", exc)
        abort(_refuse(400, "bad_request", f"Malformed delivery: {exc}"))


def _within_limit(profiles: dict[int, list[int]]) -> bool:
    """Count a delivery against each number it is for (organization → profile ids); False
    when one of them is over WHATSAPP_WEBHOOK_PER_PROFILE (a delivery Meta will send again)."""
    if not limiter.enabled:
        return True
    limit, strategy = parse(_limit_text()), limiter.limiter
    over = [(org_id, profile_id) for org_id, profile_ids in profiles.items()
            for profile_id in profile_ids
            if not strategy.hit(limit, LIMIT_SCOPE, str(org_id), str(profile_id))]
    if over:
        log.warning("WhatsApp webhook over its limit for numbers %s: answered 429", over)
    return not over


def _limit_text() -> str:
    return current_app.config["WHATSAPP_WEBHOOK_PER_PROFILE"]


def _cloud_profile(profile_id: int) -> WhatsAppProfile | None:
    """The cloud profile the URL names, with its organization made current."""
    org_id = db.session.execute(text("SELECT wasl_whatsapp_profile_organization(:id)"),
                                {"id": profile_id}).scalar()
    if org_id is None:
        return None
    set_current_organization(org_id)
    profile = get_in_organization(WhatsAppProfile, profile_id)
    if profile is None or profile.is_deleted or profile.provider != "cloud":
        return None
    return profile
