"""Campaign pages as browsers (plain and htmx) use them: the list, the draft's steps with its
preview, starting and stopping, the live results with their charts and recipients, consent on
the customer page, the consent and sending settings; who may see them, and cross-organization
probes."""

from __future__ import annotations

import csv
import gc
import io
import re
import tracemalloc
from datetime import timedelta

import pytest
from flask_babel import force_locale, gettext, ngettext, pgettext
from markupsafe import Markup, escape
from sqlalchemy import select

from crm.campaigns import audience, consent, live
from crm.campaigns.models import Campaign, NumberSettings
from crm.customers.models import Customer
from crm.extensions import db, socketio
from crm.foundation import services as foundation_services
from crm.models import utcnow
from crm.tenancy import organization_context
from tests.campaigns.factories import (
    ACCOUNT_ID,
    act,
    cloud_number,
    customer_says,
    drive,
    fresh,
    make_campaign,
    make_template,
    recipients,
    start,
)
from tests.customers.factories import make_customer, make_segment
from tests.factories import login, make_user
from tests.foundation import HTMX, arabic, audit_actions, ident
from tests.queries import count_queries
from tests.whatsapp.factories import make_profile


@pytest.fixture
def admin(client, org):
    """The organization's admin, logged in."""
    login(client, org.admin)
    return org.admin


@pytest.fixture
def sandbox(org):
    return make_profile(org, "sandbox", display_name="متجر التجربة")


def text_campaign(org, profile, *, customers=(), **data):
    """A sandbox draft to the given customers with a text."""
    data.setdefault("message", {"text": "مرحبا {first_name}"})
    if customers:
        data.setdefault("audience", {"customer_ids": [ident(c) for c in customers]})
    return make_campaign(org, profile, **data)


def in_arabic(context: str, message: str) -> str:
    """A label with a context (pgettext) as an Arabic page shows it."""
    with force_locale("ar"):
        return str(escape(pgettext(context, message)))


def row_ids(html: str) -> list[int]:
    return [int(n) for n in re.findall(r'<tr id="campaign-(\d+)"', html)]


def recipient_ids(html: str) -> list[int]:
    return [int(n) for n in re.findall(r'<tr id="recipient-(\d+)"', html)]


def sent_by_sandbox(app, clock) -> None:
    """Run the campaigns' jobs until none waits (the sandbox sends at once)."""
    drive(app, clock)


# -- the list ---------------------------------------------------------------------------------

def test_the_list_shows_the_organizations_campaigns_with_status_and_progress(
        client, org, other_org, admin, sandbox):
    """Each campaign shows its status and its progress (a draft: that its list is prepared
    when it starts, not «0 of 0»); another organization's campaigns never appear; the
    sidebar has the entry."""
    mine = text_campaign(org, sandbox, name="عروض رمضان")
    theirs = make_campaign(other_org, make_profile(other_org, "sandbox"), name="Stranger")
    page = client.get("/campaigns/")
    assert page.status_code == 200
    assert row_ids(page.text) == [ident(mine)]
    assert "عروض رمضان" in page.text
    assert "Stranger" not in page.text
    assert f'id="campaign-{ident(mine)}-status"' in page.text
    assert f'id="campaign-{ident(mine)}-progress"' in page.text
    assert arabic("The list of recipients is prepared when the campaign starts.") in page.text
    assert in_arabic("campaign status", "Draft") in page.text
    assert 'href="/campaigns/"' in page.text
    assert arabic("Campaigns") in page.text
    assert client.get(f"/campaigns/{ident(theirs)}").status_code == 404


def test_an_empty_list_invites_to_create_the_first_campaign(client, org, admin):
    page = client.get("/campaigns/")
    assert arabic("No campaigns yet.") in page.text
    assert 'href="/campaigns/new"' in page.text


def test_search_ignores_arabic_letter_variants_and_status_filters(client, org, admin, sandbox):
    """Typing swaps the rows in: «احمد» finds «أحمد»; the status filter narrows the list."""
    ahmad = text_campaign(org, sandbox, name="تخفيضات أحمد")
    other = text_campaign(org, sandbox, name="Other")
    rows = client.get("/campaigns/", query_string={"q": "احمد"}, headers=HTMX)
    assert "<html" not in rows.text
    assert row_ids(rows.text) == [ident(ahmad)]
    rows = client.get("/campaigns/", query_string={"status": "running"}, headers=HTMX)
    assert row_ids(rows.text) == []
    assert arabic("No campaign matches these filters.") in rows.text
    assert row_ids(client.get("/campaigns/").text) == [ident(other), ident(ahmad)]


def test_the_list_pages_with_a_constant_number_of_queries(client, org, admin, sandbox):
    """25 campaigns a page, with their numbers and progress, in the same queries as 1."""
    for n in range(30):
        text_campaign(org, sandbox, name=f"Campaign {n}")
    client.get("/campaigns/")  # warm: the session, the organization
    with count_queries() as many:
        page = client.get("/campaigns/", headers=HTMX)
    assert len(row_ids(page.text)) == 25
    after = re.search(r"cursor=(\d+)", page.text).group(1)
    rest = client.get(f"/campaigns/?cursor={after}", headers=HTMX)
    assert len(row_ids(rest.text)) == 5
    assert len(many) <= 8, many


@pytest.mark.parametrize("role", ["agent", "member"])
def test_agents_and_members_see_nothing_of_campaigns(client, org, sandbox, role):
    """No sidebar entry, 403 on every page, no consent card on the customer page."""
    campaign = text_campaign(org, sandbox)
    customer = make_customer(org, name="سارة", phone="0501234567")
    login(client, make_user(org, role))
    assert client.get("/campaigns/").status_code == 403
    assert client.get(f"/campaigns/{ident(campaign)}").status_code == 403
    assert client.post(f"/campaigns/{ident(campaign)}/start").status_code == 403
    dashboard = client.get("/")
    assert 'href="/campaigns/"' not in dashboard.text
    page = client.get(f"/customers/{ident(customer)}")
    assert page.status_code == 200
    assert 'id="consent"' not in page.text


def test_a_manager_runs_campaigns_but_not_the_admins_settings(client, org, sandbox):
    login(client, make_user(org, "manager"))
    assert client.get("/campaigns/").status_code == 200
    assert client.get("/campaigns/new").status_code == 200
    assert client.get("/campaigns/settings").status_code == 403
    assert client.get("/campaigns/consent.csv").status_code == 403


# -- a draft, step by step --------------------------------------------------------------------

