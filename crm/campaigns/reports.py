"""What a campaign's pages show of its results: progress, the funnel, sends over time.

The counts come from `campaign_results` (kept by the send and status paths, never recounted
here); sends over time is one grouped query on the recipients' attempt times, through
ix_campaign_recipients_attempted. The charts are drawn by the server as SVG (no chart
JavaScript): this module gives their geometry in a fixed view box, mirrored for right-to-left
pages, and the templates draw it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, literal, select

from crm.campaigns.models import COUNTS, Campaign, CampaignRecipient, CampaignResult
from crm.extensions import db

# Sends over time: the finest bucket that keeps the chart at most MAX_BUCKETS bars.
BUCKET_SECONDS = (60, 300, 900, 3600, 6 * 3600, 86400, 7 * 86400)
MAX_BUCKETS = 48
CHART_WIDTH, CHART_HEIGHT = 480, 120
BAR_GAP = 0.2  # of a bar's slot
FUNNEL = ("sent", "delivered", "read", "replied")


@dataclass(frozen=True)
class Progress:
    """How many recipients have had their turn (sent, failed or skipped), of how many."""

    current: int
    total: int
    # The list is not frozen (Campaign.list_pending): the figures are not known yet.
    pending: str | None = None

    @property
    def percent(self) -> int:
        return round(100 * self.current / self.total) if self.total else 0

    @property
    def preparing(self) -> bool:
        """The list is being frozen now."""
        return self.pending == "preparing"


def progress_of(results: dict[str, int], pending: str | None = None) -> Progress:
    """campaignProgress's numbers: whoever is no longer queued has had their turn."""
    return Progress(results["total"] - results["queued"], results["total"], pending)


def results_of(campaign_ids: Iterable[int]) -> dict[int, dict[str, int]]:
    """The counts of several campaigns in one query (a list page's progress bars)."""
    ids = list(campaign_ids)
    if not ids:
        return {}
    rows = db.session.scalars(select(CampaignResult).where(CampaignResult.campaign_id.in_(ids)))
    found = {row.campaign_id: row.as_dict() for row in rows}
    return {campaign_id: found.get(campaign_id, dict.fromkeys(COUNTS, 0))
            for campaign_id in ids}


@dataclass(frozen=True)
class Bar:
    """A bar of a chart in its view box: where it starts inline, how wide and how tall."""

    x: float
    y: float
    width: float
    height: float


@dataclass(frozen=True)
class FunnelStep:
    key: str  # sent, delivered, read, replied
    count: int
    percent: int  # of the recipients sent to (sent itself: of everyone)
    bar: Bar  # in a 100 × 10 view box


def funnel(results: dict[str, int], rtl: bool) -> list[FunnelStep]:
    """sent → delivered → read → replied, each bar as long as its share of those sent."""
    steps = []
    for key in FUNNEL:
        base = results["total"] if key == "sent" else results["sent"]
        share = results[key] / base if base else 0.0
        width = round(100 * min(share, 1.0), 2)
        steps.append(FunnelStep(key, results[key], round(100 * share),
                                Bar(100 - width if rtl else 0, 0, width, 10)))
    return steps


@dataclass(frozen=True)
class TimeBucket:
    start: datetime
    sends: int
    failed: int
    sent_bar: Bar  # what left and did not fail
    failed_bar: Bar  # stacked on top


@dataclass(frozen=True)
class Timeline:
    """Sends per bucket of `bucket` from `start` to `end` (the buckets with none included)."""

    bucket: timedelta
    start: datetime
    end: datetime
    peak: int
    buckets: list[TimeBucket]


def sends_over_time(campaign: Campaign, rtl: bool) -> Timeline | None:
    """How many messages the campaign sent (and how many of them failed) per bucket of time;
    None before its first send."""
    first, last = db.session.execute(
        select(func.min(CampaignRecipient.attempted_at), func.max(CampaignRecipient.attempted_at))
        .where(CampaignRecipient.campaign_id == campaign.id,
               CampaignRecipient.attempted_at.is_not(None))).one()
    if first is None:
        return None
    span = (last - first).total_seconds()
    seconds = next((width for width in BUCKET_SECONDS if span / width < MAX_BUCKETS),
                   BUCKET_SECONDS[-1])
    bucket = timedelta(seconds=seconds)
    start = func.date_bin(literal(bucket), CampaignRecipient.attempted_at, literal(first))
    counted = {row[0]: (row[1], row[2]) for row in db.session.execute(
        select(start, func.count(), func.count().filter(CampaignRecipient.state == "failed"))
        .where(CampaignRecipient.campaign_id == campaign.id,
               CampaignRecipient.attempted_at.is_not(None))
        .group_by(start))}
    slots = int(span // seconds) + 1
    peak = max(sends for sends, _failed in counted.values())
    slot_width = CHART_WIDTH / slots
    buckets = []
    for index in range(slots):
        moment = first + index * bucket
        sends, failed = counted.get(moment, (0, 0))
        x = (CHART_WIDTH - (index + 1) * slot_width if rtl else index * slot_width)
        x += slot_width * BAR_GAP / 2
        width = slot_width * (1 - BAR_GAP)
        sent_height = CHART_HEIGHT * (sends - failed) / peak
        failed_height = CHART_HEIGHT * failed / peak
        buckets.append(TimeBucket(
            moment, sends, failed,
            Bar(round(x, 2), round(CHART_HEIGHT - sent_height, 2), round(width, 2),
                round(sent_height, 2)),
            Bar(round(x, 2), round(CHART_HEIGHT - sent_height - failed_height, 2),
                round(width, 2), round(failed_height, 2))))
    return Timeline(bucket, first, first + slots * bucket, peak, buckets)
