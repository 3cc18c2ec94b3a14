"""Ticketing's services against real PostgreSQL: creating, numbering, editing and assigning
tickets, comments and attachments, public replies through the WhatsApp outbox, the lists and
their views, bulk actions, and who may see what."""

from __future__ import annotations

from datetime import timedelta

import pytest
from flask_babel import force_locale
from sqlalchemy import func, select

from crm.errors import ConflictError, NotFoundError, ValidationError
from crm.extensions import db
from crm.foundation import notifications
from crm.foundation.models import AuditEntry
from crm.foundation.services import set_module_enabled
from crm.models import utcnow
from crm.storage import root
from crm.tenancy import organization_context
from crm.tickets import services
from crm.tickets.models import Ticket, TicketComment
from crm.versions import StaleVersionError
from crm.whatsapp.models import Message
from tests.customers.factories import make_customer
from tests.factories import make_user, run_jobs
from tests.queries import count_queries
from tests.tickets.factories import make_team, make_ticket, reload_ticket, upload
from tests.whatsapp.factories import make_conversation, make_message, make_profile


def _count(model, *where) -> int:
    return db.session.scalar(select(func.count()).select_from(model).where(*where))


def _timeline(ticket: Ticket) -> list[str]:
    events_, _before = services.list_timeline(ticket)
    return [event.kind for event in reversed(events_)]


def _listed(user, **params) -> list[int]:
    rows, _cursor = services.list_tickets(user, services.parse_filters(params))
    return [ticket.number for ticket in rows]


# -- creating ---------------------------------------------------------------------------------

def test_tickets_are_numbered_per_organization(org, other_org):
    """#1, #2 in one organization; another organization starts at #1."""
    assert [make_ticket(org).number, make_ticket(org).number] == [1, 2]
    assert make_ticket(other_org).number == 1


def test_create_with_defaults_clocks_and_history(acting, published):
    """A new ticket: open, normal, of the support type, its SLA clocks running as the
    organization's policy says, on the timeline, audited and announced."""
    org = acting
    ticket = services.create_ticket(org.admin, {"subject": "  الطابعة  لا تعمل ",
                                                "tags": "vip، printer"})
    assert (ticket.subject, ticket.status, ticket.priority) == ("الطابعة لا تعمل", "open",
                                                                "normal")
    assert ticket.type.key == "support"
    assert ticket.tags == ["vip", "printer"]
    assert ticket.source == "manual"
    preview = services.sla_preview("normal", ticket.created_at)
    assert ticket.first_response_due_at == preview["first_response_due_at"]
    assert ticket.resolution_due_at == preview["resolution_due_at"]
    assert ticket.next_deadline_at is not None
    assert _timeline(ticket) == ["created"]
    assert _count(AuditEntry, AuditEntry.action == "ticket.created") == 1
    assert [name for name, _payload in published if name.startswith("ticket.")] == [
        "ticket.opened"]
    payload = dict(published)["ticket.opened"]
    assert payload["ticket_id"] == ticket.id
    assert payload["subject"] == "الطابعة لا تعمل"
    assert payload["customer_id"] is None


def test_every_mistake_is_reported_together_and_nothing_is_written(acting):
    org = acting
    member = make_user(org, "member")
    with pytest.raises(ValidationError) as caught:
        services.create_ticket(org.admin, {"subject": "", "priority": "soon", "type_id": 10**9,
                                           "customer_id": 10**9, "assignee_id": member.id,
                                           "tags": [1]})
    assert set(caught.value.fields) == {"subject", "priority", "type_id", "customer_id",
                                        "assignee_id", "tags"}
    assert _count(Ticket) == 0


def test_an_agent_s_new_ticket_is_theirs(acting):
    agent = make_user(acting, "agent")
    ticket = services.create_ticket(agent, {"subject": "Call back"})
    assert ticket.assignee_id == agent.id


