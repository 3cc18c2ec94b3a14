"""SLA clocks over fixed dates, on tickets that never touch the database: due moments,
warnings and breaches, pause and resume, a first reply, a policy change, escalations."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from crm.tickets import sla
from crm.tickets.calendar import Calendar, country_holidays, country_weekend, default_hours
from crm.tickets.models import Ticket

RIYADH = ZoneInfo("Asia/Riyadh")


def at(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=RIYADH)


def context(holidays: frozenset[date] = frozenset(), rules=(), auto_close_days: int = 4,
            policies=None, zone: ZoneInfo = RIYADH) -> sla.SlaContext:
    return sla.SlaContext(Calendar(zone, default_hours(country_weekend("SA")), holidays),
                          policies or {}, tuple(rules), timedelta(days=auto_close_days))


def opened(ctx: sla.SlaContext, when: datetime, priority: str = "normal", **fields) -> Ticket:
    ticket = Ticket(number=1, subject="S", priority=priority, status="open", created_at=when,
                    sla_paused_seconds=0, next_response_pause_base=0, escalated_rule_ids=[],
                    **fields)
    sla.start(ticket, ctx, when)
    return ticket


THURSDAY_4PM = at(2026, 12, 3, 16)


def test_default_policy_targets():
    """urgent 1 h / 4 h, high 2 h / 8 h, normal 4 h / 16 h, low 8 h / 40 h; next response as
    first response."""
    assert {priority: (t.first_response, t.next_response, t.resolution)
            for priority, t in sla.DEFAULT_TARGETS.items()} == {
        "urgent": (60, 60, 240), "high": (120, 120, 480), "normal": (240, 240, 960),
        "low": (480, 480, 2400)}


def test_a_normal_ticket_opened_thursday_4pm_is_due_sunday_noon():
    ctx = context()
    ticket = opened(ctx, THURSDAY_4PM)
    assert ticket.first_response_due_at == at(2026, 12, 6, 12)
    assert ticket.resolution_due_at == at(2026, 12, 7, 16)  # 1 h + 8 h + 7 h
    assert ticket.sla_status == "ok"
    assert ticket.sla_due_at == at(2026, 12, 6, 12)
    # The first thing to happen: the warning at 75% (3 of 4 hours: Sunday 11:00).
    assert ticket.next_deadline_at == at(2026, 12, 6, 11)


def test_preview_uses_the_same_code_as_tickets():
    ctx = context()
    assert sla.preview(ctx, "normal", None, THURSDAY_4PM) == {
        "first_response_due_at": at(2026, 12, 6, 12),
        "resolution_due_at": at(2026, 12, 7, 16)}


def test_a_type_policy_wins_over_the_priority_policy():
    policies = {("normal", None): sla.Targets(60, 60, 120), ("normal", 7): sla.Targets(30, 30, 60)}
    ctx = context(policies=policies)
    assert opened(ctx, THURSDAY_4PM).first_response_due_at == at(2026, 12, 3, 17)
    assert opened(ctx, THURSDAY_4PM, type_id=7).first_response_due_at == at(2026, 12, 3, 16, 30)
    assert opened(ctx, THURSDAY_4PM, priority="low").first_response_due_at == at(
        2026, 12, 6, 16)  # no low policy of its own: the default 8 hours


def test_warning_then_breach():
    """At 75% the warning; at 100% the breach; each happens once."""
    ctx = context()
    ticket = opened(ctx, THURSDAY_4PM)
    assert sla.advance(ticket, ctx, at(2026, 12, 6, 10, 59)) == []
    assert sla.advance(ticket, ctx, at(2026, 12, 6, 11)) == [
        sla.Happening("warning", "first_response")]
    assert ticket.first_response_warned_at == at(2026, 12, 6, 11)
    assert ticket.sla_status == "warning"
    assert ticket.next_deadline_at == at(2026, 12, 6, 12)
    assert sla.advance(ticket, ctx, at(2026, 12, 6, 11, 30)) == []
    assert sla.advance(ticket, ctx, at(2026, 12, 6, 12, 0, 30)) == [
        sla.Happening("breach", "first_response")]
    assert ticket.first_response_breached_at == at(2026, 12, 6, 12)
    assert ticket.sla_status == "breached"
    # Next: the resolution clock's warning at 12 of 16 hours (Monday 12:00).
    assert ticket.next_deadline_at == at(2026, 12, 7, 12)


def test_a_late_check_fires_the_breach_alone():
    """A timer that wakes after the due moment reports the breach, not the warning too."""
    ctx = context()
    ticket = opened(ctx, THURSDAY_4PM)
    assert sla.advance(ticket, ctx, at(2026, 12, 6, 13)) == [
        sla.Happening("breach", "first_response")]
    assert ticket.first_response_warned_at is not None


def test_pause_and_resume_move_the_due_moments_by_the_business_time_paused():
    """Pending from Sunday 10:00 to Monday 10:00 (8 business hours) moves every due moment 8
    business hours later; nothing fires while paused."""
    ctx = context()
    ticket = opened(ctx, THURSDAY_4PM)
    ticket.status = "pending"
    sla.pause(ticket, ctx, at(2026, 12, 6, 10))
    assert ticket.sla_status == "paused"
    assert ticket.next_deadline_at is None
    assert sla.advance(ticket, ctx, at(2026, 12, 6, 15)) == []
    ticket.status = "open"
    sla.resume(ticket, ctx, at(2026, 12, 7, 10))
    assert ticket.sla_paused_seconds == 8 * 3600
    assert ticket.first_response_due_at == at(2026, 12, 7, 12)
    assert ticket.resolution_due_at == at(2026, 12, 8, 16)
    assert ticket.sla_status == "ok"


def test_the_first_public_reply_stops_the_first_response_clock():
    ctx = context()
    ticket = opened(ctx, THURSDAY_4PM)
    sla.responded(ticket, ctx, at(2026, 12, 6, 9, 30))
    assert ticket.first_responded_at == at(2026, 12, 6, 9, 30)
    assert ticket.first_response_breached_at is None
    # Only the resolution clock remains: its warning (Monday 12:00) is next.
    assert ticket.sla_due_at == at(2026, 12, 7, 16)
    assert ticket.next_deadline_at == at(2026, 12, 7, 12)


def test_a_late_first_reply_records_the_breach():
    ctx = context()
    ticket = opened(ctx, THURSDAY_4PM)
    sla.responded(ticket, ctx, at(2026, 12, 6, 14))
    assert ticket.first_response_breached_at == at(2026, 12, 6, 12)
    assert ticket.sla_status == "ok"  # the breached clock has stopped


def test_the_next_response_clock_runs_from_the_customer_s_message_to_the_next_reply():
    ctx = context()
    ticket = opened(ctx, THURSDAY_4PM)
    sla.responded(ticket, ctx, at(2026, 12, 6, 9))
    sla.customer_wrote(ticket, ctx, at(2026, 12, 6, 15))
    assert ticket.next_response_due_at == at(2026, 12, 7, 11)  # 2 h Sunday, 2 h Monday
    sla.responded(ticket, ctx, at(2026, 12, 7, 9))
    assert ticket.next_response_started_at is None
    assert ticket.first_responded_at == at(2026, 12, 6, 9)


def test_a_policy_change_moves_open_clocks():
    """Recomputing with a stricter policy brings the due moments closer; a breach recorded
    stays."""
    ctx = context()
    ticket = opened(ctx, THURSDAY_4PM)
    stricter = context(policies={("normal", None): sla.Targets(60, 60, 120)})
    sla.recompute(ticket, stricter, THURSDAY_4PM + timedelta(minutes=5))
    assert ticket.first_response_due_at == at(2026, 12, 3, 17)
    assert ticket.resolution_due_at == at(2026, 12, 6, 10)


def test_a_time_zone_change_moves_open_clocks():
    """The same hours read in Berlin (two hours behind Riyadh in December)."""
    ctx = context()
    ticket = opened(ctx, THURSDAY_4PM)
    berlin = context(zone=ZoneInfo("Europe/Berlin"))
    sla.recompute(ticket, berlin, THURSDAY_4PM)
    # Thursday 14:00 in Berlin: three hours that day, one on Sunday (Berlin 10:00).
    assert ticket.first_response_due_at == datetime(2026, 12, 6, 10,
                                                    tzinfo=ZoneInfo("Europe/Berlin"))


def test_a_relaxed_policy_clears_a_warning_that_has_not_come_yet():
    ctx = context()
    ticket = opened(ctx, THURSDAY_4PM)
    sla.advance(ticket, ctx, at(2026, 12, 6, 11))
    assert ticket.sla_status == "warning"
    relaxed = context(policies={("normal", None): sla.Targets(960, 960, 2400)})
    sla.recompute(ticket, relaxed, at(2026, 12, 6, 11, 5))
    assert ticket.first_response_warned_at is None
    assert ticket.sla_status == "ok"


def test_eid_holidays_hold_the_clock():
    """A normal ticket opened before Eid al-Fitr 1448 is due after it."""
    ctx = context(frozenset(country_holidays("SA", [2027], "en")))
    ticket = opened(ctx, at(2027, 3, 8, 16))
    assert ticket.first_response_due_at == at(2027, 3, 15, 12)


def test_escalation_after_a_breach():
    """A rule 60 business minutes past the resolution breach fires once, then never again."""
    rule = sla.Rule(id=5, metric="resolution", minutes_after=60)
    ctx = context(rules=[rule])
    ticket = opened(ctx, THURSDAY_4PM, priority="urgent")  # resolution: 4 h → Sunday 12:00
    sla.responded(ticket, ctx, THURSDAY_4PM + timedelta(minutes=10))
    assert ticket.resolution_due_at == at(2026, 12, 6, 12)
    assert sla.advance(ticket, ctx, at(2026, 12, 6, 12)) == [sla.Happening("breach", "resolution")]
    assert ticket.next_deadline_at == at(2026, 12, 6, 13)
    assert sla.advance(ticket, ctx, at(2026, 12, 6, 13)) == [
        sla.Happening("escalation", "resolution", rule)]
    assert ticket.escalated_rule_ids == [5]
    assert ticket.next_deadline_at is None
    assert sla.advance(ticket, ctx, at(2026, 12, 6, 16)) == []


def test_a_solved_ticket_closes_after_the_auto_close_days():
    ctx = context(auto_close_days=4)
    ticket = opened(ctx, THURSDAY_4PM)
    ticket.status, ticket.solved_at = "solved", at(2026, 12, 6, 10)
    sla.pause(ticket, ctx, at(2026, 12, 6, 10))
    assert ticket.sla_status is None
    assert ticket.next_deadline_at == at(2026, 12, 10, 10)
    assert sla.advance(ticket, ctx, at(2026, 12, 10, 9)) == []
    assert sla.advance(ticket, ctx, at(2026, 12, 10, 10)) == [sla.Happening("auto_close")]


def test_a_reopened_ticket_resumes_its_resolution_clock():
    ctx = context()
    ticket = opened(ctx, THURSDAY_4PM)
    sla.responded(ticket, ctx, at(2026, 12, 6, 9))
    ticket.status, ticket.solved_at = "solved", at(2026, 12, 6, 10)
    sla.pause(ticket, ctx, at(2026, 12, 6, 10))
    ticket.status, ticket.solved_at = "open", None
    sla.resume(ticket, ctx, at(2026, 12, 6, 13))
    assert ticket.resolution_due_at == at(2026, 12, 8, 11)  # 16 h + the 3 paused


@pytest.mark.parametrize("status", ["closed"])
def test_a_closed_ticket_has_no_deadline(status):
    ctx = context()
    ticket = opened(ctx, THURSDAY_4PM)
    ticket.status = status
    sla.refresh(ticket, ctx, THURSDAY_4PM)
    assert (ticket.next_deadline_at, ticket.sla_status, ticket.sla_due_at) == (None, None, None)


def test_a_european_ticket_paused_across_the_daylight_saving_change():
    """Berlin, Monday to Friday, German holidays: opened Thursday 25 March 2027 16:00 CET,
    pending from 16:30 until Tuesday 30 March 10:00 CEST — across Good Friday, the weekend
    of the change and Easter Monday — pauses 1.5 business hours: half an hour on Thursday and
    the hour on Tuesday (the short Sunday night counts for nothing). Every due moment moves
    by that much, in the new offset."""
    berlin = ZoneInfo("Europe/Berlin")
    ctx = sla.SlaContext(Calendar(berlin, default_hours(country_weekend("DE")),
                                  frozenset(country_holidays("DE", [2027], "en"))),
                         {}, (), timedelta(days=4))
    ticket = opened(ctx, datetime(2027, 3, 25, 16, tzinfo=berlin))
    assert ticket.first_response_due_at == datetime(2027, 3, 30, 12, tzinfo=berlin)
    ticket.status = "pending"
    sla.pause(ticket, ctx, datetime(2027, 3, 25, 16, 30, tzinfo=berlin))
    ticket.status = "open"
    sla.resume(ticket, ctx, datetime(2027, 3, 30, 10, tzinfo=berlin))
    assert ticket.sla_paused_seconds == 90 * 60
    assert ticket.first_response_due_at == datetime(2027, 3, 30, 13, 30, tzinfo=berlin)
    assert ticket.resolution_due_at == datetime(2027, 4, 1, 9, 30, tzinfo=berlin)
    assert ticket.first_response_due_at.utcoffset() == timedelta(hours=2)  # CEST by then
