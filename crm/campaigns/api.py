"""The campaigns' JSON API: campaigns, their lifecycle and results, and the templates of the
numbers they go from. Thin: every read and write is a service (crm/campaigns/services.py,
templates.py); bodies and answers are declared in crm/campaigns/schemas.py.

Admins and managers read and write (campaigns: write); agents and members get 403, and an
organization with campaigns switched off 404, as for the pages."""

from __future__ import annotations

from flask import Response
from flask_babel import lazy_gettext
from flask_login import current_user

from crm.api.conditional import answer_stale_with, if_match, tagged
from crm.api.helpers import decode_cursor, encode_cursor
from crm.api.kit import Page, answer, no_content, parse, parse_query
from crm.api.openapi import Endpoints
from crm.campaigns import schemas, services, templates
from crm.campaigns.models import Campaign
from crm.foundation.models import User
from crm.permissions import require
from crm.whatsapp.profiles import access_profile

campaigns = Endpoints("campaigns", lazy_gettext("Campaigns"))
answer_stale_with(Campaign, schemas.Campaign)

_CREATE = ("A text to a cloud number is refused (422 on `message`): the Cloud API starts "
           "conversations only with a template WhatsApp approved. An audience from a CSV file "
           "is uploaded on the campaign's page.")
_START = ("Now, or at `scheduled_at`. Everything is checked again first (422: the number is "
          "not connected, the audience is empty, the template lost its approval). 409 when "
          "it has started already: a second start does nothing.")
_PAUSE = ("Answers once nothing of the campaign is on its way: after it, nothing more is "
          "sent. 409 unless it is running or scheduled.")


def _me() -> User:
    return current_user._get_current_object()


def _answer(campaign: Campaign) -> Response:
    """The campaign with its version as ETag (GET and PATCH, which take If-Match)."""
    return tagged(answer(schemas.Campaign, campaign), campaign)


# -- campaigns ------------------------------------------------------------------------------

@campaigns.get("/campaigns", "Campaigns, newest first", query=schemas.CampaignQuery,
               answers={200: Page[schemas.Campaign]})
@require("campaigns", "read")
def list_campaigns() -> Response:
    query = parse_query(schemas.CampaignQuery)
    rows, last = services.list_campaigns(query.status, decode_cursor(query.cursor), query.limit)
    return answer(Page[schemas.Campaign], {"items": rows, "next_cursor": encode_cursor(last)})


@campaigns.post("/campaigns", "Draft a campaign", body=schemas.NewCampaign,
                answers={201: schemas.Campaign}, description=_CREATE)
@require("campaigns", "write")
def create_campaign() -> Response:
    body = parse(schemas.NewCampaign)
    campaign = services.create_campaign(_me(), body.model_dump(exclude_unset=True))
    return answer(schemas.Campaign, campaign, 201)


@campaigns.get("/campaigns/<int:campaign_id>", "One campaign", answers={200: schemas.Campaign},
               etag=True)
@require("campaigns", "read")
def show_campaign(campaign_id: int) -> Response:
    return _answer(services.access_campaign(campaign_id))


@campaigns.patch("/campaigns/<int:campaign_id>", "Change a draft (only the fields sent)",
                 body=schemas.CampaignChange, answers={200: schemas.Campaign}, errors=(409,),
                 etag=True, description="409 once the campaign has left its draft.")
@require("campaigns", "write")
def update_campaign(campaign_id: int) -> Response:
    campaign = services.access_campaign(campaign_id)
    body = parse(schemas.CampaignChange)
    services.update_campaign(_me(), campaign, body.model_dump(exclude_unset=True),
                             expected_version=if_match())
    return _answer(campaign)


@campaigns.delete("/campaigns/<int:campaign_id>", "Delete a draft", answers={204: None},
                  errors=(409,), description="409 once the campaign has left its draft.")
@require("campaigns", "write")
def delete_campaign(campaign_id: int) -> Response:
    services.delete_campaign(_me(), services.access_campaign(campaign_id))
    return no_content()


def _lifecycle(action: str, summary: str, description: str, errors: tuple[int, ...] = (409,)
               ) -> None:
    """Route POST /campaigns/<id>/<action> to services.<action>_campaign."""
    act = getattr(services, f"{action}_campaign")

    def view(campaign_id: int) -> Response:
        return answer(schemas.Campaign, act(_me(), services.access_campaign(campaign_id)))

    view.__name__ = f"{action}_campaign"
    campaigns.post(f"/campaigns/<int:campaign_id>/{action}", summary,
                   answers={200: schemas.Campaign}, errors=errors, description=description)(
        require("campaigns", "write")(view))


_lifecycle("start", "Start a draft", _START, errors=(409, 422))
_lifecycle("pause", "Pause a running or scheduled campaign", _PAUSE)
_lifecycle("resume", "Resume a paused campaign where it stopped",
           "409 unless it is paused.")
_lifecycle("cancel", "Cancel for good: what was sent stays sent, the rest is skipped",
           "Answers once nothing of the campaign is on its way. 409 unless it is scheduled, "
           "running or paused.")


@campaigns.get("/campaigns/<int:campaign_id>/results", "A campaign's counts and its "
               "recipients, each with its state and reason", query=schemas.ResultsQuery,
               answers={200: schemas.Results})
@require("campaigns", "read")
def campaign_results(campaign_id: int) -> Response:
    campaign = services.access_campaign(campaign_id)
    query = parse_query(schemas.ResultsQuery)
    rows, last = services.list_recipients(campaign, query.state, decode_cursor(query.cursor),
                                          query.limit)
    return answer(schemas.Results, {"counts": services.campaign_results(campaign),
                                    "items": rows, "next_cursor": encode_cursor(last)})


# -- templates ------------------------------------------------------------------------------
# Kept by the campaigns module, for the campaigns: their guard, inside WhatsApp's switch.

@campaigns.get("/whatsapp/profiles/<int:profile_id>/templates", "A cloud number's message "
               "templates, as last synced", answers={200: schemas.TemplatePage})
@require("campaigns", "read")
@require("whatsapp", "read")
def list_templates(profile_id: int) -> Response:
    profile = access_profile(profile_id)
    return answer(schemas.TemplatePage,
                  {"items": templates.list_templates(profile), "next_cursor": None})


@campaigns.post("/whatsapp/profiles/<int:profile_id>/templates/sync", "Read the number's "
                "templates from WhatsApp now (they are also synced daily)",
                answers={200: schemas.TemplatePage}, errors=(409,), description=(
                    "409 for a number that is not a Cloud API one, or when the Graph API "
                    "refuses or cannot be reached (the message says why)."))
@require("campaigns", "write")
@require("whatsapp", "read")
def sync_templates(profile_id: int) -> Response:
    profile = access_profile(profile_id)
    templates.sync_templates(profile)
    return answer(schemas.TemplatePage,
                  {"items": templates.list_templates(profile), "next_cursor": None})
