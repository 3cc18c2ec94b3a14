"""The outbox against the provider's own word: a status that arrives during a send wins."""

from __future__ import annotations

import pytest
from sqlalchemy import update

from crm.extensions import db
from crm.models import utcnow
from crm.tenancy import organization_context
from crm.whatsapp import services
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
    monkeypatch.setattr(services, "channel_for", lambda profile: _Channel(profile))
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
    services.send_message(raced.id)
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
