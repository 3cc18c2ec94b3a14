"""The WhatsApp services and the sandbox: ingest, statuses, the outbox, the 24-hour window,
conversations (search, pagination, assignment) and what each channel may do."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import psycopg
import pytest
from flask import current_app, g
from flask_babel import force_locale
from flask_login import login_user
from sqlalchemy import event, func, make_url, select
from werkzeug.datastructures import FileStorage

from crm import embedded, events
from crm.errors import ConflictError, NotFoundError, ValidationError
from crm.extensions import db
from crm.foundation.models import AuditEntry, Organization, User
from crm.jobs import get_queue
from crm.models import utcnow
from crm.tenancy import get_in_organization, organization_context
from crm.transaction import commit
from crm.whatsapp import jobs, media, profiles, sandbox, services
from crm.whatsapp.channels.base import (
    ChannelError,
    DeliveryUncertainError,
    InboundMessage,
    StatusUpdate,
)
from crm.whatsapp.channels.sandbox import SandboxChannel
from crm.whatsapp.models import Conversation, Message, WhatsAppProfile
from tests.conftest import _server
from tests.factories import make_org, make_user
from tests.whatsapp.factories import close_queue, make_conversation, make_message, make_profile

PNG = b"\x89PNG\r\n\x1a\n" + b"\x01" * 64
_ids = iter(range(1, 10**9))


@contextmanager
def acting_as(user: User) -> Iterator[User]:
    """Call services as `user` inside a request of their organization, as a view would, with
    messages in English, which the tests read (else the locale another test left cached)."""
    with current_app.test_request_context(), organization_context(user.organization_id), \
            force_locale("en"):
        login_user(user)
        try:
            yield user
        finally:
            g.pop("_login_user", None)  # the app context (and its `g`) outlives the request


def inbound(phone: str | None = "+966501234567", body: str = "السلام عليكم", *,
            provider_id: str | None = None, kind: str = "text", name: str = "Fatima",
            content: dict | None = None, user_id: str | None = None,
            reply_to: str | None = None) -> InboundMessage:
    return InboundMessage(provider_message_id=provider_id or f"wamid.in{next(_ids)}",
                          type=kind, timestamp=utcnow(), contact_phone=phone,
                          contact_user_id=user_id, contact_name=name, body=body,
                          content=content or {}, reply_to_provider_id=reply_to)


def status(message: Message, name: str, **fields) -> StatusUpdate:
    fields.setdefault("provider_message_id", message.provider_message_id)
    return StatusUpdate(status=name, timestamp=utcnow(), **fields)


def upload(data: bytes, filename: str = "photo.png", mimetype: str = "image/png") -> FileStorage:
    return FileStorage(stream=io.BytesIO(data), filename=filename, content_type=mimetype)


@pytest.fixture
def published(monkeypatch) -> list[tuple[str, dict]]:
    """The events the services publish (name, payload), in order."""
    seen: list[tuple[str, dict]] = []
    original = events.publish
    monkeypatch.setattr(events, "publish", lambda name, payload: (
        seen.append((name, payload)), original(name, payload)))
    return seen


@pytest.fixture
def number(org):
    """A sandbox number of `org`; the test runs as the organization's admin."""
    profile = make_profile(org, "sandbox")
    with acting_as(org.admin):
        yield profile


@pytest.fixture
def cloud(org):
    profile = make_profile(org, "cloud")
    with acting_as(org.admin):
        yield profile


def _reload(obj) -> None:
    """Write what is pending, then read `obj` back from the database."""
    db.session.flush()
    db.session.expire(obj)


def _conversations(profile) -> list[Conversation]:
    return list(db.session.scalars(select(Conversation).where(
        Conversation.profile_id == profile.id).execution_options(populate_existing=True)))


def _messages(conversation) -> list[Message]:
    return list(db.session.scalars(select(Message).where(
        Message.conversation_id == conversation.id).order_by(Message.id)
        .execution_options(populate_existing=True)))


# -- inbound -------------------------------------------------------------------------------

def test_the_same_delivery_twice_stores_one_message(number, published):
    """receive_inbound is idempotent by the provider's id: the second call stores nothing,
    counts nothing as unread and announces nothing."""
    first = services.receive_inbound(number, inbound(provider_id="wamid.same"))
    again = services.receive_inbound(number, inbound(provider_id="wamid.same"))

    assert first is not None
    assert again is None
    [conversation] = _conversations(number)
    assert [m.id for m in _messages(conversation)] == [first.id]
    assert conversation.unread_count == 1
    assert [name for name, _ in published] == ["message.received"]


