"""The WhatsApp module's RQ jobs, in one place: a job's path here ("crm.whatsapp.jobs:drain")
is the name RQ stores, and services name the jobs they enqueue by it.

- send_message: the outbox. A message is written `queued`; this job claims its row with FOR
  UPDATE SKIP LOCKED and marks it `sending`, with a lease, before the request leaves: a run cut
  off mid-send leaves `sending`, which becomes `unknown` once the lease is up (the recovery
  job, or a run of the job that finds it) — never a second send. The provider's later status
  update settles it. A send whose job was lost (Redis down as it was committed) is enqueued
  again by the recovery job (`recover_outbox`, crm/recovery.py).
- download_media, send_read_receipt: what an inbound message asks of its channel.
- deliver_sandbox: the sandbox's simulated phone received a message.
- drain, purge: apply the webhook deliveries ingest.py kept, and delete the dead ones.

The drain goes round the organizations that have deliveries waiting, oldest first, and takes
at most BATCH of each per round, so one organization's backlog (a flood, a slow moment) never
delays another's deliveries by more than one batch. Deliveries are claimed with a lease
(`claimed_until`): a job that dies lets its batch go when the lease is up and the next drain
applies it. Applying is idempotent (messages by provider id, statuses never move backwards),
so a delivery applied twice — Meta retrying, a job cut off after a commit — changes nothing the
second time. An applied delivery is deleted at once; one that used up its attempts stays, with
its last error, for WHATSAPP_DELIVERY_RETENTION_DAYS, then `purge` deletes it. A drain that
leaves deliveries behind (claimed by a job that died, or failed) schedules the next for when
their lease is up, and the purge for when the oldest dead delivery's retention is over. Should
a drain be lost with its mark left behind, the recovery job drains whatever the mark says
(`recover_ingest`).

The organizations' queue is read through SECURITY DEFINER functions that return only ids and
times (the drain starts with no organization); everything else runs as one organization.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import groupby

from flask import current_app
from sqlalchemy import delete, func, select, text, update
from sqlalchemy.orm import joinedload

from crm import events, recovery
from crm.extensions import db
from crm.jobs import TransientError, attempts_left, enqueue_now, get_queue, redis, run_job
from crm.keys import key
from crm.models import utcnow
from crm.realtime import broadcasting_many
from crm.tenancy import get_in_organization, organization_context
from crm.transaction import commit, rollback
from crm.whatsapp import media, services
from crm.whatsapp.channels import channel_for
from crm.whatsapp.channels.base import (
    Channel,
    ChannelError,
    DeliveryUncertainError,
    InboundMessage,
    StatusUpdate,
)
from crm.whatsapp.ingest import MAX_ATTEMPTS, PENDING_KEY, PENDING_TTL, Change, parse_delivery
from crm.whatsapp.ingest import QUEUE as INBOUND_QUEUE
from crm.whatsapp.models import STATUS_RANK, Message, WebhookDelivery, WhatsAppProfile

log = logging.getLogger("crm.whatsapp")
QUEUE = services.QUEUE
# How long a send job holds its message `sending`: far longer than a send takes (the Graph
# API's timeouts, the linked device's command timeout). Should a slow send outlive it, the
# answer still counts: a message made `unknown` meanwhile becomes sent, or failed.
SEND_LEASE = timedelta(minutes=5)
BATCH = 100  # deliveries of one organization per round of the drain
LEASE = timedelta(minutes=2)
SCHEDULED_KEY = key("whatsapp", "ingest", "scheduled")
PURGE_KEY = key("whatsapp", "ingest", "purge-scheduled")


# -- the outbox, and what an inbound message asks of its channel ----------------------------------

def send_message(message_id: int) -> None:
    """The outbox job: send one queued message at most once."""
    message = claim_send(message_id)
    if message is None:
        return
    commit()  # recorded before the request leaves, so a crash cannot cause a second send
    record_answer(message.id, deliver(message))


@dataclass(frozen=True)
class Answer:
    """What a send came back with: WhatsApp's id for the message, or a refusal (neither: it
    may or may not have left)."""

    provider_id: str | None = None
    refusal: ChannelError | None = None


def claim_send(message_id: int) -> Message | None:
    """Mark a queued outbound message `sending`, with a lease; None when it is not to be
    sent (sent, settled, or being sent by another run right now). The caller commits before
    the request leaves (`deliver`), so a crash cannot cause a second send."""
    message = db.session.execute(
        select(Message).where(Message.id == message_id, Message.direction == "out",
                              Message.status.in_(("queued", "sending")))
        .with_for_update(skip_locked=True)).scalar_one_or_none()
    if message is None:
        return None  # sent, settled, or being sent by another worker right now
    if message.status == "sending":
        # Another run is sending it (its lease holds), or was cut off after the request may
        # have left: never send it again.
        if _lease_over(message):
            _give_up(message)
        return None
    message.status = "sending"
    message.claimed_until = utcnow() + SEND_LEASE
    return message


def deliver(message: Message, channel: Channel | None = None) -> Answer:
    """Send a claimed message through its number's channel (`channel`, when the caller holds
    one for many messages); nothing is written."""
    try:
        channel = channel or channel_for(message.conversation.profile)
        return Answer(provider_id=channel.send(message))
    except DeliveryUncertainError as exc:
        log.warning("message %s: delivery uncertain (%s); waiting for the status webhook",
                    message.id, exc)
        return Answer()
    except ChannelError as exc:
        return Answer(refusal=exc)


def record_answer(message_id: int, answer: Answer) -> Message:
    """Write what the send answered on the message (not committed: the caller commits)."""
    return record_answers({message_id: answer})[0]


def record_answers(answers: dict[int, Answer]) -> list[Message]:
    """Write what each send answered on its message, the messages read and locked in one
    query (not committed: the caller commits); the messages, in the order of `answers`."""
    # A status webhook may have arrived while the request was in flight: it wins.
    messages = {message.id: message for message in db.session.scalars(
        select(Message).where(Message.id.in_(list(answers)))
        .options(joinedload(Message.conversation))  # for the event
        .with_for_update(of=Message).execution_options(populate_existing=True))}
    for message_id, answer in answers.items():
        _apply_answer(messages[message_id], answer)
    return [messages[message_id] for message_id in answers]


def _apply_answer(message: Message, answer: Answer) -> None:
    if answer.provider_id:
        # `message.sent` shows the whole bubble, its ticks included: a status event beside it
        # would say again what it says (twice the work for each of a campaign's messages).
        _record_sent(message, answer.provider_id)
        return
    if message.status in ("sending", "unknown") and answer.refusal is not None:
        message.status = "failed"
        message.failed_at = utcnow()
        message.error_code = answer.refusal.code
        message.error_message = answer.refusal.message[:500]
    elif message.status == "sending":
        message.status = "unknown"
    _announce_status(message)


def claim_sends(message_ids: list[int]) -> set[int]:
    """Mark queued outbound messages `sending`, with a lease, in one statement; those
    claimed (the others are sent, settled, or being sent by another run). The caller commits
    before their requests leave, as with `claim_send`."""
    if not message_ids:
        return set()
    return set(db.session.scalars(
        update(Message).where(Message.id.in_(message_ids), Message.direction == "out",
                              Message.status == "queued")
        .values(status="sending", claimed_until=utcnow() + SEND_LEASE)
        .returning(Message.id).execution_options(synchronize_session=False)))


def _lease_over(message: Message) -> bool:
    """Is the send job that marked the message `sending` to be taken for dead?"""
    return message.claimed_until is None or message.claimed_until < utcnow()


def _give_up(message: Message) -> None:
    """A send job died while the message was `sending`: it is `unknown` until the provider's
    status update says what became of it."""
    log.warning("message %s: its send was cut off; unknown until WhatsApp's status update",
                message.id)
    message.status = "unknown"
    _announce_status(message)


def recover_outbox() -> None:
    """Enqueue again the sends whose job was lost; make `unknown` what a dead job left
    `sending` past its lease (a task of the recovery job)."""
    recovery.enqueue_again(recovery.stuck("wasl_messages_unsent", recovery.queued_before()),
                           f"{__name__}:send_message", QUEUE, services.send_job_id)
    recovery.settle_lease_over(Message, "wasl_messages_lease_over", _give_up)


def _record_sent(message: Message, provider_id: str) -> None:
    message.provider_message_id = message.provider_message_id or provider_id
    if STATUS_RANK[message.status] < STATUS_RANK["sent"]:
        message.status = "sent"
        message.sent_at = message.sent_at or utcnow()
    events.publish("message.sent", services.message_payload(message, message.conversation))


def _announce_status(message: Message) -> None:
    events.publish("message.status", {"message_id": message.id,
                                      "conversation_id": message.conversation_id,
                                      "status": message.status})


def download_media(message_id: int) -> None:
    """Fetch an inbound message's media into storage, or record why it could not be (the
    bubble says so). Idempotent: skips what is stored or failed, so a refusal is final. A
    failure of a moment has the job run again later (TransientError), and is final only once
    the job's retries are used up."""
    message = get_in_organization(Message, message_id)
    if message is None or message.content.get("path") or message.content.get("media_error"):
        return
    try:
        data, mime_type = channel_for(message.conversation.profile).download_media(message)
    except ChannelError as exc:
        if exc.transient and attempts_left():
            raise TransientError(f"message {message.id}: media not downloaded yet: {exc}") from exc
        log.warning("message %s: media not downloaded: %s (%s)", message.id, exc.message,
                    exc.code)
        message.content = {**message.content, "media_error": exc.code}
    else:
        path = media.store(message, data, mime_type)
        message.content = {**message.content, "path": path, "mime_type": mime_type,
                           "size": len(data)}
    events.publish("message.updated", {"message_id": message.id,
                                       "conversation_id": message.conversation_id})


