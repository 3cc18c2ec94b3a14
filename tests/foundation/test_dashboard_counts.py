"""The dashboard's counters (`inbox_counts`, `ticket_counts`, `task_counts`, kept by triggers)
follow every change made through the services: after each, what the cards read equals a
count of the lists they link to, for the team and for an agent."""

from __future__ import annotations

from dataclasses import astuple
from datetime import timedelta
from importlib import import_module

from sqlalchemy import func, select, text

from crm.customers import services as crm
from crm.customers.models import CustomerActivity
from crm.customers.services.activities import today_bounds
from crm.extensions import db
from crm.models import utcnow
from crm.schema import count_rows
from crm.tenancy import organization_context
from crm.tickets import services as tickets
from crm.tickets.dashboard import TicketNumbers, ticket_numbers
from crm.tickets.models import UNSOLVED_STATUSES, Ticket
from crm.whatsapp import services as whatsapp
from crm.whatsapp.dashboard import inbox_numbers, start_of_today, unread_conversations
from crm.whatsapp.models import Conversation
from tests.customers.factories import make_customer
from tests.factories import make_user
from tests.tickets.factories import make_ticket
from tests.whatsapp.factories import make_conversation, make_profile
from tests.whatsapp.test_services import acting_as, inbound

dashboard_counts = import_module("migrations.versions.20261202_eb7087627e79_dashboard_counts")


def _listed_inbox(user, agent: bool) -> tuple:
    """(open, unassigned, unread, mine) counted from the conversations, as the inbox's
    filtered lists count them."""
    active = [Conversation.status != "resolved", Conversation.last_message_at.is_not(None)]
    if agent:
        active.append(Conversation.assigned_user_id == user.id)
    is_open = Conversation.status == "open"
    return db.session.execute(select(
        func.count().filter(is_open),
        func.count().filter(is_open, Conversation.assigned_user_id.is_(None)),
        func.count().filter(Conversation.unread_count > 0),
        func.count().filter(is_open, Conversation.assigned_user_id == user.id)).where(*active)
    ).one()


def _check_inbox(admin, agent) -> None:
    with organization_context(admin.organization_id):
        db.session.flush()
    with acting_as(admin):
        queue = _listed_inbox(admin, False)[1]  # the same for the agents who take from it
    for user, own in ((admin, False), (agent, True)):
        with acting_as(user):
            numbers = inbox_numbers(user)
            opened, _unassigned, unread, mine = _listed_inbox(user, own)
            assert (numbers.open, numbers.unassigned, numbers.unread, numbers.mine) == (
                opened, queue, unread, mine)
            assert unread_conversations(user) == unread
            assert type(numbers.open) is type(numbers.unread) is int


def test_the_inbox_counts_follow_every_change_of_a_conversation(org):
    """New conversations, messages in and out, reading, assigning, reassigning, resolving
    and reopening, deleting: the inbox card's numbers stay those of its lists."""
    agent, other = make_user(org, "agent"), make_user(org, "agent")
    profile = make_profile(org, "sandbox")
    make_conversation(profile, status="pending", assigned_user_id=agent.id, unread_count=1)
    make_conversation(profile, status="resolved", unread_count=3)
    with acting_as(org.admin):
        first = whatsapp.receive_inbound(profile, inbound("+966500000001")).conversation
        second = whatsapp.receive_inbound(profile, inbound("+966500000002")).conversation
        whatsapp.receive_inbound(profile, inbound("+966500000001"))
    _check_inbox(org.admin, agent)
    with organization_context(org.id):
        assert _listed_inbox(org.admin, False)[2] == 3

    with acting_as(org.admin):
        whatsapp.assign_conversation(first, agent.id, org.admin)
        whatsapp.assign_conversation(second, other.id, org.admin)
    _check_inbox(org.admin, agent)
    with acting_as(agent):
        whatsapp.mark_conversation_read(first, agent)
        whatsapp.send_text(first, agent, "وعليكم السلام")
    _check_inbox(org.admin, agent)
    with acting_as(org.admin):
        whatsapp.assign_conversation(second, agent.id, org.admin)
        whatsapp.set_status(first, "pending", org.admin)
        whatsapp.receive_inbound(profile, inbound("+966500000001"))
        whatsapp.set_status(second, "resolved", org.admin)
    _check_inbox(org.admin, agent)
    with acting_as(org.admin):
        whatsapp.receive_inbound(profile, inbound("+966500000002"))
        whatsapp.set_status(second, "open", org.admin)
        whatsapp.assign_conversation(first, None, org.admin)
    _check_inbox(org.admin, agent)
    with organization_context(org.id):
        db.session.delete(second)
    _check_inbox(org.admin, agent)