def test_the_same_provider_id_on_two_numbers_is_two_messages(org, number):
    """Provider ids are unique per number, not across numbers."""
    other = make_profile(org, "sandbox")
    assert services.receive_inbound(number, inbound(provider_id="wamid.same"))
    assert services.receive_inbound(other, inbound(provider_id="wamid.same"))


def test_unread_count_preview_and_reopening(number):
    """Each new message counts as unread and becomes the preview (a caption-less image shows
    its kind); a resolved conversation opens again when the contact writes."""
    services.receive_inbound(number, inbound(body="first"))
    [conversation] = _conversations(number)
    conversation.status = "resolved"
    db.session.flush()
    services.receive_inbound(number, inbound(body="", kind="image",
                                             content={"mime_type": "image/jpeg"}))

    [conversation] = _conversations(number)
    assert conversation.unread_count == 2
    assert conversation.last_message_preview == "[image]"
    assert conversation.status == "open"
    assert conversation.last_inbound_at is not None
    assert conversation.contact_name == "Fatima"


def test_a_contact_known_only_by_user_id_gets_one_conversation(number):
    """No phone: the business-scoped user id keys the conversation."""
    services.receive_inbound(number, inbound(phone=None, user_id="US.13491208655302741918"))
    services.receive_inbound(number, inbound(phone=None, user_id="US.13491208655302741918"))
    [conversation] = _conversations(number)
    assert (conversation.contact_phone, conversation.contact_user_id) == (
        None, "US.13491208655302741918")


def test_a_contact_with_neither_phone_nor_user_id_is_refused(number):
    with pytest.raises(ValidationError):
        services.receive_inbound(number, inbound(phone=None))
    assert _conversations(number) == []


def test_a_reaction_updates_the_message_it_reacts_to(number, published):
    """The emoji shows on its target; an empty one removes it; a reaction is not unread and
    does not become the preview."""
    target = services.receive_inbound(number, inbound(body="price?", provider_id="wamid.T"))
    services.receive_inbound(number, inbound(body="", kind="reaction", content={
        "message_id": "wamid.T", "emoji": "👍"}))

    _reload(target)
    assert target.content["reactions"] == {"contact": "👍"}
    [conversation] = _conversations(number)
    assert (conversation.unread_count, conversation.last_message_preview) == (1, "price?")
    assert ("message.updated", {"message_id": target.id,
                                "conversation_id": target.conversation_id}) in published

    services.receive_inbound(number, inbound(body="", kind="reaction", content={
        "message_id": "wamid.T", "emoji": ""}))
    _reload(target)
    assert target.content["reactions"] == {}


def test_a_reply_points_at_the_quoted_message(number):
    quoted = services.receive_inbound(number, inbound(provider_id="wamid.Q"))
    reply = services.receive_inbound(number, inbound(reply_to="wamid.Q"))
    assert reply.reply_to_id == quoted.id


@pytest.mark.live
def test_two_first_messages_at_once_make_one_conversation(live_server):
    """Two deliveries from a new contact race: while the first has inserted the conversation
    but not committed, the second's insert waits on the unique index, then finds the row the
    first committed. One conversation, two messages."""
    with live_server.transaction():
        org_id = make_org().id
    with live_server.transaction(org_id):
        profile_id = make_profile(db.session.get(Organization, org_id), "sandbox").id
    first_inserted = threading.Event()
    results: dict[str, object] = {}

    def deliver(name: str, after: threading.Event | None) -> None:
        if after is not None:
            after.wait(5)
        started = time.monotonic()
        try:
            with live_server.transaction(org_id):
                profile = get_in_organization(WhatsAppProfile, profile_id)
                services.receive_inbound(profile, inbound(phone="+966512345678", name=name))
                if after is None:
                    first_inserted.set()
                    time.sleep(0.5)  # keep the new conversation uncommitted a while
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            results[name] = exc
        else:
            results[name] = time.monotonic() - started

    threads = [threading.Thread(target=deliver, args=("first", None)),
               threading.Thread(target=deliver, args=("second", first_inserted))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)

    assert all(isinstance(value, float) for value in results.values()), results
    assert results["second"] > 0.3, "the second delivery did not wait for the first"
    with live_server.transaction(org_id):
        conversations = db.session.scalars(select(Conversation)).all()
        assert len(conversations) == 1
        assert db.session.scalar(select(func.count()).select_from(Message)) == 2
        assert conversations[0].unread_count == 2


# -- statuses ------------------------------------------------------------------------------

