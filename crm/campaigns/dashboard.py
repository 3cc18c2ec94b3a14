"""Campaigns on the dashboard, for those who see campaigns (admins and managers): those sending,
paused or scheduled now with their progress (and the funnel of those sending or paused), and the
last one completed with its funnel.

One statement whatever the number of campaigns: the active ones through `ix_campaigns_active`
(an organization runs a handful at once) and the last completed through `ix_campaigns_recent`,
each with its counts from `campaign_results` (kept by the send paths, never recounted here).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, or_, select

from crm.campaigns import reports
from crm.campaigns.labels import STATE_LABELS, STATUS_LABELS
from crm.campaigns.models import COUNTS, Campaign, CampaignResult
from crm.extensions import db
from crm.foundation.views import DashboardCard, add_dashboard_card
from crm.i18n import text_direction

# Socket.IO events after which the card is fetched again (crm/campaigns/live.py); the
# progress bars also move by themselves, swapped in by campaignProgress.
EVENTS = ("campaignStatus", "campaignCompleted")
ACTIVE = ("running", "paused", "scheduled")
ACTIVE_READ = 100  # more at once than any organization runs: the count stays exact
SHOWN = 3  # active campaigns the card names


@dataclass(frozen=True)
class CampaignLine:
    """A campaign with its counts (COUNTS)."""

    campaign: Campaign
    results: dict[str, int]

    @property
    def progress(self) -> reports.Progress:
        return reports.progress_of(self.results, self.campaign.list_pending)


def campaign_lines() -> tuple[list[CampaignLine], CampaignLine | None]:
    """Campaigns sending, paused or waiting for their time, newest first; and the campaign
    completed last (the newest of those completed), if any. One statement."""
    last_completed = (select(func.max(Campaign.id)).where(Campaign.status == "completed")
                      .scalar_subquery())
    rows = db.session.execute(
        select(Campaign, CampaignResult)
        .outerjoin(CampaignResult, CampaignResult.campaign_id == Campaign.id)
        .where(or_(Campaign.status.in_(ACTIVE), Campaign.id == last_completed))
        .order_by(Campaign.id.desc()).limit(ACTIVE_READ + 1))
    lines = [CampaignLine(campaign, result.as_dict() if result else dict.fromkeys(COUNTS, 0))
             for campaign, result in rows]
    active = [line for line in lines if line.campaign.status in ACTIVE]
    last = next((line for line in lines if line.campaign.status == "completed"), None)
    return active, last


def _campaigns_card() -> dict:
    active, last = campaign_lines()
    rtl = text_direction() == "rtl"
    return {"counts": {status: sum(line.campaign.status == status for line in active)
                       for status in ACTIVE},
            "active": active[:SHOWN], "last": last,
            "funnel": reports.funnel(last.results, rtl) if last else [],
            # Those whose list is frozen (sending, or paused since) have their figures, read
            # in the same row as their progress.
            "funnels": {line.campaign.id: reports.funnel(line.results, rtl)
                        for line in active[:SHOWN] if line.campaign.frozen_at is not None},
            "status_labels": STATUS_LABELS, "state_labels": STATE_LABELS}


add_dashboard_card(DashboardCard("campaigns/_dashboard_card.html", "campaigns", "read",
                                 _campaigns_card, EVENTS, order=50))
