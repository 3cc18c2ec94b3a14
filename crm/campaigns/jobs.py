"""The send engine: a runner per running campaign, in short slices on the `campaigns` queue.

A slice (`run_campaign`) sends for at most SLICE_SECONDS, then hands over to the next slice
(enqueued now, or at the time the pace allows: a linked device's next turn, the end of quiet
hours, the messaging limit's window moving). So a worker is never held for long, several
campaigns take turns, and a pause, a deploy or a crash costs at most a slice.

Which runner runs a campaign is a Redis key holding its token (the job id), with a lease of
CAMPAIGN_RUNNER_LEASE seconds that the runner renews before each chunk; whoever starts a runner
(start, resume, the previous slice, the recovery job) writes the new token first, so an older
runner still at it stops at its next chunk. A campaign `running` whose key is gone (its worker
was killed, Redis came back empty) gets a new runner from the recovery job (`keep_running`).
Two runners at once would still send each person once; the key only keeps the work tidy.

Recipients are claimed in batches, then sent in chunks of at most CHUNK_SECONDS of sends,
and each chunk in groups of at most GROUP_SECONDS of tokens, with a constant number of
statements per chunk and per group:
1. the pace: a token of the number's and the campaign's buckets (cloud, sandbox) or the
   linked device's turn (web), crm/campaigns/pacing.py, for each message; a short wait is
   slept, a longer one ends the slice (and cuts the chunk short, below);
2. the chunk written, in one transaction (`_write_chunk`): under a share lock on the
   campaign's row (so a pause waits for this to commit, and no chunk starts after a pause
   returns) and the recipients' row locks, those still queued are checked — opted out
   (consent is checked now, not when the list was built: one query for the chunk), within
   the messaging limit (cloud) or the daily cap (web), no campaign message to the person in
   the last 6 seconds — and their messages written to the WhatsApp outbox in one INSERT, the
   recipients marked `sending` and the messages counted in the plan's campaign messages of
   the month (billing's usage: counted, then checked, so what has no room is left queued
   and the campaign pauses when none is left; it pauses before claiming when the month is
   used up, or when the organization is read-only) — one commit;
3. each group through the outbox (`_claim_group`, crm/whatsapp/jobs.py): the answers come
   back since the last group written on their messages (one query, one update), the
   campaign's row share-locked to see it still running, the group's messages claimed
   `sending` in one UPDATE ... RETURNING — one commit, before the group's requests leave
   together from the runner's pool of threads over the channel's kept-alive connections.
   So a crash never sends twice: a cut-off send is `unknown` until WhatsApp's status
   webhook settles it, never resent, and should the runner die before the claim, the
   recovery job sends the queued message once. Sends are on their way together only as
   many as the pace needs (`_window`: the rate times a request's time, at most
   CAMPAIGN_SENDS_IN_FLIGHT; one while WhatsApp answers at once, so they then leave one by
   one), and a crash leaves `unknown` only those. A pause committed, no group is claimed
   any more, and the pause waits until no recipient is `sending`
   (services.pause_campaign): the runner withdraws what it had not sent and settles what
   came back, so nothing leaves once the pause returns;
4. the answers, for the chunk's recipients in one transaction (`_settle_chunk`) once all its
   sends came back, while the next chunk is on its way: each follows its message (sent,
   failed, unknown); a refusal of a moment puts it back in the queue (130429 slows the
   whole number down, 131056 waits 4^n seconds for that person only), a refusal that blames
   the number (131048, 368, 131031, 190, a linked device not connected) pauses the campaign
   and tells the admins why, and so does a failure rate above 20% of the last 50 sends.
   Those three stop the chunk at the answer's first look (before the next group): its
   messages not sent yet are withdrawn from the outbox (they never left) and their
   recipients queued again, as they are when a long pace wait cuts the chunk short.

Statuses arriving later (delivered, read, failed) move the recipient through the
`message.status` event (crm/campaigns/events.py).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import math
import uuid
from collections import deque
from concurrent import futures
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from flask import current_app
from sqlalchemy import func, or_, select, update

from crm import recovery
from crm.billing import gate, usage
from crm.campaigns import audience, consent, live, pacing, services, templates
from crm.campaigns.models import COUNTS, Campaign, CampaignRecipient, CampaignResult
from crm.campaigns.rendering import outbound
from crm.campaigns.settings import number_settings
from crm.extensions import db
from crm.foundation.services import current_organization, enabled_modules
from crm.jobs import REDIS_DOWN, enqueue_now, get_queue, redis, run_job
from crm.keys import key
from crm.models import utcnow
from crm.realtime import occupancy_snapshot
from crm.tenancy import current_organization_id, get_in_organization, organization_context
from crm.transaction import commit, on_commit, rollback
from crm.whatsapp.channels import channel_for
from crm.whatsapp.channels.base import Channel
from crm.whatsapp.jobs import Answer, claim_sends, deliver, record_answers
from crm.whatsapp.models import Message, WhatsAppProfile
from crm.whatsapp.services import conversations_for, queue_outbound_many, withdraw_unsent

log = logging.getLogger("crm.campaigns")

QUEUE = "campaigns"
SLICE_SECONDS = 10.0
INLINE_WAIT = 1.0  # a pace wait up to this is slept; a longer one ends the slice
BATCH = 50  # recipients claimed at once (fewer when the pace is slow)
# Recipients whose messages are written in one transaction: at most this many seconds of
# sends, which is how long a pause may wait for those already written to go.
CHUNK_SECONDS = 0.5
# Sends claimed together in the outbox (one statement, one commit) and sent at once: this
# many seconds of tokens, the bucket's burst (pacing.BURST_SECONDS).
GROUP_SECONDS = 0.1
# Sends on their way at once: the pace times a request's time (a moving average of weight
# LATENCY_WEIGHT), with this margin.
LATENCY_MARGIN = 1.5
LATENCY_WEIGHT = 0.2
MAX_ATTEMPTS = 5  # of one recipient refused for a moment
SLOW_DOWN_CODES = ("130429", "http_429")
# Refusals of a moment for one recipient: tried again after 4^n seconds.
LATER_CODES = ("131056", "131000", "network", "timeout")
# WhatsApp's codes that say the number or account cannot send now: the campaign pauses.
PAUSE_CODES = ("131048", "368", "131031", "190")
# Refusals that mean the number cannot send now: the campaign pauses.
NUMBER_CODES = (*PAUSE_CODES, "not_connected", "not_configured")
# How long after the last look the runner comes back when only sends of others are left.
RECHECK_SECONDS = 5.0
PLAN_LIMIT = "campaign_messages_per_month"
TEMPLATE_SYNC_RETRY = 3600  # seconds between two attempts of a daily sync that failed
LATENCY_MEMORY = 60  # seconds a slice's latency is kept for the next slice to start with


def lease() -> float:
    return float(current_app.config["CAMPAIGN_RUNNER_LEASE"])


# -- who runs a campaign ------------------------------------------------------------------------

_STILL_MINE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""
_LET_GO = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _runner_key(org_id: int, campaign_id: int) -> str:
    return key("campaigns", "runner", campaign_id, org=org_id)


def runner_alive(org_id: int, campaign_id: int) -> bool:
    """Does a runner hold the campaign (running, or waiting for its next slice)?"""
    return bool(redis().exists(_runner_key(org_id, campaign_id)))


def hand_over(campaign: Campaign) -> None:
    """Have a new runner take the campaign once the transaction commits."""
    org_id, campaign_id = campaign.organization_id, campaign.id
    on_commit(lambda: start_runner(org_id, campaign_id))


def start_runner(org_id: int, campaign_id: int, delay: float = 0.0) -> None:
    """Give the campaign to a new runner (now, or in `delay` seconds); an older one stops at
    its next send. Redis refusing leaves it to the recovery job."""
    token = f"campaign-{campaign_id}-{uuid.uuid4().hex[:12]}"
    path = f"{__name__}:run_campaign"
    try:
        redis().set(_runner_key(org_id, campaign_id), token,
                    px=int((delay + lease()) * 1000))
        if delay > 0:
            get_queue(QUEUE).enqueue_at(_whole_second_after(delay), run_job, path, org_id,
                                        (campaign_id, token), {}, job_id=token,
                                        description=f"campaign {campaign_id}")
        else:
            enqueue_now(path, campaign_id, token, queue=QUEUE, org_id=org_id, job_id=token,
                        description=f"campaign {campaign_id}")
    except REDIS_DOWN as exc:
        log.warning("campaign %s: no runner started (%s); the recovery job starts one",
                    campaign_id, exc)


def _whole_second_after(delay: float) -> datetime:
    """The first whole second at least `delay` seconds from now: RQ's scheduler keeps times
    in whole seconds, and one rounded down would run before the wait is over."""
    return datetime.fromtimestamp(math.ceil(pacing.clock.now() + delay), UTC)


def _still_mine(org_id: int, campaign_id: int, token: str) -> bool:
    """Does the runner of `token` still hold the campaign? Renews its lease if so."""
    return bool(pacing.run_script(_STILL_MINE, [_runner_key(org_id, campaign_id)],
                                  [token, int(lease() * 1000)]))


def _let_go(org_id: int, campaign_id: int, token: str) -> None:
    pacing.run_script(_LET_GO, [_runner_key(org_id, campaign_id)], [token])


# -- scheduled starts -------------------------------------------------------------------------

def schedule_start(campaign: Campaign) -> None:
    """Have the campaign start at its `scheduled_at` (after commit). Should Redis lose the
    job, the recovery job starts it when its time has come."""
    org_id, campaign_id, at = campaign.organization_id, campaign.id, campaign.scheduled_at

    def schedule() -> None:
        get_queue(QUEUE).enqueue_at(at, run_job, f"{__name__}:start_scheduled", org_id,
                                    (campaign_id,), {}, description=f"campaign {campaign_id}")

    on_commit(schedule)


def start_scheduled(campaign_id: int) -> None:
    """The scheduled time came (the job): run the campaign, unless it was paused or cancelled
    meanwhile, or the recovery job started it already."""
    campaign = db.session.scalar(select(Campaign).where(Campaign.id == campaign_id)
                                 .with_for_update())
    if campaign is not None and campaign.status == "scheduled":
        services.run(campaign)
        live.status_changed(campaign)


# -- the runner ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Plan:
    """What a slice needs of its campaign and number, read once (commits expire the rows)."""

    org_id: int
    campaign_id: int
    name: str
    profile_id: int
    provider: str
    message: dict
    components: list
    number_rate: float
    campaign_rate: float | None
    messaging_limit: int | None
    web_delay: tuple[int, int]
    daily_cap: int
    quiet: tuple[time, time] | None
    zone: ZoneInfo

    @property
    def rate(self) -> float:
        return min(self.number_rate, self.campaign_rate or self.number_rate)

    @property
    def batch(self) -> int:
        if self.provider == "web":
            return 1
        return max(1, min(BATCH, int(self.rate * SLICE_SECONDS)))

    @property
    def chunk(self) -> int:
        """Recipients whose messages are written at once: at most CHUNK_SECONDS of sends."""
        return max(1, min(self.batch, int(self.rate * CHUNK_SECONDS)))

    @property
    def group(self) -> int:
        """Sends claimed in the outbox at once and sent together: GROUP_SECONDS of tokens."""
        return max(1, min(self.chunk, int(self.rate * GROUP_SECONDS)))


def run_campaign(campaign_id: int, token: str) -> None:
    """One slice of a campaign's runner (the job)."""
    Runner(current_organization_id(), campaign_id, token).run()


