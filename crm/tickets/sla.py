"""SLA clocks: when each of a ticket's clocks is due, when it warns, when it breaches, and the
next moment the timer has something to do for the ticket.

Pure functions over a ticket and an `SlaContext` (the organization's calendar, policies,
escalation rules and auto-close delay), so the clocks are tested over fixed dates; the services
load the context and save the ticket (crm/tickets/services/clocks.py).

A ticket runs up to three clocks, each against a target of its SLA policy in business minutes:
`first_response` from its opening to the first public reply, `next_response` from a customer's
message after that to the next public reply, and `resolution` from its opening until it is
solved. All pause while the ticket is pending, on hold or solved; the business time paused is
added to every target (a clock's own share of it: `next_response` counts only pauses after it
started). So a clock's due moment is always the same function of the ticket — its start, its
target, the pauses — and a change of policy, priority, calendar or time zone just computes it
again (`recompute`). A warning fires at 75% of a target and a breach at 100% (`advance`, run
by the timer); a breach stays recorded even if a later change moves the due moment away.
Escalation rules fire a number of business minutes after a breach, once each.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from crm.tickets.calendar import Calendar, add_business_time, business_time_between
from crm.tickets.models import CLOCKS, Ticket

WARNING_SHARE = 0.75


@dataclass(frozen=True)
class Targets:
    """Business minutes allowed for each clock."""

    first_response: int
    next_response: int
    resolution: int

    def minutes(self, clock: str) -> int:
        return getattr(self, clock)


DEFAULT_TARGETS = {
    "urgent": Targets(60, 60, 4 * 60),
    "high": Targets(2 * 60, 2 * 60, 8 * 60),
    "normal": Targets(4 * 60, 4 * 60, 16 * 60),
    "low": Targets(8 * 60, 8 * 60, 40 * 60),
}


@dataclass(frozen=True)
class Rule:
    """An escalation rule, as the clocks see it: which clock, how long after its breach."""

    id: int
    metric: str
    minutes_after: int


@dataclass(frozen=True)
class SlaContext:
    """What an organization's clocks run by."""

    calendar: Calendar
    # (priority, type id) → targets; (priority, None) is the priority's general policy.
    policies: Mapping[tuple[str, int | None], Targets]
    rules: tuple[Rule, ...]
    auto_close: timedelta

    def targets(self, priority: str, type_id: int | None) -> Targets:
        """The type's policy for this priority, else the priority's, else the default."""
        return (self.policies.get((priority, type_id)) or self.policies.get((priority, None))
                or DEFAULT_TARGETS[priority])


@dataclass(frozen=True)
class Happening:
    """What `advance` found due: a `warning` or `breach` of a clock, an `escalation` by a
    rule, or `auto_close` of a solved ticket."""

    kind: str
    clock: str | None = None
    rule: Rule | None = None


def preview(ctx: SlaContext, priority: str, type_id: int | None, opened_at: datetime
            ) -> dict[str, datetime]:
    """When a ticket opened at `opened_at` would be due, computed as for a real ticket."""
    ticket = Ticket(priority=priority, type_id=type_id, status="open", created_at=opened_at,
                    sla_paused_seconds=0, next_response_pause_base=0, escalated_rule_ids=[])
    start(ticket, ctx, opened_at)
    return {"first_response_due_at": ticket.first_response_due_at,
            "resolution_due_at": ticket.resolution_due_at}


# -- what changes a ticket's clocks ---------------------------------------------------------------

def start(ticket: Ticket, ctx: SlaContext, now: datetime) -> None:
    """Start the clocks of a new ticket."""
    recompute(ticket, ctx, now)


def recompute(ticket: Ticket, ctx: SlaContext, now: datetime) -> None:
    """Compute every running clock's due moment again (a new priority, type, policy,
    calendar or time zone); a warning whose moment has not come yet is taken back."""
    for clock in open_clocks(ticket):
        _set(ticket, clock, "due_at", _moment(ticket, ctx, clock, 1, now))
        if (_get(ticket, clock, "breached_at") is None and _get(ticket, clock, "warned_at")
                and _moment(ticket, ctx, clock, WARNING_SHARE, now) > now):
            _set(ticket, clock, "warned_at", None)
    refresh(ticket, ctx, now)


def pause(ticket: Ticket, ctx: SlaContext, now: datetime) -> None:
    """Stop the clocks (the ticket went pending, on hold or solved)."""
    if ticket.sla_paused_at is None:
        ticket.sla_paused_at = now
    refresh(ticket, ctx, now)


def resume(ticket: Ticket, ctx: SlaContext, now: datetime) -> None:
    """Run the clocks again, every due moment later by the business time paused."""
    if ticket.sla_paused_at is not None:
        ticket.sla_paused_seconds = _paused_seconds(ticket, ctx, now)
        ticket.sla_paused_at = None
    recompute(ticket, ctx, now)


def responded(ticket: Ticket, ctx: SlaContext, now: datetime) -> None:
    """A public reply: it stops the first-response clock, or the next-response one."""
    if ticket.first_responded_at is None:
        ticket.first_responded_at = now
        _stop(ticket, "first_response", now)
    if ticket.next_response_started_at is not None:
        _stop(ticket, "next_response", now)
        ticket.next_response_started_at = None
    refresh(ticket, ctx, now)


def customer_wrote(ticket: Ticket, ctx: SlaContext, now: datetime) -> None:
    """A customer's message after the first response starts the next-response clock (one
    already running keeps its start)."""
    if (ticket.first_responded_at is None or ticket.next_response_started_at is not None
            or ticket.status in ("solved", "closed")):
        return
    ticket.next_response_started_at = now
    ticket.next_response_pause_base = ticket.sla_paused_seconds
    ticket.next_response_warned_at = ticket.next_response_breached_at = None
    recompute(ticket, ctx, now)