def send_read_receipt(message_id: int) -> None:
    message = get_in_organization(Message, message_id)
    if message is not None:
        try:
            channel_for(message.conversation.profile).mark_read(message)
        except (ChannelError, DeliveryUncertainError) as exc:
            log.info("read receipt for message %s not sent: %s", message_id, exc)


def deliver_sandbox(message_id: int) -> None:
    """The sandbox's simulated phone received the message (its channel enqueues this)."""
    message = get_in_organization(Message, message_id)
    if message is not None and message.provider_message_id:
        services.apply_status(message.conversation.profile, StatusUpdate(
            provider_message_id=message.provider_message_id, status="delivered",
            timestamp=utcnow(), our_message_id=message.id))


# -- webhook deliveries: applying ---------------------------------------------------------------

def recover_ingest() -> None:
    """Enqueue a drain if deliveries wait for one, whatever the mark says: a stale mark must not
    hold them back (a task of the recovery job)."""
    if _organizations_due():
        redis().set(PENDING_KEY, 1, ex=PENDING_TTL)
        enqueue_now(f"{__name__}:drain", queue=INBOUND_QUEUE, org_id=None,
                    description="whatsapp ingest (recovered)")


@dataclass(frozen=True)
class Claimed:
    id: int
    profile_id: int | None
    body: bytes