def test_statuses_never_move_backwards(number, published):
    """read, then a late delivered: it stays read, and the delivered time is filled in."""
    sent = make_message(make_conversation(number), "out", status="sent")

    services.apply_status(number, status(sent, "read"))
    services.apply_status(number, status(sent, "delivered"))

    _reload(sent)
    assert sent.status == "read"
    assert sent.read_at is not None
    assert sent.delivered_at is not None
    assert [p["status"] for name, p in published if name == "message.status"] == ["read"]


def test_a_failed_status_keeps_the_providers_reason(number):
    sent = make_message(make_conversation(number), "out", status="sent")
    services.apply_status(number, status(sent, "failed", error_code="131047",
                                         error_message="Re-engagement message"))
    _reload(sent)
    assert (sent.status, sent.error_code, sent.error_message) == (
        "failed", "131047", "Re-engagement message")
    assert sent.failed_at is not None


def test_an_unknown_message_is_settled_by_our_id(number):
    """A send cut off before the provider's id came back is found by the id we echoed."""
    cut_off = make_message(make_conversation(number), "out", status="unknown",
                           provider_message_id=None)

    services.apply_status(number, StatusUpdate(provider_message_id="wamid.late",
                                               status="delivered", timestamp=utcnow(),
                                               our_message_id=cut_off.id))

    _reload(cut_off)
    assert (cut_off.status, cut_off.provider_message_id) == ("delivered", "wamid.late")


def test_a_status_for_no_message_of_this_number_changes_nothing(org, number):
    """Another number's message, or an id nobody sent, is ignored."""
    other = make_message(make_conversation(make_profile(org, "sandbox")), "out", status="sent")
    assert services.apply_status(number, status(other, "read")) is None
    assert services.apply_status(number, StatusUpdate(
        provider_message_id="wamid.nobody", status="read", timestamp=utcnow())) is None
    _reload(other)
    assert other.status == "sent"


# -- the outbox ----------------------------------------------------------------------------

@pytest.fixture
def sends(monkeypatch) -> list[int]:
    """Ids of the messages the sandbox channel was asked to send (the real send runs)."""
    calls: list[int] = []
    original = SandboxChannel.send

    def send(self, message):
        calls.append(message.id)
        return original(self, message)

    monkeypatch.setattr(SandboxChannel, "send", send)
    return calls


def test_the_send_job_sends_once_and_records_the_provider_id(number, sends, published):
    """queued → sent with the channel's id; running the job again sends nothing."""
    message = services.send_text(make_conversation(number), number_admin(number), "مرحبا")
    assert message.status == "queued"

    jobs.send_message(message.id)
    jobs.send_message(message.id)

    _reload(message)
    assert message.status == "sent"
    assert message.provider_message_id.startswith("sandbox.")
    assert message.sent_at is not None
    assert sends == [message.id]
    assert ("message.sent" in [name for name, _ in published])


def test_a_send_cut_off_mid_request_becomes_unknown_and_is_never_resent(number, sends):
    """A rerun finding the row `sending` (the worker died after it was marked) makes it
    unknown, without calling the channel again."""
    message = services.send_text(make_conversation(number), number_admin(number), "hello")
    message.status = "sending"
    db.session.flush()

    jobs.send_message(message.id)

    _reload(message)
    assert message.status == "unknown"
    assert sends == []
    jobs.send_message(message.id)  # and unknown is never picked up again
    assert sends == []


def test_a_delivery_in_doubt_is_unknown(number, monkeypatch):
    def uncertain(self, message):
        raise DeliveryUncertainError("read timeout")

    monkeypatch.setattr(SandboxChannel, "send", uncertain)
    message = services.send_text(make_conversation(number), number_admin(number), "hello")
    jobs.send_message(message.id)
    _reload(message)
    assert message.status == "unknown"


def test_a_refused_send_fails_with_the_reason_and_a_retry_queues_it_again(app, number,
                                                                           monkeypatch):
    """ChannelError → failed with the provider's code; retry clears it and enqueues the job
    (after commit); only a failed message can be retried."""
    def refuse(self, message):
        raise ChannelError("130429", "Rate limit hit")

    monkeypatch.setattr(SandboxChannel, "send", refuse)
    message = services.send_text(make_conversation(number), number_admin(number), "hello")
    jobs.send_message(message.id)
    _reload(message)
    assert (message.status, message.error_code, message.error_message) == (
        "failed", "130429", "Rate limit hit")
    commit()
    queue = get_queue("whatsapp")
    queue.empty()

    services.retry_message(message, number_admin(number))
    assert (message.status, message.error_code, message.failed_at) == ("queued", None, None)
    assert queue.count == 0  # not before the commit
    commit()
    assert queue.count == 1
    with pytest.raises(ConflictError):
        services.retry_message(message, number_admin(number))


