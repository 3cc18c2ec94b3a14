"""WhatsApp message templates of cloud numbers, synced from the Graph API.

A cloud number may start a conversation only with a template Meta approved. `sync_templates`
reads the business account's templates (GET /{business_account_id}/message_templates, every
page), keeps them as Meta lists them, and forgets those Meta no longer lists; it runs when an
admin asks and daily (the recovery job enqueues `jobs.sync_templates` for numbers last synced
over a day ago). A campaign keeps the name, language and parameters it chose, so a template
that disappears or loses its approval is caught when the campaign starts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from flask_babel import gettext as _
from sqlalchemy import delete, select, tuple_
from sqlalchemy.dialects.postgresql import insert

from crm.campaigns.models import WhatsAppTemplate
from crm.campaigns.rendering import placeholder_count, template_body
from crm.campaigns.settings import number_settings_row
from crm.errors import ConflictError
from crm.extensions import db
from crm.models import utcnow
from crm.transaction import keep_on_error
from crm.whatsapp.channels import channel_for
from crm.whatsapp.channels.base import ChannelError
from crm.whatsapp.models import WhatsAppProfile

log = logging.getLogger("crm.campaigns")
SYNC_EVERY = timedelta(days=1)
APPROVED = "APPROVED"


class TemplateSyncError(ConflictError):
    """The Graph API refused or could not be reached; the reason is kept on the number."""


def list_templates(profile: WhatsAppProfile, approved_only: bool = False
                   ) -> list[WhatsAppTemplate]:
    """The number's templates by name and language (only approved ones, if asked)."""
    query = select(WhatsAppTemplate).where(WhatsAppTemplate.profile_id == profile.id)
    if approved_only:
        query = query.where(WhatsAppTemplate.status == APPROVED)
    return list(db.session.scalars(query.order_by(WhatsAppTemplate.name,
                                                  WhatsAppTemplate.language)))


@dataclass(frozen=True)
class TemplateChoice:
    """A template as forms offer it: its body's text and how many parameters it takes."""

    id: int
    name: str
    language: str
    category: str
    status: str
    body: str
    parameters: int


def template_choices(profile: WhatsAppProfile, approved_only: bool = False
                     ) -> list[TemplateChoice]:
    """The number's templates as forms offer them (a campaign's message, the inbox's
    composer once the 24-hour window has closed); none for numbers other than cloud ones."""
    if profile.provider != "cloud":
        return []
    return [TemplateChoice(t.id, t.name, t.language, t.category, t.status,
                           template_body(t.components),
                           placeholder_count(template_body(t.components)))
            for t in list_templates(profile, approved_only)]


def find_template(profile_id: int, name: str, language: str) -> WhatsAppTemplate | None:
    return db.session.scalar(select(WhatsAppTemplate).where(
        WhatsAppTemplate.profile_id == profile_id, WhatsAppTemplate.name == name,
        WhatsAppTemplate.language == language))


def sync_templates(profile: WhatsAppProfile) -> int:
    """Read the number's templates from the Graph API and keep exactly those; how many.

    A refusal or an unreachable Graph API is kept on the number (`templates_error`, committed
    even though the request fails) and raised as TemplateSyncError; the templates synced
    before stay.
    """
    if profile.provider != "cloud":
        raise ConflictError(_("Only WhatsApp Cloud API numbers have message templates."))
    settings = number_settings_row(profile)
    try:
        listed = channel_for(profile).list_templates()
    except ChannelError as exc:
        settings.templates_error = exc.message[:500]
        keep_on_error()
        log.warning("templates of number %s not synced: %s (%s)", profile.id, exc.message,
                    exc.code)
        raise TemplateSyncError(_("WhatsApp did not give the templates: %(reason)s",
                                  reason=exc.message)) from None
    now = utcnow()
    rows = {(template["name"], template["language"]): {
        "organization_id": profile.organization_id, "profile_id": profile.id,
        "meta_id": template.get("id"), "name": template["name"],
        "language": template["language"], "category": template.get("category", ""),
        "status": template.get("status", ""), "components": template["components"],
        "synced_at": now} for template in listed}
    if rows:
        statement = insert(WhatsAppTemplate).values(list(rows.values()))
        db.session.execute(statement.on_conflict_do_update(
            constraint="uq_whatsapp_templates_name_language",
            set_={column: statement.excluded[column]
                  for column in ("meta_id", "category", "status", "components", "synced_at")}))
    db.session.execute(
        delete(WhatsAppTemplate).where(
            WhatsAppTemplate.profile_id == profile.id,
            tuple_(WhatsAppTemplate.name, WhatsAppTemplate.language).not_in(list(rows))
            if rows else WhatsAppTemplate.profile_id == profile.id)
        .execution_options(synchronize_session=False))
    settings.templates_synced_at, settings.templates_error = now, None
    log.info("%d templates of number %s synced", len(rows), profile.id)
    return len(rows)