def test_a_draft_is_built_step_by_step_previewed_and_started(app, client, org, admin, sandbox,
                                                              clock):
    """Name and number, then a tag audience, a text with variables, a preview for a chosen
    customer as a bubble, and the start: the campaign runs and the page shows its results."""
    sara = make_customer(org, name="سارة العتيبي", phone="0501234567", tags=["vip"],
                         company="مخبز النور")
    make_customer(org, name="Omar Said", phone="0501234568", tags=["vip"])
    make_customer(org, name="Not tagged", phone="0501234569")

    created = client.post("/campaigns/new", data={"name": "عرض الجمعة",
                                                  "profile_id": ident(sandbox)})
    assert created.status_code == 303
    campaign_id = int(re.search(r"/campaigns/(\d+)/edit", created.location).group(1))
    edit = client.get(f"/campaigns/{campaign_id}/edit")
    assert edit.status_code == 200
    version = re.search(r'name="version" value="(\d+)"', edit.text).group(1)

    saved = client.post(f"/campaigns/{campaign_id}/edit", data={
        "step": "audience", "version": version, "audience_kind": "tag", "tag": "vip"})
    assert saved.status_code == 303
    assert saved.location.endswith("#message")
    version = str(int(version) + 1)
    saved = client.post(f"/campaigns/{campaign_id}/edit", data={
        "step": "message", "version": version,
        "text": "مرحبا {first_name} من *{company}*"})
    assert saved.status_code == 303

    page = client.get(f"/campaigns/{campaign_id}/edit")
    assert "2 " in page.text
    assert arabic("A tag") in page.text
    preview = client.get(f"/campaigns/{campaign_id}/preview",
                         query_string={"customer_id": ident(sara)}, headers=HTMX)
    assert preview.status_code == 200
    assert 'class="bubble bubble-in preview-bubble"' in preview.text
    assert "مرحبا سارة من <strong>مخبز النور</strong>" in preview.text

    started = client.post(f"/campaigns/{campaign_id}/start")
    assert started.status_code == 303
    assert started.location.endswith(f"/campaigns/{campaign_id}")
    assert fresh(org, db.session.get(Campaign, campaign_id)).status == "running"
    sent_by_sandbox(app, clock)

    results = client.get(f"/campaigns/{campaign_id}")
    assert results.status_code == 200
    assert in_arabic("campaign status", "Completed") in results.text
    assert '<progress max="2" value="2"' in results.text
    assert len(recipient_ids(results.text)) == 2
    assert "campaign.started" in audit_actions(org)


def test_a_mistake_in_a_step_is_shown_beside_its_field_and_changes_nothing(client, org, admin,
                                                                          sandbox):
    campaign = text_campaign(org, sandbox)
    answer = client.post(f"/campaigns/{ident(campaign)}/edit", data={
        "step": "message", "text": "مرحبا {nom}"})
    assert answer.status_code == 422
    assert 'aria-invalid="true" aria-describedby="error-message"' in answer.text
    assert "{nom}" in answer.text
    assert fresh(org, campaign).message == {"text": "مرحبا {first_name}"}


def test_starting_an_unfinished_draft_says_what_is_missing(client, org, admin, sandbox):
    campaign = make_campaign(org, sandbox)
    answer = client.post(f"/campaigns/{ident(campaign)}/start")
    assert answer.status_code == 422
    assert arabic("Finish the steps marked below before starting.") in answer.text
    assert arabic("Choose a segment, a tag or customers.") in answer.text
    assert fresh(org, campaign).status == "draft"


def test_a_segment_or_hand_picked_customers_make_the_audience(client, org, admin, sandbox):
    """The segment select lists the organization's segments; the customer search ticks
    customers in, found by any spelling of their name."""
    segment = make_segment(org, name="كبار العملاء", tag="vip")
    ahmad = make_customer(org, name="أحمد", phone="0501234567")
    campaign = make_campaign(org, sandbox)
    page = client.get(f"/campaigns/{ident(campaign)}/edit")
    assert "كبار العملاء" in page.text
    found = client.get(f"/campaigns/{ident(campaign)}/customers", query_string={"q": "احمد"},
                       headers=HTMX)
    assert f'name="customer_ids" value="{ident(ahmad)}"' in found.text
    client.post(f"/campaigns/{ident(campaign)}/edit", data={
        "step": "audience", "audience_kind": "customer_ids",
        "customer_ids": [str(ident(ahmad))]})
    assert fresh(org, campaign).audience == {"customer_ids": [ident(ahmad)]}
    client.post(f"/campaigns/{ident(campaign)}/edit", data={
        "step": "audience", "audience_kind": "segment_id", "segment_id": str(ident(segment))})
    assert fresh(org, campaign).audience == {"segment_id": ident(segment)}


def test_a_csv_file_of_numbers_is_the_audience(client, org, admin, sandbox):
    campaign = make_campaign(org, sandbox)
    data = "phone,name\n0501234567,سارة\n0501234568,عمر\nnot a number,x\n".encode()
    answer = client.post(f"/campaigns/{ident(campaign)}/audience",
                         data={"file": (io.BytesIO(data), "numbers.csv")},
                         content_type="multipart/form-data")
    assert answer.status_code == 303
    assert fresh(org, campaign).audience["csv"]["rows"] == 3
    page = client.get(f"/campaigns/{ident(campaign)}/edit")
    assert "numbers.csv" in page.text
    refused = client.post(f"/campaigns/{ident(campaign)}/audience",
                          data={"file": (io.BytesIO(b"x"), "numbers.xlsx")},
                          content_type="multipart/form-data")
    assert refused.status_code == 422
    assert arabic("Upload a CSV file (in Excel: Save as, CSV UTF-8).") in refused.text


@pytest.mark.parametrize("rows", [1, 3, 12])
def test_the_rows_of_a_file_are_counted_in_arabic_plurals(client, org, admin, sandbox, rows):
    """«قُرئت 3 صفوف», not «قُرئ 3 صف»: Arabic says a count in six forms."""
    campaign = make_campaign(org, sandbox)
    data = "".join(f"05012345{n:02d}\n" for n in range(rows)).encode()
    answer = client.post(f"/campaigns/{ident(campaign)}/audience",
                         data={"file": (io.BytesIO(data), "numbers.csv")},
                         content_type="multipart/form-data", follow_redirects=True)
    with force_locale("ar"):
        read = ngettext("%(num)s row was read from the file.",
                        "%(num)s rows were read from the file.", rows)
        now = ngettext("Now: %(file)s, %(num)s row.", "Now: %(file)s, %(num)s rows.", rows,
                       file=Markup("<bdi>numbers.csv</bdi>"))
    with force_locale("en"):
        assert read != ngettext("%(num)s row was read from the file.",
                                "%(num)s rows were read from the file.", rows)
    assert str(escape(read)) in answer.text
    assert now in answer.text


def checked_audience_kinds(html: str) -> list[str]:
    return re.findall(r'name="audience_kind" value="([a-z_]+)" checked', html)


@pytest.mark.parametrize("saved", [{}, {"tag": "vip"}])
def test_a_refused_csv_file_keeps_the_csv_choice_open_with_its_error(client, org, admin,
                                                                     sandbox, saved):
    """The page that refuses a file keeps «CSV file» chosen, so its error shows: with another
    kind chosen the stylesheet hides the file's form, error and all."""
    campaign = make_campaign(org, sandbox, **({"audience": saved} if saved else {}))
    refused = client.post(f"/campaigns/{ident(campaign)}/audience",
                          data={"file": (io.BytesIO("name,city\nسعد,الرياض\n".encode()),
                                         "names.csv")},
                          content_type="multipart/form-data")
    assert refused.status_code == 422
    assert checked_audience_kinds(refused.text) == ["csv"]
    assert 'class="error"' in refused.text.split('class="audience-choice audience-csv"')[1]
    assert fresh(org, campaign).audience == saved
    page = client.get(f"/campaigns/{ident(campaign)}/edit")
    assert checked_audience_kinds(page.text) == ([next(iter(saved))] if saved else ["segment_id"])