def test_sandbox_sends_are_delivered_then_read_by_the_simulated_customer(app, number):
    """The sandbox channel's deliver job marks the message delivered; the customer opening
    the chat marks it read."""
    from tests.factories import run_jobs

    conversation = make_conversation(number)
    message = services.send_text(conversation, number_admin(number), "hello")
    org_id = number.organization_id
    run_jobs(app, queues=("whatsapp",))
    with organization_context(org_id):
        message = db.session.get(Message, message.id, populate_existing=True)
        assert message.status == "delivered"
        sandbox.customer_reads(db.session.get(Conversation, conversation.id))
        _reload(message)
        assert message.status == "read"


def number_admin(profile) -> User:
    return db.session.scalar(select(User).where(User.organization_id == profile.organization_id,
                                                User.role == "admin"))


# -- the 24-hour window ----------------------------------------------------------------------

@pytest.mark.parametrize(("last_inbound", "open_"), [(timedelta(hours=23), True),
                                                    (timedelta(hours=25), False), (None, False)])
def test_a_cloud_number_sends_free_text_only_inside_the_24_hour_window(cloud, last_inbound,
                                                                        open_):
    """Outside the window (or before the customer ever wrote) a text is refused with a clear
    message on `text`; a template is always allowed."""
    conversation = make_conversation(cloud, last_inbound_at=(
        utcnow() - last_inbound if last_inbound else None))
    admin = number_admin(cloud)
    assert services.window_open(conversation) is open_
    if open_:
        assert services.send_text(conversation, admin, "hi").status == "queued"
    else:
        with pytest.raises(ValidationError) as refused:
            services.send_text(conversation, admin, "hi")
        assert "24-hour" in refused.value.fields["text"]
    template = services.send_template(conversation, admin, "order_update", "ar", ["1"])
    assert (template.type, template.content["template"]) == (
        "template", {"name": "order_update", "language": "ar", "parameters": ["1"]})
    assert len(_messages(conversation)) == (2 if open_ else 1)


def test_sandbox_and_linked_devices_have_no_window(org, number):
    web = make_profile(org, "web")
    for profile in (number, web):
        conversation = make_conversation(profile, last_inbound_at=None)
        assert services.window_open(conversation)


# -- listing and search --------------------------------------------------------------------

@pytest.fixture
def inbox(org, number):
    """Three conversations: an Arabic name, a phone, and one found by a message's words."""
    ahmed = make_conversation(number, phone="+966501234567", contact_name="أحمد الزهراني")
    school = make_conversation(number, phone="+966551112222", contact_name="مدرسة النور")
    english = make_conversation(number, phone="+201009876543", contact_name="Omar")
    make_message(english, body="Where is my INVOICE for September?")
    make_message(school, body="شكرا")
    return {"ahmed": ahmed, "school": school, "english": english}


def _found(user, term: str) -> set[int]:
    rows, _next = services.list_conversations(user, search=term)
    return {row.id for row in rows}


@pytest.mark.parametrize(("term", "who"), [
    ("احمد", "ahmed"), ("أحمد", "ahmed"), ("إحمد", "ahmed"), ("الزهراني", "ahmed"),
    ("مدرسه", "school"), ("مَدْرَسَة", "school"), ("OMAR", "english"),
    ("0501234567", "ahmed"), ("+966 50 123 4567", "ahmed"), ("٠٥٠١٢٣٤٥٦٧", "ahmed"),
    ("1234567", "ahmed"), ("00201009876543", "english"),
    ("invoice for september", "english"), ("شكرا", "school"),
])
def test_search_matches_names_phones_and_message_text_however_written(org, inbox, term, who):
    """Arabic letter variants and diacritics, phone numbers in local, international and
    Arabic-digit forms, and words of any message find the conversation."""
    assert _found(org.admin, term) == {inbox[who].id}


def test_search_finds_nothing_for_an_unknown_term_and_treats_wildcards_literally(org, inbox):
    assert _found(org.admin, "nobody here") == set()
    assert _found(org.admin, "%") == set()
    assert _found(org.admin, "_") == set()


def test_the_list_pages_newest_first_with_a_keyset(org, number):
    """(last_message_at, id) keys: equal timestamps are ordered by id, nothing is skipped or
    repeated, and the last page has no next key."""
    now = utcnow()
    made = [make_conversation(number, last_message_at=now - timedelta(minutes=n % 3))
            for n in range(7)]
    expected = [c.id for c in sorted(made, key=lambda c: (c.last_message_at, c.id),
                                     reverse=True)]
    seen, after = [], None
    while True:
        rows, after = services.list_conversations(org.admin, after=after, limit=3)
        seen += [row.id for row in rows]
        if after is None:
            break
    assert seen == expected


