"""Pages of ticketing: the tickets list and its views, a ticket's page (fields edited in place,
the comment thread, attachments, the timeline, SLA badges), the "new ticket" form, and the
sections other modules' pages show (a customer's tickets, a conversation's). The settings pages
are in settings_views.py, on the same blueprint.

Thin like every view: each reads the request, calls crm.tickets.services (which also decides
what an agent may see: 404 otherwise) and picks the answer. Forms work as plain posts; htmx
asks for the changed fragment, and live.py pushes the same fragments to other browsers.
"""

from __future__ import annotations

from collections.abc import Mapping

from flask import Blueprint, flash, render_template, request, send_file, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext, lazy_pgettext, ngettext
from sqlalchemy import select

from crm import navigation
from crm.customers.models import Customer
from crm.customers.services import access_customer, resolve_customer
from crm.customers.views import CustomerPanel, add_customer_panel
from crm.errors import ConflictError, NotFoundError, ValidationError
from crm.extensions import db
from crm.foundation.models import User
from crm.foundation.teams import list_teams
from crm.foundation.views import add_audit_labels
from crm.i18n import current_language, isolate, text_direction
from crm.permissions import can, module_enabled, require, sees_only_assigned
from crm.tickets import badges, services
from crm.tickets.models import PRIORITIES, STATUSES, Ticket
from crm.tickets.services.tickets import MAX_ATTACHMENT_BYTES, MAX_ATTACHMENTS, WORKER_ROLES
from crm.validation import parse_id
from crm.versions import StaleVersionError, form_version
from crm.web import allow_uploads, fragment, htmx_response, is_htmx, me, page, see_other
from crm.whatsapp.live import add_contact_section
from crm.whatsapp.services import access_conversation

blueprint = Blueprint("tickets", __name__, url_prefix="/tickets")

PAGE = 50
TIMELINE_PAGE = 30
SECTION_LIMIT = 10  # tickets a customer's or a conversation's section lists
# The rows of a list whose badges count down (six pages): their ids fit in a request line.
LIVE_BADGES = 300
TRIGGER = "ticketsChanged"

STATUS_LABELS = {"open": lazy_gettext("Open"), "pending": lazy_pgettext("ticket status", "Pending"),
                 "on_hold": lazy_gettext("On hold"), "solved": lazy_gettext("Solved"),
                 "closed": lazy_gettext("Closed")}
PRIORITY_LABELS = {"low": lazy_gettext("Low"), "normal": lazy_gettext("Normal"),
                   "high": lazy_gettext("High"), "urgent": lazy_gettext("Urgent")}
VIEW_LABELS = {"mine": lazy_gettext("Mine"), "unassigned": lazy_gettext("Unassigned"),
               "all": lazy_gettext("All"), "breaching": lazy_gettext("Breaching soon"),
               "breached": lazy_gettext("Breached")}
SOURCE_LABELS = {"manual": lazy_gettext("Added by hand"), "whatsapp": lazy_gettext("WhatsApp"),
                 "api": lazy_gettext("API")}
EVENT_LABELS = {"created": lazy_gettext("Ticket opened"), "updated": lazy_gettext("Changed"),
                "assigned": lazy_gettext("Assigned"), "reply": lazy_gettext("Public reply"),
                "note": lazy_gettext("Internal note"),
                "customer_message": lazy_gettext("The customer wrote"),
                "sla_warning": lazy_gettext("SLA warning"),
                "sla_breached": lazy_gettext("SLA breached"),
                "escalated": lazy_gettext("Escalated")}
FIELD_LABELS = {"subject": lazy_gettext("Subject"), "description": lazy_gettext("Description"),
                "type_id": lazy_gettext("Type"), "priority": lazy_gettext("Priority"),
                "status": lazy_gettext("Status"), "tags": lazy_gettext("Tags"),
                "team_id": lazy_gettext("Team"), "customer_id": lazy_gettext("Customer")}
# The fields the ticket page edits in place (assigning has its own form).
INLINE_FIELDS = ("subject", "status", "priority", "type_id", "tags", "team_id")

navigation.add(navigation.NavItem("tickets.list_tickets", lazy_gettext("Tickets"), "ticketing",
                                  "read", "ticket", 30))
