"""The pace of sends, on a fake clock: the number's throughput and the campaign's own rate
(token buckets in Redis, shared by every worker), a linked device's random pause and daily
cap, the messaging limit's 24-hour window, six seconds between two campaign messages to one
person, and quiet hours. Send times are the recipients' `attempted_at`, which the runner takes
from the (fake) clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import update

from crm.campaigns import pacing
from crm.campaigns.models import NumberSettings
from crm.campaigns.settings import update_number_settings
from crm.extensions import db
from crm.tenancy import organization_context
from crm.whatsapp.channels.web import WebChannel
from crm.whatsapp.models import WhatsAppProfile
from tests.campaigns.factories import (
    cloud_number,
    drive,
    make_campaign,
    make_template,
    recipients,
    start,
    template_message,
)
from tests.campaigns.test_audience import upload
from tests.foundation import ident
from tests.whatsapp.factories import make_profile


def numbers_csv(count: int, first: int = 5_500_000) -> str:
    return "phone\n" + "".join(f"05{n:08d}\n" for n in range(first, first + count))


def csv_campaign(org, profile, count: int, first: int = 5_500_000, **data):
    message = data.pop("message", None) or (
        template_message("{name}", "x") if profile.provider == "cloud" else {"text": "x"})
    campaign = make_campaign(org, profile, message=message, **data)
    upload(org, campaign, numbers_csv(count, first))
    return campaign


def send_times(org, campaign) -> list[float]:
    return sorted(r.attempted_at.timestamp() for r in recipients(org, campaign)
                  if r.attempted_at is not None)


def set_number(org, profile, **settings) -> None:
    with organization_context(ident(org)):
        update_number_settings(org.admin, db.session.get(WhatsAppProfile, ident(profile)),
                               settings)
        db.session.flush()


@pytest.fixture
def number(org):
    profile = cloud_number(org)
    make_template(org, profile)
    return profile


def test_the_campaigns_rate_spaces_its_sends(app, org, number, graph, clock):
    """At 600 a minute, ten a second: 31 sends take three seconds, never two within a tenth
    of a second."""
    campaign = csv_campaign(org, number, 31, rate_per_minute=600)

    start(org, campaign)
    drive(app, clock)

    times = send_times(org, campaign)
    gaps = [later - earlier for earlier, later in pairwise(times)]
    assert len(graph.sends()) == 31
    assert min(gaps) >= 0.099
    assert times[-1] - times[0] == pytest.approx(3.0, abs=0.05)


def test_a_second_never_sees_more_than_the_numbers_throughput(app, org, number, graph, clock):
    """Two campaigns on one number at 10 messages a second share its bucket: in any second,
    at most 10 and the small burst, together."""
    set_number(org, number, throughput_per_second=10)
    first = csv_campaign(org, number, 25)
    second = csv_campaign(org, number, 25, first=5_600_000)

    start(org, first)
    start(org, second)
    drive(app, clock)

    times = sorted(send_times(org, first) + send_times(org, second))
    assert len(times) == 50
    busiest = max(sum(1 for t in times if start_ <= t < start_ + 1) for start_ in times)
    assert busiest <= 10 * (1 + pacing.BURST_SECONDS) + 1
    assert times[-1] - times[0] == pytest.approx(49 / 10, abs=0.2)


def test_workers_sharing_a_number_share_its_bucket(app, org, clock):
    """Tokens are taken in Redis: two workers asking for one number at 10 a second get ten a
    second between them."""
    taken = 0
    for _tick in range(100):  # ten seconds, a tenth of a second at a time
        for _worker in range(2):
            taken += pacing.take_token(ident(org), 1, 1, 10, None) == 0
            taken += pacing.take_token(ident(org), 1, 2, 10, None) == 0
        clock.advance(0.1)

    assert taken == pytest.approx(100, abs=2)


def test_a_linked_device_pauses_a_random_8_to_20_seconds_between_messages(
        app, org, clock, monkeypatch):
    """The web number's default pause; each wait ends the runner's slice and schedules the
    next, so no worker sleeps through it."""
    monkeypatch.setattr(WebChannel, "send", lambda self, message: f"web.{message.id}")
    device = make_profile(org, "web")
    campaign = csv_campaign(org, device, 6)

    start(org, campaign)
    scheduled = drive(app, clock)

    times = send_times(org, campaign)
    gaps = [later - earlier for earlier, later in pairwise(times)]
    assert len(times) == 6
    assert all(8 <= gap <= 20.1 for gap in gaps), gaps
    assert scheduled >= 5
    assert max(clock.sleeps, default=0) <= 1


def test_a_linked_device_stops_at_its_daily_cap_until_the_next_day(app, org, clock,
                                                                  monkeypatch):
    """At the cap, the rest waits for midnight in the organization's time zone."""
    monkeypatch.setattr(WebChannel, "send", lambda self, message: f"web.{message.id}")
    device = make_profile(org, "web")
    set_number(org, device, web_daily_cap=3, web_delay_seconds=[1, 1])
    campaign = csv_campaign(org, device, 5)
    start_day = datetime.fromtimestamp(clock.now(), ZoneInfo("Asia/Riyadh")).date()

    start(org, campaign)
    drive(app, clock)

    days = [datetime.fromtimestamp(t, ZoneInfo("Asia/Riyadh")).date()
            for t in send_times(org, campaign)]
    assert days == [start_day] * 3 + [start_day + timedelta(days=1)] * 2