def test_with_the_crm_off_a_new_draft_has_the_csv_file_chosen(client, org, admin, sandbox):
    """The only audience without the CRM is a file: it is chosen, so its form shows."""
    with organization_context(ident(org)):
        foundation_services.set_module_enabled(org.admin, "crm", False)
        db.session.flush()
    campaign = make_campaign(org, sandbox)
    page = client.get(f"/campaigns/{ident(campaign)}/edit")
    assert checked_audience_kinds(page.text) == ["csv"]


def test_a_cloud_number_picks_a_template_synced_from_whatsapp(client, org, admin, graph):
    """The sync button reads the templates (fake Graph API); the table shows each one's
    language, category and status; picking one shows a field per parameter, which takes a
    variable or fixed text; the preview fills the body in."""
    number = cloud_number(org)
    graph.add_template(ACCOUNT_ID, "ramadan_offer", "ar")
    graph.add_template(ACCOUNT_ID, "old_offer", "en_US", status="REJECTED")
    customer = make_customer(org, name="سارة العتيبي", phone="0501234567")
    campaign = make_campaign(org, number, audience={"customer_ids": [ident(customer)]})

    synced = client.post(f"/campaigns/{ident(campaign)}/templates/sync")
    assert synced.status_code == 303
    page = client.get(f"/campaigns/{ident(campaign)}/edit")
    assert "ramadan_offer" in page.text
    assert "old_offer" in page.text
    assert "MARKETING" in page.text
    assert "REJECTED" in page.text
    assert "en_US" in page.text
    options = re.findall(r'<option value="(\d+)" dir="ltr"[^>]*>([^<]+)</option>', page.text)
    assert [label for _id, label in options] == ["ramadan_offer · ar"]  # approved ones only
    template_id = options[0][0]

    fields = client.get(f"/campaigns/{ident(campaign)}/template-fields",
                        query_string={"template_id": template_id}, headers=HTMX)
    assert fields.text.count('name="parameters"') == 1
    saved = client.post(f"/campaigns/{ident(campaign)}/edit", data={
        "step": "message", "template_id": template_id, "parameters": ["{first_name}"]})
    assert saved.status_code == 303
    assert fresh(org, campaign).message == {"template": {
        "name": "ramadan_offer", "language": "ar", "parameters": ["{first_name}"]}}
    preview = client.get(f"/campaigns/{ident(campaign)}/preview", headers=HTMX)
    assert "مرحبا سارة" in preview.text
    assert "ramadan_offer · ar" in preview.text


def test_a_started_campaign_is_no_longer_edited(app, client, org, admin, sandbox, clock):
    customer = make_customer(org, name="سارة", phone="0501234567")
    campaign = text_campaign(org, sandbox, customers=[customer])
    start(org, campaign)
    answer = client.get(f"/campaigns/{ident(campaign)}/edit")
    assert answer.status_code == 303
    refused = client.post(f"/campaigns/{ident(campaign)}/edit",
                          data={"step": "details", "name": "Changed"})
    assert refused.status_code == 303
    assert fresh(org, campaign).name != "Changed"


# -- start, pause, resume, cancel; the results -------------------------------------------------

def test_pause_resume_and_cancel_from_the_page(app, client, org, admin, sandbox, clock):
    customers = [make_customer(org, name=f"C{n}", phone=f"050123456{n}") for n in range(3)]
    campaign = text_campaign(org, sandbox, customers=customers, rate_per_minute=1)
    start(org, campaign)
    page = client.get(f"/campaigns/{ident(campaign)}")
    assert f'action="/campaigns/{ident(campaign)}/pause"' in page.text
    assert "hx-confirm=" in page.text
    assert client.post(f"/campaigns/{ident(campaign)}/pause").status_code == 303
    page = client.get(f"/campaigns/{ident(campaign)}")
    assert fresh(org, campaign).status == "paused"
    assert arabic("Paused by a person.") in page.text
    assert f'action="/campaigns/{ident(campaign)}/resume"' in page.text
    client.post(f"/campaigns/{ident(campaign)}/resume")
    assert fresh(org, campaign).status == "running"
    client.post(f"/campaigns/{ident(campaign)}/cancel")
    assert fresh(org, campaign).status == "cancelled"
    again = client.post(f"/campaigns/{ident(campaign)}/cancel", follow_redirects=True)
    assert arabic("Only a scheduled, running or paused campaign can be cancelled.") in again.text


def test_a_scheduled_campaign_is_confirmed_as_scheduled_and_can_be_sent_now(
        client, org, admin, sandbox):
    """The draft's «Schedule» asks about scheduling for its time (not «Start this
    campaign?»); the scheduled campaign's page offers «Send now», which starts it."""
    customer = make_customer(org, name="سارة", phone="0501234567")
    campaign = text_campaign(org, sandbox, customers=[customer],
                             scheduled_at="2031-05-04T10:00")
    draft = client.get(f"/campaigns/{ident(campaign)}/edit").text
    assert arabic("Start this campaign? Everyone in its audience who has not opted out gets "
                  "the message.") not in draft
    assert "2031" in draft.split(f'action="/campaigns/{ident(campaign)}/start"')[1].split(
        "</form>")[0]
    start(org, campaign)
    page = client.get(f"/campaigns/{ident(campaign)}").text
    assert f'action="/campaigns/{ident(campaign)}/start-now"' in page
    assert client.post(f"/campaigns/{ident(campaign)}/start-now").status_code == 303
    assert fresh(org, campaign).status == "running"
    page = client.get(f"/campaigns/{ident(campaign)}").text
    assert f'action="/campaigns/{ident(campaign)}/start-now"' not in page
    again = client.post(f"/campaigns/{ident(campaign)}/start-now", follow_redirects=True)
    assert arabic("Only a scheduled campaign can be sent now.") in again.text


def test_the_schedule_names_the_time_zone_in_the_readers_language(client, org, admin,
                                                                 sandbox):
    """The date and time of a schedule are «بتوقيت مؤسستك (توقيت المملكة العربية
    السعودية)», not (Asia/Riyadh)."""
    campaign = text_campaign(org, sandbox)
    draft = client.get(f"/campaigns/{ident(campaign)}/edit").text
    assert arabic("In your organization's time zone (%(zone)s).",
                  zone="توقيت المملكة العربية السعودية") in draft
    assert "Asia/Riyadh" not in draft


def test_a_scheduled_campaign_says_how_many_people_it_will_reach(client, org, admin, sandbox):
    """Before its list is frozen the counts are all 0: the page says whom the audience
    names now, so a scheduled campaign does not look empty."""
    people = [make_customer(org, name=f"C{n}", phone=f"050123456{n}") for n in range(3)]
    campaign = text_campaign(org, sandbox, customers=people, scheduled_at="2031-05-04T10:00")
    start(org, campaign)
    with force_locale("ar"):
        expected = ngettext("%(num)s person now; the list is frozen when it starts.",
                            "%(num)s people now; the list is frozen when it starts.", 3)
    with force_locale("en"):
        assert expected != ngettext("%(num)s person now; the list is frozen when it starts.",
                                    "%(num)s people now; the list is frozen when it starts.", 3)
    assert expected in client.get(f"/campaigns/{ident(campaign)}").text
    client.post(f"/campaigns/{ident(campaign)}/start-now")
    assert expected not in client.get(f"/campaigns/{ident(campaign)}").text



