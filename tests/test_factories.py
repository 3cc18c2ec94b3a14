"""The tests' own factories: what they make up never collides across modules."""

from __future__ import annotations

import itertools

from tests.customers import factories as customer_factories
from tests.customers.factories import make_customer
from tests.whatsapp import factories as whatsapp_factories
from tests.whatsapp.factories import make_conversation, make_profile


def test_made_up_phones_are_unique_across_the_factories(org, monkeypatch):
    """A customer and a conversation made without a phone never get the same number, however
    far each module's counter has gone: two counters once wrote +966551000004 for both, and a
    test that gave the customer's number to one of its chats failed on the unique (number,
    contact) key, in whichever process happened to have run as many of each."""
    for module in (customer_factories, whatsapp_factories):
        monkeypatch.setattr(module, "_sequence", itertools.count(1))
    profile = make_profile(org)

    phones = [make_customer(org).phone for _ in range(3)]
    phones += [make_conversation(profile).contact_phone for _ in range(3)]

    assert len(set(phones)) == len(phones), phones
