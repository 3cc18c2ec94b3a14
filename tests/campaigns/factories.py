"""Factories and helpers for the campaigns' tests: numbers, templates and campaigns made
through the real services; the runner driven in-process; Meta's webhooks for what people
write and what WhatsApp says of our messages."""

from __future__ import annotations

import copy
import itertools
import json
from collections.abc import Iterable

from rq import Queue
from rq.job import Job
from rq.registry import ScheduledJobRegistry
from sqlalchemy import select

from crm.campaigns import jobs, services
from crm.campaigns.models import Campaign, CampaignRecipient, WhatsAppTemplate
from crm.extensions import db
from crm.foundation.models import Organization
from crm.tenancy import organization_context
from crm.whatsapp.models import Message, WhatsAppProfile
from tests.factories import run_jobs
from tests.foundation import ident
from tests.whatsapp.factories import make_profile
from tests.whatsapp.fake_graph import TOKEN
from tests.whatsapp.test_cloud import APP_SECRET, deliver, payload

ACCOUNT_ID = "102290129340398"  # the business account of the recorded payloads
_sequence = itertools.count(1)


def cloud_number(org: Organization, **fields) -> WhatsAppProfile:
    """A connected cloud number of `org`, whose token the fake Graph API takes."""
    fields.setdefault("business_account_id", ACCOUNT_ID)
    fields.setdefault("phone_number_id", f"10654035{next(_sequence):07d}")
    return make_profile(org, "cloud", access_token=TOKEN, app_secret=APP_SECRET, **fields)


def make_template(org: Organization, profile: WhatsAppProfile, name: str = "spring_offer",
                  language: str = "ar", body: str = "مرحبا {{1}}، عرض {{2}}",
                  status: str = "APPROVED") -> WhatsAppTemplate:
    """A template of the number, as a sync keeps it."""
    with organization_context(ident(org)):
        template = WhatsAppTemplate(profile_id=ident(profile), name=name, language=language,
                                    category="MARKETING", status=status,
                                    components=[{"type": "BODY", "text": body}])
        db.session.add(template)
        db.session.flush()
    return template


def make_campaign(org: Organization, profile: WhatsAppProfile, **data) -> Campaign:
    """A draft of `org`'s admin on `profile` (data: the service's fields)."""
    data.setdefault("name", f"Campaign {next(_sequence)}")
    with organization_context(ident(org)):
        campaign = services.create_campaign(org.admin, {"profile_id": ident(profile), **data})
        db.session.flush()
    return campaign


def template_message(*parameters: str, name: str = "spring_offer", language: str = "ar"
                     ) -> dict:
    return {"template": {"name": name, "language": language, "parameters": list(parameters)}}


def start(org: Organization, campaign: Campaign) -> Campaign:
    return act(org, campaign, "start")


def act(org: Organization, campaign: Campaign, action: str) -> Campaign:
    """An admin starts, pauses, resumes or cancels the campaign (written at once, while the
    organization is set)."""
    function = getattr(services, f"{action}_campaign")
    with organization_context(ident(org)):
        campaign = function(org.admin, db.session.get(Campaign, ident(campaign)))
        db.session.flush()
        return campaign


def drive(app, clock, max_runs: int = 1000) -> int:
    """Run the campaigns' jobs in this process until none waits: queued ones at once (event
    subscribers' too), scheduled ones (a runner's next slice, a scheduled start) once the
    fake clock has jumped to their time. How many scheduled jobs it waited for."""
    connection = app.extensions["crm.redis"]
    queue = Queue(jobs.QUEUE, connection=connection)
    registry = ScheduledJobRegistry(queue=queue)
    for waited in range(max_runs):
        run_jobs(app, queues=(jobs.QUEUE, "whatsapp", "default"))
        due = connection.zrange(registry.key, 0, 0, withscores=True)
        if not due:
            return waited
        job_id, moment = due[0][0].decode(), due[0][1]
        clock.advance_to(moment)
        registry.remove(job_id)
        queue.enqueue_job(Job.fetch(job_id, connection=connection))
    raise AssertionError(f"the campaign was still running after {max_runs} scheduled slices")