class Runner:
    def __init__(self, org_id: int, campaign_id: int, token: str) -> None:
        self.org_id, self.campaign_id, self.token = org_id, campaign_id, token
        self.claimed: list[int] = []
        # Whether each of the campaign's last sends failed, to stop a chunk early.
        self.failures: deque[bool] = deque(maxlen=services.FAILURE_WINDOW)
        self.flying: list[Flight] = []  # chunks sent, or on their way, not settled yet
        self.unheard: list[Going] = []  # sends whose answer the failures do not count yet
        self.unrecorded: list[Going] = []  # sends whose answer their message does not show
        self.pool: ThreadPoolExecutor | None = None
        self.latency: float | None = None  # seconds a request takes, a moving average

    def run(self) -> None:
        if not _still_mine(self.org_id, self.campaign_id, self.token):
            return  # a newer runner has the campaign
        plan = self._prepare()
        if plan is None:
            _let_go(self.org_id, self.campaign_id, self.token)
            return
        self.failures.extend(_last_failures(plan))
        self.latency = self._remembered_latency()
        self.pool = ThreadPoolExecutor(current_app.config["CAMPAIGN_SENDS_IN_FLIGHT"],
                                       thread_name_prefix=f"campaign-{self.campaign_id}")
        try:
            wait = self._send_until(plan, pacing.clock.now() + SLICE_SECONDS)
        finally:
            try:
                self._land(plan, everything=True)
            finally:
                self.pool.shutdown()
                self._release()
                self._remember_latency()
        if wait is None:
            _let_go(self.org_id, self.campaign_id, self.token)
        elif _still_mine(self.org_id, self.campaign_id, self.token):
            # A wait the next slice sleeps itself is no reason for the scheduler's round trip
            # (whole seconds, and its poll): the slice's end is not the pace's.
            start_runner(self.org_id, self.campaign_id, wait if wait > INLINE_WAIT else 0.0)

    def _latency_key(self) -> str:
        return key("campaigns", "latency", self.campaign_id, org=self.org_id)

    def _remembered_latency(self) -> float | None:
        """The last slice's latency: the next starts with as many sends on their way as the
        last ended with, rather than one."""
        with contextlib.suppress(*REDIS_DOWN):
            remembered = redis().get(self._latency_key())
            return float(remembered) if remembered else None
        return None

    def _remember_latency(self) -> None:
        if self.latency is not None:
            with contextlib.suppress(*REDIS_DOWN):
                redis().set(self._latency_key(), self.latency, ex=LATENCY_MEMORY)

    def _prepare(self) -> Plan | None:
        """The plan of a running campaign (frozen first, on its first run); None when it is
        not running, or was paused because the module is off."""
        campaign = _fresh(self.campaign_id)
        if campaign is None or campaign.status != "running":
            return None
        if "campaigns" not in enabled_modules():
            services.pause_by_itself(campaign.id, "module_off", None)
            commit()
            return None
        if gate.read_only():  # a payment overdue past its grace: nothing new is sent
            services.pause_by_itself(campaign.id, "read_only", None)
            commit()
            return None
        if campaign.frozen_at is None:
            _freeze(campaign.id)
            campaign = _fresh(self.campaign_id)
        settings = number_settings(campaign.profile)
        template = campaign.message.get("template")
        row = templates.find_template(campaign.profile_id, template["name"], template["language"]) \
            if template else None
        plan = Plan(
            org_id=self.org_id, campaign_id=campaign.id, name=campaign.name,
            profile_id=campaign.profile_id, provider=campaign.profile.provider,
            message=dict(campaign.message), components=list(row.components) if row else [],
            number_rate=float(settings.throughput_per_second),
            campaign_rate=campaign.rate_per_minute / 60 if campaign.rate_per_minute else None,
            messaging_limit=settings.messaging_limit,
            web_delay=(campaign.delay_min_seconds or settings.web_delay_min_seconds,
                       campaign.delay_max_seconds or settings.web_delay_max_seconds),
            daily_cap=settings.web_daily_cap,
            quiet=(campaign.quiet_start, campaign.quiet_end) if campaign.quiet_start else None,
            zone=ZoneInfo(current_organization().timezone))
        rollback()  # nothing written: end the read's transaction
        return plan

    def _send_until(self, plan: Plan, deadline: float) -> float | None:
        """Send until `deadline`; the seconds after which the next slice should run, or None
        when this runner is done (paused, completed, taken over)."""
        while pacing.clock.now() < deadline:
            wait = quiet_wait(plan, pacing.now())
            if wait:
                return wait
            if not self.claimed:
                if not gate.within(PLAN_LIMIT):
                    return _pause_for_plan(plan)
                self.claimed = _claim(plan)
                if not self.claimed:
                    self._land(plan, everything=True)  # its own sends are not others'
                    return _nothing_to_claim(plan)
            wait = _pace(plan)
            if wait and (wait > INLINE_WAIT or pacing.clock.now() + wait >= deadline):
                return wait
            if wait:
                pacing.clock.sleep(wait)
                continue
            if not _still_mine(self.org_id, self.campaign_id, self.token):
                return None
            outcome = self._send_chunk(plan, deadline)
            if outcome is None or outcome > 0:
                return outcome
        return 0.0

    def _send_chunk(self, plan: Plan, deadline: float) -> float | None:
        """Write the messages of the next claimed recipients (the first has its token) and
        send them in groups, several on their way at once; chunks whose sends all came back
        are settled together meanwhile. 0 to go on, the seconds the campaign must wait, or
        None when it stopped running."""
        taken = self.claimed[:plan.chunk]
        chunk = _write_chunk(plan, taken)
        if chunk is None:
            return None
        flight = Flight(chunk)
        services.SETTLED_BY_RUNNER.update(flight.message_ids)
        self.flying.append(flight)
        try:
            wait = self._send_groups(plan, flight, deadline)
        finally:
            flight.closed = True
        # Those written but not sent, then those whose turn did not come, stay claimed first.
        self.claimed = ([send.recipient_id for send in flight.unsent] + chunk.back
                        + self.claimed[len(taken):])
        # A chunk cut short is settled at once: its unsent recipients go back to the queue
        # before the next chunk is written.
        self._land(plan, everything=bool(flight.unsent or wait or chunk.wait))
        if not flight.running:
            return None
        return max(wait, chunk.wait)

    def _send_groups(self, plan: Plan, flight: Flight, deadline: float) -> float:
        """Send the chunk's messages in groups of tokens, each group claimed in the outbox
        and committed before its requests leave together (see `_claim_group`). Stops early
        when the campaign stopped running, when WhatsApp slows the number down or blames it,
        when too many of the last sends failed, or at a long wait (returned)."""
        sends, position, tokens = flight.chunk.sends, 0, 1  # the first has its token
        while position < len(sends):
            room = self._room_in_flight(plan)
            wanted, wait = min(plan.group, room, len(sends) - position), 0.0
            while tokens < wanted:
                wait = _pace(plan)  # a wait takes no token: ask again
                if not wait:
                    tokens += 1
                elif wait > INLINE_WAIT or pacing.clock.now() + wait >= deadline:
                    break
                else:
                    pacing.clock.sleep(wait)
                    wait = 0.0
            if self._stopping():
                break
            if tokens:
                flight.running = self._claim_group(plan, flight, sends[position:position + tokens])
                if not flight.running:  # paused meanwhile: nothing more leaves
                    break
            position, tokens = position + tokens, 0
            if wait:
                flight.unsent = sends[position:]
                return wait
            self._land(plan)
        flight.unsent = sends[position:]
        return 0.0

    def _claim_group(self, plan: Plan, flight: Flight, group: list[Send]) -> bool:
        """Claim the group's messages in the outbox in one statement and commit, under a share
        lock on the campaign's row that shows it still running (a pause waits for the commit,
        and no group is claimed after a pause returns; the pause then waits for the claimed
        to come back, services.pause_campaign), then send them at once. False when the
        campaign is no longer running (nothing claimed)."""
        with occupancy_snapshot():  # for the answers' events: the open pages asked once
            self._record_landed()
            if not _running(plan):
                commit()
                return False
            claimed = claim_sends([send.message.id for send in group])
            commit()  # `sending` before the requests leave, so a crash never sends twice
        moment = pacing.now()
        for send in group:
            if send.message.id in claimed:  # else another run has it (the recovery job)
                going = Going(send, moment, self.pool.submit(
                    contextvars.copy_context().run, _timed_delivery, send.message,
                    flight.chunk.channel))
                flight.going.append(going)
                self.unheard.append(going)
                self.unrecorded.append(going)
        return True

    def _record_landed(self) -> None:
        """Write on their messages the answers come back since the last look, in one query
        and one update (not committed): a crash then leaves `unknown` only what was still
        on its way."""
        landed = [going for going in self.unrecorded if going.answer.done()]
        if landed:
            record_answers({going.send.message.id: going.result for going in landed})
            self.unrecorded = [going for going in self.unrecorded if going not in landed]

    def _room_in_flight(self, plan: Plan) -> int:
        """How many more sends may leave now: no more are on their way than the pace needs
        to keep the number busy (its rate times a request's time, 1 while WhatsApp answers
        at once, so that sends leave one by one and in order; at most
        CAMPAIGN_SENDS_IN_FLIGHT). Waits for one to come back when none may."""
        window = max(1, min(current_app.config["CAMPAIGN_SENDS_IN_FLIGHT"], _window(
            plan.rate, self.latency or 0.0)))
        flying = [going.answer for going in self.unheard if not going.answer.done()]
        if len(flying) >= window:
            futures.wait(flying, return_when=futures.FIRST_COMPLETED)
            flying = [answer for answer in flying if not answer.done()]
        return max(1, window - len(flying))

    def _stopping(self) -> bool:
        """Count the answers come back since the last look in the failure window (and their
        time in the request's time): does one say stop (WhatsApp slows the number down or
        blames it, too many failures)?"""
        stop = False
        for going in [going for going in self.unheard if going.answer.done()]:
            self.unheard.remove(going)
            took = going.answer.result()[1]
            self.latency = took if self.latency is None else (
                (1 - LATENCY_WEIGHT) * self.latency + LATENCY_WEIGHT * took)
            code = going.code
            self.failures.append(bool(code) and not _retried(code))
            stop = stop or code in SLOW_DOWN_CODES or code in NUMBER_CODES
        return stop or sum(self.failures) > services.FAILURE_LIMIT

    def _land(self, plan: Plan, everything: bool = False) -> None:
        """Settle the chunks whose sends all came back, oldest first (with `everything`,
        wait for all of them first)."""
        if everything:
            rollback()  # an error may have left the transaction open
            futures.wait([going.answer for flight in self.flying for going in flight.going])
        while self.flying and self.flying[0].landed:
            flight = self.flying.pop(0)
            try:
                with occupancy_snapshot():  # the open pages asked about once for the chunk
                    self._record_landed()
                    _settle_chunk(plan, flight)
                    commit()
            finally:
                services.SETTLED_BY_RUNNER.difference_update(flight.message_ids)

    def _release(self) -> None:
        """Let go of the recipients claimed and not sent (for the next slice)."""
        rollback()
        if self.claimed:
            db.session.execute(update(CampaignRecipient)
                               .where(CampaignRecipient.id.in_(self.claimed),
                                      CampaignRecipient.state == "queued")
                               .values(claimed_until=None)
                               .execution_options(synchronize_session=False))
            commit()
            self.claimed = []


