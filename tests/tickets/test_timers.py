"""The SLA timer: one job wakes at the earliest deadline of all organizations and does exactly
what is due — warnings, breaches, escalations, closing solved tickets — in batches; the
recovery job does it too when no timer woke, so a breach is seen within its interval."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from flask import current_app
from rq.registry import ScheduledJobRegistry
from sqlalchemy import func, select, text

from crm.customers.models import CustomerActivity
from crm.extensions import db
from crm.foundation import notifications
from crm.foundation.models import Notification, OutboundEmail
from crm.jobs import get_queue, redis
from crm.models import utcnow
from crm.tenancy import organization_context
from crm.tickets import jobs, services
from crm.tickets.models import Holiday, Ticket, TicketSettings
from crm.transaction import commit
from tests.customers.factories import make_customer
from tests.factories import make_user, run_jobs, run_recovery
from tests.foundation import ident
from tests.tickets.factories import acting_as, backdate, make_team, make_ticket, reload_ticket


def _notes(org, user, kind: str) -> int:
    with organization_context(ident(org)):
        return db.session.scalar(select(func.count()).select_from(Notification).where(
            Notification.user_id == ident(user), Notification.kind == kind))


def _emails(org, user) -> list[str]:
    """The subjects of the emails to `user`, delivered first (the mail job renders them)."""
    run_jobs(current_app, ("mail",))
    with organization_context(ident(org)):
        return list(db.session.scalars(select(OutboundEmail.subject).where(
            OutboundEmail.to_address == user.email).order_by(OutboundEmail.id)))


def _scheduled() -> list[tuple[str, datetime]]:
    """The timer jobs waiting in RQ's schedule, with their moments (aware)."""
    registry = ScheduledJobRegistry(queue=get_queue(jobs.QUEUE))
    return [(job_id, registry.get_scheduled_time(job_id).replace(tzinfo=UTC))
            for job_id in registry.get_job_ids() if job_id.startswith(jobs.JOB_PREFIX)]


def _same_second(one: datetime, other: datetime) -> bool:
    return abs(one - other) < timedelta(seconds=1)


def test_the_timer_does_exactly_what_is_due(org, other_org):
    """At the urgent ticket's warning moment, its assignee is warned; the normal ticket,
    and another organization's, wait for their own moments."""
    agent = make_user(org, "agent")
    urgent = make_ticket(org, priority="urgent", assignee_id=agent.id)
    normal = make_ticket(org, priority="normal", assignee_id=agent.id)
    theirs = make_ticket(other_org, priority="normal")
    moment = urgent.next_deadline_at
    assert jobs.process_due(now=moment) == 1
    assert reload_ticket(org, urgent).first_response_warned_at == moment
    assert reload_ticket(org, urgent).sla_status == "warning"
    assert reload_ticket(org, normal).first_response_warned_at is None
    assert reload_ticket(other_org, theirs).first_response_warned_at is None
    assert _notes(org, agent, "ticket_sla_warning") == 1
    assert len(_emails(org, agent)) == 1
    with organization_context(ident(org)):
        rows, _cursor = services.list_tickets(agent, services.parse_filters(
            {"view": "breaching"}))
    assert [t.id for t in rows] == [urgent.id]
    assert jobs.process_due(now=moment) == 0  # done once


def test_a_breach_tells_the_assignee_and_the_team_s_managers(org):
    agent, manager = make_user(org, "agent"), make_user(org, "manager", language="en")
    team = make_team(org, members=[agent], manager=manager)
    ticket = make_ticket(org, priority="high", assignee_id=agent.id, team_id=team.id)
    due = ticket.first_response_due_at
    jobs.process_due(now=due)
    ticket = reload_ticket(org, ticket)
    assert ticket.first_response_breached_at == due
    assert ticket.sla_status == "breached"
    assert _notes(org, agent, "ticket_sla_breached") == 1
    assert _notes(org, manager, "ticket_sla_breached") == 1
    assert _notes(org, agent, "ticket_sla_warning") == 0  # the breach says it all
    number = ticket.number
    assert _emails(org, manager) == [f"SLA breached: ticket #{number}"]
    ticket = reload_ticket(org, ticket)
    with organization_context(ident(org)):
        rows, _cursor = services.list_tickets(org.admin, services.parse_filters(
            {"view": "breached"}))
        note = db.session.scalar(select(Notification).where(
            Notification.user_id == ident(manager)))
        from flask_babel import force_locale

        with force_locale("en"):
            title, body = notifications.render(note)
    assert [t.id for t in rows] == [ident(ticket)]
    assert title == f"SLA breached: ticket #{ticket.number}"
    assert "first response" in body


