"""Pages of the organization's WhatsApp numbers (admins): connect a cloud number, pair a
linked device, add a sandbox; see each one's state, disconnect or remove it. On the WhatsApp
blueprint of crm/whatsapp/views.py.
"""

from __future__ import annotations

from flask import flash, render_template, request
from flask_babel import gettext as _

from crm.crypto import decrypt_json, masked
from crm.errors import ServiceError
from crm.i18n import isolate
from crm.web import form_text, htmx_response, is_htmx, me, see_other
from crm.whatsapp import profiles
from crm.whatsapp.channels.web import current_qr, failure_sentence, supervisor_running
from crm.whatsapp.models import WhatsAppProfile
from crm.whatsapp.views import blueprint, require_numbers_admin
from crm.whatsapp.webhooks import webhook_url


@blueprint.app_template_filter("wa_failure")
def _failure(profile: WhatsAppProfile) -> str | None:
    """Why the number failed, for its page: a linked device's in plain words (whatsmeow's text
    is for the log), another's as recorded."""
    if profile.provider != "web":
        return profile.last_error
    return str(failure_sentence(profile.last_error))



def _numbers_page(status: int = 200, **context):
    context.setdefault("errors", {})
    context.setdefault("values", {})
    context.setdefault("form_provider", None)
    return render_template("whatsapp/numbers.html", profiles=profiles.list_profiles(),
                           **context), status


@blueprint.get("/whatsapp/numbers")
@require_numbers_admin
def numbers():
    return _numbers_page()


@blueprint.post("/whatsapp/numbers")
@require_numbers_admin
def create_number():
    """Connect a number: cloud with Meta's ids and secrets, web to pair, or a sandbox."""
    form = request.form
    provider = form.get("provider")
    try:
        profile = profiles.create_profile(
            me(), provider, form_text("display_name") or _default_name(provider),
            phone_number=form.get("phone_number") or None,
            phone_number_id=form.get("phone_number_id"),
            business_account_id=form.get("business_account_id"),
            access_token=form.get("access_token"), app_secret=form.get("app_secret"),
            # A form without the checkbox (the sandbox's) takes the default: on.
            auto_assign=form.get("auto_assign") == "on" if "auto_assign_shown" in form
            else True)
    except ServiceError as exc:
        values = {key: value for key, value in form.items()
                  if key not in ("access_token", "app_secret")}  # secrets are typed again
        return _numbers_page(exc.status, errors=exc.fields, values=values, error=exc.message,
                             error_code=exc.code, form_provider=provider)
    flash(_("%(name)s was added.", name=isolate(profile.display_name)), "success")
    return see_other("whatsapp.number", profile_id=profile.id)


def _default_name(provider: object) -> str:
    return _("Sandbox") if provider == "sandbox" else ""


def _number_context(profile: WhatsAppProfile) -> dict:
    context: dict = {"profile": profile, "qr": None, "webhook_url": None, "secrets": {},
                     "supervisor_running": True}
    if profile.provider == "cloud":
        context["webhook_url"] = webhook_url(profile)
        context["secrets"] = {key: masked(value)
                              for key, value in decrypt_json(profile.secrets).items()}
    if profile.provider == "web":
        context["supervisor_running"] = supervisor_running()
        if profile.state == "pairing":
            context["qr"] = current_qr(profile.id)
    return context


@blueprint.get("/whatsapp/numbers/<int:profile_id>")
@require_numbers_admin
def number(profile_id: int):
    return render_template("whatsapp/number.html",
                           **_number_context(profiles.access_profile(profile_id)))


@blueprint.get("/whatsapp/numbers/<int:profile_id>/state")
@require_numbers_admin
def number_state(profile_id: int):
    """The connection state (and QR code while pairing); refreshed on the supervisor's events."""
    return render_template("whatsapp/_number_state.html",
                           **_number_context(profiles.access_profile(profile_id)))


def _state_answer(profile: WhatsAppProfile):
    if not is_htmx():
        return see_other("whatsapp.number", profile_id=profile.id)
    return htmx_response(render_template("whatsapp/_number_state.html",
                                         **_number_context(profile)))


@blueprint.post("/whatsapp/numbers/<int:profile_id>/connect")
@require_numbers_admin
def connect_number(profile_id: int):
    profile = profiles.connect_profile(me(), profiles.access_profile(profile_id))
    return _state_answer(profile)


@blueprint.post("/whatsapp/numbers/<int:profile_id>/disconnect")
@require_numbers_admin
def disconnect_number(profile_id: int):
    profile = profiles.disconnect_profile(me(), profiles.access_profile(profile_id))
    flash(_("%(name)s was disconnected.", name=isolate(profile.display_name)), "success")
    return _state_answer(profile)


@blueprint.post("/whatsapp/numbers/<int:profile_id>/delete")
@require_numbers_admin
def delete_number(profile_id: int):
    profile = profiles.access_profile(profile_id)
    profiles.delete_profile(me(), profile)
    flash(_("%(name)s was removed. Its conversations stay in the inbox.",
            name=isolate(profile.display_name)), "success")
    return see_other("whatsapp.numbers")

