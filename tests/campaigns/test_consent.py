"""Consent: opt-out and opt-in words written to the number (Meta's webhook, through the real
ingest), with Arabic letter variants folded as search folds them; the ledger; opted-out people
skipped when their turn comes; replies within three days counted and logged."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update

from crm.campaigns import consent
from crm.campaigns.events import message_received
from crm.campaigns.models import CampaignRecipient, ConsentEvent
from crm.customers.models import CustomerActivity
from crm.errors import ValidationError
from crm.extensions import db
from crm.foundation.services import set_module_enabled
from crm.tenancy import organization_context
from tests.campaigns.factories import (
    cloud_number,
    counts,
    customer_says,
    drive,
    make_campaign,
    make_template,
    recipients,
    start,
    template_message,
)
from tests.campaigns.test_pacing import csv_campaign
from tests.customers.factories import make_customer
from tests.factories import run_jobs
from tests.foundation import ident

PERSON = "+966505500000"


@pytest.fixture
def number(org):
    profile = cloud_number(org)
    make_template(org, profile)
    return profile


def ledger(org) -> list[tuple[str, str, str]]:
    with organization_context(ident(org)):
        return [(e.phone, e.action, e.method) for e in db.session.scalars(
            select(ConsentEvent).order_by(ConsentEvent.id))]


def opted_out(org, phone: str = PERSON) -> bool:
    with organization_context(ident(org)):
        return consent.is_opted_out(phone)


def replies_sent(graph) -> list[str]:
    return [body["text"]["body"] for body in graph.sends() if body.get("type") == "text"]


@pytest.mark.parametrize("written", ["إلغاء", "الغاء", "إيقاف", "ايقاف", "توقف", "إلغاء الاشتراك",
                                     "إلغاءُ", "ألغاء", "  ايقاف!  ", "إلغاء   الاشتراك."])
def test_arabic_opt_out_words_in_any_spelling_opt_out_and_are_answered_in_arabic(
        client, org, number, graph, written):
    customer_says(client, org, number, PERSON, written)

    assert opted_out(org)
    assert ledger(org) == [(PERSON, "opt_out", "keyword")]
    assert replies_sent(graph) == ["لن تصلك رسائل حملاتنا بعد الآن. أرسل «اشتراك» لتصلك من جديد."]


@pytest.mark.parametrize("written", ["STOP", "stop", "Stop!", "UNSUBSCRIBE", " unsubscribe "])
def test_english_opt_out_words_are_answered_in_english(client, org, number, graph, written):
    customer_says(client, org, number, PERSON, written)

    assert opted_out(org)
    assert replies_sent(graph) == [
        "You will no longer receive our campaign messages. Reply START to receive them again."]


@pytest.mark.parametrize("written", ["please don't stop", "إلغاء الطلب رقم 5", "stopping"])
def test_a_word_inside_a_sentence_is_no_opt_out(client, org, number, graph, written):
    customer_says(client, org, number, PERSON, written)

    assert not opted_out(org)
    assert ledger(org) == []


def test_a_templates_quick_reply_stop_opts_out(client, org, number, graph):
    """The button's label may say anything; its payload STOP is what counts."""
    customer_says(client, org, number, PERSON, "لا أرغب في العروض", button_payload="STOP")

    assert opted_out(org)
    assert ledger(org) == [(PERSON, "opt_out", "button")]


def test_an_opt_in_word_brings_the_person_back(client, org, number, graph):
    customer_says(client, org, number, PERSON, "STOP")
    customer_says(client, org, number, PERSON, "اشتراك")

    assert not opted_out(org)
    assert ledger(org) == [(PERSON, "opt_out", "keyword"), (PERSON, "opt_in", "keyword")]
    assert replies_sent(graph)[-1] == "ستصلك رسائل حملاتنا من جديد. أرسل «إيقاف» لإيقافها."


def test_an_opt_out_event_run_twice_is_recorded_once(client, org, number, graph):
    """RQ runs a job at least once: the same message's event again changes nothing and sends
    no second confirmation."""
    customer_says(client, org, number, PERSON, "STOP")
    with organization_context(ident(org)):
        event = db.session.scalar(select(ConsentEvent))
        again = {"message_id": event.message_id, "contact_phone": PERSON, "body": "STOP",
                 "type": "text", "conversation_id": 0, "customer_id": None}

    with organization_context(ident(org)):
        message_received(again)
        db.session.flush()
    run_jobs(client.application, queues=("whatsapp",))

    assert ledger(org) == [(PERSON, "opt_out", "keyword")]
    assert len(replies_sent(graph)) == 1


