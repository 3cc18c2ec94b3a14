"""Campaign drafts and their lifecycle through the services: what a draft may hold, editing
only as a draft, starting once, the runner sending everyone once, and the counts following
WhatsApp's statuses."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from crm.campaigns import services
from crm.campaigns.models import Campaign
from crm.errors import ConflictError, NotFoundError, ValidationError
from crm.extensions import db
from crm.foundation.models import AuditEntry
from crm.permissions import role_allows
from crm.tenancy import organization_context
from tests.campaigns.factories import (
    cloud_number,
    counts,
    drive,
    fresh,
    make_campaign,
    make_template,
    recipients,
    sent_to,
    start,
    template_message,
    whatsapp_says,
)
from tests.customers.factories import make_customer, make_segment
from tests.foundation import ident
from tests.whatsapp.factories import make_profile


@pytest.fixture
def number(org):
    profile = cloud_number(org)
    make_template(org, profile)
    return profile


def vip_segment(org, *names: str):
    """A segment of customers tagged vip, one per name; their phone numbers."""
    phones = [make_customer(org, name=name, tags=["vip"]).phone for name in names]
    return make_segment(org, "VIPs", tag="vip"), phones


# -- drafts ---------------------------------------------------------------------------------------

def test_a_draft_keeps_its_audience_template_and_pacing(org, number):
    """A draft is saved with everything the form gives, checked."""
    segment, _people = vip_segment(org, "Huda")

    campaign = make_campaign(org, number, audience={"segment_id": ident(segment)},
                             message=template_message("{first_name}", "20%"),
                             rate_per_minute=600, quiet_hours=["22:00", "08:00"])

    stored = fresh(org, campaign)
    assert stored.status == "draft"
    assert stored.audience == {"segment_id": ident(segment)}
    assert stored.message == template_message("{first_name}", "20%")
    assert (stored.rate_per_minute, str(stored.quiet_start), str(stored.quiet_end)) == (
        600, "22:00:00", "08:00:00")


def test_a_text_message_on_a_cloud_number_needs_a_template(org, number):
    """A cloud number starts conversations only with an approved template: a text is refused
    with a 422 saying so."""
    with pytest.raises(ValidationError) as refused:
        make_campaign(org, number, message={"text": "Hello {name}"})

    assert refused.value.status == 422
    assert refused.value.fields["message"].startswith("يلزم قالب")  # a template is needed


@pytest.mark.parametrize(("message", "field"), [
    (template_message("{name}", name="unknown_template"), "template"),
    (template_message("{name}"), "template"),  # two parameters wanted
    (template_message("{name}", "{surname}"), "template"),
    (template_message("{name}", "{custom.missing}"), "template"),
])
def test_a_template_must_be_approved_and_fully_and_correctly_filled(org, number, message,
                                                                      field):
    """Only a synced, approved template, with one known variable or text per {{n}}."""
    with pytest.raises(ValidationError) as refused:
        make_campaign(org, number, message=message)

    assert field in refused.value.fields


def test_a_template_waiting_for_approval_cannot_be_chosen(org, number):
    make_template(org, number, name="pending_offer", status="PENDING")

    with pytest.raises(ValidationError):
        make_campaign(org, number, message=template_message(name="pending_offer"))


def test_a_text_with_variables_is_kept_for_a_sandbox_number(org):
    """Web and sandbox numbers send texts with variables; a template is refused there."""
    sandbox = make_profile(org, "sandbox")

    campaign = make_campaign(org, sandbox, message={"text": "أهلاً {first_name} من {company}"})
    with pytest.raises(ValidationError):
        make_campaign(org, sandbox, message=template_message("{name}", "x"))

    assert fresh(org, campaign).message == {"text": "أهلاً {first_name} من {company}"}


def test_a_campaign_is_edited_and_deleted_only_as_a_draft(org, number):
    """PATCH and DELETE are for drafts: a started campaign answers 409 and stays as it was."""
    segment, _people = vip_segment(org, "Huda")
    campaign = make_campaign(org, number, audience={"segment_id": ident(segment)},
                             message=template_message("{name}", "10%"))
    with organization_context(ident(org)):
        services.update_campaign(org.admin, campaign, {"name": "Ramadan offer"})
    start(org, campaign)

    with organization_context(ident(org)), pytest.raises(ConflictError):
        services.update_campaign(org.admin, fresh(org, campaign), {"name": "Other"})
    with organization_context(ident(org)), pytest.raises(ConflictError):
        services.delete_campaign(org.admin, fresh(org, campaign))

    assert fresh(org, campaign).name == "Ramadan offer"


def test_another_organizations_campaign_is_not_found(org, other_org, number):
    campaign = make_campaign(org, number)

    with organization_context(ident(other_org)), pytest.raises(NotFoundError):
        services.access_campaign(ident(campaign))


def test_agents_and_members_see_nothing_of_campaigns():
    """Admins and managers write; agents and members have no access at all."""
    assert [role for role in ("admin", "manager", "agent", "member")
            if role_allows(role, "campaigns", "read")] == ["admin", "manager"]
    assert role_allows("manager", "campaigns", "write")


# -- starting -------------------------------------------------------------------------------------

def test_starting_twice_answers_409_and_starts_one_runner(app, org, number, graph, clock):
    """The second start is refused and changes nothing: every customer gets one message."""
    segment, people = vip_segment(org, "Huda", "Omar")
    campaign = make_campaign(org, number, audience={"segment_id": ident(segment)},
                             message=template_message("{first_name}", "20%"))
    start(org, campaign)

    with pytest.raises(ConflictError) as refused:
        start(org, campaign)
    drive(app, clock)

    assert refused.value.status == 409
    assert sorted(sent_to(graph)) == sorted(people)
    with organization_context(ident(org)):
        assert db.session.scalar(select(db.func.count()).select_from(AuditEntry).where(
            AuditEntry.action == "campaign.started")) == 1


def test_a_campaign_cannot_start_without_an_audience_or_message(org, number):
    campaign = make_campaign(org, number)

    with pytest.raises(ValidationError) as refused:
        start(org, campaign)

    assert set(refused.value.fields) == {"audience", "message"}
    assert fresh(org, campaign).status == "draft"


def test_the_runner_sends_each_recipient_their_template_once(app, org, number, graph, clock):
    """Each customer of the segment gets the template with their own values; the campaign
    completes with its counts kept."""
    segment, people = vip_segment(org, "Huda Saleh", "Omar")
    campaign = make_campaign(org, number, audience={"segment_id": ident(segment)},
                             message=template_message("{first_name}", "20%"))

    start(org, campaign)
    drive(app, clock)

    bodies = {f"+{body['to']}": body["template"] for body in graph.sends()}
    assert bodies[people[0]] == {
        "name": "spring_offer", "language": {"code": "ar"}, "components": [
            {"type": "body", "parameters": [{"type": "text", "text": "Huda"},
                                            {"type": "text", "text": "20%"}]}]}
    assert len(graph.sends()) == 2
    assert fresh(org, campaign).status == "completed"
    assert counts(org, campaign) == {"total": 2, "queued": 0, "sent": 2, "delivered": 0,
                                     "read": 0, "replied": 0, "failed": 0, "skipped": 0,
                                     "unknown": 0}


def test_recipients_follow_whatsapps_statuses(app, client, org, number, graph, clock):
    """Delivered and read arrive by webhook: the recipients and the funnel follow; a late
    "delivered" after "read" changes nothing; a failure after "sent" is counted as failed."""
    segment, _people = vip_segment(org, "Huda", "Omar", "Sara")
    campaign = make_campaign(org, number, audience={"segment_id": ident(segment)},
                             message=template_message("{name}", "x"))
    start(org, campaign)
    drive(app, clock)
    huda, omar, sara = recipients(org, campaign)

    whatsapp_says(client, org, number, [(huda.provider_message_id, "delivered", huda.message_id),
                                   (huda.provider_message_id, "read", huda.message_id),
                                   (omar.provider_message_id, "delivered", omar.message_id),
                                   (huda.provider_message_id, "delivered", huda.message_id)])
    whatsapp_says(client, org, number, [(sara.provider_message_id, "failed", sara.message_id)],
                  error_code=131026)

    assert [r.state for r in recipients(org, campaign)] == ["read", "delivered", "failed"]
    assert recipients(org, campaign)[2].error_code == "131026"
    assert counts(org, campaign) == {"total": 3, "queued": 0, "sent": 2, "delivered": 2,
                                          "read": 1, "replied": 0, "failed": 1, "skipped": 0,
                                          "unknown": 0}


def test_a_scheduled_campaign_waits_for_its_time(app, org, number, graph, clock):
    """Scheduled for later: nothing leaves until then; then it runs by itself."""
    from datetime import timedelta

    from crm.models import utcnow

    segment, _people = vip_segment(org, "Huda")
    campaign = make_campaign(org, number, audience={"segment_id": ident(segment)},
                             message=template_message("{name}", "x"),
                             scheduled_at=(utcnow() + timedelta(hours=2)).isoformat())

    assert start(org, campaign).status == "scheduled"
    assert graph.sends() == []
    drive(app, clock)

    assert fresh(org, campaign).status == "completed"
    assert len(graph.sends()) == 1
    assert clock.now() >= (utcnow() + timedelta(hours=2) - timedelta(minutes=1)).timestamp()


def test_a_scheduled_campaign_can_start_now_and_its_time_then_starts_nothing(
        app, org, number, graph, clock):
    """Scheduled for tomorrow, sent now after all: it runs at once, everyone gets it once, and
    the scheduled start finds it running and does nothing. Only a scheduled campaign can."""
    from datetime import timedelta

    from crm.models import utcnow

    segment, _people = vip_segment(org, "Huda", "Omar")
    campaign = make_campaign(org, number, audience={"segment_id": ident(segment)},
                             message=template_message("{name}", "x"),
                             scheduled_at=(utcnow() + timedelta(days=1)).isoformat())
    start(org, campaign)
    with organization_context(ident(org)):
        services.start_scheduled_now(org.admin, db.session.get(Campaign, ident(campaign)))
        db.session.flush()

    running = fresh(org, campaign)
    assert running.status == "running"
    assert running.started_at < running.scheduled_at - timedelta(hours=23)
    drive(app, clock)  # the scheduled start's job comes too, and finds it running
    assert fresh(org, campaign).status == "completed"
    assert len(graph.sends()) == 2
    with organization_context(ident(org)):
        with pytest.raises(ConflictError):
            services.start_scheduled_now(org.admin, db.session.get(Campaign, ident(campaign)))
        assert "campaign.started" in {e.action for e in db.session.scalars(
            select(AuditEntry).where(AuditEntry.target_id == ident(campaign)))}
    draft = make_campaign(org, number)
    with organization_context(ident(org)), pytest.raises(ConflictError):
        services.start_scheduled_now(org.admin, db.session.get(Campaign, ident(draft)))


def test_the_list_shows_the_newest_first(org, number):
    first, second = make_campaign(org, number), make_campaign(org, number)

    with organization_context(ident(org)):
        page, after = services.list_campaigns()

    assert [c.id for c in page] == [ident(second), ident(first)]
    assert after is None
    assert isinstance(page[0], Campaign)
