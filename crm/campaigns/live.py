"""What campaigns push to open pages: progress, completion and status changes.

Only people who may see campaigns (admins and managers, crm/permissions.py) hear them: their
sockets join the organization's campaigns room on connect. Events carry their data
({campaignId, current, total}, {campaignId, results}, {campaignId, status, reason}) and the
fragments the pages swap in (the glue script applies `swaps`): the campaign's progress bar and
status badge (and, with progress, the figures of its funnel on the dashboard), rendered once per
language and aimed at `html[lang=..] #campaign-<id>-...`, so everyone reads them in their own
language; the campaign page refetches its summary on these
events. Progress is sent at most every PROGRESS_INTERVAL seconds per campaign, whichever worker
sends (a Redis key taken with NX); completion and status changes always.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext

from flask import current_app, has_request_context, render_template
from flask_babel import force_locale

from crm.campaigns import reports
from crm.campaigns.labels import STATE_LABELS, STATUS_LABELS
from crm.campaigns.models import Campaign
from crm.extensions import socketio
from crm.i18n import LANGUAGES, RTL_LANGUAGES
from crm.jobs import redis
from crm.keys import key
from crm.permissions import role_allows
from crm.realtime import add_rooms
from crm.transaction import on_commit

PROGRESS_INTERVAL = 0.5  # seconds: at most two progress events a second


def campaigns_room(org_id: int) -> str:
    return f"org:{org_id}:campaigns"


add_rooms(lambda user: [campaigns_room(user.organization_id)]
          if role_allows(user.role, "campaigns", "read") else [])


def _emit(org_id: int, event: str, data: dict, throttle_key: str | None = None,
          fragments: Callable[[], list[dict]] | None = None) -> None:
    """Emit to the organization's campaigns room once the transaction commits; with a
    `throttle_key`, only if no event of that key went out in the last PROGRESS_INTERVAL. The
    `fragments` (swaps) are rendered only when the event does go out."""
    room = campaigns_room(org_id)

    def send() -> None:
        if throttle_key and not redis().set(throttle_key, 1, nx=True,
                                            px=int(PROGRESS_INTERVAL * 1000)):
            return
        socketio.emit(event, {**data, "swaps": fragments()} if fragments else data, to=room)

    on_commit(send)


def _swaps(campaign_id: int, status: str | None, results: dict[str, int] | None,
           funnel: bool = False, pending: str | None = None) -> Callable[[], list[dict]]:
    """The campaign's status badge and progress bar, in every language (what is known; the
    bar says why there are no figures while the list is `pending`, Campaign.list_pending);
    with `funnel`, the dashboard's figures of its funnel too (only progress needs them: the
    card is fetched again after the other events)."""
    def render() -> list[dict]:
        swaps = []
        for language in LANGUAGES:
            scope = f'html[lang="{language}"] #campaign-{campaign_id}'
            if status is not None:
                swaps.append({"target": f"{scope}-status", "html": _render(
                    language, "campaigns/_status.html", campaign_id=campaign_id,
                    status=status)})
            if results is not None:
                swaps.append({"target": f"{scope}-progress", "html": _render(
                    language, "campaigns/_progress.html", campaign_id=campaign_id,
                    progress=reports.progress_of(results, pending))})
            if results is not None and funnel:
                swaps.append({"target": f"{scope}-funnel", "html": _render(
                    language, "campaigns/_funnel_figures.html", campaign_id=campaign_id,
                    results=results, funnel=reports.funnel(results, language in RTL_LANGUAGES),
                    funnel_id=f"campaign-{campaign_id}-funnel",
                    step_id=f"campaign-{campaign_id}-funnel-", state_labels=STATE_LABELS)})
        return swaps

    return render


def _render(language: str, template: str, **context) -> str:
    # A job has no request to render in; a page has.

    with (nullcontext() if has_request_context() else current_app.test_request_context()), \
            force_locale(language):
        return render_template(template, status_labels=STATUS_LABELS, **context)


def _progress_key(org_id: int, campaign_id: int) -> str:
    return key("campaigns", "progress", campaign_id, org=org_id)


def progress_due(org_id: int, campaign_id: int) -> bool:
    """Would a progress event go out now (none in the last PROGRESS_INTERVAL)? Spares
    reading the counts when it would not."""
    return not redis().exists(_progress_key(org_id, campaign_id))


def progress(org_id: int, campaign_id: int, results: dict[str, int]) -> None:
    """campaignProgress {campaignId, current, total}: how many have had their turn."""
    _emit(org_id, "campaignProgress", {
        "campaignId": campaign_id, "current": results["total"] - results["queued"],
        "total": results["total"]}, throttle_key=_progress_key(org_id, campaign_id),
        fragments=_swaps(campaign_id, None, results, funnel=True))


def completed(campaign: Campaign, results: dict[str, int]) -> None:
    """campaignCompleted {campaignId, results}."""
    _emit(campaign.organization_id, "campaignCompleted",
          {"campaignId": campaign.id, "results": results},
          fragments=_swaps(campaign.id, campaign.status, results))


def status_changed(campaign: Campaign, results: dict[str, int] | None = None) -> None:
    """campaignStatus {campaignId, status, reason}: started, paused (by whom or why),
    resumed, cancelled; with the counts when they matter."""
    data = {"campaignId": campaign.id, "status": campaign.status,
            "reason": campaign.pause_reason}
    if results is not None:
        data["results"] = results
    # Read now: the fragments are rendered after the commit.
    _emit(campaign.organization_id, "campaignStatus", data,
          fragments=_swaps(campaign.id, campaign.status, results,
                           pending=campaign.list_pending))