add_audit_labels({
    "ticket.created": lazy_gettext("Ticket opened"),
    "ticket.updated": lazy_gettext("Ticket changed"),
    "ticket.assigned": lazy_gettext("Ticket assigned"),
    "ticket.replied": lazy_gettext("Ticket answered"),
    "ticket.noted": lazy_gettext("Internal note on a ticket"),
    "tickets.settings_updated": lazy_gettext("Ticket settings changed"),
    "tickets.sla_policies_updated": lazy_gettext("SLA policies changed"),
    "tickets.business_hours_updated": lazy_gettext("Working hours changed"),
    "tickets.holiday_added": lazy_gettext("Holiday added"),
    "tickets.holiday_renamed": lazy_gettext("Holiday renamed"),
    "tickets.holiday_removed": lazy_gettext("Holiday removed"),
    "tickets.escalation_rule_created": lazy_gettext("Escalation rule added"),
    "tickets.escalation_rule_updated": lazy_gettext("Escalation rule changed"),
    "tickets.escalation_rule_deleted": lazy_gettext("Escalation rule deleted"),
    "tickets.keyword_added": lazy_gettext("Support keyword added"),
    "tickets.keyword_removed": lazy_gettext("Support keyword removed"),
    "tickets.type_created": lazy_gettext("Ticket type added"),
    "tickets.type_updated": lazy_gettext("Ticket type changed"),
    "tickets.type_deleted": lazy_gettext("Ticket type deleted"),
    "tickets.suggestion_dismissed": lazy_gettext("Ticket suggestion dismissed"),
    "team.created": lazy_gettext("Support team added"),
    "team.updated": lazy_gettext("Support team changed"),
    "team.deleted": lazy_gettext("Support team deleted"),
}, {
    "tickets": lazy_gettext("Ticket"),
    "ticket_types": lazy_gettext("Ticket type"),
    "teams": lazy_gettext("Support team"),
    "holidays": lazy_gettext("Holiday"),
    "escalation_rules": lazy_gettext("Escalation rule"),
    "support_keywords": lazy_gettext("Support keyword"),
    "ticket_settings": lazy_gettext("Ticket settings"),
    "ticket_suggestions": lazy_gettext("Ticket suggestion"),
    "sla_policies": lazy_gettext("SLA policy"),
    "business_hours": lazy_gettext("Working hours"),
}, FIELD_LABELS)
allow_uploads(blueprint, {"tickets.add_comment"}, MAX_ATTACHMENTS * MAX_ATTACHMENT_BYTES)
# The sections other pages show load themselves from the routes below, so neither the CRM nor
# the inbox reads a ticket; each shows nothing while ticketing is off.
add_customer_panel(CustomerPanel("tickets/_customer_tickets.html", "ticketing"))
add_contact_section("tickets/_conversation_tickets.html", "ticketing")


@blueprint.context_processor
def template_context() -> dict:
    """What ticket templates use besides their own variables (live.py renders with it too)."""
    return {"status_labels": STATUS_LABELS, "priority_labels": PRIORITY_LABELS,
            "view_labels": VIEW_LABELS, "source_labels": SOURCE_LABELS,
            "event_labels": EVENT_LABELS, "field_labels": FIELD_LABELS,
            "ticket_badges": badges.badges, "poll_seconds": badges.poll_seconds,
            "type_name": _type_name}


@blueprint.app_template_global("tickets_on")
def tickets_on() -> bool:
    """Whether ticketing is on for the organization (sections other pages include ask)."""
    return module_enabled("ticketing")


def _type_name(ticket_type) -> str:
    return ticket_type.name_in(current_language()) if ticket_type else ""


# -- the timeline ----------------------------------------------------------------------------

def timeline_context(ticket: Ticket, before_id: int | None = None) -> dict:
    """A page of the ticket's timeline, each entry described in the reader's language."""
    events, before = services.list_timeline(ticket, before_id=before_id, limit=TIMELINE_PAGE)
    names = _names_in(events)
    return {"events": events, "before": before,
            "descriptions": {event.id: _describe(event, names) for event in events}}