def _last_failures(plan: Plan) -> list[bool]:
    """Whether each of the campaign's last FAILURE_WINDOW sends failed, oldest first."""
    states = db.session.scalars(
        select(CampaignRecipient.state)
        .where(CampaignRecipient.campaign_id == plan.campaign_id,
               CampaignRecipient.attempted_at.is_not(None))
        .order_by(CampaignRecipient.attempted_at.desc(), CampaignRecipient.id.desc())
        .limit(services.FAILURE_WINDOW)).all()
    rollback()
    return [state == "failed" for state in reversed(states)]


def _fresh(campaign_id: int, lock: bool = False) -> Campaign | None:
    """The campaign as stored now (never a copy the session kept), row-locked if asked."""
    query = select(Campaign).where(Campaign.id == campaign_id)
    return db.session.scalar((query.with_for_update() if lock else query)
                             .execution_options(populate_existing=True))


def _freeze(campaign_id: int) -> None:
    """Write the recipients, once (under the campaign's row lock), and their first counts."""
    campaign = _fresh(campaign_id, lock=True)
    if campaign.frozen_at is not None:
        return
    counts = audience.freeze(campaign)
    db.session.execute(update(CampaignResult).where(CampaignResult.campaign_id == campaign_id)
                       .values(total=sum(counts.values()), queued=counts.get("queued", 0),
                               skipped=counts.get("skipped", 0))
                       .execution_options(synchronize_session=False))
    campaign.frozen_at = utcnow()
    log.info("campaign %s frozen: %s", campaign_id, counts)
    live.progress(campaign.organization_id, campaign_id, services.campaign_results(campaign))
    commit()


