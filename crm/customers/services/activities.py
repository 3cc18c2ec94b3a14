"""The timeline: notes, calls, meetings and tasks written by hand, and what happened by itself.

A WhatsApp message on the timeline shows its text only to those who may read its
conversation: agents read the conversations assigned to them (the inbox's rule); to them the
entry of another conversation's message stays, type and time, with its text hidden.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from operator import attrgetter

from flask_babel import get_locale
from flask_babel import gettext as _
from sqlalchemy import ColumnElement, func, select, tuple_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import joinedload, selectinload

from crm import events
from crm.customers.models import (
    ACTIVITY_TYPES,
    MESSAGE_ACTIVITY_TYPES,
    Customer,
    CustomerActivity,
    TaskCount,
)
from crm.customers.services.fields import (
    check_datetime,
    check_owner,
    check_text,
    not_found,
    organization_timezone,
)
from crm.errors import ConflictError, ValidationError
from crm.extensions import db
from crm.foundation.models import User
from crm.i18n import isolate
from crm.models import counted, utcnow
from crm.pagination import keyset_page
from crm.permissions import sees_only_assigned
from crm.tenancy import get_in_organization
from crm.validation import collect
from crm.whatsapp.models import Conversation


def access_activity(activity_id: int) -> CustomerActivity:
    activity = get_in_organization(CustomerActivity, activity_id)
    if activity is None:
        raise not_found()
    return activity


def add_activity(actor: User, customer: Customer, type: object, body: object,
                 due_at: object = None, assignee_id: object = None) -> CustomerActivity:
    """Log a note, call, meeting or task by hand (a task is assigned to its author unless
    someone else is named). A call or meeting counts as contact."""
    values = collect({
        "type": lambda: _check_activity_type(type),
        "body": lambda: check_text(body, "body", 5000, required=True, single_line=False),
        "due_at": lambda: check_datetime(due_at, "due_at"),
        "assignee_id": lambda: _check_assignee(assignee_id),
    })
    if values["type"] == "task" and values["assignee_id"] is None:
        values["assignee_id"] = actor.id
    activity = CustomerActivity(customer_id=customer.id, actor_id=actor.id, **values)
    db.session.add(activity)
    db.session.flush()
    if values["type"] in ("call", "meeting"):
        touch_contact(customer)
    events.publish("customer.activity_added", {"customer_id": customer.id,
                                               "activity_id": activity.id})
    return activity


def _check_activity_type(raw: object) -> str:
    if raw not in ACTIVITY_TYPES:
        raise ValidationError({"type": _("Choose one of the listed options.")})
    return raw


def _check_assignee(raw: object) -> int | None:
    try:
        return check_owner(raw)
    except ValidationError:
        raise ValidationError({"assignee_id": _("Choose a member of the team.")}) from None


def complete_task(actor: User, activity: CustomerActivity) -> CustomerActivity:
    """Mark a task done (once; marking it again changes nothing)."""
    if activity.type != "task":
        raise ConflictError(_("Only a task can be marked as done."))
    if activity.done_at is None:
        activity.done_at = utcnow()
        events.publish("customer.activity_updated", {"customer_id": activity.customer_id,
                                                     "activity_id": activity.id})
    return activity


def hand_over_tasks(user_id: int, actor_id: int) -> None:
    """Give a removed member's open tasks to `actor_id`, who removed them (a task always has
    someone to do it); done ones keep their name. Nothing if the member is back."""
    user = get_in_organization(User, user_id)
    if user is None or user.is_active:
        return
    for task in db.session.scalars(select(CustomerActivity).where(
            *_open_tasks(user_id)).order_by(CustomerActivity.id)):
        task.assignee_id = actor_id
        events.publish("customer.activity_updated", {"customer_id": task.customer_id,
                                                     "activity_id": task.id})


def list_activities(customer: Customer, before_id: int | None = None, limit: int = 50
                    ) -> tuple[list[CustomerActivity], int | None]:
    """The timeline, newest first; the second value is the `before_id` of the next page."""
    query = (select(CustomerActivity)
             .options(selectinload(CustomerActivity.actor),
                      selectinload(CustomerActivity.assignee))
             .where(CustomerActivity.customer_id == customer.id)
             .order_by(CustomerActivity.id.desc()))
    if before_id:
        query = query.where(CustomerActivity.id < before_id)
    return keyset_page(query, limit, attrgetter("id"))


def readable_messages(activities: list[CustomerActivity], reader: User) -> frozenset[int]:
    """The ids of the WhatsApp messages among `activities` whose text `reader` may read.

    Agents read a message only while its conversation is assigned to them, as in the inbox;
    everyone else reads them all. One query for a whole page of the timeline.
    """
    messages = {activity.id: activity.data.get("conversation_id")
                for activity in activities if activity.type in MESSAGE_ACTIVITY_TYPES}
    if not messages or not sees_only_assigned():
        return frozenset(messages)
    assigned = set(db.session.scalars(select(Conversation.id).where(
        Conversation.id.in_({c for c in messages.values() if isinstance(c, int)}),
        Conversation.assigned_user_id == reader.id)))
    return frozenset(activity_id for activity_id, conversation_id in messages.items()
                     if conversation_id in assigned)


def text_hidden(activity: CustomerActivity, readable: frozenset[int]) -> bool:
    """Is `activity` a message whose text is not among the `readable_messages()`? Anything
    not known to be readable is hidden, so a page that forgets to ask shows no message."""
    return activity.type in MESSAGE_ACTIVITY_TYPES and activity.id not in readable


def today_bounds() -> tuple[datetime, datetime]:
    """The start of today and of tomorrow, in the organization's time zone."""
    zone = organization_timezone()
    today = datetime.combine(datetime.now(zone).date(), time(), zone)
    return today, today + timedelta(days=1)