def test_the_timer_queues_emails_the_mail_job_renders(app, org):
    """The timer renders no email (rendering each recipient's text and HTML was most of a
    breach's cost): it queues them, and the mail job renders each in its recipient's
    language, with the due moment, before it sends it."""
    from flask import template_rendered

    manager = make_user(org, "manager", language="en")
    team = make_team(org, manager=manager)
    ticket = make_ticket(org, priority="high", team_id=team.id)
    due, number, ticket_id = ticket.first_response_due_at, ticket.number, ident(ticket)
    rendered = []

    def record(sender, template, context, **extra) -> None:
        rendered.append(template.name)

    template_rendered.connect(record, app)
    try:
        jobs.process_due(now=due)
    finally:
        template_rendered.disconnect(record, app)
    assert not [name for name in rendered if name.startswith("email/")]
    with organization_context(ident(org)):
        email = db.session.scalar(select(OutboundEmail).where(
            OutboundEmail.to_address == manager.email))
        assert (email.template, email.body_text) == ("ticket_sla_breached", None)
        email_id = email.id
    assert _emails(org, manager) == [f"SLA breached: ticket #{number}"]
    with organization_context(ident(org)):
        email = db.session.get(OutboundEmail, email_id)
        assert email.status == "sent"
        assert "It was due" in email.body_text
        assert f"/tickets/{ticket_id}" in email.body_html


def test_a_breach_of_an_unassigned_ticket_is_heard_by_the_admins(org):
    ticket = make_ticket(org, priority="urgent")
    jobs.process_due(now=ticket.first_response_due_at)
    assert _notes(org, org.admin, "ticket_sla_breached") == 1


def test_escalation_raises_the_priority_and_hands_the_ticket_to_a_team(org):
    agent, rescuer = make_user(org, "agent"), make_user(org, "agent")
    team = make_team(org, members=[rescuer])
    with acting_as(org):
        services.update_settings(org.admin, {"round_robin": True})
        services.create_escalation_rule(org.admin, {
            "metric": "first_response", "minutes_after": 30, "raise_priority": True,
            "team_id": team.id, "notify": True})
    team_id, rescuer_id = ident(team), ident(rescuer)
    ticket = make_ticket(org, priority="normal", assignee_id=agent.id)
    due = ticket.first_response_due_at
    jobs.process_due(now=due)
    escalation = reload_ticket(org, ticket).next_deadline_at
    assert escalation > due
    jobs.process_due(now=escalation)
    ticket = reload_ticket(org, ticket)
    assert (ticket.priority, ticket.team_id, ticket.assignee_id) == ("high", team_id, rescuer_id)
    assert _notes(org, rescuer, "ticket_escalated") == 1
    with organization_context(ident(org)):
        kinds = [e.kind for e in services.list_timeline(ticket)[0]]
    assert "escalated" in kinds
    applied = list(ticket.escalated_rule_ids)
    jobs.process_due(now=escalation + timedelta(days=30))
    assert reload_ticket(org, ticket).escalated_rule_ids == applied  # once only
    assert _notes(org, rescuer, "ticket_escalated") == 1


def test_a_solved_ticket_closes_itself_after_the_auto_close_days(app, org):
    customer = make_customer(org)
    ticket = make_ticket(org, customer_id=customer.id)
    with acting_as(org):
        services.update_ticket(org.admin, ticket, {"status": "solved"})
    solved_at = reload_ticket(org, ticket).solved_at
    assert jobs.process_due(now=solved_at + timedelta(days=3)) == 0
    jobs.process_due(now=solved_at + timedelta(days=4))
    assert reload_ticket(org, ticket).status == "closed"
    run_jobs(app)
    with organization_context(ident(org)):
        assert db.session.scalar(select(CustomerActivity.type).where(
            CustomerActivity.type == "ticket_closed")) == "ticket_closed"