def _names_in(events: list) -> dict[tuple[str, int], str]:
    """The names of the people, types and teams the entries mention, read once."""
    user_ids = {value for event in events for value in (
        event.details.get("assignee_id"), event.details.get("previous_id")) if value}
    users = db.session.execute(select(User.id, User.full_name).where(
        User.id.in_(user_ids))).all() if user_ids else []
    names = {("user", user_id): name for user_id, name in users}
    names |= {("type_id", t.id): _type_name(t) for t in services.list_types()}
    names |= {("team_id", team.id): team.name for team in list_teams()}
    return names


def _describe(event, names: dict) -> str:
    details = event.details
    if event.kind == "assigned":
        assignee = details.get("assignee_id")
        return (_("To %(name)s", name=isolate(names.get(("user", assignee), "?")))
                if assignee else _("Unassigned"))
    if event.kind == "updated":
        return "; ".join(f"{FIELD_LABELS.get(field, field)}: {_change(field, change, names)}"
                         for field, change in details.get("changes", {}).items())
    if event.kind in ("sla_warning", "sla_breached", "escalated"):
        return str(badges.LABELS.get(details.get("clock"), ""))
    if event.kind == "customer_message":
        return details.get("body", "")
    return ""


def _change(field: str, change: list, names: dict) -> str:
    """A field's old and new values as people read them: "Open → Solved", «مفتوحة ← محلولة»."""
    def shown(value) -> str:
        if value in (None, "", []):
            return "—"
        if field == "status":
            return str(STATUS_LABELS.get(value, value))
        if field == "priority":
            return str(PRIORITY_LABELS.get(value, value))
        if field in ("type_id", "team_id"):
            return isolate(names.get((field, value), "?"))
        if field == "tags":
            return isolate(", ".join(value))
        if field == "subject":
            return isolate(value)
        return _("changed")

    if field in ("description", "customer_id"):
        return _("changed")
    arrow = "←" if text_direction() == "rtl" else "→"  # from the old value, in reading order
    return f"{shown(change[0])} {arrow} {shown(change[1])}"


# -- what forms offer ------------------------------------------------------------------------

def workers() -> list[User]:
    """Active members who work tickets, by name: whom a ticket can be assigned to."""
    return list(db.session.scalars(select(User).where(User.is_active,
                                                      User.role.in_(WORKER_ROLES))
                                   .order_by(User.full_name, User.id)))


def shared_choices() -> dict:
    """What the ticket forms offer to choose from."""
    return {"types": services.list_types(), "workers": workers(), "teams": list_teams(),
            "statuses": STATUSES, "priorities": PRIORITIES}


# -- the list ----------------------------------------------------------------------------------

def _default_view() -> str:
    return "mine" if sees_only_assigned() else "all"


def _list_params() -> dict:
    """The list's filters from the query string, the default view filled in."""
    params = {key: value for key, value in request.args.items()
              if key != "cursor" and value.strip()}
    params.setdefault("view", _default_view())
    return params


@blueprint.get("/")
@require("ticketing", "read")
def list_tickets():
    params = _list_params()
    filters = services.parse_filters(params)
    cursor = request.args.get("cursor")
    try:
        tickets, next_cursor = services.list_tickets(me(), filters, cursor, PAGE,
                                                     related=True)
    except ValidationError:  # a cursor edited by hand: the first page
        cursor = None
        tickets, next_cursor = services.list_tickets(me(), filters, None, PAGE,
                                                     related=True)
    context = {"tickets": tickets, "next_cursor": next_cursor, "cursor": cursor,
               "filters": filters, "params": params, "writable": can("ticketing", "write"),
               "filtered": any(key != "view" for key in params)}
    if is_htmx():
        return fragment("tickets/_rows.html", **context)
    return page("tickets/list.html", values=params, **shared_choices(), **context,
                **_badge_poll(tickets))


@blueprint.get("/sla")
@require("ticketing", "read")
def list_sla():
    """The SLA badges of a list's rows, which the list asks for again and again as a ticket's
    page asks for its card: they count down. Each swaps itself in its row."""
    ids = [parse_id(raw) for raw in request.args.getlist("sla_ids")[:LIVE_BADGES]]
    tickets = services.tickets_among(me(), [ticket_id for ticket_id in ids if ticket_id])
    return render_template("tickets/_list_sla.html", tickets=tickets, **_badge_poll(tickets))


