"""The customer beside the chat: the CRM's card in the inbox's contact panel, and the customer
picker of a new chat. On the customers blueprint of crm/customers/views.py.

The inbox's panel is rendered once for many readers (live events), so it holds only a
placeholder (customers/_conversation_section.html, added with the WhatsApp module's
`add_contact_section`); each reader's browser loads the card with its own request, and the
card shows what that reader may do:
- managers and admins edit the customer (stage in place, name, owner, tags, notes) or create
  one from the contact;
- an agent logs notes, calls and tasks on the customer of a conversation assigned to them;
- everyone who may see the conversation and the CRM reads it.
"""

from __future__ import annotations

from flask import render_template, request, url_for
from flask_babel import gettext as _

from crm.customers import services
from crm.customers.models import Customer
from crm.customers.services import scoring
from crm.customers.views import _owner_choices, blueprint, stage_choices
from crm.errors import ConflictError, NotFoundError, ValidationError
from crm.permissions import can, module_enabled, require
from crm.versions import StaleVersionError, form_version
from crm.web import fragment, htmx_response, is_htmx, me, see_other
from crm.whatsapp import live as whatsapp_live
from crm.whatsapp import services as whatsapp
from crm.whatsapp.models import Conversation

CARD_ACTIVITIES = 5
CARD_ACTIVITY_TYPES = ("note", "call", "task")
PICKS = 8

whatsapp_live.add_contact_section("customers/_conversation_section.html", "crm")


def _conversation(conversation_id: int) -> Conversation:
    """The conversation, to those who may see it in the inbox (404 otherwise)."""
    if not module_enabled("whatsapp"):
        raise NotFoundError(_("Not found."))
    return whatsapp.access_conversation(conversation_id, me())


def may_log(conversation: Conversation) -> bool:
    """May the reader log notes, calls and tasks on the conversation's customer: those who
    edit customers, and the agent the conversation is assigned to."""
    if can("crm", "write"):
        return True
    return can("whatsapp", "write") and conversation.assigned_user_id == me().id


def _card(conversation: Conversation, status: int = 200, **context):
    """The card of the conversation's customer (or the form that creates one)."""
    customer = services.resolve_customer(conversation.customer_id)
    context.setdefault("errors", {})
    context.setdefault("values", {})
    if customer is not None:
        activities, _more = services.list_activities(customer, None, CARD_ACTIVITIES)
        context.update(
            activities=activities, score_lines=scoring.explain_score(customer),
            readable_messages=services.readable_messages(activities, me()),
            stage_choices=stage_choices() if can("crm", "write") else [],
            owner_choices=_owner_choices(customer.owner) if can("crm", "write") else [],
            activity_types=CARD_ACTIVITY_TYPES)
    html = render_template("customers/_conversation_card.html", conversation=conversation,
                           customer=customer, may_log=may_log(conversation), **context)
    return htmx_response(html, status)


def _answer(conversation: Conversation, status: int = 200, **context):
    if not is_htmx():
        return see_other("whatsapp.conversation", conversation_id=conversation.id)
    return _card(conversation, status, **context)


def _customer_of(conversation: Conversation) -> Customer:
    """The conversation's customer; 409 while it has none (the card offers to create one)."""
    customer = services.resolve_customer(conversation.customer_id)
    if customer is None:
        raise ConflictError(_("This conversation has no customer yet."))
    return customer


@blueprint.get("/conversations/<int:conversation_id>/card")
@require("crm", "read")
def conversation_card(conversation_id: int):
    return _card(_conversation(conversation_id))


@blueprint.post("/conversations/<int:conversation_id>/customer")
@require("crm", "write")
def create_conversation_customer(conversation_id: int):
    """Create the customer from the contact (name and phone filled in) and link them."""
    conversation = _conversation(conversation_id)
    data = {"name": request.form.get("name", ""), "phone": request.form.get("phone", "")}
    try:
        customer = services.create_customer(me(), data)
    except services.DuplicateCustomerError as exc:
        customer = services.access_customer(exc.existing_id)  # the number is theirs: link
    except ValidationError as exc:
        return _answer(conversation, exc.status, errors=exc.fields, values=request.form)
    whatsapp.link_customer(conversation.id, customer.id)
    return _answer(conversation)


@blueprint.post("/conversations/<int:conversation_id>/stage")
@require("crm", "write")
def set_conversation_stage(conversation_id: int):
    """Move the conversation's customer to another stage (the board follows live)."""
    conversation = _conversation(conversation_id)
    customer = _customer_of(conversation)
    try:
        services.update_customer(me(), customer, {"stage_id": request.form.get("stage_id")})
    except ValidationError as exc:
        return _answer(conversation, exc.status, errors=exc.fields)
    return _answer(conversation)


@blueprint.post("/conversations/<int:conversation_id>/details")
@require("crm", "write")
def edit_conversation_customer(conversation_id: int):
    """Change the customer's name, owner, tags and notes from the inbox."""
    conversation = _conversation(conversation_id)
    customer = _customer_of(conversation)
    form = request.form
    data = {key: form.get(key, "") for key in ("name", "owner_id", "notes")}
    try:
        data.update(services.tag_changes(form.get("shown_tags", ""), form.get("tags", "")))
        services.update_customer(me(), customer, data,
                                 expected_version=form_version(form.get("version")))
    except StaleVersionError:
        return _answer(conversation, 409, stale=True)
    except (ValidationError, ConflictError) as exc:
        return _answer(conversation, exc.status, errors=exc.fields, values=form, editing=True)
    return _answer(conversation)


@blueprint.post("/conversations/<int:conversation_id>/activities")
@require("whatsapp", "write")
@require("crm", "read")
def log_conversation_activity(conversation_id: int):
    """Log a note, call or task on the conversation's customer (agents: on theirs)."""
    conversation = _conversation(conversation_id)
    if not may_log(conversation):
        raise NotFoundError(_("Not found."))
    customer = _customer_of(conversation)
    form = request.form
    kind = form.get("type")
    try:
        if kind not in CARD_ACTIVITY_TYPES:
            raise ValidationError({"type": _("Choose one of the listed options.")})
        services.add_activity(me(), customer, kind, form.get("body"), form.get("due_at"))
    except ValidationError as exc:
        return _answer(conversation, exc.status, errors=exc.fields, values=form)
    return _answer(conversation)


@blueprint.get("/pick-for-chat")
@require("crm", "read")
def pick_for_chat():
    """Customers with a phone number matching the search, each a link that opens a new chat
    with them."""
    query = request.args.get("q", "").replace("\x00", "").strip()[:100]
    customers = []
    if query:
        try:
            filters = services.parse_filters({"search": query})
        except ValidationError:
            filters = None
        if filters is not None:
            rows, _next = services.list_customers(filters, limit=PICKS * 2)
            customers = [customer for customer in rows if customer.phone][:PICKS]
    links = [(customer, url_for("whatsapp.new_conversation", phone=customer.phone,
                                name=customer.name)) for customer in customers]
    return fragment("customers/_pick_for_chat.html", picks=links, query=query)
