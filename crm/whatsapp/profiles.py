"""The organization's WhatsApp numbers (profiles): connecting, checking, pairing and removing
them. A cloud number is connected once the Graph API answered for it with its token and Meta
verified its webhook; a linked device pairs by QR code through the supervisor; a sandbox is
live at once.
"""

from __future__ import annotations

import logging
import secrets

from flask_babel import gettext as _
from sqlalchemy import Select, literal, select
from sqlalchemy.exc import IntegrityError

from crm import events
from crm.billing import gate
from crm.crypto import encrypt
from crm.errors import ConflictError, NotFoundError, ValidationError
from crm.extensions import db
from crm.foundation.models import User
from crm.foundation.services import audit, current_organization
from crm.models import utcnow
from crm.search import normalize_phone
from crm.tenancy import get_in_organization
from crm.text import has_control_characters
from crm.whatsapp.channels import channel_for
from crm.whatsapp.channels.base import ChannelError
from crm.whatsapp.models import WhatsAppProfile

log = logging.getLogger("crm.whatsapp")


@gate.counts("whatsapp_numbers")
def _plan_counted() -> Select:
    """What the plan's numbers limit counts: every number not deleted."""
    return select(literal(1)).select_from(WhatsAppProfile).where(~WhatsAppProfile.is_deleted)


def access_profile(profile_id: int) -> WhatsAppProfile:
    profile = get_in_organization(WhatsAppProfile, profile_id)
    if profile is None or profile.is_deleted:
        raise NotFoundError(_("Not found."))
    return profile


def list_profiles() -> list[WhatsAppProfile]:
    return list(db.session.scalars(select(WhatsAppProfile).where(~WhatsAppProfile.is_deleted)
                                   .order_by(WhatsAppProfile.id)))


def create_profile(actor: User, provider: object, display_name: object, *,
                   phone_number: object = None, phone_number_id: object = None,
                   business_account_id: object = None, access_token: object = None,
                   app_secret: object = None, auto_assign: bool = True) -> WhatsAppProfile:
    """Connect a number: `cloud` with Meta's ids and secrets (refused unless the Graph API
    answers for the number with the token given), `web` pairing by QR code at once, `sandbox`
    to try Wasl with a simulated customer."""
    fields: dict[str, str] = {}
    if provider not in ("cloud", "web", "sandbox"):
        fields["provider"] = _("Choose one of the listed options.")
    name = display_name.strip() if isinstance(display_name, str) else ""
    if not name or len(name) > 120:
        fields["display_name"] = _("Enter a name of at most %(n)d characters.", n=120)
    phone = _optional_phone(phone_number, fields)
    secrets_: dict[str, str] = {}
    if provider == "cloud":
        # Meta's ids are short numbers (their columns hold 64 characters); tokens are longer.
        for key, value, longest in (("phone_number_id", phone_number_id, 64),
                                    ("access_token", access_token, 512),
                                    ("app_secret", app_secret, 512)):
            if not isinstance(value, str) or not value.strip() or len(value) > longest:
                fields[key] = _("This field is required.")
        if business_account_id not in (None, "") and (
                not isinstance(business_account_id, str) or len(business_account_id) > 64):
            fields["business_account_id"] = _("Enter the WhatsApp Business Account id.")
        secrets_ = {"access_token": str(access_token).strip(),
                    "app_secret": str(app_secret).strip()}
    for key, value in (("display_name", display_name), ("phone_number_id", phone_number_id),
                       ("business_account_id", business_account_id),
                       ("access_token", access_token), ("app_secret", app_secret)):
        if isinstance(value, str) and has_control_characters(value):
            fields[key] = _("Remove the control characters.")
    if fields:
        raise ValidationError(fields)
    gate.ensure_within("whatsapp_numbers")
    profile = WhatsAppProfile(
        display_name=name, provider=provider, phone_number=phone,
        phone_number_id=phone_number_id.strip() if provider == "cloud" else None,
        business_account_id=(business_account_id or None) if provider == "cloud" else None,
        verify_token=new_verify_token(), secrets=encrypt(secrets_) if secrets_ else None,
        state={"cloud": "pending", "sandbox": "connected"}.get(provider, "disconnected"),
        connected_at=utcnow() if provider == "sandbox" else None,
        auto_assign=bool(auto_assign))
    if provider == "cloud":
        # Before the uniqueness check: only someone whose token reaches the number learns
        # whether another workspace holds it.
        _prove_new_number(profile)
    try:
        # Added inside the savepoint: begin_nested() flushes what is pending first, outside it.
        with db.session.begin_nested():
            db.session.add(profile)
            db.session.flush()
    except IntegrityError:
        raise ConflictError(_("This WhatsApp number is already connected."),
                            {"phone_number_id": _("Already connected.")}) from None
    audit("whatsapp.profile_created", actor, profile, provider=provider)
    if provider == "web":
        connect_profile(actor, profile)  # adding a linked device starts its pairing too
    return profile