def test_a_started_campaign_says_its_list_is_being_prepared_until_it_is_frozen(
        app, client, org, admin, sandbox, clock):
    """Between the start and the freezing of its list (a few seconds in the runner) its
    counts are all 0: the campaign's page, the list and the dashboard say the list is being
    prepared instead of «0 of 0»; once frozen they show the figures."""
    people = [make_customer(org, name=f"C{n}", phone=f"050123456{n}") for n in range(3)]
    campaign = text_campaign(org, sandbox, customers=people)
    start(org, campaign)
    preparing = arabic("Preparing the list of recipients…")
    zeros = arabic("%(current)s of %(total)s", current="0", total="0")
    for path in (f"/campaigns/{ident(campaign)}", "/campaigns/", "/"):
        shown = client.get(path).text
        assert preparing in shown, path
        assert zeros not in shown, path
    assert 'class="count-total"' not in client.get(f"/campaigns/{ident(campaign)}").text
    sent_by_sandbox(app, clock)
    shown = client.get(f"/campaigns/{ident(campaign)}").text
    assert preparing not in shown
    assert arabic("%(current)s of %(total)s", current="3", total="3") in shown


def test_a_campaign_whose_list_is_not_frozen_never_reads_zeros(
        app, client, org, admin, sandbox, clock, monkeypatch):
    """Before its list of recipients is frozen a campaign's counts are all 0: its page and its
    row in the list say when the list will be prepared (when it starts; when a campaign
    paused while preparing it resumes; when one paused before its time starts at that time,
    since resuming it waits for that time again, and when it resumes once that time has
    passed) or that it never was (cancelled before), not «0 of 0»; the page shows no zero
    counts nor a funnel of zeros, and pausing or cancelling it swaps no «0 of 0» into open
    pages."""
    seen = []
    monkeypatch.setattr(socketio, "emit", lambda event, data, to: seen.append((event, data)))
    people = [make_customer(org, name=f"C{n}", phone=f"050123456{n}") for n in range(3)]
    at_start = arabic("The list of recipients is prepared when the campaign starts.")
    at_resume = arabic("The list of recipients is not prepared yet: it will be when the "
                       "campaign resumes.")
    at_time = arabic("Paused before its time: once resumed, it waits for its time, and the "
                     "list of recipients is prepared when it starts.")
    never = arabic("Stopped before its list of recipients was prepared: nobody received it.")
    zeros = arabic("%(current)s of %(total)s", current="0", total="0")

    def says(campaign, words):
        page = client.get(f"/campaigns/{ident(campaign)}").text
        row = client.get("/campaigns/", headers=HTMX).text.split(
            f'<tr id="campaign-{ident(campaign)}">')[1].split("</tr>")[0]
        for shown in (page, row):
            assert words in shown
            assert zeros not in shown
        assert 'class="count-total"' not in page
        assert 'class="funnel-step' not in page

    scheduled = text_campaign(org, sandbox, customers=people, scheduled_at="2031-05-04T10:00")
    start(org, scheduled)
    says(scheduled, at_start)
    act(org, scheduled, "pause")
    says(scheduled, at_time)
    assert at_resume not in client.get(f"/campaigns/{ident(scheduled)}").text
    with force_locale("ar"):
        audience_now = ngettext(
            "%(num)s person now; the list is frozen when it starts at its time.",
            "%(num)s people now; the list is frozen when it starts at its time.", 3)
    assert audience_now != "3 people now; the list is frozen when it starts at its time."
    assert audience_now in client.get(f"/campaigns/{ident(scheduled)}").text

    overdue = text_campaign(org, sandbox, customers=people, scheduled_at="2031-05-04T10:00")
    start(org, overdue)
    act(org, overdue, "pause")
    with organization_context(ident(org)):  # its time passed while it was paused
        db.session.get(Campaign, ident(overdue)).scheduled_at = utcnow() - timedelta(hours=1)
        db.session.flush()
    says(overdue, at_resume)
    with force_locale("ar"):
        audience_now = ngettext("%(num)s person now; the list is frozen when it resumes.",
                                "%(num)s people now; the list is frozen when it resumes.", 3)
    assert audience_now in client.get(f"/campaigns/{ident(overdue)}").text

    preparing = text_campaign(org, sandbox, customers=people)
    start(org, preparing)
    act(org, preparing, "pause")
    says(preparing, at_resume)
    act(org, preparing, "cancel")
    says(preparing, never)

    cancelled = text_campaign(org, sandbox, customers=people)
    start(org, cancelled)
    act(org, cancelled, "cancel")
    says(cancelled, never)

    swapped = [swap["html"] for _event, data in seen for swap in data.get("swaps", ())
               if swap["target"].endswith("-progress")]
    assert swapped
    assert not any(">0 of 0<" in html or zeros in html for html in swapped)

    act(org, scheduled, "resume")
    client.post(f"/campaigns/{ident(scheduled)}/start-now")
    sent_by_sandbox(app, clock)
    shown = client.get(f"/campaigns/{ident(scheduled)}").text
    assert arabic("%(current)s of %(total)s", current="3", total="3") in shown
    assert 'class="count-total"' in shown


def test_the_engine_pausing_itself_says_why(client, org, admin, sandbox):
    from crm.campaigns import services

    customer = make_customer(org, name="سارة", phone="0501234567")
    campaign = text_campaign(org, sandbox, customers=[customer])
    start(org, campaign)
    with organization_context(ident(org)):
        services.pause_by_itself(ident(campaign), "131048", "Spam rate limit hit")
        db.session.flush()
    page = client.get(f"/campaigns/{ident(campaign)}")
    with force_locale("ar"):
        expected = services.pause_reason_text(fresh(org, campaign))
    assert expected in page.text


def test_results_show_the_funnel_sends_over_time_failures_and_recipients(
        app, client, org, admin, sandbox, clock):
    """After a run: the funnel as SVG bars, sends over time as an SVG chart, the skipped
    grouped by reason, and the recipients list filtered by state, paged."""
    people = [make_customer(org, name=f"عميل {n}", phone=f"05012345{n:02d}") for n in range(3)]
    nobody = make_customer(org, name="بلا رقم", phone="")
    campaign = text_campaign(org, sandbox, customers=[*people, nobody])
    with organization_context(ident(org)):
        consent.record("opt_out", "+966501234501", method="manual")
        db.session.flush()
    start(org, campaign)
    sent_by_sandbox(app, clock)

    page = client.get(f"/campaigns/{ident(campaign)}")
    assert page.status_code == 200
    assert page.text.count('class="funnel-bar"') == 4
    assert '<svg class="time-chart"' in page.text
    assert 'class="bar-sent"' in page.text
    assert "<script" not in page.text.split("</head>")[1]
    assert arabic("Opted out of campaigns") in page.text
    assert arabic("No phone number") in page.text
    assert len(recipient_ids(page.text)) == 4

    skipped = client.get(f"/campaigns/{ident(campaign)}/recipients",
                         query_string={"state": "skipped"}, headers=HTMX)
    assert len(recipient_ids(skipped.text)) == 2
    assert "<html" not in skipped.text
    full = client.get(f"/campaigns/{ident(campaign)}/recipients?state=skipped")
    assert "<html" in full.text
    assert len(recipient_ids(full.text)) == 2