def test_the_words_are_the_organizations_to_edit(client, org, number, graph):
    with organization_context(ident(org)):
        consent.set_keywords(org.admin, ["كفى", "BASTA"], ["عودة"])
        db.session.flush()

    customer_says(client, org, number, PERSON, "STOP")
    assert not opted_out(org)
    customer_says(client, org, number, PERSON, "كفى")
    assert opted_out(org)
    customer_says(client, org, number, PERSON, "عودة")
    assert not opted_out(org)


def test_a_word_cannot_both_stop_and_restart(org):
    with organization_context(ident(org)), pytest.raises(ValidationError) as refused:
        consent.set_keywords(org.admin, ["STOP"], ["stop"])

    assert "opt_in" in refused.value.fields


def test_nothing_happens_while_campaigns_are_switched_off(client, org, number, graph):
    with organization_context(ident(org)):
        set_module_enabled(org.admin, "campaigns", False)
        db.session.flush()

    customer_says(client, org, number, PERSON, "STOP")

    assert ledger(org) == []
    assert replies_sent(graph) == []


def test_the_ledger_is_exported_with_every_change(client, org, number, graph):
    customer_says(client, org, number, PERSON, "STOP")
    with organization_context(ident(org)):
        consent.record_by_hand(org.admin, "opt_in", "0505500000")
        db.session.flush()
        rows = list(consent.export_ledger())

    assert [(row["phone"], row["action"], row["method"], row["text"]) for row in rows] == [
        (PERSON, "opt_out", "keyword", "STOP"), (PERSON, "opt_in", "manual", "")]
    assert rows[1]["actor_id"] == ident(org.admin)


# -- at send time ---------------------------------------------------------------------------------

def test_consent_is_checked_when_the_persons_turn_comes(app, client, org, number, graph, clock):
    """The list was frozen with them; they opted out while it ran (one message a minute):
    skipped, counted as opted out, never sent. Someone opted out before the start who opted
    back in before their turn gets the message."""
    campaign = csv_campaign(org, number, 3, rate_per_minute=1)
    customer_says(client, org, number, "+966505500002", "STOP")
    customer_says(client, org, number, "+966505500002", "START")
    start(org, campaign)
    run_jobs(app, queues=("campaigns",))  # the first person; the next waits a minute

    customer_says(client, org, number, "+966505500001", "إيقاف")
    drive(app, clock)

    assert [(r.phone, r.state, r.error_code) for r in recipients(org, campaign)] == [
        ("+966505500000", "sent", None), ("+966505500001", "skipped", "opted_out"),
        ("+966505500002", "sent", None)]
    assert counts(org, campaign)["skipped"] == 1
    template_sends = [body["to"] for body in graph.sends() if body["type"] == "template"]
    assert template_sends == ["966505500000", "966505500002"]


# -- replies --------------------------------------------------------------------------------------

def test_a_reply_within_three_days_counts_once_and_is_on_the_timeline(app, client, org, number,
                                                                      graph, clock):
    customer_id = ident(make_customer(org, name="Huda", phone=PERSON, tags=["vip"]))
    campaign = make_campaign(org, number, audience={"tag": "vip"},
                             message=template_message("{name}", "x"))
    start(org, campaign)
    drive(app, clock)

    customer_says(client, org, number, PERSON, "كم السعر؟")
    customer_says(client, org, number, PERSON, "وهل يوجد توصيل؟")

    [person] = recipients(org, campaign)
    assert person.replied_at is not None
    assert counts(org, campaign)["replied"] == 1
    with organization_context(ident(org)):
        kinds = list(db.session.scalars(select(CustomerActivity.type).where(
            CustomerActivity.customer_id == customer_id,
            CustomerActivity.type.like("campaign_%")).order_by(CustomerActivity.id)))
    assert kinds == ["campaign_sent", "campaign_replied"]


def test_a_reply_after_three_days_is_not_the_campaigns(app, client, org, number, graph, clock):
    campaign = csv_campaign(org, number, 1)
    start(org, campaign)
    drive(app, clock)
    with organization_context(ident(org)):
        db.session.execute(update(CampaignRecipient).values(
            sent_at=CampaignRecipient.sent_at - timedelta(days=3, minutes=1)))

    customer_says(client, org, number, PERSON, "مرحبا")

    assert recipients(org, campaign)[0].replied_at is None
    assert counts(org, campaign)["replied"] == 0