def quiet_wait(plan: Plan, moment: datetime) -> float:
    """Seconds until the campaign's quiet hours end, if `moment` falls in them."""
    if plan.quiet is None:
        return 0.0
    start, end = plan.quiet
    local = moment.astimezone(plan.zone)
    now = local.time()
    inside = start <= now < end if start < end else (now >= start or now < end)
    if not inside:
        return 0.0
    until = datetime.combine(local.date(), end, plan.zone)
    if until <= local:
        until += timedelta(days=1)
    return (until - local).total_seconds()


def _pace(plan: Plan) -> float:
    if plan.provider == "web":
        return pacing.take_web_turn(plan.org_id, plan.profile_id, plan.web_delay)
    return pacing.take_token(plan.org_id, plan.profile_id, plan.campaign_id, plan.number_rate,
                             plan.campaign_rate)


def _claim(plan: Plan) -> list[int]:
    """Claim the next recipients due, in order, with FOR UPDATE SKIP LOCKED and a lease."""
    now = pacing.now()
    ids = list(db.session.scalars(
        select(CampaignRecipient.id)
        .where(CampaignRecipient.campaign_id == plan.campaign_id,
               CampaignRecipient.state == "queued",
               or_(CampaignRecipient.next_attempt_at.is_(None),
                   CampaignRecipient.next_attempt_at <= now),
               or_(CampaignRecipient.claimed_until.is_(None),
                   CampaignRecipient.claimed_until < now))
        .order_by(CampaignRecipient.id).limit(plan.batch).with_for_update(skip_locked=True)))
    if ids:
        db.session.execute(update(CampaignRecipient).where(CampaignRecipient.id.in_(ids))
                           .values(claimed_until=now + timedelta(seconds=lease()))
                           .execution_options(synchronize_session=False))
    commit()
    return ids