def _badge_poll(tickets: list[Ticket]) -> dict:
    """How soon the list asks for its badges again: as a ticket's page would for the most
    pressing of them, and every SLOW_POLL seconds at least, for the rows a change brings."""
    shown = [badge for ticket in tickets for badge in badges.badges(ticket)]
    return {"badge_poll": badges.poll_seconds(shown) or badges.SLOW_POLL,
            "live_badges": LIVE_BADGES}


@blueprint.post("/bulk")
@require("ticketing", "write")
def bulk_update():
    """Assign or close the checked tickets (the page asked first)."""
    ticket_ids = [parse_id(raw) or 0 for raw in request.form.getlist("ticket_ids")]
    action = request.form.get("action")
    try:
        if not ticket_ids:
            raise ValidationError({"ticket_ids": _("Check the tickets to change first.")})
        if action == "assign":
            changed = services.bulk_assign(me(), ticket_ids, request.form.get("assignee_id"))
        elif action == "close":
            changed = services.bulk_set_status(me(), ticket_ids, "closed")
        else:
            raise ValidationError({"action": _("Choose one of the listed options.")})
    except ValidationError as exc:
        flash(" ".join(exc.fields.values()) or exc.message, "error")
        return _after_bulk(422)
    flash(ngettext("%(num)d ticket changed.", "%(num)d tickets changed.", len(changed)),
          "success")
    return _after_bulk(200)


def _after_bulk(status: int):
    if is_htmx():
        return htmx_response("", status, trigger=TRIGGER, reswap="none")
    return see_other("tickets.list_tickets", **_back_params())


def _back_params() -> dict:
    """The list's filters the bulk form carried, to go back to the same list."""
    return {key.removeprefix("back_"): value for key, value in request.form.items()
            if key.startswith("back_") and value}


# -- a new ticket ------------------------------------------------------------------------------

NEW_FIELDS = ("subject", "description", "type_id", "priority", "customer_id",
              "conversation_id", "assignee_id", "team_id", "tags")


def _prefill(params: Mapping) -> dict:
    """What the form starts with: what the link says (a customer's page, a suggestion)."""
    values = {name: params.get(name, "") for name in NEW_FIELDS}
    values["priority"] = values["priority"] or "normal"
    return values


@blueprint.route("/new", methods=["GET", "POST"])
@require("ticketing", "write")
def new_ticket():
    if request.method == "GET":
        return page("tickets/new.html", values=_prefill(request.args), **shared_choices(),
                    chosen=_chosen_customer(request.args.get("customer_id")))
    data = {name: request.form.get(name) or None for name in NEW_FIELDS}
    try:
        ticket = services.create_ticket(me(), data)
    except (ValidationError, ConflictError) as exc:
        return page("tickets/new.html", exc.status, values=request.form, errors=exc.fields,
                    form_error=exc.message if not exc.fields else None, **shared_choices(),
                    chosen=_chosen_customer(request.form.get("customer_id")))
    flash(_("Ticket #%(number)s was opened.", number=ticket.number), "success")
    return see_other("tickets.show_ticket", ticket_id=ticket.id)


def _chosen_customer(raw: object) -> Customer | None:
    """The customer the new ticket is for, as its customer field shows it: of the
    organization, when the user may read the CRM (which is on)."""
    return resolve_customer(parse_id(raw)) if can("crm", "read") else None


# -- one ticket --------------------------------------------------------------------------------

def _ticket(ticket_id: int) -> Ticket:
    return services.access_ticket(ticket_id, me())


def ticket_context(ticket: Ticket, writable: bool) -> dict:
    """What every fragment of a ticket's page needs, for pages and live events alike."""
    return {"ticket": ticket, "writable": writable and ticket.status != "closed",
            "links": ticket_links(ticket)}


def ticket_links(ticket: Ticket) -> dict:
    """Links to the ticket's customer and conversation, for modules that are on."""
    links = {}
    if ticket.customer_id and module_enabled("crm"):
        links["customer"] = url_for("customers.show_customer", customer_id=ticket.customer_id)
    if ticket.conversation_id and module_enabled("whatsapp"):
        links["conversation"] = url_for("whatsapp.conversation",
                                        conversation_id=ticket.conversation_id)
    return links