def drain() -> int:
    """Apply every delivery kept and not claimed by another job, a batch of each organization
    in turn (the job). How many."""
    redis().delete(PENDING_KEY)
    # What a batch writes is what its broadcasts show: keep it loaded across the commit rather
    # than read each row back, and start every batch from rows read afresh.
    session = db.session()
    session.expire_on_commit = False
    applied, claimed = 0, True
    while claimed:
        claimed = False
        for org_id in _organizations_due():
            with organization_context(org_id):
                if batch := _claim():
                    claimed = True
                    session.expire_all()
                    with broadcasting_many():
                        applied += _apply_batch(org_id, batch)
    _schedule_leftovers()
    _schedule_purge()
    return applied


def _organizations_due() -> list[int]:
    """The organizations with deliveries nobody holds, the one waiting longest first."""
    return list(db.session.scalars(text("SELECT organization_id FROM "
                                        "wasl_whatsapp_deliveries_due(:max_attempts)"),
                                   {"max_attempts": MAX_ATTEMPTS}))


def _claim() -> list[Claimed]:
    """The current organization's oldest deliveries nobody holds, at most BATCH, held by this
    job for LEASE (committed at once, so the hold outlives the transactions that apply them)."""
    free = (select(WebhookDelivery.id)
            .where(WebhookDelivery.attempts < MAX_ATTEMPTS,
                   (WebhookDelivery.claimed_until.is_(None))
                   | (WebhookDelivery.claimed_until < func.now()))
            .order_by(WebhookDelivery.id).limit(BATCH).with_for_update(skip_locked=True))
    rows = db.session.execute(
        update(WebhookDelivery).where(WebhookDelivery.id.in_(free.scalar_subquery()))
        .values(claimed_until=func.now() + LEASE, attempts=WebhookDelivery.attempts + 1)
        .returning(WebhookDelivery.id, WebhookDelivery.profile_id, WebhookDelivery.body)
        .execution_options(synchronize_session=False)).all()
    commit()
    return sorted((Claimed(*row) for row in rows), key=lambda claimed: claimed.id)