def _nothing_to_claim(plan: Plan) -> float | None:
    """No recipient is due: wait for those that will be (a retry's time, another runner's
    claim, a send in flight), or complete the campaign when none is left."""
    now = pacing.now()
    sending = CampaignRecipient.state == "sending"
    queued_at, sending_until, in_flight = db.session.execute(
        select(func.min(func.coalesce(func.greatest(CampaignRecipient.next_attempt_at,
                                                    CampaignRecipient.claimed_until), now))
               .filter(CampaignRecipient.state == "queued"),
               func.max(CampaignRecipient.claimed_until).filter(sending),
               func.count().filter(sending))
        .where(CampaignRecipient.campaign_id == plan.campaign_id,
               CampaignRecipient.state.in_(("queued", "sending")))).one()
    if queued_at is not None:
        return max(0.05, (queued_at - now).total_seconds())
    if in_flight:
        return max(RECHECK_SECONDS, ((sending_until or now) - now).total_seconds())
    campaign = _fresh(plan.campaign_id, lock=True)
    if campaign.status == "running":
        services.complete(campaign)
    commit()
    return None


@dataclass(frozen=True)
class Send:
    """One message of a chunk: its recipient, and the message as written (detached from the
    session, so that sending it reads nothing more)."""

    recipient_id: int
    message: Message


