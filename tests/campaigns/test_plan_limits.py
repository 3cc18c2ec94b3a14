"""Campaigns held to the plan by the send engine: each message counted once in the month's
usage, nothing sent beyond the plan's campaign messages, nothing sent while read-only."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from crm.billing import gate
from crm.billing.models import UsageRecord
from crm.billing.usage import record_campaign_messages
from crm.extensions import db
from crm.tenancy import organization_context
from tests.api import assert_error
from tests.billing.conftest import billing_on  # noqa: F401 - billing connected, as a fixture
from tests.billing.factories import overdue, put_on_plan
from tests.campaigns.factories import (
    act,
    cloud_number,
    counts,
    drive,
    fresh,
    make_template,
    start,
)
from tests.campaigns.test_pacing import csv_campaign
from tests.factories import bearer, login
from tests.foundation import arabic, ident

MONTH = "campaign_messages_per_month"


@pytest.fixture
def number(org):
    profile = cloud_number(org)
    make_template(org, profile)
    return profile


def used_up_to(org, allowed: int, used: int) -> None:
    """`org` on Pro allowing `allowed` campaign messages a month, `used` of them sent."""
    put_on_plan(org, "pro", **{MONTH: allowed})
    with organization_context(ident(org)):
        record_campaign_messages(used)
        db.session.flush()


def month_usage(org) -> int:
    with organization_context(ident(org)):
        return gate.usage(MONTH)


def test_each_message_sent_counts_once_in_the_months_usage(
        app, org, number, graph, clock, billing_on):  # noqa: F811
    """Four recipients sent: four campaign messages in this hour's usage record."""
    put_on_plan(org, "pro")
    campaign = csv_campaign(org, number, 4)

    start(org, campaign)
    drive(app, clock)

    assert len(graph.sends()) == 4
    assert fresh(org, campaign).status == "completed"
    with organization_context(ident(org)):
        assert db.session.scalars(select(UsageRecord.campaign_messages)).all() == [4]


def test_with_three_messages_left_three_of_five_are_sent_and_the_campaign_pauses_saying_why(
        app, client, org, number, graph, clock, billing_on):  # noqa: F811
    """The plan allows 10 a month and 7 are used: 3 are sent, the campaign pauses itself
    with the reason (10 of 10), and the page offers the admin the upgrade."""
    used_up_to(org, allowed=10, used=7)
    campaign = csv_campaign(org, number, 5)
    login(client, org.admin)

    start(org, campaign)
    drive(app, clock)

    assert len(graph.sends()) == 3
    stored = fresh(org, campaign)
    assert (stored.status, stored.pause_reason) == ("paused", "plan_limit")
    assert counts(org, campaign)["queued"] == 2
    assert month_usage(org) == 10
    page = client.get(f"/campaigns/{ident(campaign)}").get_data(as_text=True)
    assert "استُنفدت رسائل الحملات في باقتك لهذا الشهر (10 من 10)" in page
    assert 'href="/billing"' in page


def test_starting_or_resuming_when_the_month_is_used_up_is_refused_with_plan_limit(
        app, client, org, number, graph, clock, billing_on):  # noqa: F811
    """Nothing left this month: the start page answers 402 saying so, nothing is sent; a
    paused campaign cannot be resumed either."""
    used_up_to(org, allowed=5, used=5)
    campaign = csv_campaign(org, number, 2)
    login(client, org.admin)

    response = client.post(f"/campaigns/{ident(campaign)}/start")

    assert response.status_code == 402
    assert "plan-refused" in response.get_data(as_text=True)
    assert fresh(org, campaign).status == "draft"
    drive(app, clock)
    assert graph.sends() == []

    put_on_plan(org, "pro", **{MONTH: 6})
    other = csv_campaign(org, number, 2, first=5_600_000)
    start(org, other)
    drive(app, clock)
    assert fresh(org, other).status == "paused"
    with pytest.raises(gate.PlanLimitError) as refused:
        act(org, other, "resume")
    assert refused.value.status == 402
    assert refused.value.fields == {"limit": MONTH, "used": 6, "allowed": 6}


def test_the_refusal_page_of_a_start_leads_back_to_where_the_admin_was(
        app, client, org, number, billing_on):  # noqa: F811
    """The refusal answers the start's POST, at /start: a reload cannot show it again, so it
    links back to the page the button was on (only a page of this site)."""
    used_up_to(org, allowed=5, used=5)
    campaign = csv_campaign(org, number, 2)
    login(client, org.admin)
    edit = f"/campaigns/{ident(campaign)}/edit"

    refused = client.post(f"/campaigns/{ident(campaign)}/start",
                          headers={"Referer": f"http://localhost{edit}#start"})
    elsewhere = client.post(f"/campaigns/{ident(campaign)}/start",
                            headers={"Referer": "https://evil.example/campaigns/1/edit"})

    assert refused.status_code == elsewhere.status_code == 402
    assert f'href="{edit}"' in refused.get_data(as_text=True)
    assert arabic("Back") in refused.get_data(as_text=True)
    assert "evil.example" not in elsewhere.get_data(as_text=True)
    assert arabic("Back") not in elsewhere.get_data(as_text=True)


def test_the_api_refuses_to_start_or_resume_with_the_month_used_up_with_402_plan_limit(
        app, client, org, number, graph, clock, billing_on):  # noqa: F811
    """POST /api/campaigns/<id>/start and /resume answer 402 plan_limit naming the limit,
    what is used and what is allowed, and change nothing: the draft stays a draft, the
    paused campaign stays paused, nothing is sent."""
    put_on_plan(org, "pro", **{MONTH: 2})
    headers = bearer(org.admin)
    draft = csv_campaign(org, number, 2)
    paused = csv_campaign(org, number, 3, first=5_600_000)
    start(org, paused)
    drive(app, clock)
    assert (fresh(org, paused).status, len(graph.sends())) == ("paused", 2)

    for campaign, action in ((draft, "start"), (paused, "resume")):
        response = client.post(f"/api/campaigns/{ident(campaign)}/{action}",
                               headers=headers)
        error = assert_error(response, 402, "plan_limit")
        assert error["fields"] == {"limit": MONTH, "used": 2, "allowed": 2}
    drive(app, clock)

    assert (fresh(org, draft).status, fresh(org, paused).status) == ("draft", "paused")
    assert len(graph.sends()) == 2


def test_a_running_campaign_of_a_read_only_organization_sends_nothing_and_pauses(
        app, org, number, graph, clock, billing_on):  # noqa: F811
    """A payment overdue past the grace: the running campaign pauses, nothing is sent."""
    campaign = csv_campaign(org, number, 3)
    start(org, campaign)
    overdue(org, days=30)

    drive(app, clock)

    assert graph.sends() == []
    stored = fresh(org, campaign)
    assert (stored.status, stored.pause_reason) == ("paused", "read_only")
