"""WhatsApp's part of `crm seed-demo`: a sandbox number with 40 conversations in every state
— open and waiting, answered, pending, resolved; unassigned or with an agent; unread or read —
from customers of the CRM's demo (their phones), written as the sandbox's customers write."""

from __future__ import annotations

import random
from datetime import timedelta

from sqlalchemy import update

from crm.customers import services as customers
from crm.customers.demo import demo_phone
from crm.extensions import db
from crm.foundation.demo import add_demo
from crm.foundation.models import User
from crm.models import utcnow
from crm.whatsapp import profiles, sandbox, services
from crm.whatsapp.models import Conversation, Message

CONVERSATIONS = 40
QUESTIONS = ("السلام عليكم، هل المنتج متوفر؟", "كم سعر التوصيل إلى جدة؟",
             "Hi, can I change my order?", "أرغب في عرض سعر للكمية الكبيرة",
             "Is the store open on Friday?", "متى يصل طلبي؟")
ANSWERS = ("وعليكم السلام، نعم متوفر ويصلك خلال يومين.", "التوصيل إلى جدة مجاني فوق ٢٠٠ ريال.",
           "Of course, which item would you like to change?", "سأرسل لك العرض خلال ساعة.")


@add_demo
def seed_inbox(admin: User, team: list[User], rng: random.Random) -> str:
    profile = profiles.create_profile(admin, "sandbox", "واتساب المتجر")
    agents = [user for user in team if user.role in ("agent", "manager")]
    for n in range(CONVERSATIONS):
        # Each writes under their own name, as WhatsApp shows a contact's profile name.
        customer = customers.customer_by_phone(demo_phone(n))
        message = sandbox.customer_sends(profile, demo_phone(n), customer.name if customer else "",
                                         rng.choice(QUESTIONS))
        conversation = message.conversation
        services.link_customer(conversation.id, customer.id if customer else None)
        _shape(conversation, admin, rng.choice(agents), rng, n)
    return (f"A sandbox number, «{profile.display_name}», with {CONVERSATIONS} conversations: "
            "play its customers on the sandbox page.")


def _shape(conversation: Conversation, admin: User, agent: User, rng: random.Random,
           n: int) -> None:
    """Give the n-th conversation its state: who has it, whether it was answered, its status,
    and when it happened (the last few days)."""
    state = n % 5  # 0 waiting unassigned, 1 waiting assigned, 2 answered, 3 pending, 4 resolved
    if state:
        services.assign_conversation(conversation, agent.id, admin)
    if state >= 2:
        answered = utcnow() + timedelta(seconds=rng.randrange(30, 900))
        db.session.add(Message(conversation_id=conversation.id, profile_id=conversation.profile_id,
                               direction="out", type="text", body=rng.choice(ANSWERS),
                               status="read", sender_user_id=agent.id, created_at=answered,
                               sent_at=answered))
        conversation.unread_count = 0
        conversation.last_message_at = answered
    if state >= 3:
        services.set_status(conversation, "pending" if state == 3 else "resolved", agent)
    db.session.flush()
    ago = timedelta(minutes=rng.randrange(5, 60 * 24 * (1 if n < 15 else 6)))
    db.session.execute(update(Message).where(Message.conversation_id == conversation.id)
                       .values(created_at=Message.created_at - ago))
    db.session.execute(update(Conversation).where(Conversation.id == conversation.id)
                       .values(last_message_at=Conversation.last_message_at - ago,
                               last_inbound_at=Conversation.last_inbound_at - ago))