@dataclass
class Chunk:
    """Recipients whose messages were written together, and what waits."""

    sends: list[Send]
    channel: Channel
    back: list[int]  # recipients left queued and claimed: a limit reached, no plan room
    wait: float  # seconds the campaign waits for the number's limit (0: none)


@dataclass(frozen=True)
class Going:
    """A send on its way: its answer to come (from the runner's pool of requests)."""

    send: Send
    at: datetime
    answer: Future[tuple[Answer, float]]  # and the seconds the request took

    @property
    def result(self) -> Answer:
        return self.answer.result()[0]

    @property
    def code(self) -> str:
        refusal = self.result.refusal
        return refusal.code if refusal else ""


@dataclass
class Flight:
    """A chunk's sends: those on their way (or back), and those that never left."""

    chunk: Chunk
    going: list[Going] = field(default_factory=list)
    unsent: list[Send] = field(default_factory=list)
    running: bool = True  # False once a group found the campaign no longer running
    closed: bool = False  # all its groups have left (or never will)

    @property
    def message_ids(self) -> list[int]:
        return [send.message.id for send in self.chunk.sends]

    @property
    def landed(self) -> bool:
        return self.closed and all(going.answer.done() for going in self.going)


def _write_chunk(plan: Plan, recipient_ids: list[int]) -> Chunk | None:
    """Under a share lock on the campaign's row (a pause waits for this to commit, and no
    chunk starts after a pause returns) and the recipients' row locks: those still queued
    and not opted out (consent is checked now), within the number's limit and the 6-second
    rule, get their messages written to the outbox, are marked `sending` and counted in the
    plan's campaign messages of the month — one commit. None when the campaign is not
    running, or the plan has no room left (it pauses)."""
    if not _running(plan):
        rollback()
        return None
    locked = {recipient.id: recipient for recipient in db.session.scalars(
        select(CampaignRecipient).where(CampaignRecipient.id.in_(recipient_ids),
                                        CampaignRecipient.state == "queued")
        .with_for_update().execution_options(populate_existing=True))}
    going, back, limit = _check_each(plan, [locked[rid] for rid in recipient_ids
                                            if rid in locked])
    room = _room(len(going))
    if going and not room:
        rollback()
        _pause_for_plan(plan)
        return None
    back = [recipient.id for recipient in going[room:]] + back
    going = going[:room]
    messages = _write(plan, going)
    profile = db.session.get(WhatsAppProfile, plan.profile_id)
    channel = channel_for(profile)
    for message in messages:  # sent as written, read from nowhere else (a commit expires)
        db.session.expunge(message)
    for conversation in {id(m.conversation): m.conversation for m in messages}.values():
        db.session.expunge(conversation)
    db.session.expunge(profile)
    chunk = Chunk([Send(recipient.id, message)
                   for recipient, message in zip(going, messages, strict=True)],
                  channel, back, limit)
    _progress(plan)
    commit()
    return chunk


def _check_each(plan: Plan, recipients: list[CampaignRecipient]
                ) -> tuple[list[CampaignRecipient], list[int], float]:
    """Of the (locked) recipients, in order: the opted out are skipped, those messaged by
    a campaign in the last 6 seconds wait alone; at the number's limit the rest waits. Who
    goes, who stays claimed, and the limit's wait."""
    opted_out = consent.opted_out_among({recipient.phone for recipient in recipients})
    going: list[CampaignRecipient] = []
    with services.counts_together():
        for position, recipient in enumerate(recipients):
            if recipient.phone in opted_out:
                services.advance(recipient, "skipped", error_code="opted_out")
                continue
            limit = _limit_wait(plan, recipient.phone)
            if limit:
                return going, [later.id for later in recipients[position:]], limit
            gap = pacing.keep_gap(plan.org_id, recipient.phone)
            if gap:
                recipient.next_attempt_at = pacing.now() + timedelta(seconds=gap)
                recipient.claimed_until = None
                continue
            going.append(recipient)
    return going, [], 0.0