def test_the_recipients_list_pages_in_constant_queries(app, client, org, admin, sandbox,
                                                      clock):
    data = "phone\n" + "".join(f"05012{n:05d}\n" for n in range(60))
    campaign = make_campaign(org, sandbox, message={"text": "hi"})
    client.post(f"/campaigns/{ident(campaign)}/audience",
                data={"file": (io.BytesIO(data.encode()), "n.csv")},
                content_type="multipart/form-data")
    start(org, campaign)
    sent_by_sandbox(app, clock)
    client.get(f"/campaigns/{ident(campaign)}/recipients", headers=HTMX)
    with count_queries() as seen:
        rows = client.get(f"/campaigns/{ident(campaign)}/recipients", headers=HTMX)
    assert len(recipient_ids(rows.text)) == 50
    assert len(seen) <= 6, seen
    after = re.search(r"cursor=(\d+)", rows.text).group(1)
    more = client.get(f"/campaigns/{ident(campaign)}/recipients?cursor={after}", headers=HTMX)
    assert len(recipient_ids(more.text)) == 10


def test_the_recipients_export_defuses_formulas(app, client, org, admin, sandbox, clock):
    """A CSV row per recipient; a name that Excel would run as a formula gets an apostrophe;
    the export is audited."""
    data = "phone,name\n0501234567,=HYPERLINK(\"http://evil\")\n0501234568,عمر\n"
    campaign = make_campaign(org, sandbox, message={"text": "hi {name}"})
    client.post(f"/campaigns/{ident(campaign)}/audience",
                data={"file": (io.BytesIO(data.encode()), "n.csv")},
                content_type="multipart/form-data")
    start(org, campaign)
    sent_by_sandbox(app, clock)
    answer = client.get(f"/campaigns/{ident(campaign)}/recipients.csv")
    assert answer.status_code == 200
    assert answer.mimetype == "text/csv"
    rows = list(csv.reader(io.StringIO(answer.text.lstrip("\ufeff"))))
    assert len(rows) == 3
    assert rows[1][1] == "'=HYPERLINK(\"http://evil\")"
    assert rows[2][1] == "عمر"
    assert "campaign.exported" in audit_actions(org)


def test_the_pages_hear_progress_and_status_as_fragments_in_every_language(
        app, org, sandbox, clock, monkeypatch):
    """Each event carries the spec's data and the progress bar and status badge rendered for
    Arabic and English pages alike."""
    seen = []
    monkeypatch.setattr(socketio, "emit", lambda event, data, to: seen.append((event, data)))
    customer = make_customer(org, name="سارة", phone="0501234567")
    campaign = text_campaign(org, sandbox, customers=[customer])
    start(org, campaign)
    sent_by_sandbox(app, clock)
    [completed] = [data for event, data in seen if event == "campaignCompleted"]
    targets = {swap["target"]: swap["html"] for swap in completed["swaps"]}
    cid = ident(campaign)
    assert set(targets) == {f'html[lang="{lang}"] #campaign-{cid}-{part}'
                            for lang in ("ar", "en") for part in ("status", "progress")}
    completed_ar = in_arabic("campaign status", "Completed")
    assert completed_ar in targets[f'html[lang="ar"] #campaign-{cid}-status']
    assert ">Completed<" in targets[f'html[lang="en"] #campaign-{cid}-status']
    assert 'value="1"' in targets[f'html[lang="ar"] #campaign-{cid}-progress']
    progress = [data for event, data in seen if event == "campaignProgress"]
    assert progress
    assert {"campaignId", "current", "total", "swaps"} == set(progress[0])


def test_progress_swaps_in_the_dashboards_funnel_of_a_sending_campaign(
        app, org, sandbox, clock, monkeypatch):
    """The dashboard's card shows a sending campaign's funnel: each progress event carries
    its figures (the card's partial, the same links) for Arabic and English pages."""
    seen = []
    monkeypatch.setattr(socketio, "emit", lambda event, data, to: seen.append((event, data)))
    monkeypatch.setattr(live, "PROGRESS_INTERVAL", 0.001)  # every send tells
    people = [make_customer(org, name=f"C{n}", phone=f"050123456{n}") for n in range(2)]
    campaign = text_campaign(org, sandbox, customers=people)
    start(org, campaign)
    sent_by_sandbox(app, clock)
    cid = ident(campaign)
    progress = [data for event, data in seen if event == "campaignProgress"]
    assert progress[-1]["current"] == progress[-1]["total"] == 2  # the runner's, after sends
    targets = {swap["target"]: swap["html"] for swap in progress[-1]["swaps"]}
    for lang in ("ar", "en"):
        funnel = targets[f'html[lang="{lang}"] #campaign-{cid}-funnel']
        assert f'<ul class="stats campaign-funnel" id="campaign-{cid}-funnel">' in funnel
        assert (f'id="campaign-{cid}-funnel-sent"><a href="/campaigns/{cid}/recipients'
                f'?state=sent#recipients">') in funnel
    arabic_funnel = targets[f'html[lang="ar"] #campaign-{cid}-funnel']
    assert in_arabic("recipient state", "Sent") in arabic_funnel
    assert " Sent<" not in arabic_funnel


# -- consent ----------------------------------------------------------------------------------

def test_the_customer_page_shows_consent_and_its_history(client, org, admin):
    """After «إيقاف» the customer page says they are opted out, with the words and when; an
    admin may record that they opted back in."""
    customer = make_customer(org, name="سارة", phone="0501234567")
    page = client.get(f"/customers/{ident(customer)}")
    assert arabic("Receives campaigns") in page.text
    customer_says(client, org, cloud_number(org), "+966501234567", "إيقاف")
    page = client.get(f"/customers/{ident(customer)}")
    assert ('<span class="badge off consent-state">'
            + in_arabic("consent", "Opted out")) in page.text
    assert "«<bdi>إيقاف</bdi>»" in page.text
    assert in_arabic("consent", "Wrote a keyword") in page.text
    back = client.post(f"/campaigns/consent/{ident(customer)}", data={"action": "opt_in"})
    assert back.status_code == 303
    page = client.get(f"/customers/{ident(customer)}")
    assert '<span class="badge on consent-state">' + arabic("Receives campaigns") in page.text
    assert in_arabic("consent", "Recorded by hand") in page.text


def test_admins_export_the_consent_ledger_with_formulas_defused(client, org, other_org, admin):
    with organization_context(ident(org)):
        consent.record("opt_out", "+966501234567", method="keyword", text="=cmd|' /C calc'!A0")
        db.session.flush()
    with organization_context(ident(other_org)):
        consent.record("opt_out", "+966509999999", method="keyword", text="STOP")
        db.session.flush()
    answer = client.get("/campaigns/consent.csv")
    assert answer.status_code == 200
    rows = list(csv.reader(io.StringIO(answer.text.lstrip("\ufeff"))))
    assert len(rows) == 2
    assert rows[1][1] == "'+966501234567"
    assert rows[1][5] == "'=cmd|' /C calc'!A0"
    assert rows[1][3] == in_arabic("consent", "Opted out")
    assert "consent.exported" in audit_actions(org)


