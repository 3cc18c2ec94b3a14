"""Pages of the CRM: customers, their timeline, the pipeline board, segments and CSV imports.
The CRM's settings (stages, custom fields, lead scoring) are in settings_views.py, on the same
blueprint.

Thin by design: each view reads the request, calls crm.customers.services and picks the
answer. Forms work as plain posts; an htmx request (not a boosted one) gets the changed
fragment instead of the page (STYLE.md "one template, two entry points").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from functools import lru_cache, wraps
from typing import Any

from flask import (
    Blueprint,
    Response,
    flash,
    redirect,
    render_template,
    request,
    send_file,
    url_for,
)
from flask_babel import format_date, format_decimal, lazy_gettext
from flask_babel import gettext as _

from crm import navigation
from crm.customers import imports, live, services
from crm.customers.models import (
    ACTIVITY_TYPES,
    MESSAGE_ACTIVITY_TYPES,
    SOURCES,
    Customer,
    CustomerActivity,
    SalesStage,
)
from crm.customers.services import scoring
from crm.errors import ConflictError, ServiceError, ValidationError
from crm.foundation import services as foundation
from crm.foundation.models import User
from crm.foundation.views import (
    DashboardCard,
    OnboardingStep,
    add_audit_labels,
    add_dashboard_card,
    add_onboarding_step,
)
from crm.i18n import DATE_PATTERN, current_language, isolate
from crm.pagination import decode_cursor, encode_cursor
from crm.permissions import can, require, sees_only_assigned
from crm.validation import parse_id
from crm.versions import StaleVersionError, form_version
from crm.web import allow_uploads, fragment, htmx_response, is_htmx, me, page, see_other
from crm.whatsapp.profiles import list_profiles

blueprint = Blueprint("customers", __name__, url_prefix="/customers")

PAGE = 50
TIMELINE_PAGE = 20
MERGE_CANDIDATES = 10
PICKS = 10  # customers a form's customer field offers for a search
TEAM_LIMIT = 500

SOURCE_LABELS = {"manual": lazy_gettext("Added by hand"), "whatsapp": lazy_gettext("WhatsApp"),
                 "import": lazy_gettext("CSV import"), "api": lazy_gettext("API")}
SORT_LABELS = {"newest": lazy_gettext("Newest first"), "oldest": lazy_gettext("Oldest first"),
               "name": lazy_gettext("Name"), "score": lazy_gettext("Highest score"),
               "last_contacted": lazy_gettext("Last contacted")}
ACTIVITY_LABELS = {
    "note": lazy_gettext("Note"), "call": lazy_gettext("Call"),
    "meeting": lazy_gettext("Meeting"), "task": lazy_gettext("Task"),
    "created": lazy_gettext("Created"), "stage_changed": lazy_gettext("Stage changed"),
    "whatsapp_in": lazy_gettext("WhatsApp in"), "whatsapp_out": lazy_gettext("WhatsApp out"),
    "ticket_opened": lazy_gettext("Ticket opened"), "ticket_closed": lazy_gettext("Ticket closed"),
    "campaign_sent": lazy_gettext("Campaign sent"),
    "campaign_replied": lazy_gettext("Campaign reply"), "imported": lazy_gettext("Imported"),
    "merged": lazy_gettext("Merged"), "score_changed": lazy_gettext("Score changed"),
}
FIELD_TYPE_LABELS = {"text": lazy_gettext("Text"), "number": lazy_gettext("Number"),
                     "date": lazy_gettext("Date"), "choice": lazy_gettext("Choice")}
IMPORT_STATUS_LABELS = {"uploaded": lazy_gettext("Waiting for the column mapping"),
                        "queued": lazy_gettext("Waiting to start"),
                        "running": lazy_gettext("Importing"),
                        "done": lazy_gettext("Import finished"),
                        "failed": lazy_gettext("Import stopped")}
DUPLICATE_LABELS = {"update": lazy_gettext("Update the existing customer"),
                    "skip": lazy_gettext("Skip the row")}
navigation.add(navigation.NavItem("customers.list_customers", lazy_gettext("Customers"), "crm",
                                  "read", "users", 20))
navigation.add(navigation.NavItem("customers.board", lazy_gettext("Pipeline"), "crm", "read",
                                  "columns", 25))
add_audit_labels({
    "customer.deleted": lazy_gettext("Customer deleted"),
    "customer.merged": lazy_gettext("Customers merged"),
    "customer_import.uploaded": lazy_gettext("Import file uploaded"),
    "customer_import.started": lazy_gettext("Import started"),
    "customer_import.resumed": lazy_gettext("Import resumed"),
    "customers.exported": lazy_gettext("Customers exported"),
    "custom_field.created": lazy_gettext("Custom field added"),
    "custom_field.updated": lazy_gettext("Custom field changed"),
    "custom_field.deleted": lazy_gettext("Custom field deleted"),
    "sales_stage.created": lazy_gettext("Stage added"),
    "sales_stage.updated": lazy_gettext("Pipeline stage edited"),
    "sales_stage.deleted": lazy_gettext("Stage deleted"),
    "sales_stage.reordered": lazy_gettext("Stages reordered"),
    "scoring.rules_saved": lazy_gettext("Scoring rules saved"),
    "segment.created": lazy_gettext("Segment saved"),
    "segment.updated": lazy_gettext("Segment changed"),
    "segment.deleted": lazy_gettext("Segment deleted"),
}, {
    "customers": lazy_gettext("Customer"),
    "sales_stages": lazy_gettext("Stage"),
    "custom_field_definitions": lazy_gettext("Custom field"),
    "segments": lazy_gettext("Segment"),
    "customer_imports": lazy_gettext("Import"),
    "scoring_rules": lazy_gettext("Scoring rules"),
})


@dataclass(frozen=True)
class CustomerPanel:
    """A card another module adds to the customer page: its template, who may see it, and
    the data it shows of the customer."""

    template: str
    area: str
    level: str = "read"
    data: Callable[[Customer], dict] = lambda customer: {}


_customer_panels: list[CustomerPanel] = []


def add_customer_panel(panel: CustomerPanel) -> None:
    """Show `panel` on customer pages to everyone whose role reaches its area and level."""
    _customer_panels.append(panel)


# A CSV import may be far larger than the app's default body limit.
allow_uploads(blueprint, {"customers.start_import"}, imports.IMPORT_MAX_BYTES)


# -- the dashboard's cards: an agent sees their own customers and tasks, the others the team's

def _own_only() -> int | None:
    """Whose numbers the dashboard shows: an agent's own (their id), else the team's (None)."""
    return me().id if sees_only_assigned() else None


def _pipeline_card() -> dict:
    owner_id = _own_only()
    totals = services.stage_totals(owner_id)
    return {"stages": [(stage, totals.get(stage.id)) for stage in services.list_stages()],
            "owner_id": owner_id}


def _tasks_card() -> dict:
    assignee_id = _own_only()
    return {"tasks": services.tasks_due_today(me()), "counts": services.task_counts(assignee_id),
            "mine": assignee_id is not None, "today": services.today_bounds()[0]}


add_dashboard_card(DashboardCard("customers/_pipeline_card.html", "crm", "read", _pipeline_card,
                                 (live.EVENT,), order=20))
add_dashboard_card(DashboardCard("customers/_tasks_card.html", "crm", "read", _tasks_card,
                                 order=30))
add_onboarding_step(OnboardingStep("import", lazy_gettext("Import your customers"),
                                   lambda: url_for("customers.new_import"), imports.imported_any,
                                   "crm", "write"), 2)


@blueprint.context_processor
def _labels() -> dict:
    return {"source_labels": SOURCE_LABELS, "activity_labels": ACTIVITY_LABELS,
            "field_type_labels": FIELD_TYPE_LABELS, "import_status_labels": IMPORT_STATUS_LABELS,
            "describe_activity": services.describe_activity,
            "text_hidden": services.text_hidden, "readable_messages": frozenset()}


@blueprint.app_template_filter("score_label")
def _score_label(score: int) -> str:
    """The "Score 20" label of a board card, in the user's language."""
    return _score_label_in(current_language(), score)


