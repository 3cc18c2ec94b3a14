"""The sandbox page (admins): play the customer of a sandbox number, through the real ingest
path (crm/whatsapp/sandbox.py). On the WhatsApp blueprint of crm/whatsapp/views.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import phonenumbers
from flask import render_template, request
from flask_babel import gettext as _
from phonenumbers import PhoneNumberFormat, PhoneNumberType
from sqlalchemy import select

from crm.errors import NotFoundError, ValidationError
from crm.extensions import db
from crm.foundation.services import current_organization
from crm.search import normalize_phone
from crm.web import form_text, htmx_response, is_htmx, me, see_other
from crm.whatsapp import profiles, sandbox, services
from crm.whatsapp.models import Conversation, Message, WhatsAppProfile
from crm.whatsapp.views import blueprint, require_numbers_admin


def _sandbox_profile(profile_id: int) -> WhatsAppProfile:
    profile = profiles.access_profile(profile_id)
    if profile.provider != "sandbox":
        raise NotFoundError(_("Not found."))
    return profile


@dataclass(frozen=True)
class Customer:
    """Who the admin plays: a sandbox number and a customer's phone (E.164 once valid)."""

    profile: WhatsAppProfile
    raw_phone: str
    phone: str | None
    name: str

    @classmethod
    def from_values(cls, profile: WhatsAppProfile) -> Customer:
        raw = request.values.get("phone", "").replace("\x00", "").strip()[:40]
        phone = normalize_phone(raw, current_organization().country) if raw else None
        return cls(profile, raw, phone, request.values.get("name", "").replace("\x00", "")[:120])

    def conversation(self) -> Conversation | None:
        """The customer's conversation, if they wrote already (never created here)."""
        if self.phone is None:
            return None
        return db.session.scalar(select(Conversation).where(
            Conversation.profile_id == self.profile.id, Conversation.contact_phone == self.phone))


def _chat_context(customer: Customer) -> dict:
    """The customer's side of the chat; looking at it reads what the team sent (blue ticks)."""
    conversation = customer.conversation()
    messages: list[Message] = []
    if conversation is not None:
        sandbox.customer_reads(conversation)
        messages, _older = services.list_messages(conversation)
    return {"customer": customer, "chat": conversation, "messages": messages,
            "form_errors": {}, "form_text": ""}


def _sandbox_page(customer: Customer | None, profiles: list[WhatsAppProfile],
                  status: int = 200, **extra):
    context = _chat_context(customer) if customer is not None else {"customer": None}
    return render_template("whatsapp/sandbox.html", profiles=profiles, **{**context, **extra}
                           ), status


@blueprint.get("/whatsapp/sandbox")
@require_numbers_admin
def sandbox_page():
    sandboxes = [p for p in profiles.list_profiles() if p.provider == "sandbox"]
    chosen = next((p for p in sandboxes if str(p.id) == request.args.get("profile")),
                  sandboxes[0] if sandboxes else None)
    return _sandbox_page(Customer.from_values(chosen) if chosen else None, sandboxes)


@blueprint.post("/whatsapp/sandbox/try")
@require_numbers_admin
def try_sandbox():
    """One click from the dashboard's checklist: the sandbox page, with a sandbox number made
    first when the organization has none (opened in a window of its own, beside the inbox)."""
    sandboxes = [p for p in profiles.list_profiles() if p.provider == "sandbox"]
    profile = sandboxes[0] if sandboxes else profiles.create_profile(me(), "sandbox",
                                                                     _("Sandbox"))
    # A chat ready to write in, as a sample customer: no phone number to invent first.
    return see_other("whatsapp.sandbox_page", profile=profile.id, name=_("Sample customer"),
                     phone=sample_phone(current_organization().country))


def sample_phone(country: str) -> str:
    """A mobile number of `country` as libphonenumber gives one for examples (+966501234567)."""
    example = phonenumbers.example_number_for_type(country, PhoneNumberType.MOBILE)
    return phonenumbers.format_number(example, PhoneNumberFormat.E164) if example else ""


@blueprint.get("/whatsapp/sandbox/<int:profile_id>/chat")
@require_numbers_admin
def sandbox_chat(profile_id: int):
    """The customer's side of the chat (refreshed when the team answers or ticks move)."""
    customer = Customer.from_values(_sandbox_profile(profile_id))
    return render_template("whatsapp/_sandbox_chat.html", **_chat_context(customer))


@blueprint.post("/whatsapp/sandbox/<int:profile_id>/messages")
@require_numbers_admin
def sandbox_send(profile_id: int):
    """The customer sends text or an image to the sandbox number."""
    customer = Customer.from_values(_sandbox_profile(profile_id))
    try:
        sandbox.customer_sends(customer.profile, customer.raw_phone, customer.name,
                               form_text("text"), request.files.get("file"))
    except ValidationError as exc:
        refused = {"form_errors": exc.fields, "form_text": request.form.get("text", "")}
        if not is_htmx():
            return _sandbox_page(customer, [customer.profile], exc.status, **refused)
        return htmx_response(
            render_template("whatsapp/_sandbox_form.html", customer=customer, **refused),
            exc.status, retarget="#sandbox-form", reswap="outerHTML", with_flashes=False)
    if not is_htmx():
        return see_other("whatsapp.sandbox_page", profile=customer.profile.id,
                         phone=customer.phone, name=customer.name)
    return (render_template("whatsapp/_sandbox_chat.html", **_chat_context(customer))
            + render_template("whatsapp/_sandbox_form.html", customer=customer, oob=True,
                              form_errors={}, form_text=""))