def _listed_tickets(user, agent: bool) -> TicketNumbers:
    """The tickets card's numbers counted from the tickets, as its lists count them."""
    unsolved = Ticket.status.in_(UNSOLVED_STATUSES)
    own = (Ticket.assignee_id == user.id,) if agent else ()

    def count(*where) -> int:
        return db.session.scalar(select(func.count()).select_from(Ticket).where(*where))

    return TicketNumbers(None if agent else count(Ticket.status == "open"),
                         None if agent else count(Ticket.assignee_id.is_(None), unsolved),
                         count(Ticket.assignee_id == user.id, unsolved),
                         count(Ticket.sla_status == "warning", *own),
                         count(Ticket.sla_status == "breached", *own))


def _check_tickets(org, agent) -> None:
    with organization_context(org.id):
        db.session.flush()
        team = ticket_numbers(org.admin)
        assert team == _listed_tickets(org.admin, False)
        assert ticket_numbers(agent) == _listed_tickets(agent, True)
        assert {type(n) for n in astuple(team)} == {int}


def test_the_ticket_counts_follow_every_change_of_a_ticket(org):
    """Opening, assigning, reassigning, pending, solving, reopening, warnings and breaches of
    the SLA and deleting: the tickets card's numbers stay those of its lists."""
    agent, other = make_user(org, "agent"), make_user(org, "agent")
    made = [make_ticket(org), make_ticket(org, assignee_id=agent.id),
            make_ticket(org, assignee_id=agent.id, priority="urgent"), make_ticket(org)]
    _check_tickets(org, agent)
    with organization_context(org.id):
        rows = [db.session.get(Ticket, ticket.id) for ticket in made]
        tickets.assign_ticket(org.admin, rows[0], agent.id)
        tickets.assign_ticket(org.admin, rows[1], other.id)
        tickets.update_ticket(org.admin, rows[2], {"status": "pending"})
        tickets.update_ticket(org.admin, rows[3], {"status": "solved"})
    _check_tickets(org, agent)
    with organization_context(org.id):
        tickets.tickets.process_due([ticket.id for ticket in made], utcnow() + timedelta(days=60))
        tickets.update_ticket(org.admin, rows[2], {"status": "open"})
        tickets.assign_ticket(org.admin, rows[1], None)
        db.session.flush()
        assert _listed_tickets(org.admin, False).breached > 0
    _check_tickets(org, agent)
    with organization_context(org.id):
        tickets.bulk_set_status(org.admin, [made[0].id, made[1].id], "solved")
        db.session.delete(rows[2])
    _check_tickets(org, agent)


def _listed_tasks(assignee_id: int | None) -> dict[str, int]:
    """Open tasks due today and overdue (the organization's day), as the tasks lists count
    them."""
    today, tomorrow = today_bounds()
    due = CustomerActivity.due_at
    where = [CustomerActivity.type == "task", CustomerActivity.done_at.is_(None)]
    if assignee_id is not None:
        where.append(CustomerActivity.assignee_id == assignee_id)
    overdue, due_today = db.session.execute(
        select(func.count().filter(due < today), func.count().filter(due >= today))
        .where(*where, due < tomorrow)).one()
    return {"today": due_today, "overdue": overdue}


def _check_tasks(org_id: int, agent_id: int) -> None:
    with organization_context(org_id):
        db.session.flush()
        for assignee_id in (None, agent_id):
            counts = crm.task_counts(assignee_id)
            assert counts == _listed_tasks(assignee_id)
            assert {type(n) for n in counts.values()} == {int}


