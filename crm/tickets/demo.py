"""Ticketing's part of `crm seed-demo`: tickets on the demo's conversations and customers, in
every status, with notes and replies, their SLA clocks running — one breaching soon, one
breached — made through the services as people and the SLA timer would.

Built after the CRM's and WhatsApp's parts (importing them registers theirs first): the tickets
are opened from the demo's conversations and for its customers.
"""

from __future__ import annotations

import random
from datetime import timedelta

from sqlalchemy import select

from crm.customers.demo import demo_phone
from crm.customers.services import customer_by_phone
from crm.extensions import db
from crm.foundation.demo import add_demo
from crm.foundation.models import User
from crm.models import utcnow
from crm.tickets import services, sla
from crm.tickets.models import Ticket
from crm.whatsapp.demo import CONVERSATIONS
from crm.whatsapp.models import Conversation

# (subject, priority, status, SLA): each opened from a conversation unless its subject says
# it came by phone; "breaching" and "breached" set the clocks so.
TICKETS = (
    ("الطلب وصل ناقص قطعة", "urgent", "open", "breached"),
    ("Refund for order 4411", "high", "open", "breaching"),
    ("لا أستطيع تسجيل الدخول إلى التطبيق", "normal", "open", None),
    ("استفسار عن الضمان", "low", "open", None),
    ("تأخر التوصيل إلى الرياض", "high", "on_hold", None),
    ("Invoice with the VAT number", "normal", "pending", None),
    ("تغيير عنوان التوصيل", "normal", "solved", None),
    ("Bulk order quote", "low", "solved", None),
)
FROM_PHONE = {"Invoice with the VAT number", "Bulk order quote"}
NOTES = ("تواصلت مع المستودع وننتظر ردهم", "Checked the order: one item was left out.",
         "العميل يفضل الاتصال بعد العصر", "Escalated to the delivery partner.")
REPLIES = ("شكرًا لتواصلك، نعمل على طلبك الآن.", "We have sent the corrected invoice to you.")
BREACHED_AGO = timedelta(days=14)  # longer than any holiday: the clocks have surely run out


@add_demo
def seed_tickets(admin: User, team: list[User], rng: random.Random) -> str:
    workers = [user for user in team if user.role in ("agent", "manager")]
    conversations = list(db.session.scalars(select(Conversation).order_by(Conversation.id)
                                            .limit(CONVERSATIONS)))
    for n, (subject, priority, status, clock) in enumerate(TICKETS):
        data = {"subject": subject, "priority": priority}
        if subject in FROM_PHONE:
            customer = customer_by_phone(demo_phone(100 + n))
            data["customer_id"] = customer.id if customer else None
        else:
            data["conversation_id"] = conversations[n * 3 % len(conversations)].id
        if n % 4:  # one in four waits in the unassigned queue
            data["assignee_id"] = rng.choice(workers).id
        ticket = services.create_ticket(admin, data, source="manual" if subject in FROM_PHONE
                                        else "whatsapp")
        _talk(ticket, admin, rng, public=subject in FROM_PHONE)
        if status != "open":
            services.update_ticket(admin, ticket, {"status": status})
        if clock:
            _run_clock(ticket, clock)
    return (f"{len(TICKETS)} tickets with SLA clocks (one breaching soon, one breached), "
            "on the demo's conversations and customers.")


def _talk(ticket: Ticket, actor: User, rng: random.Random, public: bool) -> None:
    """An internal note; for a ticket that came by phone, a public reply too (one from a
    conversation would go out on WhatsApp)."""
    services.add_comment(actor, ticket, rng.choice(NOTES), False)
    if public:
        services.add_comment(actor, ticket, rng.choice(REPLIES), True)


def _run_clock(ticket: Ticket, clock: str) -> None:
    """Breached: opened long ago, its clocks recomputed and the timer run now. Breaching:
    the timer run just before its first clock is due, so it has warned."""
    if clock == "breached":
        ticket.created_at -= BREACHED_AGO
        sla.recompute(ticket, services.load_context(), utcnow())
        services.tickets.process_due([ticket.id], utcnow())
    else:
        services.tickets.process_due([ticket.id], ticket.sla_due_at - timedelta(minutes=1))
