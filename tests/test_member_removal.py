"""What becomes of a removed member's work: nothing stays with someone who cannot log in.

Their conversations go back to the unassigned queue, their tickets that are not closed too, and
their open tasks to the admin who removed them; what is finished stays theirs (history).
"""

from __future__ import annotations

from sqlalchemy import select

from crm.customers.models import CustomerActivity
from crm.extensions import db
from crm.models import utcnow
from crm.tenancy import organization_context
from crm.tickets.models import Ticket
from crm.whatsapp.models import Conversation
from tests.customers.factories import make_customer
from tests.factories import login, make_user, run_jobs
from tests.foundation import ident
from tests.tickets.factories import make_ticket
from tests.whatsapp.factories import make_conversation, make_profile


def _work_of(org, agent):
    """An agent's open and resolved conversations, open, solved and closed tickets, an open
    and a done task; their ids by kind."""
    profile = make_profile(org, "sandbox")
    conversations = [make_conversation(profile, status=status, assigned_user_id=ident(agent))
                     for status in ("open", "resolved")]
    tickets = {status: make_ticket(org, assignee_id=ident(agent)) for status in
               ("open", "solved", "closed")}
    customer = make_customer(org)
    with organization_context(ident(org)):
        for status in ("solved", "closed"):
            db.session.get(Ticket, ident(tickets[status])).status = status
        tasks = [CustomerActivity(customer_id=customer.id, actor_id=org.admin.id, type="task",
                                  body=f"Call back {n}", assignee_id=agent.id,
                                  done_at=utcnow() if n else None) for n in range(2)]
        db.session.add_all(tasks)
        db.session.flush()
        return ([c.id for c in conversations], {s: t.id for s, t in tickets.items()},
                [t.id for t in tasks])


def test_a_removed_members_open_work_goes_back_to_the_team(app, client, org):
    """Removing an agent puts their conversations and their tickets not closed back in the
    unassigned queue and gives their open tasks to the admin who removed them; closed
    tickets and done tasks keep their name."""
    agent = make_user(org, "agent")
    conversation_ids, ticket_ids, (open_task, done_task) = _work_of(org, agent)
    admin_id, agent_id = ident(org.admin), ident(agent)
    login(client, org.admin)

    assert client.post(f"/team/{agent_id}/remove").status_code == 303
    run_jobs(app)

    with organization_context(ident(org)):
        assigned = dict(db.session.execute(select(Conversation.id, Conversation.assigned_user_id)
                                           .where(Conversation.id.in_(conversation_ids))).all())
        assert assigned == dict.fromkeys(conversation_ids)
        tickets = dict(db.session.execute(select(Ticket.status, Ticket.assignee_id)
                                          .where(Ticket.id.in_(ticket_ids.values()))).all())
        assert tickets == {"open": None, "solved": None, "closed": agent_id}
        tasks = dict(db.session.execute(select(CustomerActivity.id, CustomerActivity.assignee_id)
                                        .where(CustomerActivity.id.in_((open_task, done_task))))
                     .all())
        assert tasks == {open_task: admin_id, done_task: agent_id}



def test_a_member_who_can_no_longer_answer_hands_their_work_on(app, client, org):
    """An agent made a member (who reads but does not answer) loses their conversations and
    tickets to the unassigned queue, keeping their tasks; one made a manager keeps it all."""
    member, manager = make_user(org, "agent"), make_user(org, "agent")
    member_work, manager_work = _work_of(org, member), _work_of(org, manager)
    login(client, org.admin)

    for user, role in ((member, "member"), (manager, "manager")):
        assert client.post(f"/team/{ident(user)}/role", data={"role": role}).status_code == 303
    run_jobs(app)

    with organization_context(ident(org)):
        def assignees(work):
            conversations, tickets, (open_task, _done) = work
            return (set(db.session.scalars(select(Conversation.assigned_user_id)
                                           .where(Conversation.id.in_(conversations)))),
                    db.session.get(Ticket, tickets["open"]).assignee_id,
                    db.session.get(CustomerActivity, open_task).assignee_id)

        assert assignees(member_work) == ({None}, None, ident(member))
        assert assignees(manager_work) == ({ident(manager)}, ident(manager), ident(manager))