@lru_cache(maxsize=4096)
def _score_label_in(language: str, score: int) -> str:
    # The board shows a few distinct scores on many cards: Babel formats each one once.
    return _("Score %(score)s", score=format_decimal(score))


@blueprint.app_template_filter("named")
def _named(stages: list[SalesStage]) -> list[tuple[int, str]]:
    """Stages as (id, name in the reader's language): a board's cards each list them all, and
    looking the language up for each of their options cost a third of the board's time."""
    language = current_language()
    return [(stage.id, stage.name_in(language)) for stage in stages]


@blueprint.app_template_filter("as_choices")
def _as_choices(values: list) -> list[tuple[str, str]]:
    """Options of a select whose values are their labels (a choice field's choices)."""
    return [(str(value), str(value)) for value in values]


# -- shared pieces ----------------------------------------------------------------------------

def stage_choices() -> list[tuple[str, str]]:
    language = current_language()
    return [(str(stage.id), stage.name_in(language)) for stage in services.list_stages()]


def _owner_label(user: User) -> str:
    return (user.full_name if user.is_active
            else _("%(name)s (no longer in the team)", name=user.full_name))


def _owner_choices(owner: User | None = None) -> list[tuple[str, str]]:
    """The team's active members; and `owner` (a customer's) when they have left the team, so
    that a form keeps them rather than saving «No owner» in their place."""
    users, _more = foundation.list_users(limit=TEAM_LIMIT)
    if owner is not None and not owner.is_active:
        users.append(owner)
    return [(str(user.id), _owner_label(user)) for user in users]