def test_filters_by_scope_status_and_number(org, number):
    agent = make_user(org, "agent")
    other = make_profile(org, "sandbox")
    mine = make_conversation(number, assigned_user_id=org.admin.id, status="pending")
    theirs = make_conversation(number, assigned_user_id=agent.id)
    nobodys = make_conversation(other)

    def ids(**filters) -> set[int]:
        return {row.id for row in services.list_conversations(org.admin, **filters)[0]}

    assert ids() == {mine.id, theirs.id, nobodys.id}
    assert ids(scope="mine") == {mine.id}
    assert ids(scope="unassigned") == {nobodys.id}
    assert ids(status="pending") == {mine.id}
    assert ids(profile_id=other.id) == {nobodys.id}


SEARCH_INDEXES = ("ix_conversations_search_name", "ix_conversations_search_phone",
                  "ix_messages_search_body")


def _search_plan(live_server) -> str:
    """EXPLAIN of the search the inbox runs, where nothing but the trigram indexes could
    answer it: the other indexes of both tables are dropped in a transaction that is rolled
    back, and plain scans are switched off, so data size and statistics do not matter.

    The application calls `wasl_matching_conversations()`, a SECURITY DEFINER function: its
    body runs as the schema owner (crm/search.py says why), so that is the role explained
    here, with the organization set as the application sets it.
    """
    with live_server.transaction():
        org = make_org()
        org_id, admin_id = org.id, org.admin.id
    with live_server.transaction(org_id):
        profile = make_profile(db.session.get(Organization, org_id), "sandbox")
        ahmed_id = make_conversation(profile, phone="+966501234567", contact_name="أحمد").id
        admin = db.session.get(User, admin_id)
        with acting_as(admin), _statements("wasl_matching_conversations") as captured:
            assert _found(admin, "0501234567") == {ahmed_id}
            assert _found(admin, "٠٥٠١٢٣") == {ahmed_id}  # a fragment after the national 0
            assert _found(admin, "احمد") == {ahmed_id}
    assert len(captured) == 3  # the application's query goes through the function

    database = make_url(live_server.settings["DATABASE_URL"]).database
    plans = []
    for index, table, column, pattern in BRANCHES:
        with psycopg.connect(_server().superuser_dsn(database)) as connection:
            others = connection.execute(
                "SELECT indexname FROM pg_indexes WHERE tablename = %s AND indexname <> %s "
                "AND indexname NOT LIKE 'pk_%%'", (table, index)).fetchall()
            connection.execute(f"DROP INDEX {', '.join(name for (name,) in others)}")
            connection.execute("SET LOCAL enable_seqscan = off; SET LOCAL enable_indexscan = off")
            connection.execute(f"SET LOCAL ROLE {embedded.OWNER_ROLE}")
            connection.execute("SELECT set_config('app.current_organization_id', %s, true)",
                               (str(org_id),))
            plans.append("\n".join(row[0] for row in connection.execute(
                f"EXPLAIN SELECT 1 FROM {table} WHERE organization_id = "
                f"NULLIF(current_setting('app.current_organization_id', true), '')::bigint "
                f"AND {column} LIKE %s", (pattern,))))
            connection.rollback()
    return "\n".join(plans)


# Each branch of wasl_matching_conversations() (crm/search.py) and the index that serves it.
BRANCHES = [("ix_conversations_search_name", "conversations", "search_name", "%احمد%"),
            ("ix_conversations_search_phone", "conversations", "search_phone", "%96650123%"),
            ("ix_messages_search_body", "messages", "search_body", "%مرحبا%")]


@pytest.mark.live
def test_the_trigram_indexes_answer_the_search_under_rls(live_server):
    """Each branch of the search (folded name, phone digits, message text) is a LIKE that its
    GIN trigram index answers — under row level security too, because the search runs in a
    SECURITY DEFINER function that filters by the organization itself (LIKE is not LEAKPROOF,
    so the application's own role could not use the indexes)."""
    plan = _search_plan(live_server)
    for index in SEARCH_INDEXES:
        assert f"Bitmap Index Scan on {index}" in plan, plan
    # The LIKE is an index condition (not a filter after the scan) in every branch.
    index_conditions = [line for line in plan.splitlines() if "Index Cond:" in line]
    assert len(index_conditions) == 3, plan
    assert all("~~" in line for line in index_conditions), plan


@contextmanager
def _statements(containing: str) -> Iterator[list[tuple[str, dict]]]:
    """The SQL statements (with parameters) run inside the block that contain `containing`."""
    captured: list[tuple[str, dict]] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        if containing in statement:
            captured.append((statement, parameters))

    connection = db.session.connection()
    event.listen(connection, "before_cursor_execute", record)
    try:
        yield captured
    finally:
        event.remove(connection, "before_cursor_execute", record)