def _page(ticket: Ticket, status: int = 200, **context):
    return page("tickets/show.html", status, comments=services.list_comments(ticket),
                **timeline_context(ticket), **shared_choices(),
                **ticket_context(ticket, can("ticketing", "write")), **context)


@blueprint.get("/<int:ticket_id>")
@require("ticketing", "read")
def show_ticket(ticket_id: int):
    return _page(_ticket(ticket_id))


@blueprint.post("/<int:ticket_id>")
@require("ticketing", "write")
def update_ticket(ticket_id: int):
    """Save the fields edited in place (those the form posts)."""
    ticket = _ticket(ticket_id)
    data = {name: request.form.get(name) or None for name in INLINE_FIELDS
            if name in request.form}
    return _fields_answer(ticket, lambda version: services.update_ticket(
        me(), ticket, data, expected_version=version))


@blueprint.post("/<int:ticket_id>/assign")
@require("ticketing", "write")
def assign_ticket(ticket_id: int):
    ticket = _ticket(ticket_id)
    return _fields_answer(ticket, lambda version: services.assign_ticket(
        me(), ticket, request.form.get("assignee_id") or None, expected_version=version))


def _fields_answer(ticket: Ticket, change):
    """Apply `change` (with the form's version); answer with the fields, or the page."""
    context = {"errors": {}}
    try:
        change(form_version(request.form.get("version")))
    except StaleVersionError:
        context["stale"] = True
        status = 409
    except (ValidationError, ConflictError) as exc:
        context.update(errors=exc.fields, form_error=None if exc.fields else exc.message)
        status = exc.status
    else:
        status = 200
        flash(_("Ticket #%(number)s was saved.", number=ticket.number), "success")
        if sees_only_assigned() and ticket.assignee_id != me().id:
            return _gone_to_list()  # given to someone else: the agent sees it no more
        if ticket.status == "closed" and is_htmx():
            return htmx_response(refresh=True)  # every form of the page goes
    if not is_htmx():
        if status == 200:
            return see_other("tickets.show_ticket", ticket_id=ticket.id)
        return _page(ticket, status, **context)
    body = render_template("tickets/_fields.html", **shared_choices(),
                           **ticket_context(ticket, True), **context)
    body += render_template("tickets/_sla.html", ticket=ticket, oob=True)
    return htmx_response(body, status, trigger=TRIGGER)


def _gone_to_list():
    if is_htmx():
        response = htmx_response("", with_flashes=False)
        response.headers["HX-Location"] = url_for("tickets.list_tickets")
        return response
    return see_other("tickets.list_tickets")


@blueprint.get("/<int:ticket_id>/sla")
@require("ticketing", "read")
def ticket_sla(ticket_id: int):
    """The SLA badges, which the page asks for again and again: they count down."""
    return render_template("tickets/_sla.html", ticket=_ticket(ticket_id))


@blueprint.get("/<int:ticket_id>/timeline")
@require("ticketing", "read")
def ticket_timeline(ticket_id: int):
    """The timeline: its newest entries again, or older ones (`before`)."""
    ticket = _ticket(ticket_id)
    before = parse_id(request.args.get("cursor"))
    template = "tickets/_timeline_items.html" if before else "tickets/_timeline.html"
    return render_template(template, ticket=ticket, **timeline_context(ticket, before))


@blueprint.post("/<int:ticket_id>/comments")
@require("ticketing", "write")
def add_comment(ticket_id: int):
    """A public reply or an internal note, with attachments."""
    ticket = _ticket(ticket_id)
    public = request.form.get("public") == "1"
    uploads = [upload for upload in request.files.getlist("files") if upload.filename]
    try:
        comment = services.add_comment(me(), ticket, request.form.get("body", ""), public,
                                       uploads)
    except (ValidationError, ConflictError) as exc:
        context = {"errors": exc.fields, "form_error": None if exc.fields else exc.message,
                   "body": request.form.get("body", "")}
        if is_htmx():
            return fragment("tickets/_composer.html", exc.status,
                            **ticket_context(ticket, True), **context)
        return _page(ticket, exc.status, **context)
    flash(_("Your reply was sent.") if public else _("Your note was added."), "success")
    if is_htmx():
        body = render_template("tickets/_composer.html", **ticket_context(ticket, True),
                               errors={})
        body += render_template("tickets/_comments.html", ticket=ticket, oob=True,
                                comments=services.list_comments(ticket))
        body += render_template("tickets/_sla.html", ticket=ticket, oob=True)
        return htmx_response(body, trigger=TRIGGER)
    return see_other("tickets.show_ticket", ticket_id=ticket.id, _anchor=f"comment-{comment.id}")