def test_the_consent_ledger_names_the_customer_and_who_recorded_it(client, org, admin):
    """Read in a spreadsheet, the ledger names people; the customer's id stays, last, to match
    the other exports."""
    customer = make_customer(org, name="هدى سالم", phone="+966501234567")
    with organization_context(ident(org)):
        consent.record_by_hand(org.admin, "opt_out", "0501234567", customer_id=ident(customer))
        consent.record("opt_out", "+966509999999", method="keyword", text="STOP")
        db.session.flush()
    rows = list(csv.reader(io.StringIO(client.get("/campaigns/consent.csv").text.lstrip("\ufeff"))))

    by_hand, by_keyword = rows[1], rows[2]
    assert (by_hand[2], by_hand[6], by_hand[7]) == ("هدى سالم", org.admin.full_name,
                                                    str(ident(customer)))
    assert (by_keyword[2], by_keyword[6], by_keyword[7]) == ("", "", "")


def test_admins_edit_the_consent_words_and_the_numbers_pace(client, org, admin, sandbox):
    web = make_profile(org, "web", display_name="الجوال")
    cloud = cloud_number(org)
    page = client.get("/campaigns/settings")
    assert page.status_code == 200
    assert "إيقاف" in page.text
    assert "STOP" in page.text
    saved = client.post("/campaigns/settings/keywords",
                        data={"opt_out": "قف\nSTOP", "opt_in": "ابدأ"})
    assert saved.status_code == 303
    with organization_context(ident(org)):
        assert consent.match_keyword("قف") == "opt_out"
        assert consent.match_keyword("إيقاف") is None
    both = client.post("/campaigns/settings/keywords", data={"opt_out": "قف", "opt_in": "قف"})
    assert both.status_code == 422
    assert arabic("A word cannot both stop and restart messages.") in both.text

    assert client.post(f"/campaigns/settings/numbers/{ident(web)}", data={
        "web_delay_min": "10", "web_delay_max": "30", "web_daily_cap": "150"}).status_code == 303
    assert client.post(f"/campaigns/settings/numbers/{ident(cloud)}", data={
        "throughput_per_second": "40", "messaging_limit": "2000"}).status_code == 303
    bad = client.post(f"/campaigns/settings/numbers/{ident(web)}", data={
        "web_delay_min": "30", "web_delay_max": "10", "web_daily_cap": "150"})
    assert bad.status_code == 422
    with organization_context(ident(org)):
        rows = {row.profile_id: row for row in db.session.scalars(select(NumberSettings))}
    assert (rows[ident(web)].web_delay_min_seconds, rows[ident(web)].web_delay_max_seconds,
            rows[ident(web)].web_daily_cap) == (10, 30, 150)
    assert (rows[ident(cloud)].throughput_per_second, rows[ident(cloud)].messaging_limit) == (
        40, 2000)


def test_a_nul_in_a_template_parameter_is_422_and_changes_nothing(client, org, admin):
    """PostgreSQL cannot store a NUL in JSON: the parameter is refused beside its field."""
    number = cloud_number(org)
    template = make_template(org, number, body="مرحبا {{1}}")
    campaign = make_campaign(org, number)
    answer = client.post(f"/campaigns/{ident(campaign)}/edit", data={
        "step": "message", "template_id": str(ident(template)), "parameters": ["a\x00b"]})
    assert answer.status_code == 422
    assert 'id="error-template"' in answer.text
    assert fresh(org, campaign).message == {}


def test_a_nul_in_an_uploaded_file_does_not_stop_the_campaign(app, client, org, admin, sandbox,
                                                             clock):
    """A CSV cell holding a NUL (which PostgreSQL cannot store) is read without it."""
    campaign = make_campaign(org, sandbox, message={"text": "مرحبا {name}"})
    data = "phone,name\n0501234567,سا\x00رة\n05012\x0034568,عمر\n".encode()
    client.post(f"/campaigns/{ident(campaign)}/audience",
                data={"file": (io.BytesIO(data), "n.csv")}, content_type="multipart/form-data")
    start(org, campaign)
    sent_by_sandbox(app, clock)
    assert [(r.variables["name"], r.phone) for r in recipients(org, campaign)] == [
        ("سارة", "+966501234567"), ("عمر", "+966501234568")]
    assert fresh(org, campaign).status == "completed"


# -- the preview ------------------------------------------------------------------------------

def upload_file(client, campaign, text: str) -> None:
    answer = client.post(f"/campaigns/{ident(campaign)}/audience",
                         data={"file": (io.BytesIO(text.encode()), "numbers.csv")},
                         content_type="multipart/form-data")
    assert answer.status_code == 303


def preview_options(html: str, name: str) -> list[tuple[str, str]]:
    """The recipients the preview offers: (value, label) of the picker named `name`."""
    picker = re.search(rf'<select id="preview-customer" name="{name}".*?</select>', html, re.S)
    return re.findall(r'<option value="(\d+)"[^>]*>([^<]*)</option>', picker.group(0))


def bubble(html: str) -> str:
    return re.search(r'<p class="message-text" dir="auto">(.*?)</p>', html, re.S).group(1)


def naming_variable(message: str, variable: str) -> str:
    """`message` in Arabic as the preview shows it, naming `variable` as code."""
    with force_locale("ar"):
        shown = str(escape(gettext(message, variable="VARIABLE")))
    return shown.replace("VARIABLE", f'<code dir="ltr">{variable}</code>')


def preview_of(client, campaign, **query):
    return client.get(f"/campaigns/{ident(campaign)}/preview", query_string=query, headers=HTMX)


def test_a_files_audience_is_previewed_for_its_rows_with_their_names(client, org, admin,
                                                                     sandbox):
    """The preview offers the file's first rows that will be sent to, named as the start
    freezes them (the file's name column, or the CRM's customer for a number it knows), and
    renders the message for the row picked; without a pick, for the file's first row."""
    make_customer(org, name="ليلى أحمد", phone="0501234569")
    campaign = make_campaign(org, sandbox, message={"text": "مرحبا {name}"})
    upload_file(client, campaign, "phone,name\n0501234567,سارة\nnot a number,خطأ\n"
                                  "0501234568,عمر\n0501234569,Layla\n+966501234567,مكرر\n")

    page = client.get(f"/campaigns/{ident(campaign)}/edit")
    assert preview_options(page.text, "row") == [("1", "سارة"), ("3", "عمر"),
                                                 ("4", "ليلى أحمد")]
    assert bubble(page.text) == "مرحبا سارة"
    assert bubble(preview_of(client, campaign, row="3").text) == "مرحبا عمر"
    assert bubble(preview_of(client, campaign, row="4").text) == "مرحبا ليلى أحمد"
    found = preview_of(client, campaign, q="عمر")
    assert preview_options(found.text, "row") == [("3", "عمر")]
    assert bubble(found.text) == "مرحبا عمر"
    refused = preview_of(client, campaign, row="2")  # an invalid number: nobody gets it
    assert arabic("Choose one of the file's rows.") in refused.text