def test_create_from_a_conversation_takes_its_last_message(acting):
    """From the inbox: the subject is the customer's last message, the customer and the
    conversation are linked, the source is WhatsApp."""
    org = acting
    customer = make_customer(org)
    conversation = make_conversation(make_profile(org, "sandbox"), customer_id=customer.id)
    make_message(conversation, body="السلام عليكم")
    make_message(conversation, body="عندي مشكلة في الطلب رقم ٥٥\nأرجو المساعدة")
    ticket = services.create_ticket(org.admin, {"conversation_id": conversation.id},
                                    source="whatsapp")
    assert ticket.subject == "عندي مشكلة في الطلب رقم ٥٥"
    assert ticket.description == "عندي مشكلة في الطلب رقم ٥٥\nأرجو المساعدة"
    assert (ticket.customer_id, ticket.conversation_id, ticket.source) == (
        customer.id, conversation.id, "whatsapp")


def test_a_conversation_the_agent_cannot_see_is_refused(acting):
    org = acting
    agent = make_user(org, "agent")
    # Another agent's: the open queue shows the unassigned ones to every agent.
    conversation = make_conversation(make_profile(org, "sandbox"),
                                     assigned_user_id=make_user(org, "agent").id)
    with pytest.raises(ValidationError) as caught:
        services.create_ticket(agent, {"conversation_id": conversation.id})
    assert "conversation_id" in caught.value.fields


def test_tickets_work_with_the_crm_and_whatsapp_switched_off(acting):
    org = acting
    set_module_enabled(org.admin, "crm", False)
    set_module_enabled(org.admin, "whatsapp", False)
    ticket = services.create_ticket(org.admin, {"subject": "No CRM here"})
    services.add_comment(org.admin, ticket, "We are on it", public=True)
    assert ticket.first_responded_at is not None


# -- who sees what ---------------------------------------------------------------------------

def test_an_agent_reaches_only_tickets_assigned_to_them(acting):
    org = acting
    agent, other = make_user(org, "agent"), make_user(org, "agent")
    manager, member = make_user(org, "manager"), make_user(org, "member")
    theirs = make_ticket(org, assignee_id=agent.id)
    someone_elses = make_ticket(org, assignee_id=other.id)
    unassigned = make_ticket(org)
    assert services.access_ticket(theirs.id, agent) is theirs
    for ticket in (someone_elses, unassigned):
        with pytest.raises(NotFoundError):
            services.access_ticket(ticket.id, agent)
    for user in (manager, member, org.admin):
        assert services.access_ticket(someone_elses.id, user) is someone_elses
    assert _listed(agent) == [theirs.number]
    assert _listed(agent, view="all") == [theirs.number]
    assert _listed(agent, view="unassigned") == []


def test_another_organization_s_ticket_is_not_found(org, other_org):
    theirs = make_ticket(other_org)
    with organization_context(org.id):
        with pytest.raises(NotFoundError):
            services.access_ticket(theirs.id, org.admin)
        assert _listed(org.admin) == []


# -- editing ---------------------------------------------------------------------------------

def test_pending_pauses_the_clocks_and_open_resumes_them(acting):
    org = acting
    ticket = make_ticket(org)
    due = ticket.resolution_due_at
    services.update_ticket(org.admin, ticket, {"status": "pending"})
    assert ticket.is_paused
    assert (ticket.sla_status, ticket.next_deadline_at) == ("paused", None)
    ticket.sla_paused_at -= timedelta(days=10)  # as if it had waited ten days
    services.update_ticket(org.admin, ticket, {"status": "open"})
    assert not ticket.is_paused
    assert ticket.sla_paused_seconds > 0
    assert ticket.resolution_due_at > due


def test_solving_and_closing_announce_themselves(acting, published):
    org = acting
    ticket = make_ticket(org)
    services.update_ticket(org.admin, ticket, {"status": "solved"})
    assert ticket.solved_at is not None
    assert ticket.next_deadline_at == ticket.solved_at + timedelta(days=4)  # auto-close
    services.update_ticket(org.admin, ticket, {"status": "closed"})
    assert ticket.closed_at is not None
    assert ticket.next_deadline_at is None
    names = [name for name, _payload in published]
    assert names.count("ticket.solved") == 1
    assert names.count("ticket.closed") == 1
    assert dict(published)["ticket.closed"]["subject"] == ticket.subject
    with pytest.raises(ConflictError):
        services.update_ticket(org.admin, ticket, {"status": "open"})