def _choices(definitions: list | None = None, owner: User | None = None, *,
             filtering: bool = False) -> dict:
    """What the customer forms and filters offer to choose from (`owner`: the edited
    customer's, kept among the choices). A filter (`filtering`) offers the members who left
    the team but still own customers too."""
    owners = ([(str(user.id), _owner_label(user))
               for user in services.owners_to_filter(TEAM_LIMIT)]
              if filtering else _owner_choices(owner))
    return {"stage_choices": stage_choices(), "owner_choices": owners,
            "definitions": (definitions if definitions is not None
                            else services.list_field_definitions()),
            "source_choices": [(source, SOURCE_LABELS[source]) for source in SOURCES],
            "sort_choices": list(SORT_LABELS.items())}


# -- the customers list -----------------------------------------------------------------------

def _filters(params: Mapping) -> tuple[services.CustomerFilters | None, dict]:
    """The filters in `params`, or None with the errors to show beside the fields."""
    try:
        return services.parse_filters(params), {}
    except ValidationError as exc:
        return None, exc.fields


@blueprint.get("/")
@require("crm", "read")
def list_customers():
    filters, errors = _filters(request.args)
    after = request.args.get("cursor")
    customers, next_cursor = (services.list_customers(filters, after, PAGE, related=True)
                              if filters else ([], None))
    context = {"customers": customers, "next_cursor": next_cursor, "after": after,
               "filter_args": filters.as_params() if filters else {}, "errors": errors}
    status = 422 if errors else 200
    if is_htmx():
        return fragment("customers/_rows.html", status, oob=True, **context)
    return page("customers/list.html", status, values=request.args, **_choices(filtering=True),
                **context)


@blueprint.get("/export.csv")
@require("crm", "write")
def export_customers():
    lines = imports.export_csv(me(), services.parse_filters(request.args))
    return Response(lines, mimetype="text/csv", headers={
        "Content-Disposition": "attachment; filename=customers.csv"})


# -- one customer: create, show, edit, delete, merge -----------------------------------------

def _customer_data(form: Mapping, definitions: list) -> dict[str, Any]:
    """What a customer form posted, as the services take it. A form always names a stage;
    without one the service picks the first. An edit form that showed tags sends the ones
    added and removed, so that saving keeps the tags someone else added meanwhile."""
    data = {key: form.get(key, "") for key in ("name", "phone", "email", "company", "owner_id",
                                               "expected_value", "tags", "notes")}
    if "shown_tags" in form:
        data.update(services.tag_changes(form["shown_tags"], data.pop("tags")))
    if form.get("stage_id"):
        data["stage_id"] = form["stage_id"]
    data["custom_fields"] = {d.key: form.get(f"cf_{d.key}", "") for d in definitions}
    return data


def _form_values(customer: Customer) -> dict[str, Any]:
    tags = ", ".join(customer.tags)
    return {"name": customer.name, "phone": customer.phone or "", "email": customer.email or "",
            "company": customer.company, "owner_id": str(customer.owner_id or ""),
            "stage_id": str(customer.stage_id or ""), "tags": tags, "notes": customer.notes,
            "expected_value": _amount_value(customer.expected_value),
            "version": str(customer.version), "shown_tags": tags,
            **{f"cf_{key}": value for key, value in customer.custom_fields.items()}}