def test_the_task_counts_follow_every_change_of_a_task(org):
    """Tasks due long ago, yesterday, around midnight, today, tomorrow and never; done,
    rescheduled, reassigned, deleted with their customer; and the organization moving to
    another time zone: the tasks card's numbers stay those of its lists."""
    agent = make_user(org, "agent")
    org_id, agent_id = org.id, agent.id
    first, second = make_customer(org), make_customer(org)
    now = utcnow()
    with organization_context(org.id):
        start = start_of_today()
        moments = [now - timedelta(days=40), start - timedelta(minutes=1), start,
                   start + timedelta(minutes=30), now, start + timedelta(hours=23, minutes=59),
                   start + timedelta(days=1), now + timedelta(days=9), None]
        added = [crm.add_activity(org.admin, customer, "task", "Call back",
                                  moment and moment.isoformat(), assignee)
                 for moment in moments for customer, assignee in ((first, agent.id),
                                                                 (second, None))]
    _check_tasks(org.id, agent.id)
    with organization_context(org.id):
        assert _listed_tasks(None)["today"] >= 4

    with organization_context(org.id):
        crm.complete_task(org.admin, added[0])
        crm.complete_task(agent, added[5])
        added[2].due_at = now - timedelta(days=3)  # rescheduled
        added[4].assignee_id = org.admin.id  # reassigned
        added[7].due_at, added[7].assignee_id = now, org.admin.id
        added[16].due_at = now  # had none
    _check_tasks(org.id, agent.id)
    for zone in ("Pacific/Kiritimati", "America/St_Johns", "Asia/Kathmandu", "Pacific/Niue"):
        with organization_context(org.id):
            db.session.execute(text("UPDATE organizations SET timezone = :zone WHERE id = :id"),
                               {"zone": zone, "id": org_id})
            db.session.expire(org)
        _check_tasks(org_id, agent_id)
    with organization_context(org.id):
        crm.delete_customer(org.admin, crm.access_customer(second.id))
    _check_tasks(org.id, agent.id)


def test_the_migration_counts_what_there_is(org):
    """Filling the counters from the rows there are gives what the triggers keep."""
    agent = make_user(org, "agent")
    profile = make_profile(org, "sandbox")
    make_conversation(profile, status="open", assigned_user_id=agent.id, unread_count=2)
    make_ticket(org, assignee_id=agent.id)
    customer = make_customer(org)
    with organization_context(org.id):
        crm.add_activity(org.admin, customer, "task", "Call back", utcnow().isoformat())
        kept = _all_counts()
        db.session.execute(text("DELETE FROM inbox_counts; DELETE FROM ticket_counts; "
                                "DELETE FROM task_counts"))
        assert _all_counts() == set()
        _refill()
        assert _all_counts() == kept != set()


COUNTERS = ("inbox_counts", "ticket_counts", "task_counts")


def _all_counts() -> set:
    return {(table, tuple(row)) for table in COUNTERS for row in db.session.execute(text(
        f"SELECT * FROM {table} WHERE n <> 0"))}


def _refill() -> None:
    """Fill the counters as the migration does (from the test's rows, in its transaction)."""
    for counter in dashboard_counts.COUNTERS:
        db.session.execute(text(count_rows(counter)))



def test_an_organization_deleted_takes_its_counts_along(org):
    """Deleting an organization deletes its conversations, tickets, customers and tasks (ON
    DELETE CASCADE), and its counts and pipeline totals with them: the triggers count
    nothing for an organization that is gone."""
    agent = make_user(org, "agent")
    make_conversation(make_profile(org, "sandbox"), assigned_user_id=agent.id, unread_count=2)
    make_ticket(org, assignee_id=agent.id)
    customer = make_customer(org, owner_id=agent.id, expected_value="100")
    with organization_context(org.id):
        crm.add_activity(org.admin, customer, "task", "Call back", utcnow().isoformat())
        db.session.execute(text("DELETE FROM organizations WHERE id = :id"), {"id": org.id})
        assert _all_counts() == set()
        assert db.session.scalar(text("SELECT count(*) FROM pipeline_totals")) == 0