def _room(wanted: int) -> int:
    """How many of `wanted` messages the plan's monthly campaign messages have room for,
    counted in this hour's usage. Counted first, then checked: the usage row stays locked
    until this transaction ends, so two runners of one organization never both take the
    last messages."""
    if not wanted:
        return 0
    usage.record_campaign_messages(wanted)
    allowed = gate.limit_of(PLAN_LIMIT)
    over = 0 if allowed is None else gate.usage(PLAN_LIMIT) - allowed
    if over <= 0:
        return wanted
    usage.record_campaign_messages(-min(over, wanted))
    return max(0, wanted - over)


def _write(plan: Plan, going: list[CampaignRecipient]) -> list[Message]:
    """The recipients' messages, written to the outbox in one INSERT (not sent yet); each
    recipient `sending` with a lease."""
    if not going:
        return []
    profile = db.session.get(WhatsAppProfile, plan.profile_id)
    conversations, _created = conversations_for(profile, {
        ("contact_phone", recipient.phone): recipient.variables.get("name") or ""
        for recipient in going})
    contents = [outbound(plan.message, recipient.variables, plan.components)
                for recipient in going]
    messages = queue_outbound_many([
        (conversations[("contact_phone", recipient.phone)], content.type, content.body,
         content.content) for recipient, content in zip(going, contents, strict=True)])
    now = pacing.now()
    for recipient, message in zip(going, messages, strict=True):
        services.advance(recipient, "sending")
        recipient.message_id, recipient.attempted_at = message.id, now
        recipient.attempts += 1
        recipient.claimed_until = now + timedelta(seconds=lease())
    db.session.flush()
    return messages


def _window(rate: float, latency: float) -> int:
    """Sends on their way at once that keep `rate` a second going when a request takes
    `latency` seconds: a group leaves every GROUP_SECONDS, each on its way for `latency`,
    with a margin. One while requests take no time by the pace's clock (the tests' fake
    one): each then leaves alone, in order."""
    if latency <= 0:
        return 1
    return math.ceil(rate * (latency + GROUP_SECONDS) * LATENCY_MARGIN)


def _timed_delivery(message: Message, channel: Channel) -> tuple[Answer, float]:
    """Send a claimed message (in the runner's pool): its answer, and the seconds it took by
    the pace's clock."""
    began = pacing.clock.now()
    answer = deliver(message, channel)
    return answer, pacing.clock.now() - began


def _running(plan: Plan) -> bool:
    """Is the campaign still running? Its row share-locked until the transaction ends."""
    return db.session.scalar(select(Campaign.status).where(Campaign.id == plan.campaign_id)
                             .with_for_update(read=True)) == "running"


def _retried(code: str) -> bool:
    """Does a refusal with `code` put the recipient back in the queue (not a failure)?"""
    return (code in SLOW_DOWN_CODES or code in NUMBER_CODES or code in LATER_CODES
            or code.startswith("http_5"))


def _limit_wait(plan: Plan, phone: str) -> float:
    """The number's limit: unique people in 24 hours (cloud), sends a day (web)."""
    if plan.provider == "cloud" and plan.messaging_limit:
        return pacing.enter_window(plan.org_id, plan.profile_id, phone, plan.messaging_limit,
                                   lambda: _recent_sends(plan))
    if plan.provider == "web":
        local = pacing.now().astimezone(plan.zone)
        midnight = datetime.combine(local.date() + timedelta(days=1), time(), plan.zone)
        return pacing.count_for_today(plan.org_id, plan.profile_id, local.date().isoformat(),
                                      plan.daily_cap, (midnight - local).total_seconds(),
                                      lambda: _sent_since(plan, midnight - timedelta(days=1)))
    return 0.0


def _sends_of_number(plan: Plan, since: datetime):
    return (select(CampaignRecipient.phone, func.max(CampaignRecipient.attempted_at))
            .join(Campaign, Campaign.id == CampaignRecipient.campaign_id)
            .where(Campaign.profile_id == plan.profile_id,
                   CampaignRecipient.attempted_at > since,
                   CampaignRecipient.state.not_in(("queued", "skipped")))
            .group_by(CampaignRecipient.phone))


def _recent_sends(plan: Plan) -> list[tuple[str, datetime]]:
    """(phone, last send) of the number's campaign messages in the messaging limit's window."""
    since = pacing.now() - timedelta(seconds=pacing.WINDOW_SECONDS)
    return [tuple(row) for row in db.session.execute(_sends_of_number(plan, since))]


def _sent_since(plan: Plan, since: datetime) -> int:
    return db.session.scalar(select(func.count()).select_from(
        _sends_of_number(plan, since).subquery()))


def _pause_for_plan(plan: Plan) -> None:
    """The plan's campaign messages of the month are used up: the campaign pauses, saying
    how many of how many (the page offers the upgrade)."""
    services.pause_by_itself(plan.campaign_id, "plan_limit",
                             f"{gate.usage(PLAN_LIMIT)}/{gate.limit_of(PLAN_LIMIT)}")
    commit()