def _amount_value(amount: Decimal) -> str:
    """An amount as a form field shows it: 1250, 1250.50, empty for none."""
    return "" if not amount else f"{amount:f}".removesuffix(".00")


def _refused(exc: ServiceError) -> dict[str, Any]:
    """How a form shows a refusal: the field errors, the message, and the customer who
    already has this phone or email."""
    return {"errors": exc.fields, "error": exc.message,
            "existing": getattr(exc, "existing_id", None)}


@blueprint.route("/new", methods=["GET", "POST"])
@require("crm", "write")
def new_customer():
    definitions = services.list_field_definitions()
    context = {"title": _("New customer"), "action": url_for("customers.new_customer"),
               "cancel_url": url_for("customers.list_customers"), **_choices(definitions)}
    if request.method == "GET":  # owned by its creator, in the first stage, unless changed
        first_stage = context["stage_choices"][0][0]
        return page("customers/form.html", values={
            "owner_id": str(me().id), "stage_id": first_stage}, **context)
    try:
        customer = services.create_customer(me(), _customer_data(request.form, definitions))
    except (ValidationError, ConflictError) as exc:
        return page("customers/form.html", exc.status, values=request.form, **_refused(exc),
                     **context)
    flash(_("%(name)s was added.", name=isolate(customer.name)), "success")
    return see_other("customers.show_customer", customer_id=customer.id)


def _customer_page(customer: Customer, status: int = 200, **context) -> tuple[str, int]:
    """The customer page; `context` overrides the timeline's page or the activity form."""
    before = context.pop("before", None)
    context.setdefault("activity_values", {})
    context.setdefault("activity_errors", {})
    conversation_id = services.whatsapp_conversation_id(customer)
    return render_template(
        "customers/show.html", customer=customer, **_timeline_page(customer, before),
        conversation_url=url_for("whatsapp.conversation", conversation_id=conversation_id)
        if conversation_id else None, whatsapp_numbers=_whatsapp_numbers(),
        score_lines=scoring.explain_score(customer),
        definitions=services.list_field_definitions(), owner_choices=_owner_choices(),
        activity_types=ACTIVITY_TYPES,
        panels=[(panel, panel.data(customer)) for panel in _customer_panels
                if can(panel.area, panel.level)], **context), status


def _whatsapp_numbers() -> list:
    """The numbers a chat with the customer may start from: none unless the reader answers
    WhatsApp (the WhatsApp module on)."""
    if not can("whatsapp", "write"):
        return []

    return list_profiles()


@blueprint.get("/<int:customer_id>")
@require("crm", "read")
def show_customer(customer_id: int):
    customer = services.access_customer(customer_id)
    if is_htmx():  # "Cancel" while editing in place: the details again
        return render_template("customers/_details.html", customer=customer,
                               definitions=services.list_field_definitions())
    return _customer_page(customer)


@blueprint.route("/<int:customer_id>/edit", methods=["GET", "POST"])
@require("crm", "write")
def edit_customer(customer_id: int):
    customer = services.access_customer(customer_id)
    definitions = services.list_field_definitions()
    template = "customers/_details_form.html" if is_htmx() else "customers/form.html"
    context = {"customer": customer, "title": _("Edit %(name)s", name=isolate(customer.name)),
               "action": url_for("customers.edit_customer", customer_id=customer.id),
               "cancel_url": url_for("customers.show_customer", customer_id=customer.id),
               **_choices(definitions, customer.owner)}
    if request.method == "GET":
        return page(template, values=_form_values(customer), **context)
    try:
        services.update_customer(me(), customer, _customer_data(request.form, definitions),
                                 expected_version=form_version(request.form.get("version")))
    except StaleVersionError:
        # The form as typed, now at the current version: saving it again saves anyway.
        values = request.form.to_dict() | {"version": str(customer.version)}
        return page(template, 409, values=values, stale=True, **context)
    except (ValidationError, ConflictError) as exc:
        return page(template, exc.status, values=request.form, **_refused(exc), **context)
    flash(_("%(name)s was saved.", name=isolate(customer.name)), "success")
    if is_htmx():
        return fragment("customers/_details.html", customer=customer, definitions=definitions)
    return see_other("customers.show_customer", customer_id=customer.id)