def test_an_edit_on_a_stale_version_is_refused(acting):
    org = acting
    ticket = make_ticket(org)
    services.update_ticket(org.admin, ticket, {"priority": "high"}, expected_version=1)
    assert ticket.version == 2
    with pytest.raises(StaleVersionError):
        services.update_ticket(org.admin, ticket, {"priority": "low"}, expected_version=1)
    assert reload_ticket(org, ticket).priority == "high"


def test_a_new_priority_moves_the_clocks_and_is_on_the_timeline(acting):
    org = acting
    ticket = make_ticket(org)
    before = ticket.first_response_due_at
    services.update_ticket(org.admin, ticket, {"priority": "urgent", "subject": "Down!"})
    assert ticket.first_response_due_at < before
    changes = services.list_timeline(ticket)[0][0].details["changes"]
    assert changes == {"priority": ["normal", "urgent"], "subject": [changes["subject"][0],
                                                                     "Down!"]}


def test_bad_edits_change_nothing(acting):
    org = acting
    ticket = make_ticket(org)
    with pytest.raises(ValidationError) as caught:
        services.update_ticket(org.admin, ticket, {"status": "done", "subject": ""})
    assert set(caught.value.fields) == {"status", "subject"}
    assert reload_ticket(org, ticket).status == "open"


# -- assigning -------------------------------------------------------------------------------

def test_assign_notifies_the_assignee(acting, published):
    org = acting
    agent = make_user(org, "agent")
    ticket = make_ticket(org)
    services.assign_ticket(org.admin, ticket, agent.id)
    assert ticket.assignee_id == agent.id
    assert notifications.unread_count(agent) == 1
    assert "ticket.assigned" in [name for name, _payload in published]
    assert _timeline(ticket)[-1] == "assigned"
    services.assign_ticket(org.admin, ticket, None)
    assert ticket.assignee_id is None


def test_only_people_who_work_tickets_can_be_assigned(acting):
    org = acting
    ticket = make_ticket(org)
    for user in (make_user(org, "member"),):
        with pytest.raises(ValidationError):
            services.assign_ticket(org.admin, ticket, user.id)
    with pytest.raises(ValidationError):
        services.assign_ticket(org.admin, ticket, 10**9)


def test_round_robin_among_the_team(acting):
    """With round-robin on, a team's new tickets go to its members in turn; off, they wait
    unassigned."""
    org = acting
    first, second = make_user(org, "agent"), make_user(org, "agent")
    team = make_team(org, members=[first, second])
    assert make_ticket(org, team_id=team.id).assignee_id is None
    services.update_settings(org.admin, {"round_robin": True})
    assignees = [make_ticket(org, team_id=team.id).assignee_id for _ in range(3)]
    assert assignees == [first.id, second.id, first.id]


def test_round_robin_prefers_who_is_online_and_survives_redis_trouble(acting, monkeypatch):
    from redis.exceptions import ConnectionError as RedisConnectionError

    import crm.realtime

    org = acting
    first, second = make_user(org, "agent"), make_user(org, "agent")
    team = make_team(org, members=[first, second])
    services.update_settings(org.admin, {"round_robin": True})
    monkeypatch.setattr(crm.realtime, "online_user_ids", lambda org_id: {second.id})
    assert [make_ticket(org, team_id=team.id).assignee_id for _ in range(2)] == [second.id] * 2

    def down(org_id):
        raise RedisConnectionError("Connection refused.")

    monkeypatch.setattr(crm.realtime, "online_user_ids", down)
    assert make_ticket(org, team_id=team.id).assignee_id == first.id


# -- comments and attachments ---------------------------------------------------------------

def test_an_internal_note_does_not_count_as_a_response(acting):
    org = acting
    ticket = make_ticket(org)
    note = services.add_comment(org.admin, ticket, "Checked the logs", public=False)
    assert not note.is_public
    assert ticket.first_responded_at is None
    reply = services.add_comment(org.admin, ticket, "We are looking into it", public=True)
    assert reply.is_public
    assert ticket.first_responded_at is not None
    assert _timeline(ticket) == ["created", "note", "reply"]
    assert [c.id for c in services.list_comments(ticket)] == [note.id, reply.id]
    assert [_count(AuditEntry, AuditEntry.action == action)
            for action in ("ticket.noted", "ticket.replied")] == [1, 1]