def _settle_chunk(plan: Plan, flight: Flight) -> None:
    """What the chunk's sends answered (written on their messages already), for their
    recipients, in one transaction (see the module's docstring); those not sent go back to
    the queue, their messages withdrawn."""
    sent, unsent = flight.going, flight.unsent
    messages = {message.id: message for message in db.session.scalars(
        select(Message).where(Message.id.in_([going.send.message.id for going in sent]))
        .execution_options(populate_existing=True))} if sent else {}
    ids = [going.send.recipient_id for going in sent] + [send.recipient_id for send in unsent]
    recipients = {recipient.id: recipient for recipient in db.session.scalars(
        select(CampaignRecipient).where(CampaignRecipient.id.in_(ids)).with_for_update()
        .execution_options(populate_existing=True))} if ids else {}
    with services.counts_together():
        for going in sent:
            recipient = recipients[going.send.recipient_id]
            if recipient.message_id == going.send.message.id:  # else settled by a webhook
                recipient.attempted_at = going.at
                _settle(plan, recipient, messages[going.send.message.id])
        for send in unsent:
            recipient = recipients[send.recipient_id]
            recipient.attempts -= 1  # never left: not an attempt
            services.requeue(recipient, None)
    if unsent:
        withdraw_unsent([send.message.id for send in unsent])
        usage.record_campaign_messages(-len(unsent))
        pacing.forget_gap(plan.org_id, [recipients[send.recipient_id].phone
                                        for send in unsent])
    _progress(plan)


def _settle(plan: Plan, recipient: CampaignRecipient, message: Message) -> None:
    """What one send answered, for its (locked) recipient."""
    code = message.error_code or ""
    if message.status != "failed":
        services.apply_message(recipient, message, plan.name)
    elif code in SLOW_DOWN_CODES:
        pause = pacing.slow_down(plan.org_id, plan.profile_id)
        log.warning("campaign %s: WhatsApp asks number %s to slow down; %.1fs", plan.campaign_id,
                    plan.profile_id, pause)
        recipient.attempts -= 1  # the number's fault, not the person's
        services.requeue(recipient, None)
    elif code in NUMBER_CODES:
        recipient.attempts -= 1
        services.requeue(recipient, None)
        services.pause_by_itself(plan.campaign_id, code, message.error_message)
    elif (code in LATER_CODES or code.startswith("http_5")) and \
            recipient.attempts < MAX_ATTEMPTS:
        services.requeue(recipient, pacing.now() + timedelta(
            seconds=pacing.backoff(recipient.attempts)))
    else:
        services.apply_message(recipient, message, plan.name)


def _progress(plan: Plan) -> None:
    """Tell the open pages how far the campaign is, unless they were told a moment ago."""
    if live.progress_due(plan.org_id, plan.campaign_id):
        # Every count, not only total and queued: the dashboard's funnel moves with the bar.
        results = db.session.execute(select(*(getattr(CampaignResult, name) for name in COUNTS))
                                     .where(CampaignResult.campaign_id == plan.campaign_id)).one()
        live.progress(plan.org_id, plan.campaign_id, results._asdict())


# -- the recovery job's part --------------------------------------------------------------------

def keep_running() -> None:
    """A task of the recovery job (crm/recovery.py): start scheduled campaigns whose time has
    come, give a runner to running campaigns that lost theirs, bring recipients a dead runner
    left `sending` to their message's status (the outbox settles the message itself: sends it
    if it never left, or makes it `unknown`), and sync templates due for their daily sync."""
    for org_id, ids in recovery.stuck("wasl_campaigns_due").items():
        with organization_context(org_id):
            for campaign in db.session.scalars(select(Campaign).where(Campaign.id.in_(ids))
                                               .with_for_update(skip_locked=True)):
                if campaign.status == "scheduled":
                    services.run(campaign)
                    live.status_changed(campaign)
                elif not runner_alive(org_id, campaign.id):
                    log.warning("campaign %s had lost its runner; starting one", campaign.id)
                    hand_over(campaign)
            commit()
    for org_id, ids in recovery.stuck("wasl_campaign_recipients_lease_over").items():
        with organization_context(org_id):
            for message_id in db.session.scalars(
                    select(CampaignRecipient.message_id)
                    .where(CampaignRecipient.id.in_(ids), CampaignRecipient.state == "sending",
                           CampaignRecipient.message_id.is_not(None))):
                services.follow_message(message_id)
            commit()
    _sync_templates_due()


def _sync_templates_due() -> None:
    since = utcnow() - timedelta(days=1)
    for org_id, profile_ids in recovery.stuck("wasl_template_syncs_due", since).items():
        for profile_id in profile_ids:
            retry_key = key("campaigns", "templates-sync", profile_id, org=org_id)
            if redis().set(retry_key, 1, nx=True, ex=TEMPLATE_SYNC_RETRY):
                enqueue_now(f"{__name__}:sync_templates", profile_id, queue="default",
                            org_id=org_id, description="whatsapp templates sync")


def sync_templates(profile_id: int) -> None:
    """The daily sync of a cloud number's templates (the job); a refusal is kept on the
    number."""
    profile = get_in_organization(WhatsAppProfile, profile_id)
    if profile is None or profile.is_deleted:
        return
    with contextlib.suppress(templates.TemplateSyncError):  # kept on the number, for a day
        templates.sync_templates(profile)