@blueprint.get("/attachments/<int:attachment_id>")
@require("ticketing", "read")
def download_attachment(attachment_id: int):
    """An attachment's file, to those who may see its ticket; always a download, so a file
    that claims to be a page never runs as one of ours."""
    attachment = services.access_attachment(attachment_id, me())
    path = services.attachment_path(attachment)
    if path is None or not path.is_file():
        raise NotFoundError(_("This file is not available."))
    response = send_file(path, mimetype="application/octet-stream", as_attachment=True,
                         download_name=attachment.filename, max_age=0)
    response.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.cache_control.private = True
    return response


# -- sections of other pages -----------------------------------------------------------------

@blueprint.get("/customers/<int:customer_id>")
@require("ticketing", "read")
def customer_tickets(customer_id: int):
    """A customer's tickets, as their page shows them (lazily, so the CRM needs no tickets)."""
    if not module_enabled("crm"):
        raise NotFoundError(_("The page you are looking for does not exist."))

    customer = access_customer(customer_id)
    tickets, more = services.list_tickets(me(), services.TicketFilters(customer_id=customer.id),
                                          None, SECTION_LIMIT)
    return render_template("tickets/_customer_section.html", customer=customer, tickets=tickets,
                           more=more)


def _conversation(conversation_id: int):
    """The conversation if WhatsApp is on and the user may see it; else 404."""
    if not module_enabled("whatsapp"):
        raise NotFoundError(_("The page you are looking for does not exist."))

    return access_conversation(conversation_id, me())


@blueprint.get("/conversations/<int:conversation_id>")
@require("ticketing", "read")
def conversation_tickets(conversation_id: int):
    """The conversation's tickets and, when its customer wrote a support keyword, the
    suggestion to open one (the inbox's contact panel shows it)."""
    return _conversation_section(_conversation(conversation_id))


def _conversation_section(conversation, status: int = 200, **context):
    tickets, _more = services.list_tickets(
        me(), services.TicketFilters(conversation_id=conversation.id), None, SECTION_LIMIT)
    customer_tickets = services.open_tickets_of_customer(
        me(), conversation.customer_id, conversation.id, SECTION_LIMIT) \
        if conversation.customer_id else []
    return fragment("tickets/_conversation_section.html", status, conversation=conversation,
                    tickets=tickets, customer_tickets=customer_tickets,
                    suggestion=services.suggestion_for(conversation.id),
                    types=services.list_types(), **context)


@blueprint.post("/conversations/<int:conversation_id>")
@require("ticketing", "write")
def create_from_conversation(conversation_id: int):
    """One click: a ticket for the conversation, its subject from the customer's last message
    (or the suggestion's fields as the agent left them)."""
    conversation = _conversation(conversation_id)
    data = {name: request.form.get(name) or None
            for name in ("subject", "description", "type_id", "priority")}
    data["conversation_id"] = conversation.id
    try:
        ticket = services.create_ticket(me(), data, source="whatsapp")
    except (ValidationError, ConflictError) as exc:
        if is_htmx():
            return _conversation_section(conversation, exc.status, errors=exc.fields,
                                         form_error=exc.message)
        raise
    flash(_("Ticket #%(number)s was opened.", number=ticket.number), "success")
    if is_htmx():
        return _conversation_section(conversation)
    return see_other("tickets.show_ticket", ticket_id=ticket.id)


@blueprint.post("/suggestions/<int:suggestion_id>/dismiss")
@require("ticketing", "write")
def dismiss_suggestion(suggestion_id: int):
    suggestion = services.access_suggestion(suggestion_id)
    conversation = _conversation(suggestion.conversation_id)
    services.dismiss_suggestion(me(), suggestion)
    if is_htmx():
        return _conversation_section(conversation)
    return see_other("whatsapp.conversation", conversation_id=conversation.id)