def test_a_public_reply_goes_out_on_whatsapp_through_the_outbox(app, org):
    """A reply on a ticket of a sandbox conversation is queued in the WhatsApp outbox and
    sent by its job; an internal note never leaves."""
    org_id = org.id
    with organization_context(org_id):
        conversation = make_conversation(make_profile(org, "sandbox"))
        make_message(conversation, body="Hello?")
        ticket = make_ticket(org, conversation_id=conversation.id)
        services.add_comment(org.admin, ticket, "Internal: ask billing", public=False)
        reply = services.add_comment(org.admin, ticket, "مرحبا، نعمل على طلبك", public=True)
        message = db.session.get(Message, reply.message_id)
        assert (message.direction, message.body, message.status) == (
            "out", "مرحبا، نعمل على طلبك", "queued")
        assert _count(Message, Message.direction == "out") == 1
    run_jobs(app, queues=("whatsapp",))
    with organization_context(org_id):
        assert db.session.get(Message, reply.message_id).status in ("sent", "delivered")


def test_a_reply_outside_the_whatsapp_window_is_refused_with_its_reason(acting):
    org = acting
    conversation = make_conversation(make_profile(org, "cloud"),
                                     last_inbound_at=utcnow() - timedelta(days=2))
    ticket = make_ticket(org, conversation_id=conversation.id)
    with pytest.raises(ValidationError) as caught, force_locale("en"):
        services.add_comment(org.admin, ticket, "Hello", public=True)
    assert "24-hour window" in caught.value.fields["body"]
    assert _count(TicketComment) == 0
    assert ticket.first_responded_at is None


def test_attachments_are_stored_by_organization_and_reached_through_the_ticket(org, other_org):
    with organization_context(org.id):
        ticket = make_ticket(org)
        comment = services.add_comment(org.admin, ticket, "", public=False,
                                       uploads=[upload(b"%PDF-1.4 one")])
        [attachment] = comment.attachments
        assert attachment.path.startswith(f"{org.id}/tickets/")
        assert services.attachment_path(attachment).read_bytes() == b"%PDF-1.4 one"
        assert services.attachment_path(attachment).is_relative_to(root() / str(org.id))
        assert services.access_attachment(attachment.id, org.admin) is attachment
        agent = make_user(org, "agent")
        with pytest.raises(NotFoundError):
            services.access_attachment(attachment.id, agent)
        db.session.flush()
    with organization_context(other_org.id), pytest.raises(NotFoundError):
        services.access_attachment(attachment.id, other_org.admin)


def test_attachments_of_the_wrong_type_or_size_are_refused(acting, monkeypatch):
    org = acting
    ticket = make_ticket(org)
    with pytest.raises(ValidationError) as caught:
        services.add_comment(org.admin, ticket, "x", public=False,
                             uploads=[upload(b"MZ", "tool.exe", "application/x-msdownload")])
    assert "file" in caught.value.fields
    monkeypatch.setattr(services.tickets, "MAX_ATTACHMENT_BYTES", 10)
    with pytest.raises(ValidationError):
        services.add_comment(org.admin, ticket, "x", public=False,
                             uploads=[upload(b"%PDF-" + b"0" * 20)])
    assert _count(TicketComment) == 0


def test_a_closed_ticket_takes_no_comment(acting):
    org = acting
    ticket = make_ticket(org)
    services.update_ticket(org.admin, ticket, {"status": "closed"})
    with pytest.raises(ConflictError):
        services.add_comment(org.admin, ticket, "Too late", public=False)


# -- lists ----------------------------------------------------------------------------------