@blueprint.post("/<int:customer_id>/delete")
@require("crm", "write")
def delete_customer(customer_id: int):
    customer = services.access_customer(customer_id)
    name = customer.name
    services.delete_customer(me(), customer)
    flash(_("%(name)s was deleted.", name=isolate(name)), "success")
    return see_other("customers.list_customers")


def _merge_candidates(customer: Customer, query: str) -> list[Customer]:
    if not query.strip():
        return []
    filters, _errors = _filters({"search": query})
    if filters is None:
        return []
    rows, _next = services.list_customers(filters, limit=MERGE_CANDIDATES + 1)
    return [row for row in rows if row.id != customer.id][:MERGE_CANDIDATES]


@blueprint.get("/<int:customer_id>/merge")
@require("crm", "write")
def merge_candidates(customer_id: int):
    customer = services.access_customer(customer_id)
    query = request.args.get("q", "")
    context = {"customer": customer, "query": query,
               "candidates": _merge_candidates(customer, query)}
    if is_htmx():
        return render_template("customers/_merge_results.html", **context)
    return render_template("customers/merge.html", **context)


@blueprint.get("/pick")
@require("crm", "read")
def pick_customer():
    """A form's customer field (a ticket's, say): the customers whose name or phone matches
    the search, as radio buttons of `customer_id`, the one already chosen kept first."""
    query = request.args.get("q", "").replace("\x00", "").strip()[:100]
    chosen = services.resolve_customer(parse_id(request.args.get("customer_id")))
    found: list[Customer] = []
    if query:
        rows, _next = services.list_customers(services.CustomerFilters(search=query),
                                              limit=PICKS + 1)
        found = [row for row in rows if not chosen or row.id != chosen.id][:PICKS]
    return render_template("customers/_pick.html", chosen=chosen, found=found, query=query)


@blueprint.post("/<int:customer_id>/merge")
@require("crm", "write")
def merge_customer(customer_id: int):
    survivor = services.access_customer(customer_id)
    duplicate_id = services.check_id(request.form.get("duplicate_id"), "duplicate_id")
    if duplicate_id is None:
        raise ValidationError({"duplicate_id": _("Choose the duplicate to merge.")})
    duplicate = services.access_customer(duplicate_id)
    name = duplicate.name
    services.merge_customers(me(), survivor, duplicate)
    flash(_("%(duplicate)s was merged into %(name)s.", duplicate=isolate(name),
            name=isolate(survivor.name)),
          "success")
    return see_other("customers.show_customer", customer_id=survivor.id)


# -- the timeline -----------------------------------------------------------------------------

@blueprint.get("/<int:customer_id>/activities")
@require("crm", "read")
def timeline(customer_id: int):
    customer = services.access_customer(customer_id)
    before = parse_id(request.args.get("cursor"))
    if not is_htmx():
        return _customer_page(customer, before=before)
    return render_template("customers/_timeline_items.html", customer=customer,
                           **_timeline_page(customer, before))


def _timeline_page(customer: Customer, before: int | None) -> dict[str, Any]:
    """A page of the timeline, with the messages whose text the reader may see; a
    conversation's WhatsApp messages of one day are one entry, opened on demand."""
    activities, next_cursor = services.list_activities(customer, before, TIMELINE_PAGE)
    return {"activities": activities, "entries": group_messages(activities),
            "next_cursor": next_cursor, "before": before,
            "readable_messages": services.readable_messages(activities, me())}


@dataclass(frozen=True)
class MessageGroup:
    """Consecutive WhatsApp messages of one conversation on one day of the organization."""

    day: date
    activities: list[CustomerActivity]

    @property
    def day_label(self) -> str:
        return format_date(self.day, DATE_PATTERN)  # as every date of the timeline reads


def group_messages(activities: list[CustomerActivity]) -> list[CustomerActivity | MessageGroup]:
    """The timeline's entries: runs of two or more WhatsApp messages of the same conversation
    and day become one group; everything else stays as it is. A run cut by the page's end
    continues as another group on the next page."""
    zone = services.organization_timezone()
    entries: list[CustomerActivity | MessageGroup] = []
    run: list[CustomerActivity] = []

    def key(activity: CustomerActivity) -> tuple | None:
        if activity.type not in MESSAGE_ACTIVITY_TYPES:
            return None
        return (activity.data.get("conversation_id"), activity.created_at.astimezone(zone).date())

    def close_run() -> None:
        if len(run) > 1:
            entries.append(MessageGroup(key(run[0])[1], list(run)))
        else:
            entries.extend(run)
        run.clear()

    for activity in activities:
        if run and key(activity) != key(run[0]):
            close_run()
        if key(activity) is None:
            entries.append(activity)
        else:
            run.append(activity)
    close_run()
    return entries