@dataclass(frozen=True)
class Routed:
    """One change of one delivery, with the organization's number it is for."""

    delivery_id: int
    profile_id: int
    change: Change


def _apply_batch(org_id: int, batch: list[Claimed]) -> int:
    """Apply a batch of organization `org_id` in one transaction; if it fails, its deliveries
    are retried one by one, so one bad delivery holds back only itself. How many were
    applied."""
    items: list[Routed] = []
    errors: dict[int, str] = {}
    routes = _Routes()
    for claimed in batch:
        try:
            changes = parse_delivery(json.loads(claimed.body))
        except (ValueError, UnicodeDecodeError) as exc:  # kept by an older, laxer parser
            errors[claimed.id] = f"malformed: {exc}"
            continue
        items += routes.route(claimed, changes)
    if items and _apply_in(org_id, items) is not None:
        for delivery_id, group in groupby(items, key=lambda item: item.delivery_id):
            error = _apply_in(org_id, list(group))
            if error is not None:
                errors[delivery_id] = error
    _finish([claimed.id for claimed in batch if claimed.id not in errors], errors)
    return len(batch) - len(errors)


class _Routes:
    """Which of the current organization's numbers each change is for, looked up once per
    batch. Under the organization's walls: a delivery never writes into another one's."""

    def __init__(self) -> None:
        self._profile_of: dict[str, int | None] = {}

    def route(self, claimed: Claimed, changes: list[Change]) -> list[Routed]:
        self._look_up({change.phone_number_id for change in changes} - self._profile_of.keys())
        routed = []
        for change in changes:
            profile_id = self._profile_of[change.phone_number_id]
            if profile_id is None:
                log.warning("WhatsApp change for phone number id %s skipped: no such number "
                            "here", change.phone_number_id)
                continue
            routed.append(Routed(claimed.id, profile_id, change))
        return routed

    def _look_up(self, phone_number_ids: set[str]) -> None:
        if not phone_number_ids:
            return
        found: dict[str, int] = {}
        for phone_number_id, profile_id in db.session.execute(
                select(WhatsAppProfile.phone_number_id, WhatsAppProfile.id)
                .where(WhatsAppProfile.phone_number_id.in_(phone_number_ids),
                       WhatsAppProfile.provider == "cloud", ~WhatsAppProfile.is_deleted)
                .order_by(WhatsAppProfile.verified_at.is_(None), WhatsAppProfile.id)):
            found.setdefault(phone_number_id, profile_id)  # a proven number first
        self._profile_of.update({key: found.get(key) for key in phone_number_ids})


def _apply_in(org_id: int, items: list[Routed]) -> str | None:
    """Apply `items` as organization `org_id` in one transaction; the error, if it failed.

    The commit delivers the events (the live inbox, the CRM's job).
    """
    with organization_context(org_id):
        try:
            touched = _apply(items)  # held through the commit's broadcasts (weak identity map)
            touched += [message.conversation for message in touched]
            commit()
        except Exception as exc:
            rollback()
            log.exception("WhatsApp deliveries %s of organization %s failed",
                          sorted({item.delivery_id for item in items}), org_id)
            return f"{type(exc).__name__}: {exc}"[:500]
    return None