# Graph's code for an access token it cannot use (invalid, expired, revoked).
GRAPH_INVALID_TOKEN = "190"


def _prove_new_number(profile: WhatsAppProfile) -> None:
    """Ask the Graph API about a new cloud number with its token; refuse the number, with
    Graph's reason on the field at fault, unless it answers for it."""
    try:
        details = channel_for(profile).describe_number()
    except ChannelError as exc:
        field = "access_token" if exc.code == GRAPH_INVALID_TOKEN else "phone_number_id"
        message = (_("WhatsApp could not be reached to check this number. Please try again.")
                   if exc.code == "network" else
                   _("WhatsApp refused this number: %(reason)s", reason=exc.message))
        raise ValidationError({field: message}, message) from None
    _record_proof(profile, details)


def _record_proof(profile: WhatsAppProfile, details: dict[str, str]) -> None:
    profile.verified_at = utcnow()
    profile.verified_name = details.get("verified_name")
    profile.last_error = None


def check_profile(actor: User, profile: WhatsAppProfile) -> WhatsAppProfile:
    """Ask the Graph API again whether a cloud number's token reaches it ("Check again").

    Graph refusing it (a revoked token, a number moved away) unproves the number: it no
    longer holds its phone number id nor receives the platform webhook's deliveries. A
    network failure proves nothing either way and changes only the reason shown.
    """
    try:
        details = channel_for(profile).describe_number()
    except ChannelError as exc:
        profile.last_error = exc.message[:500]
        if exc.code.isdigit():  # Graph's own answer
            profile.verified_at = None
    else:
        _hold_number(profile, details)
    _settle_cloud_state(profile)
    audit("whatsapp.profile_checked", actor, profile, verified=profile.verified_at is not None)
    return profile


def _hold_number(profile: WhatsAppProfile, details: dict[str, str]) -> None:
    """Record the proof; another workspace's proven number with the same id keeps it."""
    try:
        with db.session.begin_nested():
            _record_proof(profile, details)
            db.session.flush()
    except IntegrityError:
        profile.verified_at = None
        profile.last_error = _("This WhatsApp number is already connected.")


def webhook_reached(profile: WhatsAppProfile) -> None:
    """Meta reached a cloud number's webhook: its subscription handshake, or a signed
    delivery for it (Meta posts only to a callback it verified)."""
    if profile.webhook_verified_at is not None:
        return
    profile.webhook_verified_at = utcnow()
    log.info("the webhook of WhatsApp number %s was verified by Meta", profile.id)
    _settle_cloud_state(profile)


def _settle_cloud_state(profile: WhatsAppProfile) -> None:
    """A cloud number is connected only once both checks hold (`missing_checks`); until then
    it is pending, or failed when Graph refused its token. One an admin disconnected stays
    disconnected."""
    if profile.state == "disconnected":
        return
    if not profile.missing_checks:
        state = "connected"
    elif profile.verified_at is None and profile.last_error:
        state = "failed"
    else:
        state = "pending"
    if state != profile.state:
        profile.state = state
        if state == "connected":
            profile.connected_at = profile.connected_at or utcnow()
        events.publish("whatsapp.profile_changed", {"profile_id": profile.id})


def _optional_phone(raw: object, fields: dict[str, str]) -> str | None:

    if raw in (None, ""):
        return None
    phone = normalize_phone(raw, current_organization().country)
    if phone is None:
        fields["phone_number"] = _("Enter a valid phone number.")
    return phone


def connect_profile(actor: User, profile: WhatsAppProfile) -> WhatsAppProfile:
    """Start pairing a linked device (the supervisor shows the QR code); check a cloud
    number with the Graph API again; a sandbox is live at once."""
    if profile.provider == "web":
        if profile.state != "connected":
            profile.state = "pairing"
            profile.last_error = None
    elif profile.provider == "cloud":
        profile.state = "pending"
        return check_profile(actor, profile)
    else:
        profile.state = "connected"
        profile.connected_at = profile.connected_at or utcnow()
    events.publish("whatsapp.profile_changed", {"profile_id": profile.id})
    return profile


def disconnect_profile(actor: User, profile: WhatsAppProfile) -> WhatsAppProfile:

    profile.state = "disconnected"
    if profile.provider == "web":
        profile.secrets = None  # the linked device's session: pairing starts over
    events.publish("whatsapp.profile_changed", {"profile_id": profile.id})
    audit("whatsapp.profile_disconnected", actor, profile)
    return profile


def delete_profile(actor: User, profile: WhatsAppProfile) -> None:
    """Remove a number from the inbox; its conversations stay in the history."""
    disconnect_profile(actor, profile)
    profile.is_deleted = True
    profile.phone_number_id = None  # the number can be connected again later
    audit("whatsapp.profile_deleted", actor, profile)


def new_verify_token() -> str:
    return secrets.token_urlsafe(24)