def test_the_preview_says_which_variable_is_empty_for_the_recipient(client, org, admin,
                                                                    sandbox):
    """A customer without a company leaves a hole in «لعملاء {company}.»: the preview names the
    variable beside the bubble; a customer with one is not warned; the start is not blocked."""
    sara = make_customer(org, name="سارة", phone="0501234567")
    omar = make_customer(org, name="عمر", phone="0501234568", company="مخبز النور")
    campaign = text_campaign(org, sandbox, customers=[sara, omar],
                             message={"text": "عرض لعملاء {company}. {first_name}"})

    warned = preview_of(client, campaign, customer_id=ident(sara))
    assert bubble(warned.text) == "عرض لعملاء . سارة"
    assert naming_variable("%(variable)s is empty for this recipient: their message has "
                           "nothing in its place.", "{company}") in warned.text
    assert "{first_name}" not in warned.text
    assert "preview-warnings" not in preview_of(client, campaign, customer_id=ident(omar)).text
    assert client.post(f"/campaigns/{ident(campaign)}/start").status_code == 303


def test_a_templates_empty_parameter_is_named_in_the_preview(client, org, admin):
    """A template parameter that is empty for the recipient goes out as «-»: the preview says
    so, naming the variable."""
    number = cloud_number(org)
    make_template(org, number, body="مرحبا {{1}} من {{2}}")
    sara = make_customer(org, name="سارة", phone="0501234567")
    campaign = make_campaign(org, number, audience={"customer_ids": [ident(sara)]},
                             message={"template": {"name": "spring_offer", "language": "ar",
                                                   "parameters": ["{first_name}",
                                                                  "{company}"]}})
    shown = preview_of(client, campaign)
    assert "مرحبا سارة من -" in shown.text
    assert naming_variable("%(variable)s is empty for this recipient: their message shows «-» "
                           "in its place.", "{company}") in shown.text


def test_the_preview_finds_its_recipient_by_name_or_phone(client, org, admin, sandbox):
    """Past the audience's first 20, a search picks the previewed customer: by name with
    Arabic letters folded, or by phone in any written form; among the audience only; as htmx
    (the matches and the preview) and as a plain GET form (the whole page, the search kept)."""
    ahmad = make_customer(org, name="أحمد الشمري", phone="0559876543", tags=["vip"])
    for n in range(25):
        make_customer(org, name=f"عميل {n}", phone=f"05012345{n:02d}", tags=["vip"])
    make_customer(org, name="أحمد بلا وسم", phone="0559876500")
    campaign = text_campaign(org, sandbox, audience={"tag": "vip"},
                             message={"text": "مرحبا {name}"})
    page = client.get(f"/campaigns/{ident(campaign)}/edit")
    assert len(preview_options(page.text, "customer_id")) == 20
    assert str(ident(ahmad)) not in dict(preview_options(page.text, "customer_id"))
    assert '<input id="preview-search" type="search" name="q"' in page.text
    # Without JavaScript the form's answer is the whole page, scrolled back to the preview.
    assert f'action="/campaigns/{ident(campaign)}/preview#start"' in page.text

    with count_queries() as many:
        found = preview_of(client, campaign, q="احمد")
    assert "<html" not in found.text
    assert preview_options(found.text, "customer_id") == [(str(ident(ahmad)), "أحمد الشمري")]
    assert bubble(found.text) == "مرحبا أحمد الشمري"
    assert len(many) <= 4, many  # the matches, the one previewed: no query per match
    with count_queries() as more:
        broad = preview_of(client, campaign, q="عميل")
    assert len(preview_options(broad.text, "customer_id")) == 20
    assert len(more) <= 4, more
    by_phone = preview_of(client, campaign, q="055 987 6543")
    assert preview_options(by_phone.text, "customer_id") == [(str(ident(ahmad)), "أحمد الشمري")]

    plain = client.get(f"/campaigns/{ident(campaign)}/preview", query_string={"q": "٠٥٥٩٨٧٦٥٤٣"})
    assert plain.status_code == 200
    assert "<html" in plain.text
    assert 'value="٠٥٥٩٨٧٦٥٤٣"' in plain.text
    assert preview_options(plain.text, "customer_id") == [(str(ident(ahmad)), "أحمد الشمري")]
    assert bubble(plain.text) == "مرحبا أحمد الشمري"

    nobody = preview_of(client, campaign, q="zzz")
    assert arabic("Nobody in the audience matches this search.") in nobody.text


def test_a_files_audience_whose_file_is_gone_says_so_in_the_preview(app, client, org, admin,
                                                                     sandbox):
    """The page still opens; the preview asks for the file again."""
    campaign = make_campaign(org, sandbox, message={"text": "مرحبا {name}"})
    upload_file(client, campaign, "phone,name\n0501234567,سارة\n")
    with organization_context(ident(org)):
        audience.csv_path(fresh(org, campaign).audience["csv"]).unlink()
    page = client.get(f"/campaigns/{ident(campaign)}/edit")
    assert page.status_code == 200
    assert arabic("The uploaded file is missing; upload it again.") in page.text


def test_the_picker_is_offered_while_the_message_is_still_unwritten(client, org, admin, sandbox):
    """The preview asks for a message; whom it will be for is already offered."""
    sara = make_customer(org, name="سارة", phone="0501234567")
    campaign = make_campaign(org, sandbox, audience={"customer_ids": [ident(sara)]})
    page = client.get(f"/campaigns/{ident(campaign)}/edit")
    assert preview_options(page.text, "customer_id") == [(str(ident(sara)), "سارة")]
    assert arabic("Write a text or choose a template.") in page.text


def test_a_files_search_reads_the_whole_file_a_batch_at_a_time(client, org, admin, sandbox,
                                                               monkeypatch):
    """A file too long to be indexed: a search streams the whole file, however long (past
    its 20,000th row), holding a batch of rows and the matches, never the file: a second
    search of a file twice as long needs no more memory. A number the file gave before under
    another name is found by that name, the one the freezing keeps."""
    monkeypatch.setattr(audience, "INDEX_MAX_ROWS", 0)
    rows = 20_100
    lines = [f"05{n:08d},عميل {n}" for n in range(10_000_000, 10_000_000 + rows - 2)]
    lines += ["0500000005,مكرر", "0559999999,نورة الأخيرة"]
    lines[5] = "0500000005,الخامس"
    campaign = make_campaign(org, sandbox, message={"text": "مرحبا {name}"})
    upload_file(client, campaign, "phone,name\n" + "\n".join(lines) + "\n")

    found = preview_of(client, campaign, q="نورة")
    assert preview_options(found.text, "row") == [(str(rows), "نورة الأخيرة")]
    assert bubble(found.text) == "مرحبا نورة الأخيرة"
    assert preview_options(preview_of(client, campaign, q="الخامس").text, "row") == [
        ("6", "الخامس")]
    nobody = preview_of(client, campaign, q="مكرر")
    assert "مكرر" not in nobody.text
    assert arabic("Nobody in the audience matches this search.") in nobody.text
    by_phone = preview_of(client, campaign, q="0559999999")
    assert preview_options(by_phone.text, "row") == [(str(rows), "نورة الأخيرة")]

    def peak() -> int:
        """The most memory a search that matches nobody (it reads every row) holds at once."""
        gc.collect()
        tracemalloc.start()
        try:
            preview_of(client, campaign, q="zzz")
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    once = peak()
    # Twice the rows, every number valid (053…: 052 is no Saudi mobile prefix).
    upload_file(client, campaign, "phone,name\n" + "\n".join(lines + [
        f"05{n:08d},عميل {n}" for n in range(30_000_000, 30_000_000 + rows)]) + "\n")
    assert peak() < 1.2 * once