def fresh(org: Organization, campaign: Campaign) -> Campaign:
    """The campaign as stored now."""
    with organization_context(ident(org)):
        return db.session.scalar(select(Campaign).where(Campaign.id == ident(campaign))
                                 .execution_options(populate_existing=True))


def recipients(org: Organization, campaign: Campaign) -> list[CampaignRecipient]:
    """The campaign's recipients as stored now, in sending order."""
    with organization_context(ident(org)):
        return list(db.session.scalars(
            select(CampaignRecipient).where(CampaignRecipient.campaign_id == ident(campaign))
            .order_by(CampaignRecipient.id).execution_options(populate_existing=True)))


def states(org: Organization, campaign: Campaign) -> dict[str, str]:
    """phone (or the raw text listed) → state."""
    return {r.phone or r.raw_phone or "": r.state for r in recipients(org, campaign)}


def counts(org: Organization, campaign: Campaign) -> dict[str, int]:
    with organization_context(ident(org)):
        return services.campaign_results(db.session.get(Campaign, ident(campaign)))


def sent_to(graph) -> list[str]:
    """The numbers (E.164) the fake Graph API was asked to send to, in order."""
    return [f"+{body['to']}" for body in graph.sends()]


def messages_of(org: Organization, recipient: CampaignRecipient) -> Message:
    with organization_context(ident(org)):
        return db.session.get(Message, recipient.message_id)


def _number_id(org: Organization, profile: WhatsAppProfile) -> str:
    """Meta's id of the number (read afresh: a commit expires the profile)."""
    with organization_context(ident(org)):
        return db.session.get(WhatsAppProfile, ident(profile)).phone_number_id


def customer_says(client, org: Organization, profile: WhatsAppProfile, phone: str,
                  text: str = "", button_payload: str | None = None) -> None:
    """`phone` writes `text` to the number (or taps a quick-reply button with that label and
    `button_payload`), delivered as Meta's webhook; the jobs that follow run."""
    delivery = json.loads(payload("text"))
    value = delivery["entry"][0]["changes"][0]["value"]
    value["metadata"]["phone_number_id"] = _number_id(org, profile)
    value["contacts"] = [{"profile": {"name": "Customer"}, "wa_id": phone.lstrip("+")}]
    message = value["messages"][0]
    message.update({"from": phone.lstrip("+"), "id": f"wamid.IN{next(_sequence):010d}"})
    message.pop("from_user_id")
    if button_payload is not None:
        del message["text"]
        message.update(type="button", button={"text": text, "payload": button_payload})
    else:
        message["text"] = {"body": text}
    deliver(client, f"/webhooks/whatsapp/{ident(profile)}", json.dumps(delivery).encode())
    run_jobs(client.application, queues=("default", "whatsapp"))


def whatsapp_says(client, org: Organization, profile: WhatsAppProfile,
                  statuses: Iterable[tuple[str, str, int]], error_code: int | None = None
                  ) -> None:
    """Meta's status webhook for our messages: (wamid, status, our message id) each."""
    delivery = json.loads(payload("status", wamid="x", status="sent", our_id="0",
                                  timestamp="1749417000"))
    value = delivery["entry"][0]["changes"][0]["value"]
    value["metadata"]["phone_number_id"] = _number_id(org, profile)
    template = value["statuses"][0]
    value["statuses"] = []
    for wamid, status, our_id in statuses:
        entry = copy.deepcopy(template)
        entry.update(id=wamid, status=status, biz_opaque_callback_data=str(our_id))
        if error_code is not None and status == "failed":
            entry["errors"] = [{"code": error_code, "title": "Message undeliverable",
                                "message": "Message undeliverable",
                                "error_data": {"details": "Unable to deliver message."}}]
        value["statuses"].append(entry)
    deliver(client, f"/webhooks/whatsapp/{ident(profile)}", json.dumps(delivery).encode())


def without_swaps(data: dict) -> dict:
    """A campaign event's data without the rendered fragments it carries for the pages."""
    return {key: value for key, value in data.items() if key != "swaps"}