def test_an_agent_sees_only_conversations_assigned_to_them(org, number):
    """With the unassigned queue closed to agents: in lists, whatever the scope, and one by
    one (404); in the unread total too."""
    close_queue(org)
    agent = make_user(org, "agent")
    assigned = make_conversation(number, assigned_user_id=agent.id, unread_count=2)
    unassigned = make_conversation(number, unread_count=5)
    with acting_as(agent):
        for scope in services.FILTERS:
            assert [c.id for c in services.list_conversations(agent, scope=scope)[0]] == [
                assigned.id]
        assert services.access_conversation(assigned.id, agent) == assigned
        with pytest.raises(NotFoundError):
            services.access_conversation(unassigned.id, agent)
        with pytest.raises(NotFoundError):
            services.access_message(make_message(unassigned).id, agent)
        assert services.unread_total(agent) == 2
    assert services.unread_total(org.admin) == 7


def test_another_organizations_conversation_is_not_found(org, other_org, number):
    theirs = make_conversation(make_profile(other_org, "sandbox"))
    with pytest.raises(NotFoundError):
        services.access_conversation(theirs.id, org.admin)


# -- assignment ----------------------------------------------------------------------------

def test_assign_transfer_and_unassign_are_audited_and_announced(org, number, published):
    first, second = make_user(org, "agent"), make_user(org, "manager")
    conversation = make_conversation(number)

    for assignee in (first.id, second.id, None):
        services.assign_conversation(conversation, assignee, org.admin)
        assert conversation.assigned_user_id == assignee
    services.assign_conversation(conversation, None, org.admin)  # no change: nothing said

    assigned = [p for name, p in published if name == "conversation.assigned"]
    assert [(p["previous_assignee_id"], p["assignee_id"]) for p in assigned] == [
        (None, first.id), (first.id, second.id), (second.id, None)]
    db.session.flush()
    assert db.session.scalar(select(func.count()).select_from(AuditEntry).where(
        AuditEntry.action == "whatsapp.conversation_assigned")) == 3


def test_an_agent_transfers_their_conversation_and_then_cannot_see_it(org, number):
    agent, colleague = make_user(org, "agent"), make_user(org, "agent")
    conversation = make_conversation(number, assigned_user_id=agent.id)
    with acting_as(agent):
        services.assign_conversation(services.access_conversation(conversation.id, agent),
                                     colleague.id, agent)
        with pytest.raises(NotFoundError):
            services.access_conversation(conversation.id, agent)


@pytest.mark.parametrize("assignee", ["member", "inactive", "other organization", "missing",
                                      "garbage"])
def test_assigning_to_someone_who_cannot_answer_is_refused(org, other_org, number, assignee):
    """A read-only member, a removed user, another organization's user, no one or garbage:
    ValidationError on assignee_id, and the assignee is unchanged."""
    agent = make_user(org, "agent")
    conversation = make_conversation(number, assigned_user_id=agent.id)
    if assignee == "inactive":
        target = make_user(org, "agent")
        target.is_active = False
        db.session.flush()
    target_id = {"member": lambda: make_user(org, "member").id,
                 "inactive": lambda: target.id,
                 "other organization": lambda: make_user(other_org, "agent").id,
                 "missing": lambda: 2**62, "garbage": lambda: "seven"}[assignee]()

    with pytest.raises(ValidationError) as refused:
        services.assign_conversation(conversation, target_id, org.admin)
    assert refused.value.fields.keys() == {"assignee_id"}
    assert conversation.assigned_user_id == agent.id


def test_auto_assign_picks_the_online_agent_with_the_fewest_open_conversations(
        org, number, monkeypatch):
    """Resolved conversations do not count; offline agents and other roles are skipped; ties
    go to the lower id. With nobody online the conversation stays unassigned."""
    busy, light, offline = (make_user(org, "agent") for _ in range(3))
    manager = make_user(org, "manager")
    for _ in range(2):
        make_conversation(number, assigned_user_id=busy.id)
    make_conversation(number, assigned_user_id=light.id)
    for _ in range(3):
        make_conversation(number, assigned_user_id=light.id, status="resolved")
    online = {busy.id, light.id, manager.id}
    monkeypatch.setattr("crm.realtime.online_user_ids", lambda org_id: online)

    conversation = make_conversation(number)
    services.auto_assign(conversation)
    assert conversation.assigned_user_id == light.id

    online.clear()
    lonely = make_conversation(number)
    services.auto_assign(lonely)
    assert lonely.assigned_user_id is None
    assert offline.id not in (conversation.assigned_user_id, lonely.assigned_user_id)