def test_a_files_search_reads_it_again_only_for_a_number_perhaps_given_above(
        client, org, admin, sandbox, monkeypatch):
    """In a file too long to be indexed, a match on the file's name is checked against the
    rows above it only when the number may have been read before (a filter of the numbers
    read says so): a search for a name whose number the file gives once reads the file once;
    one whose number came earlier under another name reads it again, drops it, and searches
    once more."""
    monkeypatch.setattr(audience, "INDEX_MAX_ROWS", 0)
    campaign = make_campaign(org, sandbox, message={"text": "مرحبا {name}"})
    upload_file(client, campaign, "phone,name\n0501234567,سارة\n0501234568,عمر\n"
                                  "+966501234567,مكرر\n0501234569,ليلى\n")
    reads = []
    file_rows = audience._file_rows

    def counted(path, spec):
        reads.append(path)
        return file_rows(path, spec)

    monkeypatch.setattr(audience, "_file_rows", counted)
    assert preview_options(preview_of(client, campaign, q="ليلى").text, "row") == [("4", "ليلى")]
    assert len(reads) == 1
    reads.clear()
    nobody = preview_of(client, campaign, q="مكرر")
    assert arabic("Nobody in the audience matches this search.") in nobody.text
    assert len(reads) == 4  # the search, the rows above, the search again; the first row


def test_a_files_search_reads_the_file_once_while_someone_types(client, org, admin, sandbox,
                                                                monkeypatch):
    """Each keystroke in the search box asks again: the file is read once into its index,
    and the searches, the pick of a row and the page find their rows there (the first row of
    each number, named as the freezing names it), without reading it again. Another file is
    read anew, and so is the same one once INDEX_TTL has passed."""
    campaign = make_campaign(org, sandbox, message={"text": "مرحبا {name}"})
    upload_file(client, campaign, "phone,name\n0501234567,سارة\n0501234568,عمر\n"
                                  "+966501234567,مكرر\n0501234569,ليلى الحربي\nbad,خطأ\n")
    reads = []
    file_rows = audience._file_rows

    def counted(path, spec):
        reads.append(path)
        return file_rows(path, spec)

    monkeypatch.setattr(audience, "_file_rows", counted)
    for typed in ("ل", "لي", "ليل", "ليلى", "ليلى ال", "ليلى الحر"):
        assert preview_options(preview_of(client, campaign, q=typed).text, "row") == [
            ("4", "ليلى الحربي")], typed
    assert preview_options(preview_of(client, campaign, q="0501234568").text, "row") == [
        ("2", "عمر")]
    nobody = preview_of(client, campaign, q="مكرر")
    assert arabic("Nobody in the audience matches this search.") in nobody.text
    assert "خطأ" not in preview_of(client, campaign, q="خطأ").text
    assert bubble(preview_of(client, campaign, row="2").text) == "مرحبا عمر"
    assert preview_options(client.get(f"/campaigns/{ident(campaign)}/edit").text, "row") == [
        ("1", "سارة"), ("2", "عمر"), ("4", "ليلى الحربي")]
    assert len(reads) == 1

    upload_file(client, campaign, "phone,name\n0501234570,هند\n")
    assert preview_options(preview_of(client, campaign, q="هند").text, "row") == [("1", "هند")]
    assert len(reads) == 2
    monkeypatch.setattr(audience, "INDEX_TTL", 0)
    preview_of(client, campaign, q="هن")
    assert len(reads) == 3


def test_a_files_search_names_a_renamed_customer_as_the_crm_does_now(client, org, admin,
                                                                     sandbox):
    """The index keeps the names the CRM gave when it was read; a customer renamed since is
    not found by their old name (each match is checked against the CRM's name now), and is
    shown by the new one."""
    customer = make_customer(org, name="خالد القديم", phone="0501234567")
    campaign = make_campaign(org, sandbox, message={"text": "مرحبا {name}"})
    upload_file(client, campaign, "phone,name\n0501234567,اسم الملف\n0501234568,عمر\n")
    assert preview_options(preview_of(client, campaign, q="خالد").text, "row") == [
        ("1", "خالد القديم")]
    with organization_context(ident(org)):
        db.session.get(Customer, ident(customer)).name = "فهد الجديد"
        db.session.flush()
    assert "خالد" not in preview_of(client, campaign, q="خالد").text
    assert preview_options(preview_of(client, campaign, q="0501234567").text, "row") == [
        ("1", "فهد الجديد")]


def test_a_files_search_finds_a_number_the_crm_knows_by_the_crms_name(client, org, admin,
                                                                       sandbox):
    """A number the CRM knows goes out with its customer's name, not the file's: the search
    finds that recipient by the name they will receive, as the picker shows it."""
    make_customer(org, name="ليلى أحمد", phone="0501234569")
    campaign = make_campaign(org, sandbox, message={"text": "مرحبا {name}"})
    upload_file(client, campaign, "phone,name\n0501234567,سارة\n0501234569,Layla\n")
    found = preview_of(client, campaign, q="ليلى")
    assert preview_options(found.text, "row") == [("2", "ليلى أحمد")]
    assert bubble(found.text) == "مرحبا ليلى أحمد"
    unknown = preview_of(client, campaign, q="Layla")
    assert arabic("Nobody in the audience matches this search.") in unknown.text
    assert "Layla" not in unknown.text.split('id="preview-candidates"')[1]
    assert preview_options(preview_of(client, campaign, q="0501234569").text, "row") == [
        ("2", "ليلى أحمد")]


def test_a_preview_for_nobody_in_particular_warns_of_nothing(client, org, admin, sandbox):
    """Without an audience yet there is no recipient whose variables could be empty."""
    campaign = make_campaign(org, sandbox, message={"text": "مرحبا {name}"})
    shown = preview_of(client, campaign)
    assert bubble(shown.text) == "مرحبا "
    assert "preview-warnings" not in shown.text


def test_the_schedule_step_says_every_mistake_at_once(client, org, admin, sandbox):
    """«Later» with no date and a rate of 0 a minute: both fields say so in one answer, and
    nothing is saved."""
    campaign = text_campaign(org, sandbox)
    answer = client.post(f"/campaigns/{ident(campaign)}/edit", data={
        "step": "schedule", "when": "later", "scheduled_at": "", "rate_per_minute": "0"})
    assert answer.status_code == 422
    assert 'id="error-scheduled_at"' in answer.text
    assert 'id="error-rate_per_minute"' in answer.text
    assert fresh(org, campaign).rate_per_minute is None