def _apply(items: list[Routed]) -> list[Message]:
    """Apply one organization's changes: each number's messages together, in order, then the
    statuses. The messages stored or moved on."""
    inbound: dict[int, list[InboundMessage]] = defaultdict(list)
    statuses: dict[int, list[StatusUpdate]] = defaultdict(list)
    for item in items:
        inbound[item.profile_id] += item.change.messages
        statuses[item.profile_id] += item.change.statuses
    applied: list[Message | None] = []
    for profile_id in inbound:
        profile = get_in_organization(WhatsAppProfile, profile_id)
        if profile is None or profile.provider != "cloud":
            log.warning("WhatsApp changes for profile %s, not a cloud profile, skipped",
                        profile_id)
            continue
        applied += services.receive_many(profile, inbound[profile_id])
        applied += [services.apply_status(profile, update_) for update_ in statuses[profile_id]]
    return [message for message in applied if message is not None]


def _finish(done: list[int], errors: dict[int, str]) -> None:
    """Forget what was applied; keep what failed, with its error, for the lease to run out."""
    if done:
        db.session.execute(delete(WebhookDelivery).where(WebhookDelivery.id.in_(done)))
    for delivery_id, error in errors.items():
        db.session.execute(update(WebhookDelivery).where(WebhookDelivery.id == delivery_id)
                           .values(last_error=error))
    commit()


def _schedule_leftovers() -> None:
    """Have a drain run when the earliest lease still held runs out (a job died holding it, or
    its deliveries failed and wait to be retried)."""
    due = db.session.scalar(text("SELECT wasl_whatsapp_deliveries_next_lease(:max_attempts)"),
                            {"max_attempts": MAX_ATTEMPTS})
    if due is None or not redis().set(SCHEDULED_KEY, 1, nx=True, px=_until(due)):
        return
    get_queue(INBOUND_QUEUE).enqueue_at(due, run_job, f"{__name__}:drain", None, (), {},
                                description="whatsapp ingest (retry)")


def _until(due: datetime) -> int:
    return max(1, int((due - datetime.now(UTC)).total_seconds() * 1000))


# -- purging -----------------------------------------------------------------------------------

def purge() -> int:
    """Delete the deliveries that used up their attempts once their retention is over, in each
    organization, then schedule the next purge (the job). How many."""
    redis().delete(PURGE_KEY)
    cutoff = utcnow() - _retention()
    purged = 0
    for org_id, oldest in _dead_deliveries():
        if oldest >= cutoff:
            continue
        with organization_context(org_id):
            purged += db.session.execute(
                delete(WebhookDelivery).where(WebhookDelivery.attempts >= MAX_ATTEMPTS,
                                              WebhookDelivery.received_at < cutoff)
                .execution_options(synchronize_session=False)).rowcount
            commit()
    if purged:
        log.info("%s dead WhatsApp deliveries purged", purged)
    _schedule_purge()
    return purged


def _schedule_purge() -> None:
    """Have the purge run when the oldest dead delivery's retention is over (at the latest:
    a delivery received earlier that dies later is purged by that run too)."""
    oldest = min((received for _org, received in _dead_deliveries()), default=None)
    if oldest is None:
        return
    due = oldest + _retention()
    if not redis().set(PURGE_KEY, 1, nx=True, px=_until(due)):
        return
    get_queue(INBOUND_QUEUE).enqueue_at(due, run_job, f"{__name__}:purge", None, (), {},
                                description="whatsapp ingest purge")


def _dead_deliveries() -> list[tuple[int, datetime]]:
    """Each organization with deliveries that used up their attempts, and the oldest's time."""
    return [tuple(row) for row in db.session.execute(
        text("SELECT organization_id, oldest FROM wasl_whatsapp_deliveries_dead(:max_attempts)"),
        {"max_attempts": MAX_ATTEMPTS})]


def _retention() -> timedelta:
    return timedelta(days=current_app.config["WHATSAPP_DELIVERY_RETENTION_DAYS"])