def test_one_timer_waits_for_the_earliest_deadline(org):
    """A new ticket schedules the timer for its deadline; an earlier one replaces it; the
    job, when it has run, waits for the next (the urgent ticket's breach, once warned)."""
    normal = make_ticket(org, priority="normal").next_deadline_at
    commit()
    [(job_id, when)] = _scheduled()
    assert _same_second(when, normal)
    urgent_ticket = make_ticket(org, priority="urgent")
    urgent, urgent_due = urgent_ticket.next_deadline_at, urgent_ticket.first_response_due_at
    commit()
    [(earlier_id, earlier)] = _scheduled()
    assert earlier_id != job_id
    assert _same_second(earlier, urgent)
    make_ticket(org, priority="low")  # later: nothing changes
    commit()
    assert [job for job, _when in _scheduled()] == [earlier_id]
    jobs.process_due(now=urgent)  # as the job scheduled for then (RQ takes it off its schedule)
    [(_next_id, following)] = [(job, when) for job, when in _scheduled() if job != earlier_id]
    assert _same_second(following, urgent_due)  # warned; its breach is next


def test_the_recovery_job_finds_a_breach_when_no_timer_woke(app, org):
    """RQ's scheduler lost (its jobs and the mark gone): the recovery job, which runs every
    RECOVERY_INTERVAL (30 s) seconds, sees the breach and arms the timer again."""
    agent = make_user(org, "agent")
    ticket = backdate(org, make_ticket(org, priority="urgent", assignee_id=agent.id),
                      timedelta(days=30))
    commit()
    redis().flushdb()
    run_recovery(app)
    ticket = reload_ticket(org, ticket)
    assert ticket.first_response_breached_at is not None
    assert ticket.first_response_breached_at < utcnow() - timedelta(days=1)
    assert _notes(org, agent, "ticket_sla_breached") == 2  # first response and resolution
    assert app.config["RECOVERY_INTERVAL"] <= 60


def test_many_deadlines_in_the_same_hour_are_done_in_batches(org, other_org, monkeypatch):
    """230 tickets of two organizations due at once, BATCH 50 at a time: all breached, no
    call handling more than a batch."""
    monkeypatch.setattr(jobs, "BATCH", 50)
    calls: list[int] = []
    real = services.tickets.process_due
    monkeypatch.setattr(services.tickets, "process_due",
                        lambda ids, now: calls.append(len(ids)) or real(ids, now))
    for owner, copies in ((org, 150), (other_org, 78)):
        ticket = backdate(owner, make_ticket(owner, priority="urgent"), timedelta(days=30))
        with acting_as(owner):
            _copy(ticket, copies)
    assert jobs.process_due() == 230
    assert max(calls) <= 50
    for owner in (org, other_org):
        with organization_context(ident(owner)):
            assert db.session.scalar(select(func.count()).select_from(Ticket).where(
                Ticket.first_response_breached_at.is_(None))) == 0


def _copy(ticket: Ticket, copies: int) -> None:
    """`copies` more tickets like `ticket`, numbered after it, written in one statement."""
    columns = [c.name for c in Ticket.__table__.columns
               if c.name not in ("id", "number", "search_subject")]
    listed = ", ".join(columns)
    db.session.execute(text(
        f"INSERT INTO tickets (number, {listed}) SELECT number + n, {listed} "
        f"FROM tickets, generate_series(1, :copies) AS n WHERE id = :id"),
        {"copies": copies, "id": ticket.id})
    db.session.execute(text("UPDATE ticket_settings SET last_number = last_number + :n"),
                       {"n": copies})


def test_the_year_ahead_of_holidays_is_topped_up(org):
    with acting_as(org):
        services.ensure_defaults()
        db.session.execute(text("DELETE FROM holidays WHERE day >= '2027-01-01'"))
        db.session.execute(text(
            "UPDATE ticket_settings SET holidays_filled_through = '2026-12-31'"))
    jobs.sweep()
    with organization_context(ident(org)):
        assert db.session.scalar(select(TicketSettings.holidays_filled_through)) == (
            datetime(2027, 12, 31).date())
        assert db.session.scalar(select(func.count()).select_from(Holiday).where(
            Holiday.day >= datetime(2027, 1, 1).date())) > 5


@pytest.mark.parametrize("status", ["pending", "on_hold"])
def test_a_waiting_ticket_has_no_deadline(org, status):
    ticket = backdate(org, make_ticket(org, priority="urgent"), timedelta(days=30))
    with acting_as(org):
        services.update_ticket(org.admin, reload_ticket(org, ticket), {"status": status})
    assert reload_ticket(org, ticket).next_deadline_at is None
    assert jobs.process_due() == 0