def _open_tasks(assignee_id: int | None) -> list[ColumnElement[bool]]:
    """Open tasks (of `assignee_id`, or everyone's): what `ix_customer_activities_tasks_due`
    holds."""
    where = [CustomerActivity.type == "task", CustomerActivity.done_at.is_(None)]
    if assignee_id is not None:
        where.append(CustomerActivity.assignee_id == assignee_id)
    return where


def tasks_due_today(user: User, limit: int = 50) -> list[tuple[CustomerActivity, Customer]]:
    """Open tasks assigned to `user` due by the end of today (the organization's day),
    overdue ones first, each with its customer."""
    _start, tomorrow = today_bounds()
    return [tuple(row) for row in db.session.execute(
        select(CustomerActivity, Customer)
        .join(Customer, Customer.id == CustomerActivity.customer_id)
        .where(*_open_tasks(user.id), CustomerActivity.due_at < tomorrow)
        .order_by(CustomerActivity.due_at, CustomerActivity.id).limit(limit))]


TASK_DUES = ("today", "overdue")


def task_counts(assignee_id: int | None) -> dict[str, int]:
    """How many open tasks fall due today and are overdue (of one person, or everyone's).

    `task_counts` holds open tasks per UTC day, whatever the organization's zone: the days
    before the one in which the organization's today begins are overdue, summed from a few
    rows; what falls due from that UTC midnight to the end of today (two days at most) is
    counted from `ix_customer_activities_tasks_due`."""
    today, tomorrow = today_bounds()
    first_day = today.astimezone(UTC).date()
    days = select(counted(TaskCount.n)).where(TaskCount.due_day < first_day)
    if assignee_id is not None:
        days = days.where(TaskCount.assignee_id == assignee_id)
    due = CustomerActivity.due_at
    recent = (select(func.count().filter(due < today).label("overdue"),
                     func.count().filter(due >= today).label("today"))
              .where(*_open_tasks(assignee_id), due >= datetime.combine(first_day, time(), UTC),
                     due < tomorrow).subquery())
    earlier, overdue, due_today = db.session.execute(
        select(days.scalar_subquery(), recent.c.overdue, recent.c.today)).one()
    return {"today": due_today, "overdue": earlier + overdue}


