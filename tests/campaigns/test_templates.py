"""Message templates synced from the Graph API (the fake one, in Meta's paged shape): on
demand and daily, keeping only what Wasl knows of them."""

from __future__ import annotations

import pytest
from sqlalchemy import update

from crm.campaigns import templates
from crm.campaigns.models import NumberSettings, WhatsAppTemplate
from crm.campaigns.settings import number_settings
from crm.errors import ConflictError
from crm.extensions import db
from crm.models import utcnow
from crm.tenancy import organization_context
from crm.whatsapp.models import WhatsAppProfile
from tests.campaigns.factories import ACCOUNT_ID, cloud_number
from tests.factories import run_jobs, run_recovery
from tests.foundation import ident
from tests.whatsapp.factories import make_profile


def sync(org, profile) -> int:
    with organization_context(ident(org)):
        count = templates.sync_templates(db.session.get(WhatsAppProfile, ident(profile)))
        db.session.flush()
        return count


def stored(org, profile) -> dict[tuple[str, str], WhatsAppTemplate]:
    with organization_context(ident(org)):
        return {(t.name, t.language): t for t in templates.list_templates(
            db.session.get(WhatsAppProfile, ident(profile)))}


def settings_of(org, profile) -> NumberSettings:
    with organization_context(ident(org)):
        return number_settings(db.session.get(WhatsAppProfile, ident(profile)))


def test_every_page_of_templates_is_synced_with_only_the_known_keys(org, graph):
    """130 templates come in two pages (Meta's cursors); each keeps its name, language,
    category, status and components, nothing else Meta sent."""
    number = cloud_number(org)
    for n in range(130):
        graph.add_template(ACCOUNT_ID, f"offer_{n:03d}", "ar" if n % 2 else "en_US",
                           quality_score={"score": "GREEN"})

    assert sync(org, number) == 130

    kept = stored(org, number)
    assert len(kept) == 130
    first = kept[("offer_000", "en_US")]
    assert (first.category, first.status) == ("MARKETING", "APPROVED")
    assert first.components == [{"type": "BODY", "text": "مرحبا {{1}}"},
                                {"type": "BUTTONS", "buttons": [{"type": "QUICK_REPLY",
                                                                 "text": "STOP"}]}]
    pages = [r for r in graph.requests if r.path.endswith("/message_templates")]
    assert len(pages) == 2
    assert pages[0].path == f"/v23.0/{ACCOUNT_ID}/message_templates"
    assert settings_of(org, number).templates_synced_at is not None


def test_a_sync_follows_meta_templates_changed_and_gone(org, graph):
    number = cloud_number(org)
    graph.add_template(ACCOUNT_ID, "kept", status="PENDING")
    graph.add_template(ACCOUNT_ID, "gone")
    sync(org, number)
    graph.templates[ACCOUNT_ID] = [dict(graph.templates[ACCOUNT_ID][0], status="APPROVED")]

    sync(org, number)

    assert {key: t.status for key, t in stored(org, number).items()} == {
        ("kept", "ar"): "APPROVED"}


def test_a_refused_sync_keeps_the_reason_and_the_templates(org, graph):
    """A token Graph no longer takes: the error is kept on the number, the templates synced
    before stay."""
    number = cloud_number(org)
    graph.add_template(ACCOUNT_ID, "kept")
    sync(org, number)
    graph.token = "another-token"

    with pytest.raises(templates.TemplateSyncError):
        sync(org, number)

    assert list(stored(org, number)) == [("kept", "ar")]
    assert "access token" in settings_of(org, number).templates_error


def test_only_cloud_numbers_have_templates(org):
    with pytest.raises(ConflictError):
        sync(org, make_profile(org, "sandbox"))


def test_templates_are_synced_daily_by_the_recovery_job(app, org, graph):
    """A number never synced, or last synced over a day ago, is synced by the next run; one
    synced today is left alone."""
    number = cloud_number(org)
    graph.add_template(ACCOUNT_ID, "daily")

    run_recovery(app)
    run_jobs(app, queues=("default",))
    assert list(stored(org, number)) == [("daily", "ar")]

    graph.add_template(ACCOUNT_ID, "later")
    run_recovery(app)
    run_jobs(app, queues=("default",))
    assert list(stored(org, number)) == [("daily", "ar")]

    with organization_context(ident(org)):
        db.session.execute(update(NumberSettings).values(
            templates_synced_at=utcnow().replace(year=2020)))
    app.extensions["crm.redis"].flushdb()  # the retry guard of the day before
    run_recovery(app)
    run_jobs(app, queues=("default",))
    assert sorted(stored(org, number)) == [("daily", "ar"), ("later", "ar")]
