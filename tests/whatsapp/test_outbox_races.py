"""The outbox against the provider's own word: a status that arrives during a send wins."""

from __future__ import annotations

import pytest
from sqlalchemy import select, update

from crm.extensions import db
from crm.models import utcnow
from crm.tenancy import organization_context
from crm.whatsapp import jobs, services
from crm.whatsapp.channels.base import ChannelError, DeliveryUncertainError, StatusUpdate
from crm.whatsapp.models import Message
from tests.whatsapp.factories import make_conversation, make_profile


class _Channel:
    """A channel whose request is overtaken by the provider's status webhook."""

    supports_edit = supports_revoke = False
    outcome: Exception | None = None

    def __init__(self, profile):
        self.profile = profile

    def send(self, message):
        # The webhook lands (another request) while our request is still in flight.
        db.session.execute(update(Message).where(Message.id == message.id).values(
            status="delivered", provider_message_id="wamid.raced", delivered_at=utcnow()))
        if self.outcome is not None:
            raise self.outcome
        return "wamid.raced"


@pytest.fixture
def raced(monkeypatch, org):
    monkeypatch.setattr(jobs, "channel_for", lambda profile: _Channel(profile))
    profile = make_profile(org, "sandbox")
    conversation = make_conversation(profile)
    with organization_context(org.id):
        message = services.send_text(conversation, org.admin, "مرحبا")
        db.session.flush()
        yield message


@pytest.mark.parametrize("outcome", [DeliveryUncertainError("read timeout"),
                                     ChannelError("131000", "something failed"), None],
                         ids=["timeout", "refusal", "success"])
def test_a_status_that_arrived_during_the_send_is_kept(raced, outcome, monkeypatch):
    """A send that times out, fails or succeeds after the webhook said delivered stays
    delivered: never knocked back to unknown, failed or sent."""
    monkeypatch.setattr(_Channel, "outcome", outcome)
    jobs.send_message(raced.id)
    db.session.refresh(raced)
    assert raced.status == "delivered"
    assert raced.provider_message_id == "wamid.raced"


def test_an_echoed_id_of_another_message_is_not_applied(org):
    """A status naming our message id but another provider id does not touch our message."""
    profile = make_profile(org, "sandbox")
    conversation = make_conversation(profile)
    with organization_context(org.id):
        message = Message(conversation_id=conversation.id, profile_id=profile.id,
                          direction="out", status="sent", provider_message_id="wamid.ours")
        db.session.add(message)
        db.session.flush()
        stray = StatusUpdate(provider_message_id="wamid.someone-else", status="read",
                             timestamp=utcnow(), our_message_id=message.id)
        assert services.apply_status(profile, stray) is None
        assert message.status == "sent"


class _Overtaken(_Channel):
    """A channel during whose request another worker runs the same message's job (the
    recovery job enqueued it again, or RQ ran it twice)."""

    seen: list[str] = []
    calls: list[int] = []

    def send(self, message):
        self.calls.append(message.id)
        jobs.send_message(message.id)
        self.seen.append(db.session.scalar(select(Message.status).where(
            Message.id == message.id).execution_options(populate_existing=True)))
        return "wamid.once"


def test_a_second_run_during_the_send_neither_sends_nor_marks_it(monkeypatch, org):
    """The job run again while the first run's request is in flight finds the message
    `sending` within its lease: it sends nothing and leaves it `sending` (not `unknown`); the
    first run records the provider's answer."""
    monkeypatch.setattr(jobs, "channel_for", lambda profile: _Overtaken(profile))
    monkeypatch.setattr(_Overtaken, "seen", [])
    monkeypatch.setattr(_Overtaken, "calls", [])
    conversation = make_conversation(make_profile(org, "sandbox"))
    with organization_context(org.id):
        message = services.send_text(conversation, org.admin, "مرة واحدة")
        db.session.flush()

        jobs.send_message(message.id)

        db.session.flush()
        db.session.refresh(message)
    assert _Overtaken.calls == [message.id]
    assert _Overtaken.seen == ["sending"]
    assert (message.status, message.provider_message_id) == ("sent", "wamid.once")
