"""The inbox on the dashboard, and the WhatsApp steps of a new organization's checklist.

The numbers are those of the lists they link to (crm/whatsapp/views.py's filters), for the
whole team, or for an agent their own. Two statements whatever the size of the inbox: the
counts sum a few rows of `inbox_counts` (kept by triggers on `conversations`), the first
responses read the day's inbound messages through `ix_messages_day` and, per conversation, the
first reply after them through `ix_messages_thread`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta

from flask import render_template, url_for
from flask_babel import lazy_gettext
from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import aliased

from crm.extensions import db
from crm.foundation.models import User
from crm.foundation.views import DashboardCard, OnboardingStep, add_dashboard_card
from crm.foundation.views import add_onboarding_step as add_step
from crm.i18n import organization_zone
from crm.models import counted
from crm.permissions import require, sees_only_assigned
from crm.web import me
from crm.whatsapp import services
from crm.whatsapp.models import Conversation, InboxCount, Message, WhatsAppProfile
from crm.whatsapp.views import blueprint

# Socket.IO events after which the inbox card counts again (crm/whatsapp/live.py).
EVENTS = ("newMessage", "messageSent", "conversationUpdated", "conversationAssigned")


@dataclass(frozen=True)
class InboxNumbers:
    """What the inbox card shows; `unassigned` is None for an agent kept out of the queue
    (not their list)."""

    open: int
    unassigned: int | None
    unread: int
    mine: int
    first_response: timedelta | None  # the median of today's, None before any


def start_of_today() -> datetime:
    """Midnight of today in the organization's time zone."""
    zone = organization_zone()
    return datetime.combine(datetime.now(zone).date(), time(), zone)


def inbox_numbers(user: User) -> InboxNumbers:
    """The team's inbox today, or an agent's own and the queue they take from: a few rows of
    `inbox_counts`."""
    agent = sees_only_assigned(user)
    is_open, mine = InboxCount.status == "open", InboxCount.assignee_id == user.id
    # An agent's open and unread are their own; the queue (assignee 0) is counted apart.
    theirs = (mine,) if agent else ()
    query = select(_sum(is_open, *theirs), _sum(is_open, InboxCount.assignee_id == 0),
                   _sum(InboxCount.unread, *theirs), _sum(is_open, mine))
    opened, unassigned, unread, mine_open = db.session.execute(query).one()
    queue_shown = not agent or services.agents_take_unassigned()
    return InboxNumbers(opened, unassigned if queue_shown else None, unread, mine_open,
                        first_response_today(user if agent else None))


def _sum(*conditions: ColumnElement[bool]) -> ColumnElement[int]:
    return counted(InboxCount.n, *conditions)


def first_response_today(agent: User | None) -> timedelta | None:
    """The median wait today between a contact's first message of the day in a conversation
    and the first answer a person sent after it (in `agent`'s conversations, if given)."""
    asked = (select(Message.conversation_id, func.min(Message.id).label("first_id"),
                    func.min(Message.created_at).label("asked_at"))
             .where(Message.created_at >= start_of_today(), Message.direction == "in"))
    if agent is not None:
        asked = asked.join(Conversation, Conversation.id == Message.conversation_id).where(
            Conversation.assigned_user_id == agent.id)
    asked = asked.group_by(Message.conversation_id).subquery()
    reply = aliased(Message)
    answered_at = (select(reply.created_at)
                   .where(reply.conversation_id == asked.c.conversation_id,
                          reply.id > asked.c.first_id, reply.direction == "out",
                          reply.sender_user_id.is_not(None))
                   .order_by(reply.id).limit(1).scalar_subquery())
    seconds = db.session.scalar(select(func.percentile_cont(0.5).within_group(
        func.extract("epoch", answered_at - asked.c.asked_at))))
    return None if seconds is None else timedelta(seconds=round(seconds))


def unread_conversations(user: User) -> int:
    """Conversations not resolved with messages nobody read: the team's, or an agent's own
    (the Inbox's badge)."""
    query = select(_sum(InboxCount.unread))
    if sees_only_assigned(user):
        query = query.where(InboxCount.assignee_id == user.id)
    return db.session.scalar(query)


@blueprint.get("/inbox/unread-badge")
@require("whatsapp", "read")
def unread_badge():
    """The Inbox's unread count, for the badges of the sidebar and the phone menu (out of
    band: the page fetches it after loading and after each event that may change it)."""
    return render_template("whatsapp/_unread_badge.html", unread=unread_conversations(me()))


def _inbox_card() -> dict:
    return {"inbox": inbox_numbers(me())}


def _sandbox_tried() -> bool:
    """Has a sandbox number of the organization had a conversation?"""
    return bool(db.session.scalar(select(
        select(Conversation.id).join(WhatsAppProfile)
        .where(WhatsAppProfile.provider == "sandbox").exists())))


def _real_number_connected() -> bool:
    return bool(db.session.scalar(select(
        select(WhatsAppProfile.id).where(WhatsAppProfile.provider != "sandbox",
                                         WhatsAppProfile.state == "connected",
                                         ~WhatsAppProfile.is_deleted).exists())))


add_dashboard_card(DashboardCard("whatsapp/_dashboard_card.html", "whatsapp", "read",
                                 _inbox_card, EVENTS, order=10))
add_step(OnboardingStep("sandbox", lazy_gettext("Try the sandbox: play a customer beside the "
                                                "inbox"),
                        lambda: url_for("whatsapp.try_sandbox"), _sandbox_tried,
                        new_window=True, method="post", module="whatsapp"), 0)
add_step(OnboardingStep("number", lazy_gettext("Connect your WhatsApp number"),
                        lambda: url_for("whatsapp.numbers"), _real_number_connected,
                        module="whatsapp"), 1)