@blueprint.post("/<int:customer_id>/activities")
@require("crm", "write")
def add_activity(customer_id: int):
    customer = services.access_customer(customer_id)
    form = request.form
    try:
        activity = services.add_activity(me(), customer, form.get("type"), form.get("body"),
                                         form.get("due_at"), form.get("assignee_id"))
    except ValidationError as exc:
        if not is_htmx():
            return _customer_page(customer, 422, activity_values=form,
                                  activity_errors=exc.fields)
        return _activity_form(customer, 422, activity_values=form, activity_errors=exc.fields)
    if not is_htmx():
        return redirect(url_for("customers.show_customer", customer_id=customer.id)
                        + "#timeline", 303)
    return _activity_form(customer, added=activity)


def _activity_form(customer: Customer, status: int = 200, **context) -> Response:
    """The activity form again (empty, or with its errors), and the entry it added."""
    context.setdefault("activity_values", {})
    context.setdefault("activity_errors", {})
    return fragment("customers/_activity_form.html", status, customer=customer,
                     owner_choices=_owner_choices(), activity_types=ACTIVITY_TYPES, **context)


@blueprint.post("/activities/<int:activity_id>/complete")
@require("crm", "write")
def complete_task(activity_id: int):
    activity = services.access_activity(activity_id)
    status = 200
    try:
        services.complete_task(me(), activity)
    except ConflictError as exc:
        flash(exc.message, "error")
        status = exc.status
    if is_htmx():
        return fragment("customers/_activity.html", status, activity=activity)
    return see_other("customers.show_customer", customer_id=activity.customer_id)


# -- tasks --------------------------------------------------------------------------------------

@blueprint.get("/tasks")
@require("crm", "read")
def tasks():
    """Open tasks due today or overdue: everyone's, or one's own (`mine=1`; agents always)."""
    due = request.args.get("due")
    due = due if due in services.TASK_DUES else "today"
    mine = request.args.get("mine") == "1" or sees_only_assigned()
    after = decode_cursor(request.args.get("cursor"), "tasks", (datetime, int))
    rows, next_key = services.list_tasks(due, me().id if mine else None, after)
    context = {"tasks": rows, "due": due, "mine": mine,
               "next_cursor": encode_cursor("tasks", next_key)}
    if is_htmx():
        return render_template("customers/_task_rows.html", **context)
    return render_template("customers/tasks.html", **context)


# -- the pipeline board -----------------------------------------------------------------------

@dataclass(frozen=True)
class Column:
    stage: SalesStage
    customers: list[Customer]
    next_cursor: str | None
    total: services.StageTotal | None


@blueprint.get("/board")
@require("crm", "read")
def board():
    totals = services.stage_totals()
    stages = services.list_stages()
    pages = services.board_columns([stage.id for stage in stages], live.BOARD_PAGE)
    columns = [Column(stage, *pages[stage.id], totals.get(stage.id)) for stage in stages]
    return render_template("customers/board.html", columns=columns, stages=_movable(stages))


def _movable(stages: list[SalesStage] | None = None) -> list[SalesStage]:
    """The stages a card's list offers to move it to: none to those who may not move it."""
    if not can("crm", "write"):
        return []
    return services.list_stages() if stages is None else stages


@blueprint.get("/board/<int:stage_id>")
@require("crm", "read")
def board_column(stage_id: int):
    stage = services.access_stage(stage_id)
    if not is_htmx():  # the "Load more" link without JavaScript: the list of that stage
        return see_other("customers.list_customers", stage_id=stage.id)
    customers, next_cursor = services.board_column(stage.id, request.args.get("cursor"),
                                                   live.BOARD_PAGE)
    return render_template("customers/_board_column.html", stage_id=stage.id,
                           customers=customers, next_cursor=next_cursor, stages=_movable())