def _stop(ticket: Ticket, clock: str, now: datetime) -> None:
    """A clock stopped late is recorded as breached at its due moment."""
    due = _get(ticket, clock, "due_at")
    if _get(ticket, clock, "breached_at") is None and due is not None and due <= now:
        _set(ticket, clock, "breached_at", due)


# -- the timer ----------------------------------------------------------------------------------

def advance(ticket: Ticket, ctx: SlaContext, now: datetime) -> list[Happening]:
    """Record what has come due by `now` — warnings, breaches, escalations — and what is due
    next; return what happened, for the services to act on (notify, escalate, close)."""
    if ticket.status == "closed":
        return []
    if ticket.status == "solved":
        closing = ticket.solved_at is not None and ticket.solved_at + ctx.auto_close <= now
        return [Happening("auto_close")] if closing else []
    if ticket.sla_paused_at is not None:
        return []
    happened = []
    for clock in open_clocks(ticket):
        due = _get(ticket, clock, "due_at")
        if _get(ticket, clock, "breached_at") is None and due <= now:
            _set(ticket, clock, "breached_at", due)
            _set(ticket, clock, "warned_at", _get(ticket, clock, "warned_at") or now)
            happened.append(Happening("breach", clock))
        elif (_get(ticket, clock, "warned_at") is None
              and _moment(ticket, ctx, clock, WARNING_SHARE, now) <= now):
            _set(ticket, clock, "warned_at", now)
            happened.append(Happening("warning", clock))
    for clock, rule, moment in _escalations(ticket, ctx):
        if moment <= now:
            ticket.escalated_rule_ids = [*ticket.escalated_rule_ids, rule.id]
            happened.append(Happening("escalation", clock, rule))
    refresh(ticket, ctx, now)
    return happened


def refresh(ticket: Ticket, ctx: SlaContext, now: datetime) -> None:
    """Set what lists and the timer read: `sla_status`, `sla_due_at`, `next_deadline_at`."""
    ticket.sla_status = ticket.sla_due_at = ticket.next_deadline_at = None
    if ticket.status == "closed":
        return
    if ticket.status == "solved":
        ticket.next_deadline_at = ticket.solved_at + ctx.auto_close
        return
    clocks = open_clocks(ticket)
    running = [clock for clock in clocks if _get(ticket, clock, "breached_at") is None]
    ticket.sla_due_at = min((_get(ticket, clock, "due_at") for clock in running), default=None)
    breached = len(running) < len(clocks)
    if ticket.sla_paused_at is not None:
        ticket.sla_status = "breached" if breached else "paused"
        return
    if breached:
        ticket.sla_status = "breached"
    elif any(_get(ticket, clock, "warned_at") for clock in running):
        ticket.sla_status = "warning"
    else:
        ticket.sla_status = "ok" if clocks else None
    moments = [_get(ticket, clock, "due_at") if _get(ticket, clock, "warned_at")
               else _moment(ticket, ctx, clock, WARNING_SHARE, now) for clock in running]
    moments += [moment for _clock, _rule, moment in _escalations(ticket, ctx)]
    ticket.next_deadline_at = min(moments, default=None)


def open_clocks(ticket: Ticket) -> list[str]:
    """The clocks that have not stopped (paused ones included)."""
    if ticket.status in ("solved", "closed"):
        return []
    return [clock for clock in CLOCKS
            if (clock != "first_response" or ticket.first_responded_at is None)
            and (clock != "next_response" or ticket.next_response_started_at is not None)]


def _escalations(ticket: Ticket, ctx: SlaContext) -> list[tuple[str, Rule, datetime]]:
    """The rules not yet applied to a breached clock that still runs, with their moments."""
    pending = []
    for clock in open_clocks(ticket):
        if _get(ticket, clock, "breached_at") is None:
            continue
        for rule in sorted(ctx.rules, key=lambda rule: (rule.minutes_after, rule.id)):
            if rule.metric == clock and rule.id not in ticket.escalated_rule_ids:
                moment = add_business_time(ctx.calendar, _get(ticket, clock, "due_at"),
                                           timedelta(minutes=rule.minutes_after))
                pending.append((clock, rule, moment))
    return pending


# -- a clock's moments --------------------------------------------------------------------------

def _moment(ticket: Ticket, ctx: SlaContext, clock: str, share: float, now: datetime
            ) -> datetime:
    """When `share` of the clock's target will have run: its start, plus that share of the
    target and the business time paused since it started, in business time."""
    if clock == "next_response":
        start, paused_before = ticket.next_response_started_at, ticket.next_response_pause_base
    else:
        start, paused_before = ticket.created_at, 0
    target = timedelta(minutes=ctx.targets(ticket.priority, ticket.type_id).minutes(clock))
    paused = timedelta(seconds=_paused_seconds(ticket, ctx, now) - paused_before)
    return add_business_time(ctx.calendar, start, target * share + paused)


def _paused_seconds(ticket: Ticket, ctx: SlaContext, now: datetime) -> int:
    """The business time paused so far, the pause under way counted up to `now`."""
    seconds = ticket.sla_paused_seconds
    if ticket.sla_paused_at is not None:
        seconds += int(business_time_between(ctx.calendar, ticket.sla_paused_at, now)
                       .total_seconds())
    return seconds


def _get(ticket: Ticket, clock: str, field: str):
    return getattr(ticket, f"{clock}_{field}")


def _set(ticket: Ticket, clock: str, field: str, value) -> None:
    setattr(ticket, f"{clock}_{field}", value)