def test_the_messaging_limit_holds_the_rest_for_the_24_hour_window(app, org, number, graph,
                                                                   clock):
    """At the messaging limit of unique people in 24 hours, the next waits until the first
    send leaves the window. (A limit of 3, written directly: Meta's tiers start at 250.)"""
    set_number(org, number, messaging_limit=250)
    with organization_context(ident(org)):
        db.session.execute(update(NumberSettings).values(messaging_limit=3))
    campaign = csv_campaign(org, number, 5)

    start(org, campaign)
    drive(app, clock)

    times = send_times(org, campaign)
    assert len(graph.sends()) == 5
    assert times[2] - times[0] < 60
    assert times[3] - times[0] >= 24 * 3600
    assert times[4] - times[1] >= 24 * 3600


def test_the_window_is_loaded_again_when_redis_lost_it(app, org, clock):
    """Redis came back empty: the day's sends are read from the database."""
    now = datetime.fromtimestamp(clock.now(), UTC)
    sends = [("+966550000001", now - timedelta(hours=23))]

    assert pacing.enter_window(ident(org), 7, "+966550000002", 1, lambda: sends) > 3000
    assert pacing.enter_window(ident(org), 7, "+966550000001", 1, lambda: sends) == 0


def test_one_person_gets_no_two_campaign_messages_within_six_seconds(app, org, number, graph,
                                                                    clock):
    """Two campaigns to the same customer at once: the second waits six seconds for them
    only."""
    first = csv_campaign(org, number, 1)
    second = csv_campaign(org, number, 2)  # the same person, and someone else

    start(org, first)
    start(org, second)
    drive(app, clock)

    [once] = send_times(org, first)
    by_phone = {r.phone: r.attempted_at.timestamp() for r in recipients(org, second)}
    assert by_phone["+966505500000"] - once >= pacing.GAP_SECONDS
    assert by_phone["+966505500001"] - once < pacing.GAP_SECONDS
    assert len(graph.sends()) == 3


def test_quiet_hours_hold_a_running_campaign_until_they_end(app, org, number, graph, clock):
    """Started in the middle of the quiet hours, nothing leaves until they end (local time)."""
    local = datetime.fromtimestamp(clock.now(), ZoneInfo("Asia/Riyadh"))
    quiet = [(local - timedelta(hours=1)).strftime("%H:%M"),
             (local + timedelta(hours=2)).strftime("%H:%M")]
    campaign = csv_campaign(org, number, 2, quiet_hours=quiet)

    start(org, campaign)
    drive(app, clock)

    first = send_times(org, campaign)[0]
    assert first - local.timestamp() == pytest.approx(2 * 3600, abs=60)
    assert len(graph.sends()) == 2