def board_move(back_to: str) -> Callable[[Callable], Callable]:
    """A move made by dragging (or with a card's stage list): refused, it says why and reloads
    the page, which shows what is saved (raised as any error without htmx); saved without htmx,
    it goes back to `back_to`."""
    def decorate(view: Callable) -> Callable:
        @wraps(view)
        def wrapped(*args, **kwargs):
            try:
                answer = view(*args, **kwargs)
            except ServiceError as exc:
                if not is_htmx():
                    raise
                flash(exc.message, "error")
                return htmx_response("", exc.status, refresh=True)
            return answer if is_htmx() else see_other(back_to)
        return wrapped
    return decorate


@blueprint.post("/board/move")
@require("crm", "write")
@board_move("customers.board")
def move_card():
    move = services.find_move(services.read_board(request.form.getlist("order")))
    if move is None:
        return "", 204
    customer = services.access_customer(move.card.id)
    services.move_customer(me(), customer, move.stage_id, before_id=move.before_id,
                           after_id=move.after_id)
    return render_template("customers/_board_moved.html", moved=customer,
                           totals=services.stage_totals(), stages=_movable(),
                           changed_stages=sorted({move.card.stage_id, move.stage_id}))


@blueprint.post("/<int:customer_id>/stage")
@require("crm", "write")
@board_move("customers.board")
def move_to_stage(customer_id: int):
    """Move a card with its stage list, without dragging: to the top of that column; the
    answer redraws the columns it left and joined."""
    customer = services.access_customer(customer_id)
    left = customer.stage_id
    services.move_customer(me(), customer, request.form.get("stage_id"))
    changed = [stage_id for stage_id in dict.fromkeys((left, customer.stage_id)) if stage_id]
    return render_template("customers/_board_columns.html", totals=services.stage_totals(),
                           pages=services.board_columns(changed, live.BOARD_PAGE),
                           stages=_movable())


# -- segments ---------------------------------------------------------------------------------

@blueprint.get("/segments")
@require("crm", "read")
def segments():
    return render_template("customers/segments.html", segments=services.list_segments())


def _segment_page(status: int = 200, **context) -> tuple[str, int]:
    filters, errors = _filters(context.get("values", {}))
    context.setdefault("errors", errors)
    context["count"] = services.count_customers(filters) if filters else 0
    return page("customers/segment_new.html", status, **_choices(filtering=True), **context)


@blueprint.get("/segments/new")
@require("crm", "write")
def new_segment():
    return _segment_page(values=request.args)


@blueprint.post("/segments")
@require("crm", "write")
def create_segment():
    form = request.form
    try:
        segment = services.create_segment(me(), form.get("name"), form)
    except ValidationError as exc:
        return _segment_page(422, values=form, errors=exc.fields)
    flash(_("The segment %(name)s was saved.", name=isolate(segment.name)), "success")
    return see_other("customers.segments")


@blueprint.get("/segments/count")
@require("crm", "read")
def count_segment():
    filters, errors = _filters(request.args)
    if errors:
        return render_template("customers/_segment_count.html", count=None), 422
    return render_template("customers/_segment_count.html",
                           count=services.count_customers(filters))


@blueprint.post("/segments/<int:segment_id>/delete")
@require("crm", "write")
def delete_segment(segment_id: int):
    segment = services.access_segment(segment_id)
    name = segment.name
    services.delete_segment(me(), segment)
    flash(_("The segment %(name)s was deleted.", name=isolate(name)), "success")
    return see_other("customers.segments")


# -- CSV import -------------------------------------------------------------------------------

@blueprint.get("/imports/new")
@require("crm", "write")
def new_import():
    return page("customers/import_new.html")


@blueprint.post("/imports")
@require("crm", "write")
def start_import():
    try:
        imp = imports.start_import(me(), request.files.get("file"))
    except ValidationError as exc:
        return page("customers/import_new.html", 422, errors=exc.fields)
    return see_other("customers.show_import", import_id=imp.id)


def _reading_choice(values: Mapping) -> dict[str, str]:
    """The encoding and separator a form or query string chose; what it leaves out stays."""
    return {name: values[name] for name in ("encoding", "delimiter") if name in values}


def _preview(imp, choice: Mapping) -> tuple[imports.Reading, list, list, dict]:
    """The reading chosen (the stored one when the choice is not offered), the columns and
    rows it gives, and what stops it."""
    reading = imports.Reading.of(imp)
    try:
        reading = imports.choose_reading(imp, choice)
        columns, rows = imports.preview_import(imp, reading)
    except ValidationError as exc:
        return reading, [], [], exc.fields
    return reading, columns, rows, {}