def test_views_and_filters(acting):
    org = acting
    agent = make_user(org, "agent")
    customer = make_customer(org)
    mine = make_ticket(org, assignee_id=agent.id, priority="high", tags=["vip"])
    unassigned = make_ticket(org, customer_id=customer.id)
    solved = make_ticket(org, assignee_id=agent.id)
    services.update_ticket(org.admin, solved, {"status": "solved"})
    admin = org.admin
    assert _listed(agent, view="mine") == [mine.number]
    assert _listed(admin, view="unassigned") == [unassigned.number]
    assert _listed(admin, view="all") == [solved.number, unassigned.number, mine.number]
    assert _listed(admin, status="solved") == [solved.number]
    assert _listed(admin, priority="high") == [mine.number]
    assert _listed(admin, tag="vip") == [mine.number]
    assert _listed(admin, customer_id=str(customer.id)) == [unassigned.number]
    assert _listed(admin, assignee_id=str(agent.id)) == [solved.number, mine.number]
    assert _listed(admin, type_id=str(mine.type_id)) == [solved.number, unassigned.number,
                                                         mine.number]


def test_breaching_soon_and_breached_views(acting):
    org = acting
    calm = make_ticket(org)
    warned = make_ticket(org)
    breached = make_ticket(org)
    warned.sla_status, warned.sla_due_at = "warning", utcnow() + timedelta(minutes=30)
    breached.sla_status = "breached"
    db.session.flush()
    assert _listed(org.admin, view="breaching") == [warned.number]
    assert _listed(org.admin, view="breached") == [breached.number]
    assert calm.number not in _listed(org.admin, view="breaching")


def test_search_subject_number_and_customer_name(acting):
    """Subjects match with Arabic letter variants folded; a number matches its ticket; a
    customer's name finds their tickets."""
    org = acting
    customer = make_customer(org, name="فاطمة الزهراني")
    printer = make_ticket(org, subject="مشكلة في الطابعة")
    other = make_ticket(org, subject="Invoice copy", customer_id=customer.id)
    assert _listed(org.admin, search="مشكله") == [printer.number]
    assert _listed(org.admin, search=f"#{other.number}") == [other.number]
    assert _listed(org.admin, search="فاطمه") == [other.number]
    assert _listed(org.admin, search="invoice") == [other.number]


def test_keyset_pages(acting):
    org = acting
    numbers = [make_ticket(org).number for _ in range(5)]
    filters = services.parse_filters({})
    page, cursor = services.list_tickets(org.admin, filters, limit=2)
    seen = [t.number for t in page]
    while cursor:
        page, cursor = services.list_tickets(org.admin, filters, after=cursor, limit=2)
        seen += [t.number for t in page]
    assert seen == sorted(numbers, reverse=True)
    with pytest.raises(ValidationError):
        services.list_tickets(org.admin, filters, after="garbage")


def test_a_list_costs_the_same_queries_however_long(acting):
    """No query per row: assignee, type and team come with the page."""
    org = acting
    agent = make_user(org, "agent")
    team = make_team(org, members=[agent])
    for _ in range(3):
        make_ticket(org, assignee_id=agent.id, team_id=team.id)

    def shown() -> list[tuple[str, str, str]]:
        db.session.expire_all()
        return [(t.assignee.full_name, t.type.name_en, t.team.name)
                for t in services.list_tickets(org.admin, services.parse_filters({}))[0]]

    with count_queries() as few:
        assert len(shown()) == 3
    for _ in range(10):
        make_ticket(org, assignee_id=agent.id, team_id=team.id)
    with count_queries() as many:
        assert len(shown()) == 13
    assert len(many) == len(few)


def test_bad_filters_are_refused_when_strict(acting):
    with pytest.raises(ValidationError) as caught:
        services.parse_filters({"view": "everything", "status": "x", "priority": "y"},
                               strict=True)
    assert set(caught.value.fields) == {"view", "status", "priority"}


# -- bulk -------------------------------------------------------------------------------------

def test_bulk_assign_and_close(acting):
    org = acting
    agent = make_user(org, "agent")
    tickets = [make_ticket(org) for _ in range(3)]
    changed = services.bulk_assign(org.admin, [t.id for t in tickets[:2]], agent.id)
    assert [t.assignee_id for t in changed] == [agent.id, agent.id]
    closed = services.bulk_set_status(agent, [t.id for t in tickets], "closed")
    assert sorted(t.id for t in closed) == sorted(t.id for t in tickets[:2])  # not the third
    assert tickets[2].status == "open"