def test_a_number_with_auto_assign_gives_a_new_contact_to_an_online_agent(org, monkeypatch):
    """On first contact only: the conversation of a known contact keeps its assignee."""
    agent = make_user(org, "agent")
    monkeypatch.setattr("crm.realtime.online_user_ids", lambda org_id: {agent.id})
    profile = make_profile(org, "sandbox", auto_assign=True)
    with acting_as(org.admin):
        message = services.receive_inbound(profile, inbound())
        conversation = db.session.get(Conversation, message.conversation_id)
        assert conversation.assigned_user_id == agent.id
        services.assign_conversation(conversation, None, org.admin)
        services.receive_inbound(profile, inbound())
        assert conversation.assigned_user_id is None


# -- edit, delete, forward -------------------------------------------------------------------

def test_a_cloud_number_cannot_edit_or_delete(cloud):
    conversation = make_conversation(cloud, last_inbound_at=utcnow())
    sent = make_message(conversation, "out", body="original")
    admin = number_admin(cloud)
    with pytest.raises(services.UnsupportedActionError):
        services.edit_message(sent, "changed", admin)
    with pytest.raises(services.UnsupportedActionError):
        services.delete_message(sent, admin)
    assert (sent.body, sent.edited_at, sent.deleted_at) == ("original", None, None)


def test_a_sent_text_is_edited_within_the_window_then_deleted(number, published):
    sent = make_message(make_conversation(number), "out", body="at 5")
    admin = number_admin(number)

    services.edit_message(sent, "  at 6 ", admin)
    assert (sent.body, sent.edited_at is not None) == ("at 6", True)
    services.delete_message(sent, admin)
    assert sent.deleted_at is not None
    assert [name for name, _ in published] == ["message.updated", "message.deleted"]


@pytest.mark.parametrize("case", ["inbound", "too old", "not text", "empty", "too long",
                                  "deleted"])
def test_what_cannot_be_edited_is_refused(number, case):
    """Only our own sent texts, within 15 minutes, to a non-empty text of WhatsApp's length."""
    conversation = make_conversation(number)
    fields = {"inbound": {"direction": "in"},
              "too old": {"created_at": utcnow() - timedelta(minutes=16)},
              "not text": {"type": "image"}, "deleted": {"deleted_at": utcnow()}}.get(case, {})
    message = make_message(conversation, fields.pop("direction", "out"), body="before",
                           **fields)
    new_text = {"empty": "   ", "too long": "x" * 4097}.get(case, "after")
    with pytest.raises(ValidationError):
        services.edit_message(message, new_text, number_admin(number))
    assert message.body == "before"


def test_forwarding_copies_text_and_media_but_not_reactions(number):
    source = make_message(make_conversation(number), body="look", type="image",
                          content={"mime_type": "image/png", "path": "1/x.png",
                                   "media_id": "123", "reactions": {"contact": "👍"}})
    target = make_conversation(number)
    copy = services.forward_message(source, target, number_admin(number))
    assert (copy.conversation_id, copy.type, copy.body, copy.is_forwarded, copy.status) == (
        target.id, "image", "look", True, "queued")
    assert copy.content == {"mime_type": "image/png", "path": "1/x.png"}


def test_a_deleted_or_unsupported_message_is_not_forwarded(number):
    conversation = make_conversation(number)
    for message in (make_message(conversation, deleted_at=utcnow()),
                    make_message(conversation, type="unsupported")):
        with pytest.raises(ValidationError):
            services.forward_message(message, conversation, number_admin(number))


# -- media -----------------------------------------------------------------------------------

def test_an_image_is_stored_and_queued(number):
    message = services.send_media(make_conversation(number), number_admin(number),
                                  upload(PNG), "  the receipt ")
    assert (message.type, message.body, message.status) == ("image", "the receipt", "queued")
    assert media.path_of(message).read_bytes() == PNG
    assert message.content["size"] == len(PNG)


@pytest.mark.parametrize(("file", "error"), [
    (None, "Choose a file"),
    (upload(b"MZ", "tool.exe", "application/x-msdownload"), "cannot be sent"),
    (upload(b"x" * (5 * 1024 * 1024 + 1)), "at most 5 MB"),
    (upload(b"x" * (16 * 1024 * 1024 + 1), "clip.mp4", "video/mp4"), "at most 16 MB"),
    (upload(b""), "empty"),
], ids=["missing", "type", "image size", "video size", "empty"])
def test_uploads_outside_whatsapps_limits_are_refused(number, file, error):
    conversation = make_conversation(number)
    with pytest.raises(ValidationError) as refused:
        services.send_media(conversation, number_admin(number), file)
    assert error in refused.value.fields["file"]
    assert _messages(conversation) == []