def _import_page(imp, status: int = 200, choice: Mapping | None = None,
                 template: str = "customers/import.html", **context) -> tuple[str, int]:
    """The import's page: while it waits for its mapping, the preview read as `choice` says
    (else as stored) and the mapping form; then its progress."""
    if imp.status == "uploaded":
        reading, columns, rows, problems = _preview(imp, choice or {})
        status = 422 if problems else status
        guess = imp.mapping if list(imp.mapping) == columns else imports.suggest_mapping(columns)
        context.setdefault("mapping", guess)
        context.setdefault("new_fields", {})
        context.setdefault("on_duplicate", imp.on_duplicate)
        context.update(
            reading=reading, columns=columns, rows=rows,
            errors={**problems, **context.get("errors", {})},
            detected=imports.ENCODING_LABELS[imp.encoding],
            encoding_choices=list(imports.ENCODING_LABELS.items()),
            delimiter_choices=list(imports.DELIMITER_LABELS.items()),
            duplicate_choices=list(DUPLICATE_LABELS.items()),
            target_choices=[("", _("Skip")), *imports.import_targets().items(),
                            (imports.NEW_FIELD, _("New custom field…"))],
            field_type_choices=list(FIELD_TYPE_LABELS.items()),
            field_keys=[imports.suggest_field_key(c, i) for i, c in enumerate(columns)])
    return page(template, status, imp=imp, **context)


@blueprint.get("/imports/<int:import_id>")
@require("crm", "write")
def show_import(import_id: int):
    imp = imports.access_import(import_id)
    if is_htmx():  # the progress section polling itself
        return render_template("customers/_import_progress.html", imp=imp)
    return _import_page(imp)


@blueprint.get("/imports/<int:import_id>/preview")
@require("crm", "write")
def preview_import(import_id: int):
    """The preview and mapping read with another encoding or separator (nothing is saved)."""
    imp = imports.access_import(import_id)
    if imp.status != "uploaded":
        return see_other("customers.show_import", import_id=imp.id)
    template = "customers/_import_mapping.html" if is_htmx() else "customers/import.html"
    return _import_page(imp, choice=_reading_choice(request.args), template=template)


NEW_FIELD_INPUTS = ("label", "key", "type", "choices")


@blueprint.post("/imports/<int:import_id>")
@require("crm", "write")
def configure_import(import_id: int):
    imp = imports.access_import(import_id)
    if imp.status != "uploaded":
        flash(_("This import has already started."), "error")
        return see_other("customers.show_import", import_id=imp.id)
    form, choice = request.form, _reading_choice(request.form)
    reading, columns, _rows, problems = _preview(imp, choice)
    if problems:
        return _import_page(imp, 422, choice)
    mapping = {column: form.get(f"column-{index}", "") for index, column in enumerate(columns)}
    new_fields = {column: {name: form.get(f"new-{index}-{name}", "")
                           for name in NEW_FIELD_INPUTS}
                  for index, column in enumerate(columns)
                  if mapping[column] == imports.NEW_FIELD}
    on_duplicate = form.get("on_duplicate")
    try:
        imports.configure_import(me(), imp, mapping, on_duplicate, reading, new_fields)
    except ValidationError as exc:
        return _import_page(imp, 422, choice, errors=exc.fields, mapping=mapping,
                            new_fields=new_fields, on_duplicate=on_duplicate)
    return see_other("customers.show_import", import_id=imp.id)


@blueprint.post("/imports/<int:import_id>/resume")
@require("crm", "write")
def resume_import(import_id: int):
    imp = imports.access_import(import_id)
    try:
        imports.resume_import(me(), imp)
    except ConflictError as exc:
        flash(exc.message, "error")
    return see_other("customers.show_import", import_id=imp.id)


@blueprint.get("/imports/<int:import_id>/report.csv")
@require("crm", "write")
def import_report(import_id: int):
    imp = imports.access_import(import_id)
    path = imports.import_report_path(imp)
    if path is None:
        flash(_("This import has no report: no row was rejected, or it is not finished."),
              "info")
        return see_other("customers.show_import", import_id=imp.id)
    return send_file(path, mimetype="text/csv", as_attachment=True,
                     download_name=f"rejected-rows-{imp.id}.csv")
