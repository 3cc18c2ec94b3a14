"""Usage: counted per hour, each closed hour reported once to Stripe's meters."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from crm.billing.models import UsageRecord
from crm.billing.usage import hour_of
from crm.extensions import db
from crm.models import utcnow
from crm.tenancy import organization_context
from crm.transaction import commit
from tests.billing.factories import oid
from tests.billing.test_stripe import state, subscribe
from tests.factories import make_org, run_recovery
from tests.whatsapp.factories import make_profile


def test_each_closed_hour_is_reported_once_with_its_identifier(app, client, stripe_api):
    """Campaign messages of a closed hour and the numbers held as the last hour closed go to
    the meters once, each event named by organization, hour and meter; the hour still open
    waits; a second run sends nothing again."""
    from crm.billing import services

    services.sync_catalog()
    org = make_org()
    subscribe(app, client, stripe_api, org)
    make_profile(org, "sandbox")
    make_profile(org, "sandbox")
    now = hour_of(utcnow())
    earlier, closed = now - timedelta(hours=3), now - timedelta(hours=1)
    with organization_context(oid(org)):
        db.session.add_all([UsageRecord(hour=earlier, campaign_messages=40),
                            UsageRecord(hour=now, campaign_messages=7)])
        commit()
    customer = state(org).stripe_customer_id

    run_recovery(app)
    run_recovery(app)

    counted = stripe_api.counted_meter_events()
    assert len(stripe_api.meter_events) == len(counted) == 2
    messages = counted[f"wasl-{oid(org)}-{earlier:%Y%m%dT%H}-campaign_messages"]
    numbers = counted[f"wasl-{oid(org)}-{closed:%Y%m%dT%H}-whatsapp_numbers"]
    assert (messages["event_name"], messages["payload"]) == (
        "wasl_campaign_messages", {"stripe_customer_id": customer, "value": "40"})
    assert messages["timestamp"] == int(earlier.timestamp())
    assert (numbers["event_name"], numbers["payload"]["value"]) == ("wasl_whatsapp_numbers", "2")
    with organization_context(oid(org)):
        reported = dict(db.session.execute(select(UsageRecord.hour,
                                                  UsageRecord.reported_at.is_not(None))).all())
    assert reported == {earlier: True, closed: True, now: False}


def test_an_hour_sent_again_after_a_crash_is_counted_once(app, client, stripe_api):
    """Reported to Stripe but its `reported_at` lost (the run died before committing): sent
    again with the same identifier, which Stripe counts once."""
    from crm.billing import services

    services.sync_catalog()
    org = make_org()
    subscribe(app, client, stripe_api, org)
    hour = hour_of(utcnow()) - timedelta(hours=2)
    with organization_context(oid(org)):
        db.session.add(UsageRecord(hour=hour, campaign_messages=5))
        commit()
    run_recovery(app)
    with organization_context(oid(org)):
        db.session.scalars(select(UsageRecord).where(UsageRecord.hour == hour)).one(
        ).reported_at = None
        commit()

    run_recovery(app)

    assert len(stripe_api.meter_events) == 2
    assert len(stripe_api.counted_meter_events()) == 1


def test_without_a_stripe_customer_hours_are_closed_with_nothing_sent(app, billing_on):
    """An organization that never subscribed has nobody to bill: its hours are marked
    reported and Stripe is not called (there is no Stripe here at all)."""
    org = make_org()
    with organization_context(oid(org)):
        db.session.add(UsageRecord(hour=hour_of(utcnow()) - timedelta(hours=2),
                                   campaign_messages=5))
        commit()

    run_recovery(app)

    with organization_context(oid(org)):
        assert db.session.scalar(select(UsageRecord.reported_at)) is not None