def list_tasks(due: str, assignee_id: int | None, after: tuple[datetime, int] | None = None,
               limit: int = 50) -> tuple[list[CustomerActivity], tuple[datetime, int] | None]:
    """Open tasks due today or overdue (`due`), earliest first, with their customer and
    assignee; keyset-paginated on (due_at, id)."""
    today, tomorrow = today_bounds()
    due_at = CustomerActivity.due_at
    when = (due_at >= today, due_at < tomorrow) if due == "today" else (due_at < today,)
    query = (select(CustomerActivity)
             .options(joinedload(CustomerActivity.customer),
                      joinedload(CustomerActivity.assignee))
             .where(*_open_tasks(assignee_id), *when)
             .order_by(due_at, CustomerActivity.id))
    if after:
        query = query.where(tuple_(due_at, CustomerActivity.id) > tuple_(*after))
    return keyset_page(query, limit, lambda task: (task.due_at, task.id))


def log_automatic(customer: Customer, type: str, body: str = "",
                  data: dict | None = None, source_key: str | None = None,
                  actor: User | None = None) -> CustomerActivity | None:
    """Log what happened by itself (stage changed, a WhatsApp message...). With a
    `source_key` it is logged once however often the event is delivered: None the next times."""
    statement = insert(CustomerActivity).values(
        organization_id=customer.organization_id, customer_id=customer.id, type=type,
        body=body[:5000], data=data or {}, source_key=source_key,
        actor_id=actor.id if actor else None)
    if source_key is not None:
        statement = statement.on_conflict_do_nothing(
            index_elements=["organization_id", "source_key"],
            index_where=CustomerActivity.source_key.is_not(None))
    activity_id = db.session.execute(statement.returning(CustomerActivity.id)).scalar_one_or_none()
    if activity_id is None:
        return None
    events.publish("customer.activity_added", {"customer_id": customer.id,
                                               "activity_id": activity_id})
    return db.session.get(CustomerActivity, activity_id)


def describe_activity(activity: CustomerActivity) -> str:
    """One line for an automatic entry, in the reader's language ("" for hand-written ones)."""
    data, language = activity.data, str(get_locale() or "ar")
    if activity.type == "stage_changed":
        return _("Moved from %(old)s to %(new)s",
                 old=isolate(data.get(f"from_name_{language}") or _("no stage")),
                 new=isolate(data.get(f"to_name_{language}") or _("no stage")))
    texts = {
        "created": lambda: _("Created (%(source)s)", source=source_label(data.get("source", ""))),
        "whatsapp_in": lambda: _("WhatsApp message received"),
        "whatsapp_out": lambda: _("WhatsApp message sent"),
        "ticket_opened": lambda: _("Ticket opened"),
        "ticket_closed": lambda: _("Ticket closed"),
        "campaign_sent": lambda: _("Campaign message sent"),
        "campaign_replied": lambda: _("Replied to a campaign"),
        "imported": lambda: _("Imported from a CSV file"),
        "merged": lambda: _("Merged with %(name)s", name=isolate(data.get("name", ""))),
    }
    return texts[activity.type]() if activity.type in texts else ""


def source_label(source: str) -> str:
    return {"manual": _("added by hand"), "whatsapp": _("WhatsApp"), "import": _("import"),
            "api": _("API")}.get(source, source)


def touch_contact(customer: Customer, moment: datetime | None = None) -> None:
    """Record a contact (a message, call or meeting) for decay and the `last_contacted` sort."""
    moment = moment or utcnow()
    if customer.last_contacted_at is None or customer.last_contacted_at < moment:
        customer.last_contacted_at = moment
