"""Campaigns' part of `crm seed-demo`: one campaign from the demo's sandbox number to some of
its customers, completed two days ago, with a recipient in every state a finished campaign
leaves (sent, delivered, read, replied, failed, skipped because they opted out, and one still
waiting for WhatsApp's word), so its results page, funnel and chart have something to show.

Drafted through the services like any campaign; the run itself is written as the runner and
WhatsApp's status webhooks would have left it (nothing is sent). Built after the CRM's and
WhatsApp's parts (importing them registers theirs first).
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from sqlalchemy import select, update

from crm.campaigns import audience, consent, services
from crm.campaigns.models import Campaign, CampaignRecipient, CampaignResult
from crm.customers.demo import demo_phone
from crm.customers.models import Customer
from crm.extensions import db
from crm.foundation.demo import add_demo
from crm.foundation.models import User
from crm.models import utcnow
from crm.whatsapp import demo as whatsapp_demo  # noqa: F401 - its part (the number) first
from crm.whatsapp.models import WhatsAppProfile

NAME = "عروض نهاية الأسبوع"
TEXT = "مرحبًا {first_name}، خصم ٢٠٪ على طلبك القادم حتى نهاية الأسبوع 🎉"
RECIPIENTS = 24
# What became of each recipient, in sending order: mostly read, some further along (replied),
# some short of it, and one of each way a message does not arrive.
FATES = ("read", "read", "replied", "delivered", "read", "sent", "read", "failed",
         "replied", "delivered", "skipped", "unknown")
STARTED_AGO = timedelta(days=2)
EVERY = timedelta(seconds=40)  # the pace it went at


@add_demo
def seed_campaign(admin: User, team: list[User], rng: random.Random) -> str:
    profile = db.session.scalar(select(WhatsAppProfile).where(WhatsAppProfile.provider
                                                              == "sandbox"))
    people = list(db.session.scalars(select(Customer).where(
        Customer.phone.in_([demo_phone(n) for n in range(RECIPIENTS)]))))
    campaign = services.create_campaign(admin, {
        "name": NAME, "profile_id": profile.id, "message": {"text": TEXT},
        "audience": {"customer_ids": [person.id for person in people]}})
    _run(campaign)
    return f"A completed campaign, «{NAME}», with its results: {RECIPIENTS} recipients."


def _run(campaign: Campaign) -> None:
    """Freeze the audience and give each recipient its fate, as if sent two days ago."""
    started = utcnow() - STARTED_AGO
    db.session.add(CampaignResult(organization_id=campaign.organization_id,
                                  campaign_id=campaign.id))
    db.session.flush()
    counts = audience.freeze(campaign)
    services.add_counts(campaign.id, {"total": sum(counts.values()), "queued": sum(
        counts.values())})
    recipients = list(db.session.scalars(select(CampaignRecipient).where(
        CampaignRecipient.campaign_id == campaign.id).order_by(CampaignRecipient.id)))
    for n, recipient in enumerate(recipients):
        at = started + n * EVERY
        recipient.attempted_at = at
        _fate(recipient, FATES[n % len(FATES)], at, campaign.name)
    db.session.execute(update(Campaign).where(Campaign.id == campaign.id).values(
        status="completed", started_at=started, frozen_at=started,
        finished_at=started + len(recipients) * EVERY))


def _fate(recipient: CampaignRecipient, fate: str, at: datetime, name: str) -> None:
    if fate == "skipped":  # they had written «إيقاف» before: the runner skipped them
        consent.record("opt_out", recipient.phone, method="keyword",
                       customer_id=recipient.customer_id, text="إيقاف")
        recipient.attempted_at = None
        services.advance(recipient, "skipped", error_code="opted_out")
    elif fate == "failed":
        services.advance(recipient, "failed", failed_at=at + timedelta(seconds=5),
                         error_code="131026", error_reason="Message undeliverable.")
    elif fate == "unknown":
        services.advance(recipient, "unknown")
    else:
        state = "read" if fate == "replied" else fate
        services.advance(recipient, state, name, sent_at=at,
                         delivered_at=at + timedelta(seconds=3) if state != "sent" else None,
                         read_at=at + timedelta(minutes=9) if state == "read" else None)
        if fate == "replied":
            recipient.replied_at = at + timedelta(minutes=12)
            services.add_counts(recipient.campaign_id, {"replied": 1})
