"""WhatsApp Cloud API webhooks: Meta's subscription check, then signed messages and statuses.

Two doors, one handler. `/webhooks/whatsapp/<profile_id>` serves an organization that connects
its own Meta app (the profile's verify token and app secret); `/webhooks/whatsapp` serves the
platform's own Meta app (WHATSAPP_VERIFY_TOKEN, WHATSAPP_APP_SECRET), to which customers'
numbers are connected, and whose changes are routed by `metadata.phone_number_id`.

The organization comes only from a verified source: the profile the URL names (checked by its
own app secret) or the phone number id inside a delivery signed by the platform. The signature
(X-Hub-Signature-256: "sha256=" + HMAC-SHA256 of the raw body with the app secret) is checked
before the body is parsed, and the whole body is parsed before it is kept, so a forged or
malformed delivery leaves nothing behind. A delivery is kept as received and applied by a job
(crm/whatsapp/ingest.py): Meta hears back as soon as it is safely stored.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging

from flask import Blueprint, Response, current_app, jsonify, request
from sqlalchemy import text

from crm.crypto import decrypt_json
from crm.extensions import csrf, db
from crm.tenancy import get_in_organization, set_current_organization
from crm.web import error_body
from crm.whatsapp import ingest
from crm.whatsapp.models import WhatsAppProfile

log = logging.getLogger("crm.whatsapp.webhooks")
blueprint = Blueprint("whatsapp_webhooks", __name__)
# Meta signs the body; it cannot send a CSRF token (and no session is involved).
csrf.exempt(blueprint)

PATH = "/webhooks/whatsapp"
SIGNATURE_HEADER = "X-Hub-Signature-256"


def webhook_url(profile: WhatsAppProfile) -> str:
    """The absolute URL to paste into Meta's dashboard for this profile."""
    return f"{current_app.config['SERVER_NAME_FOR_LINKS'].rstrip('/')}{PATH}/{profile.id}"


# -- routes ----------------------------------------------------------------------------------
# Answers go to Meta's servers, not to people, so their wording is not translated.

@blueprint.get(f"{PATH}/<int:profile_id>")
def verify_profile(profile_id: int):
    profile = _cloud_profile(profile_id)
    if profile is None:
        return _refuse(404, "not_found", "No such webhook.")
    return _verify(profile.verify_token)


@blueprint.post(f"{PATH}/<int:profile_id>")
def receive_for_profile(profile_id: int):
    profile = _cloud_profile(profile_id)
    if profile is None:
        return _refuse(404, "not_found", "No such webhook.")
    app_secret = decrypt_json(profile.secrets).get("app_secret") or ""
    if not _signed(app_secret):
        return _refuse(403, "forbidden", "Invalid signature.")
    return _receive(profile.id)


@blueprint.get(PATH)
def verify_platform():
    return _verify(current_app.config["WHATSAPP_VERIFY_TOKEN"])


@blueprint.post(PATH)
def receive_for_platform():
    if not _signed(current_app.config["WHATSAPP_APP_SECRET"]):
        return _refuse(403, "forbidden", "Invalid signature.")
    return _receive(None)


def _refuse(status: int, code: str, message: str):
    return jsonify(error_body(status, code, message)), status


def _verify(expected_token: str):
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


def _receive(profile_id: int | None):
    """Check the delivery's shape, keep it to be applied by the ingest job, and answer."""
    body = request.get_data(cache=True)
    try:
        ingest.parse_delivery(json.loads(body))
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        log.warning("malformed WhatsApp webhook refused: %s", exc)
        return _refuse(400, "bad_request", f"Malformed delivery: {exc}")
    ingest.accept(body, profile_id)
    return jsonify({"status": "ok"})