# -- numbers ---------------------------------------------------------------------------------

def _cloud_fields(**overrides) -> dict:
    return {"phone_number": "0501234567", "phone_number_id": "106540352242922",
            "business_account_id": "102290129340398", "access_token": "EAAG-token",
            "app_secret": "secret", **overrides}


def test_a_cloud_number_is_proven_then_kept_with_encrypted_secrets(number, graph):
    """Graph answered for it: proven, waiting for Meta to verify its webhook."""
    from crm.crypto import decrypt_json

    graph.add_number("106540352242922", token="EAAG-token")
    admin = number_admin(number)
    profile = profiles.create_profile(admin, "cloud", "Support", **_cloud_fields())
    assert (profile.state, profile.phone_number) == ("pending", "+966501234567")
    assert profile.verified_at is not None
    assert b"EAAG-token" not in profile.secrets
    assert decrypt_json(profile.secrets) == {"access_token": "EAAG-token", "app_secret": "secret"}


@pytest.mark.parametrize(("overrides", "field"), [
    ({"phone_number_id": "1" * 65}, "phone_number_id"),
    ({"business_account_id": "1" * 65}, "business_account_id"),
    ({"business_account_id": 102290129340398}, "business_account_id"),
])
def test_cloud_ids_longer_than_metas_are_refused(number, overrides, field):
    """Meta's ids are short numbers; anything else is a ValidationError, not a database
    error."""
    with pytest.raises(ValidationError) as refused:
        profiles.create_profile(number_admin(number), "cloud", "Support",
                                **_cloud_fields(**overrides))
    assert refused.value.fields.keys() == {field}


def test_a_phone_number_id_already_connected_is_a_conflict_and_the_transaction_lives_on(
        org, other_org, number, graph):
    """The unique index answers inside a savepoint: a ConflictError, and the request can
    still write (its error page, its audit)."""
    graph.add_number("106540352242922", token="EAAG-token")
    make_profile(other_org, phone_number_id="106540352242922")
    with pytest.raises(ConflictError):
        profiles.create_profile(number_admin(number), "cloud", "Support", **_cloud_fields())
    assert db.session.scalar(select(func.count()).select_from(WhatsAppProfile)) == 1


def test_deleting_a_number_frees_its_meta_id_and_keeps_its_conversations(number, cloud):
    conversation = make_conversation(cloud)
    profiles.delete_profile(number_admin(cloud), cloud)
    assert (cloud.is_deleted, cloud.phone_number_id, cloud.state) == (True, None, "disconnected")
    with pytest.raises(NotFoundError):
        profiles.access_profile(cloud.id)
    assert services.access_conversation(conversation.id, number_admin(cloud)) == conversation
    assert number.id in [p.id for p in profiles.list_profiles()]
    assert cloud.id not in [p.id for p in profiles.list_profiles()]


# -- the sandbox -----------------------------------------------------------------------------

def test_the_sandbox_customer_writes_through_the_real_ingest_path(number, published):
    """A local phone form is stored in E.164; the message is received, unread and announced."""
    message = sandbox.customer_sends(number, "0501234567", " Layla ", "مرحبا")
    db.session.flush()
    conversation = db.session.get(Conversation, message.conversation_id, populate_existing=True)
    assert (conversation.contact_phone, conversation.contact_name) == ("+966501234567", "Layla")
    assert (message.direction, message.status, message.body) == ("in", "received", "مرحبا")
    assert conversation.unread_count == 1
    assert [name for name, _ in published] == ["message.received"]


def test_the_sandbox_customer_sends_an_image(number):
    message = sandbox.customer_sends(number, "+966501234567", "", "", upload(PNG))
    assert message.type == "image"
    assert media.path_of(message).read_bytes() == PNG


@pytest.mark.parametrize(("phone", "body", "file", "fields"), [
    ("12", "hi", None, {"phone"}), ("0501234567", "  ", None, {"text"}),
    ("x", "", None, {"phone", "text"}),
    ("0501234567", "", upload(b"%PDF", "a.pdf", "application/pdf"), {"file"}),
])
def test_the_sandbox_refuses_what_a_customer_could_not_send(number, phone, body, file, fields):
    with pytest.raises(ValidationError) as refused:
        sandbox.customer_sends(number, phone, "", body, file)
    assert refused.value.fields.keys() == fields
    assert _conversations(number) == []


def test_only_a_sandbox_number_has_a_simulated_customer(cloud):
    with pytest.raises(ValidationError):
        sandbox.customer_sends(cloud, "0501234567", "", "hi")
