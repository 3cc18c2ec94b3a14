"""The CRM's pages: the customers list, a customer's page and timeline, the pipeline board,
segments, CSV imports and the CRM settings, as browsers (plain and htmx) use them."""

from __future__ import annotations

import csv
import io
import re

import pytest
from flask_babel import force_locale, ngettext
from markupsafe import escape
from sqlalchemy import func, select

from crm.customers import live, services, views
from crm.customers.models import (
    Customer,
    CustomerActivity,
    CustomerImport,
    CustomFieldDefinition,
    SalesStage,
    ScoringRule,
    Segment,
)
from crm.customers.services import Card, find_move, read_board
from crm.errors import ValidationError
from crm.extensions import db
from crm.foundation import services as foundation_services
from crm.foundation.models import AuditEntry
from crm.models import utcnow
from crm.tenancy import organization_context
from crm.transaction import commit
from tests.customers.factories import (
    make_activity,
    make_customer,
    make_field,
    make_import,
    make_message_activity,
    make_segment,
)
from tests.factories import login, make_user, run_jobs
from tests.foundation import HTMX, arabic, audit_actions, ident
from tests.queries import count_queries
from tests.whatsapp.factories import make_conversation, make_profile


@pytest.fixture
def admin(client, org):
    """The organization's admin, logged in."""
    login(client, org.admin)
    return org.admin


def stages_of(org) -> list[SalesStage]:
    with organization_context(ident(org)):
        return services.list_stages()


def customer_named(org, name: str) -> Customer | None:
    with organization_context(ident(org)):
        db.session.expire_all()
        return db.session.scalar(select(Customer).where(Customer.name == name,
                                                        Customer.merged_into_id.is_(None)))


def activity_types(org, customer_id: int) -> list[str]:
    with organization_context(ident(org)):
        return list(db.session.scalars(select(CustomerActivity.type).where(
            CustomerActivity.customer_id == customer_id).order_by(CustomerActivity.id)))


def count_of(org, model) -> int:
    with organization_context(ident(org)):
        return db.session.scalar(select(func.count()).select_from(model))


def row_ids(html: str) -> list[int]:
    return [int(n) for n in re.findall(r'<tr id="customer-(\d+)"', html)]


# -- the list, search and filters --------------------------------------------------------------

def test_the_list_shows_the_organizations_customers_only(client, org, other_org, admin):
    """The list shows each customer with phone (left to right), stage and owner; customers of
    another organization never appear."""
    mine = make_customer(org, name="سارة العتيبي", phone="0501234567", company="مخبز النور")
    make_customer(other_org, name="Stranger")
    page = client.get("/customers/")
    assert page.status_code == 200
    assert "سارة العتيبي" in page.text
    assert "مخبز النور" in page.text
    assert ('<td class="phone"><span class="ltr phone" dir="ltr">+966 50 123 4567</span></td>'
            in page.text)
    assert "Stranger" not in page.text
    assert row_ids(page.text) == [ident(mine)]
    assert 'href="/customers/export.csv"' in page.text


def test_search_ignores_arabic_letter_variants_and_phone_forms(client, org, admin):
    """Typing in the search box swaps the rows in: an Arabic name is found whatever its hamza
    or taa marbuta, and a phone number whatever digits and form it is written in."""
    ahmad = make_customer(org, name="أحمد المدينة", phone="0501234567")
    other = make_customer(org, name="Someone Else", email="else@example.com")
    ahmad_id, other_id = ident(ahmad), ident(other)
    for term in ("احمد", "المدينه", "٠٥٠١٢٣٤٥٦٧", "+966 50 123 4567", "050-123-4567"):
        rows = client.get("/customers/", query_string={"search": term}, headers=HTMX)
        assert rows.status_code == 200
        assert "<html" not in rows.text
        assert row_ids(rows.text) == [ahmad_id], term
    rows = client.get("/customers/", query_string={"search": "ELSE@example"}, headers=HTMX)
    assert row_ids(rows.text) == [other_id]


def test_filters_narrow_the_list_and_the_links_keep_them(client, org, admin):
    """Stage, tag, source, score and custom field filters combine; the export and segment links
    carry the same filters (swapped out of band as they change)."""
    make_field(org, key="city", label="City")
    first, second = stages_of(org)[:2]
    first_id, second_id = first.id, second.id
    wanted = make_customer(org, name="Wanted", tags=["vip"], stage_id=second_id,
                           custom_fields={"city": "Jeddah"})
    make_customer(org, name="Other stage", tags=["vip"], stage_id=first_id,
                  custom_fields={"city": "Jeddah"})
    make_customer(org, name="Other city", tags=["vip"], stage_id=second_id,
                  custom_fields={"city": "Riyadh"})
    make_customer(org, name="No tag", stage_id=second_id, custom_fields={"city": "Jeddah"})
    query = {"stage_id": second_id, "tag": "vip", "source": "manual", "score_min": "0",
             "cf_city": "Jeddah", "owner_id": "", "sort": "name"}
    rows = client.get("/customers/", query_string=query, headers=HTMX)
    assert row_ids(rows.text) == [ident(wanted)]
    links = re.search(r'<p id="list-links"[^>]*hx-swap-oob="true">(.*?)</p>', rows.text, re.S)
    assert links, rows.text
    assert f"stage_id={second_id}" in links.group(1)
    assert "cf_city=Jeddah" in links.group(1)
    assert "owner_id" not in links.group(1)  # empty filters are left out

    page = client.get("/customers/", query_string=query)
    assert 'value="Jeddah"' in page.text  # the form keeps what was chosen
    assert f'<option value="{second_id}" dir="auto" selected>' in page.text


def test_the_owner_filter_offers_members_who_left_but_still_own_customers(client, org, admin):
    """The owner filter of the list and of a new segment offers, after the active members, a
    removed member who still owns customers, marked as no longer in the team (it offered
    active members only, so their customers could not be found by owner); a removed member
    who owns none is not offered. Choosing them lists their customers."""
    leaver, gone = make_user(org, role="agent"), make_user(org, role="agent")
    kept = make_customer(org, name="Left behind", owner_id=ident(leaver))
    make_customer(org, name="Someone else's")
    with organization_context(ident(org)):
        for user in (leaver, gone):
            foundation_services.remove_user(org.admin, user)
        commit()
    for url in ("/customers/", "/customers/segments/new"):
        owners = client.get(url).text.split('name="owner_id"')[1].split("</select>")[0]
        values = re.findall(r'<option value="(\d+)"', owners)
        assert values[-1] == str(ident(leaver)), (url, owners)
        assert str(ident(gone)) not in values
        option = re.search(rf'<option value="{ident(leaver)}"[^>]*>([^<]*)</option>', owners)
        assert arabic("%(name)s (no longer in the team)",
                      name=leaver.full_name) in option.group(1)
    rows = client.get("/customers/", query_string={"owner_id": ident(leaver)}, headers=HTMX)
    assert row_ids(rows.text) == [ident(kept)]


def test_a_bad_filter_is_shown_beside_its_field(client, org, admin):
    """A score that is not a number answers 422 with the error by the field, and no rows."""
    make_customer(org, name="Anyone")
    page = client.get("/customers/", query_string={"score_min": "lots"})
    assert page.status_code == 422
    assert 'id="error-score_min"' in page.text
    assert row_ids(page.text) == []


def test_more_customers_load_from_the_cursor(client, org, admin, monkeypatch):
    """The list pages with an opaque cursor; "Load more" brings the next rows only, each once,
    with the filters kept."""
    monkeypatch.setattr(views, "PAGE", 2)
    made = [ident(make_customer(org, name=f"Page {n}", tags=["paged"])) for n in range(5)]
    make_customer(org, name="Untagged")
    seen, url = [], "/customers/?tag=paged"
    while url:
        rows = client.get(url, headers=HTMX)
        seen += row_ids(rows.text)
        more = re.search(r'hx-get="([^"]+)"\s+hx-target="#customers-more"', rows.text)
        url = more.group(1).replace("&amp;", "&") if more else None
        if url:
            assert "tag=paged" in url
    assert seen == sorted(made, reverse=True)


def test_the_empty_states_say_what_to_do(client, org, admin):
    """No customers at all invites to add one; a search without matches says so."""
    page = client.get("/customers/")
    assert arabic("No customers yet.") in page.text
    assert 'href="/customers/new"' in page.text
    make_customer(org, name="Someone")
    rows = client.get("/customers/?search=nobody-like-this", headers=HTMX)
    assert arabic("No customer matches these filters.") in rows.text


def test_the_export_is_the_current_filter_as_csv(client, org, admin):
    """The CSV export holds the filtered customers only, with a BOM so Excel reads Arabic."""
    make_customer(org, name="عميل مهم", tags=["vip"])
    make_customer(org, name="Someone else")
    export = client.get("/customers/export.csv?tag=vip")
    assert export.status_code == 200
    assert export.mimetype == "text/csv"
    assert "attachment" in export.headers["Content-Disposition"]
    text = export.get_data(as_text=True)
    assert text.startswith("\ufeff")
    rows = list(csv.reader(io.StringIO(text.lstrip("\ufeff"))))
    assert [row[0] for row in rows[1:]] == ["عميل مهم"]


def test_only_roles_that_change_the_crm_export_it_and_each_export_is_audited(client, org):
    """Agents and members get 403 and no export link; a manager's export is audited (filters
    and number of rows) before its rows are sent."""
    make_customer(org, name="Exported", tags=["vip"])
    make_customer(org, name="Not exported")
    for role in ("agent", "member"):
        login(client, make_user(org, role))
        assert client.get("/customers/export.csv?tag=vip").status_code == 403, role
        assert "export.csv" not in client.get("/customers/").text, role
    assert "customers.exported" not in audit_actions(org)

    manager = make_user(org, "manager")
    login(client, manager)
    assert 'href="/customers/export.csv"' in client.get("/customers/").text
    assert client.get("/customers/export.csv?tag=vip").status_code == 200
    with organization_context(ident(org)):
        entry = db.session.scalars(select(AuditEntry).where(
            AuditEntry.action == "customers.exported")).one()
        assert entry.actor_id == ident(manager)
        assert entry.details == {"filters": {"tag": "vip"}, "rows": 1}


def test_the_list_runs_the_same_queries_for_more_customers(client, org, admin):
    """The list and its rows fragment make a fixed number of queries however many rows they
    show (owner and stage come in one query each)."""
    other_owner = make_user(org, "manager")
    for n in range(3):
        make_customer(org, name=f"First {n}", owner_id=ident(other_owner))

    def count(url: str, **kwargs) -> int:
        commit()  # what the factories left pending is written before counting
        with count_queries() as statements:
            assert client.get(url, **kwargs).status_code == 200
        return len(statements)

    page, rows = count("/customers/"), count("/customers/?search=a", headers=HTMX)
    for n in range(6):
        make_customer(org, name=f"More {n}", stage_id=stages_of(org)[n % 3].id)
    assert count("/customers/") == page
    assert count("/customers/?search=a", headers=HTMX) == rows
    assert (page, rows) == (5, 2)  # the user comes with the enabled modules


# -- creating, editing, deleting, merging ---------------------------------------------------------

def test_creating_with_errors_answers_422_and_keeps_what_was_typed(client, org, admin):
    """Every invalid field is named beside it, what was typed stays, nothing is written."""
    make_field(org, key="budget", label="Budget", type_="number", is_required=True)
    page = client.post("/customers/new", data={
        "name": "", "phone": "12", "email": "not-an-email", "company": "شركة الأمل",
        "cf_budget": "a lot"})
    assert page.status_code == 422
    for name in ("name", "phone", "email", "cf_budget"):
        assert f'id="error-{name}"' in page.text, name
    assert 'value="شركة الأمل"' in page.text
    assert count_of(org, Customer) == 0


def test_the_expected_value_is_labelled_with_the_currency_as_the_language_writes_it(client,
                                                                                     org, admin):
    """An Arabic form names the organization's currency as amounts do («ر.س.»), not by its
    code (SAR)."""
    form = client.get("/customers/new").text

    label = re.search(r'<label for="field-expected_value">([^<]*)</label>', form).group(1)
    assert "ر.س." in label, label
    assert "SAR" not in label


def test_creating_a_customer_opens_their_page(client, org, admin):
    """A valid form creates the customer (phone as E.164, first stage, the creator as owner)
    and lands on their page with the creation on the timeline."""
    make_field(org, key="city", label="City", type_="choice", choices="Jeddah, Riyadh")
    form = client.get("/customers/new")
    assert form.status_code == 200
    assert 'name="phone" type="tel"' in form.text
    assert 'dir="ltr"' in form.text
    assert '<option value="Jeddah" dir="auto">' in form.text
    answer = client.post("/customers/new", data={
        "name": "نورة القحطاني", "phone": "٠٥٠١٢٣٤٥٦٧", "email": "Noura@Example.com",
        "owner_id": str(ident(org.admin)), "stage_id": "", "tags": "vip، جديد",
        "cf_city": "Riyadh", "notes": ""})
    customer = customer_named(org, "نورة القحطاني")
    assert answer.status_code == 303
    assert answer.location.endswith(f"/customers/{customer.id}")
    assert (customer.phone, customer.email, customer.tags) == (
        "+966501234567", "noura@example.com", ["vip", "جديد"])
    assert customer.stage_id == stages_of(org)[0].id
    assert customer.custom_fields == {"city": "Riyadh"}
    page = client.get(answer.location)
    assert page.status_code == 200
    assert "نورة القحطاني" in page.text
    assert 'id="activity-' in page.text


def test_a_duplicate_phone_names_the_existing_customer(client, org, admin):
    """A phone number another customer has (written another way) answers 409 with a link to
    that customer."""
    existing = make_customer(org, name="First", phone="+966501234567")
    page = client.post("/customers/new", data={"name": "Second", "phone": "0501234567"})
    assert page.status_code == 409
    assert 'id="error-phone"' in page.text
    assert f'href="/customers/{ident(existing)}"' in page.text
    assert count_of(org, Customer) == 1


def test_editing_in_place(client, org, admin):
    """"Edit" swaps the form into the details; saving swaps the details back; an error keeps
    the form with 422."""
    customer = make_customer(org, name="Old name", tags=["a", "b"])
    url = f"/customers/{ident(customer)}/edit"
    form = client.get(url, headers=HTMX)
    assert form.status_code == 200
    assert "<html" not in form.text
    assert f'hx-post="{url}"' in form.text
    assert 'value="a, b"' in form.text

    refused = client.post(url, data={"name": "", "phone": customer.phone}, headers=HTMX)
    assert refused.status_code == 422
    assert 'id="error-name"' in refused.text
    assert f'hx-post="{url}"' in refused.text

    stage = stages_of(org)[2]
    saved = client.post(url, headers=HTMX, data={
        "name": "New name", "phone": "", "email": "", "company": "", "owner_id": "",
        "stage_id": str(stage.id), "tags": "c", "notes": "Likes mornings"})
    assert saved.status_code == 200
    assert 'id="customer-' in saved.text
    assert "-details" in saved.text
    assert "New name" in saved.text
    customer = customer_named(org, "New name")
    assert (customer.phone, customer.owner_id, customer.tags, customer.stage_id) == (
        None, None, ["c"], stage.id)
    assert "stage_changed" in activity_types(org, customer.id)

    cancel = client.get(f"/customers/{customer.id}", headers=HTMX)
    assert cancel.text.lstrip().startswith("<section")


def test_editing_as_a_plain_form(client, org, admin):
    """Without htmx, the edit page is a whole page and saving goes back to the customer."""
    customer = make_customer(org, name="Plain")
    url = f"/customers/{ident(customer)}/edit"
    assert client.get(url).text.startswith("<!doctype html>")
    saved = client.post(url, data={"name": "Plainer", "stage_id": str(stages_of(org)[0].id)})
    assert saved.status_code == 303
    assert customer_named(org, "Plainer") is not None


def test_deleting_a_customer(client, org, admin):
    """Delete asks for confirmation on the page, then removes the customer (404 afterwards)."""
    customer = make_customer(org, name="Leaving")
    customer_id = ident(customer)
    page = client.get(f"/customers/{customer_id}")
    assert "hx-confirm=" in page.text
    answer = client.post(f"/customers/{customer_id}/delete")
    assert answer.status_code == 303
    assert answer.location.endswith("/customers/")
    assert client.get(f"/customers/{customer_id}").status_code == 404


def test_merging_a_duplicate_found_by_search(client, org, admin):
    """The merge picker finds other customers (never the one open); merging moves the
    duplicate's timeline to the survivor and the duplicate answers 404."""
    survivor = make_customer(org, name="Khalid", phone="0501111111")
    duplicate = make_customer(org, name="Khalid Alharbi", email="khalid@example.com")
    make_activity(org, duplicate, "note", "Met at the fair")
    survivor_id, duplicate_id = ident(survivor), ident(duplicate)

    found = client.get(f"/customers/{survivor_id}/merge?q=khalid", headers=HTMX)
    assert found.status_code == 200
    assert f'value="{duplicate_id}"' in found.text
    assert f'value="{survivor_id}"' not in found.text
    assert "hx-confirm=" in found.text
    assert client.get(f"/customers/{survivor_id}/merge?q=khalid").text.startswith("<!doctype")

    answer = client.post(f"/customers/{survivor_id}/merge",
                         data={"duplicate_id": str(duplicate_id)})
    assert answer.status_code == 303
    assert client.get(f"/customers/{duplicate_id}").status_code == 404
    page = client.get(f"/customers/{survivor_id}")
    assert "Met at the fair" in page.text
    assert "khalid@example.com" in page.text
    assert "merged" in activity_types(org, survivor_id)


def test_merging_needs_a_duplicate_of_the_same_organization(client, org, other_org, admin):
    """No duplicate, the customer itself, or another organization's customer: refused, and
    nothing changes."""
    mine = ident(make_customer(org, name="Mine"))
    theirs = ident(make_customer(other_org, name="Theirs"))
    assert client.post(f"/customers/{mine}/merge", data={}).status_code == 422
    assert client.post(f"/customers/{mine}/merge",
                       data={"duplicate_id": str(mine)}).status_code == 422
    assert client.post(f"/customers/{mine}/merge",
                       data={"duplicate_id": str(theirs)}).status_code == 404
    assert customer_named(org, "Mine") is not None
    assert customer_named(other_org, "Theirs") is not None


def test_the_customer_page_opens_their_whatsapp_conversation(client, org, admin):
    """With a conversation linked to the customer, the page links to it in the inbox; with
    the WhatsApp module switched off, the block is gone."""
    customer = make_customer(org, name="On WhatsApp")
    conversation = make_conversation(make_profile(org), phone=customer.phone,
                                     customer_id=ident(customer))
    url = f"/customers/{ident(customer)}"
    assert f'href="/inbox/conversations/{ident(conversation)}"' in client.get(url).text
    assert 'href="/inbox/conversations/' not in client.get(
        f"/customers/{ident(make_customer(org))}").text
    with organization_context(ident(org)):
        foundation_services.set_module_enabled(org.admin, "whatsapp", False)
        db.session.flush()
    page = client.get(url)
    assert page.status_code == 200
    assert 'href="/inbox/conversations/' not in page.text


def test_a_failed_import_can_be_continued(client, org, admin):
    """An import that stopped shows why and a button that queues it again."""
    imp = make_import(org)
    with organization_context(ident(org)):
        imp.status, imp.error = "failed", "The worker stopped."
        db.session.flush()
    url = f"/customers/imports/{ident(imp)}"
    page = client.get(url)
    assert "The worker stopped." in page.text
    assert f'action="{url}/resume"' in page.text
    assert client.post(f"{url}/resume").status_code == 303
    with organization_context(ident(org)):
        db.session.expire_all()
        assert db.session.get(CustomerImport, ident(imp)).status == "queued"
    again = client.post(f"{url}/resume")  # no longer failed: said, and nothing changes
    assert again.status_code == 303
    assert 'hx-trigger="every 1s"' in client.get(url).text


# -- the timeline ------------------------------------------------------------------------------

def test_the_timeline_is_newest_first_and_loads_more(client, org, admin, monkeypatch):
    """The customer page shows the latest entries; "Load more" brings the older ones."""
    monkeypatch.setattr(views, "TIMELINE_PAGE", 2)
    customer = make_customer(org, name="Busy")
    customer_id = ident(customer)
    for n in range(4):
        make_activity(org, customer, "note", f"Note number {n}")
    page = client.get(f"/customers/{customer_id}")
    assert page.text.index("Note number 3") < page.text.index("Note number 2")
    assert "Note number 1" not in page.text
    more = re.search(r'hx-get="(/customers/\d+/activities\?cursor=\d+)"', page.text)
    older = client.get(more.group(1), headers=HTMX)
    assert "<html" not in older.text
    assert "Note number 1" in older.text
    assert "Note number 0" in older.text
    assert "Note number 3" not in older.text
    plain = client.get(more.group(1))
    assert plain.text.startswith("<!doctype html>")
    assert "Note number 1" in plain.text


HIDDEN = "Hidden: this conversation is not assigned to you."


def chats_of(org, customer, agent) -> dict[str, object]:
    """Three WhatsApp conversations with `customer`, each with a message on their timeline:
    one assigned to `agent`, one to a colleague and one to nobody."""
    profile = make_profile(org)
    colleague = make_user(org, "agent")
    chats = {"mine": make_conversation(profile, phone=customer.phone,
                                       customer_id=ident(customer), assigned_user_id=ident(agent)),
             "theirs": make_conversation(profile, customer_id=ident(customer),
                                         assigned_user_id=ident(colleague)),
             "nobody's": make_conversation(profile, customer_id=ident(customer))}
    for owner, conversation in chats.items():
        make_message_activity(org, customer, conversation, f"Text of {owner} chat")
    make_message_activity(org, customer, chats["theirs"], "Reply in their chat", "out")
    return chats


def test_an_agent_reads_only_the_messages_of_conversations_assigned_to_them(client, org):
    """On a customer's page and timeline an agent reads the WhatsApp messages of the
    conversations assigned to them; another conversation's message keeps its entry (type and
    time) with its text hidden. A manager reads every message."""
    agent = make_user(org, "agent")
    customer = make_customer(org, name="Two chats")
    chats_of(org, customer, agent)
    make_activity(org, customer, "note", "A note for everyone")
    url = f"/customers/{ident(customer)}"
    login(client, agent)

    for page in (client.get(url), client.get(f"{url}/activities", headers=HTMX)):
        assert page.status_code == 200
        assert "Text of mine chat" in page.text
        assert "A note for everyone" in page.text
        for hidden in ("Text of theirs chat", "Text of nobody's chat", "Reply in their chat"):
            assert escape(hidden) not in page.text
        assert page.text.count(arabic(HIDDEN)) == 3
        assert page.text.count('class="activity activity-whatsapp_in') == 3
        assert page.text.count('class="activity activity-whatsapp_out') == 1

    login(client, make_user(org, "manager"))
    page = client.get(url)
    for text in ("Text of mine chat", "Text of theirs chat", "Text of nobody's chat",
                 "Reply in their chat"):
        assert escape(text) in page.text
    assert arabic(HIDDEN) not in page.text


def test_an_agents_timeline_runs_the_same_queries_for_more_hidden_messages(client, org):
    """Which messages an agent may read is one query for the page, however many it shows."""
    agent = make_user(org, "agent")
    customer = make_customer(org)
    profile = make_profile(org)
    url = f"/customers/{ident(customer)}/activities"
    login(client, agent)

    def count(messages: int) -> int:
        for n in range(messages):
            conversation = make_conversation(profile, customer_id=ident(customer),
                                             assigned_user_id=ident(agent) if n % 2 else None)
            make_message_activity(org, customer, conversation, f"Message {n}")
        commit()
        with count_queries() as statements:
            assert client.get(url, headers=HTMX).status_code == 200
        return len(statements)

    assert count(2) == count(10)


def test_a_customer_search_never_shows_or_matches_message_text(client, org):
    """Customer search reads names, phones and emails only: a word of a WhatsApp message
    finds nobody, and the list shows no message of the customers it finds."""
    agent = make_user(org, "agent")
    customer = make_customer(org, name="Searched customer")
    make_message_activity(org, customer, make_conversation(make_profile(org)),
                          "zanzibar-secret offer")
    login(client, agent)
    found = client.get("/customers/", query_string={"search": "Searched"}, headers=HTMX)
    assert row_ids(found.text) == [ident(customer)]
    assert "zanzibar" not in found.text
    missed = client.get("/customers/", query_string={"search": "zanzibar"}, headers=HTMX)
    assert row_ids(missed.text) == []


def test_logging_a_call_and_a_task_then_completing_it(client, org, admin):
    """The activity form adds the entry to the top of the timeline (out of band) and comes
    back empty; a task shows its due date and can be marked done."""
    customer = make_customer(org, name="Caller")
    url = f"/customers/{ident(customer)}/activities"
    refused = client.post(url, data={"type": "call", "body": ""}, headers=HTMX)
    assert refused.status_code == 422
    assert 'id="error-body"' in refused.text

    added = client.post(url, headers=HTMX, data={"type": "task", "body": "Send the offer",
                                                 "due_at": "2030-01-02T10:30",
                                                 "assignee_id": ""})
    assert added.status_code == 200
    assert 'hx-swap-oob="afterbegin:#timeline-items"' in added.text
    assert "Send the offer" in added.text
    with organization_context(ident(org)):
        task = db.session.scalar(select(CustomerActivity).where(
            CustomerActivity.type == "task"))
        task_id, due = task.id, task.due_at
    assert (due.year, due.month, due.day) == (2030, 1, 2)

    done = client.post(f"/customers/activities/{task_id}/complete", headers=HTMX)
    assert done.status_code == 200
    assert f'id="activity-{task_id}"' in done.text
    assert arabic("Done") in done.text
    assert client.post(url, data={"type": "meeting", "body": "Coffee"}).status_code == 303


def test_only_a_task_can_be_completed(client, org, other_org, admin):
    """Marking a note as done is refused (409, said in the flash area); another
    organization's task is not found."""
    note = make_activity(org, make_customer(org), "note", "Just a note")
    theirs = make_activity(other_org, make_customer(other_org), "task", "Theirs")
    refused = client.post(f"/customers/activities/{ident(note)}/complete", headers=HTMX)
    assert refused.status_code == 409
    assert 'id="flashes"' in refused.text
    assert 'hx-swap-oob="true"' in refused.text
    assert client.post(f"/customers/activities/{ident(theirs)}/complete").status_code == 404


# -- the board -----------------------------------------------------------------------------------

def card_value(customer: Customer) -> str:
    return f"{customer.id}:{customer.stage_id}:{customer.board_position}"


def board_order(org, columns: dict[int, list[Customer]]) -> list[str]:
    """The `order` values the board posts, for `columns` in the order given."""
    values = []
    for stage_id, customers in columns.items():
        values.append(f"stage:{stage_id}")
        values += [card_value(customer) for customer in customers]
    return values


def test_the_board_shows_a_column_per_stage_with_counts(client, org, admin):
    """Each stage is a column in order, with its count and its cards; a writer's columns are
    draggable inside a form that posts on Sortable's "end"."""
    stages = stages_of(org)
    for n in range(3):
        make_customer(org, name=f"Lead {n}", stage_id=stages[0].id)
    make_customer(org, name="Proposal one", stage_id=stages[3].id)
    page = client.get("/customers/board")
    assert page.status_code == 200
    ids = re.findall(r'<section class="board-column" id="column-(\d+)"', page.text)
    assert ids == [str(stage.id) for stage in stages]
    assert f'id="column-{stages[0].id}-count">3<' in page.text
    assert f'id="column-{stages[3].id}-count">1<' in page.text
    assert 'hx-trigger="end"' in page.text
    assert 'data-sortable="board"' in page.text
    assert stages[0].name_ar in page.text  # an Arabic user reads Arabic stage names


def test_each_cards_stage_list_names_its_customer_and_holds_its_stage(client, org, admin):
    """The keyboard's way to move a card: each card's list is labelled with its customer's
    name, offers every stage in the reader's language and holds the card's own stage (the
    lists are written once per stage, so a column's cards must not share another's)."""
    stages = stages_of(org)
    placed = {"Lead one": stages[0], "Lead two": stages[0], "Proposal one": stages[3]}
    ids = {name: ident(make_customer(org, name=name, stage_id=stage.id))
           for name, stage in placed.items()}
    page = client.get("/customers/board").text
    for name, stage in placed.items():
        card = page.split(f'id="card-{ids[name]}"')[1].split("</li>")[0]
        label = re.search(r'<label class="visually-hidden"[^>]*>(.*?)</label>', card)[1]
        assert label == arabic("Move %(name)s to a stage", name="\0").replace(
            "\0", f"<bdi>{name}</bdi>")
        options = re.findall(r'<option value="(\d+)"[^>]*?( selected)?>([^<]*)</option>', card)
        assert [int(value) for value, _selected, _label in options] == [s.id for s in stages]
        assert [int(value) for value, selected, _label in options if selected] == [stage.id]
        assert [label for _value, _selected, label in options] == [s.name_ar for s in stages]


def test_dragging_a_card_to_another_stage_saves_it_and_logs_it(client, org, admin):
    """The posted order moves the card that sits in another column than it was drawn in,
    between its new neighbours; the answer updates that card and both counts; the timeline
    shows the change."""
    stages = stages_of(org)
    lead = make_customer(org, name="Lead", stage_id=stages[0].id)
    bottom = make_customer(org, name="Bottom", stage_id=stages[1].id)
    top = make_customer(org, name="Top", stage_id=stages[1].id)  # a new card goes on top
    lead_id = ident(lead)
    answer = client.post("/customers/board/move", headers=HTMX, data={"order": board_order(
        org, {stages[0].id: [], stages[1].id: [top, lead, bottom]})})
    assert answer.status_code == 200
    assert f'id="card-{lead_id}" data-sortable-item hx-swap-oob="true"' in answer.text
    assert f'id="column-{stages[0].id}-count" hx-swap-oob="true">0<' in answer.text
    assert f'id="column-{stages[1].id}-count" hx-swap-oob="true">3<' in answer.text
    with organization_context(ident(org)):
        column, _more = services.board_column(stages[1].id)
        assert [c.name for c in column] == ["Top", "Lead", "Bottom"]
    assert activity_types(org, lead_id)[-1] == "stage_changed"
    page = client.get(f"/customers/{lead_id}")
    assert arabic("Stage changed") in page.text
    assert stages[1].name_ar in page.text


def test_reordering_within_a_column_and_dropping_without_moving(client, org, admin,
                                                               monkeypatch):
    """A card dragged down its own column lands between its new neighbours (no activity; the
    team's boards get that column again); a drop where the card already was changes nothing
    (204)."""
    sent = []
    monkeypatch.setattr(live, "emit_to_org", lambda event, data: sent.append(data))
    stage = stages_of(org)[0]
    c, b, a = (make_customer(org, name=name, stage_id=stage.id) for name in "CBA")
    with organization_context(ident(org)):
        drawn = [db.session.get(Customer, ident(x)) for x in (a, b, c)]
    unchanged = client.post("/customers/board/move", headers=HTMX,
                            data={"order": board_order(org, {stage.id: drawn})})
    assert unchanged.status_code == 204
    answer = client.post("/customers/board/move", headers=HTMX, data={
        "order": board_order(org, {stage.id: [drawn[1], drawn[2], drawn[0]]})})
    assert answer.status_code == 200
    with organization_context(ident(org)):
        column, _more = services.board_column(stage.id)
        assert [x.name for x in column] == ["B", "C", "A"]
    assert "stage_changed" not in activity_types(org, ident(a))
    assert [[swap["target"] for swap in data["swaps"]] for data in sent] == [
        [f'html[lang="{language}"] #column-{stage.id}-cards' for language in ("ar", "en")]]


@pytest.mark.parametrize(("order", "expected"), [
    # a card dragged down: 1 moves below 3
    ([Card(2, 5, 2.0), Card(3, 5, 3.0), Card(1, 5, 1.0)], (1, 5, 3, None)),
    # a card dragged up: 3 moves above 1
    ([Card(3, 5, 3.0), Card(1, 5, 1.0), Card(2, 5, 2.0)], (3, 5, None, 1)),
    # two neighbours swapped: read as the lower one dragged up (the same order either way)
    ([Card(2, 5, 2.0), Card(1, 5, 1.0), Card(3, 5, 3.0)], (2, 5, None, 1)),
    # a card from another column, dropped in the middle
    ([Card(1, 5, 1.0), Card(9, 6, 0.0), Card(2, 5, 2.0)], (9, 5, 1, 2)),
])
def test_find_move_reads_which_card_moved(order, expected):
    """The card that moved, its column and its neighbours come from the posted order alone."""
    move = find_move({5: order, 6: []})
    assert (move.card.id, move.stage_id, move.after_id, move.before_id) == expected


def test_a_board_order_that_makes_no_sense_is_refused():
    """Cards before any column, or values that are not numbers, are a 422."""
    for values in (["1:2:3.0"], ["stage:x"], ["stage:1", "1:2"], ["stage:1", "1:1:nan"],
                   [f"stage:{2**63}"], ["stage:1", f"{2**64}:1:0"]):
        with pytest.raises(ValidationError):
            read_board(values)


def test_a_stale_board_is_told_and_reloaded(client, org, other_org, admin):
    """A move onto a neighbour that is no longer in that column (or a card of another
    organization) is refused: the board reloads and says why; nothing moves."""
    stages = stages_of(org)
    lead = make_customer(org, name="Lead", stage_id=stages[0].id)
    elsewhere = make_customer(org, name="Elsewhere", stage_id=stages[2].id)
    theirs = make_customer(other_org, name="Theirs")
    with organization_context(ident(other_org)):
        their_card = card_value(theirs)
    stale = Card(ident(elsewhere), stages[1].id, 0.0)
    answer = client.post("/customers/board/move", headers=HTMX, data={"order": [
        f"stage:{stages[1].id}", f"{stale.id}:{stale.stage_id}:0.0", card_value(lead)]})
    assert answer.status_code == 422
    assert answer.headers["HX-Refresh"] == "true"
    assert customer_named(org, "Lead").stage_id == stages[0].id

    answer = client.post("/customers/board/move", headers=HTMX,
                         data={"order": [f"stage:{stages[1].id}", their_card]})
    assert answer.status_code == 404


def test_a_column_loads_more_cards(client, org, admin, monkeypatch):
    """A column pages by itself: the next cards are appended, with its "Load more" swapped out
    of band; without htmx the link opens the list of that stage."""
    monkeypatch.setattr(live, "BOARD_PAGE", 2)
    stage = stages_of(org)[1]
    for n in range(5):
        make_customer(org, name=f"Card {n}", stage_id=stage.id)
    page = client.get("/customers/board")
    more = re.search(rf'hx-get="(/customers/board/{stage.id}\?cursor=[^"]+)"', page.text)
    assert page.text.count('class="board-card"') == 2
    cards = client.get(more.group(1), headers=HTMX)
    assert cards.text.count('class="board-card"') == 2
    assert f'id="column-{stage.id}-more" class="pagination" hx-swap-oob="true"' in cards.text
    assert "Card 2" in cards.text
    assert "Card 1" in cards.text
    plain = client.get(more.group(1))
    assert plain.status_code == 303
    assert plain.location.endswith(f"/customers/?stage_id={stage.id}")


def test_a_board_column_runs_the_same_queries_for_more_cards(client, org, admin):
    """A column's page of cards makes a fixed number of queries (owners in one, the stages
    each card's list offers in one)."""
    stage = stages_of(org)[0]
    owner = make_user(org, "manager")
    make_customer(org, name="One", stage_id=stage.id, owner_id=ident(owner))

    def column_queries() -> int:
        page = client.get("/customers/board")
        more = re.search(rf'hx-get="(/customers/board/{stage.id}\?cursor=[^"]+)"', page.text)
        url = more.group(1) if more else f"/customers/board/{stage.id}"
        commit()  # what the factories left pending is written before counting
        with count_queries() as statements:
            assert client.get(url, headers=HTMX).status_code == 200
        return len(statements)

    few = column_queries()
    for n in range(live.BOARD_PAGE + 5):
        make_customer(org, name=f"Many {n}", stage_id=stage.id, owner_id=ident(owner))
    assert column_queries() == few == 4


def test_a_move_reaches_the_teams_boards_in_each_language(client, org, admin, monkeypatch):
    """After a move, the organization's sockets get the first page of both columns, once per
    language, each aimed at the boards shown in that language."""
    sent = []
    monkeypatch.setattr(live, "emit_to_org", lambda event, data: sent.append((event, data)))
    stages = stages_of(org)
    lead = make_customer(org, name="Lead", stage_id=stages[0].id)
    client.post("/customers/board/move", headers=HTMX, data={"order": board_order(
        org, {stages[1].id: [lead]})})
    assert [event for event, _data in sent] == ["customerMoved"]
    swaps = sent[0][1]["swaps"]
    assert [swap["target"] for swap in swaps] == [
        f'html[lang="{language}"] #column-{stage_id}-cards'
        for stage_id in (stages[0].id, stages[1].id) for language in ("ar", "en")]
    joined = swaps[2]["html"]
    assert "Lead" in joined
    assert f'id="column-{stages[1].id}-count" hx-swap-oob="true">1<' in joined
    assert arabic("Score %(score)s", score="0") in joined
    assert "Score 0" in swaps[3]["html"]


# -- segments -----------------------------------------------------------------------------------

def test_a_segment_saves_the_current_filters_with_a_live_count(client, org, admin):
    """"Save these filters as a segment" opens a form with the filters filled in and their
    count; the count follows the filters; the segment lists and opens with them."""
    make_customer(org, name="VIP one", tags=["vip"])
    make_customer(org, name="VIP two", tags=["vip"])
    make_customer(org, name="Regular")
    form = client.get("/customers/segments/new?tag=vip")
    assert form.status_code == 200
    assert 'value="vip"' in form.text
    assert 'hx-get="/customers/segments/count"' in form.text
    count = client.get("/customers/segments/count?tag=vip&search=one", headers=HTMX)
    with force_locale("ar"):
        one = ngettext("%(num)s customer matches these filters.",
                       "%(num)s customers match these filters.", 1)
    assert str(escape(one)) in count.text
    assert "<output>" in count.text
    assert client.get("/customers/segments/count?score_min=x", headers=HTMX).status_code == 422

    refused = client.post("/customers/segments", data={"name": "", "tag": "vip"})
    assert refused.status_code == 422
    assert 'id="error-name"' in refused.text
    saved = client.post("/customers/segments", data={"name": "كبار العملاء", "tag": "vip",
                                                     "stage_id": ""})
    assert saved.status_code == 303
    page = client.get("/customers/segments")
    assert "كبار العملاء" in page.text
    assert 'href="/customers/?tag=vip"' in page.text


def test_deleting_a_segment(client, org, admin):
    """A segment is deleted after confirmation; its customers stay."""
    segment = make_segment(org, "Old", tag="vip")
    make_customer(org, tags=["vip"])
    page = client.get("/customers/segments")
    assert "hx-confirm=" in page.text
    assert client.post(f"/customers/segments/{ident(segment)}/delete").status_code == 303
    assert count_of(org, Segment) == 0
    assert count_of(org, Customer) == 1


# -- CSV import ---------------------------------------------------------------------------------

IMPORT_CSV = "الاسم,الجوال,Email\nأحمد علي,0501234567,ahmad@example.com\nسارة,not a phone,\n"


def test_importing_a_csv_from_upload_to_report(app, client, org, admin):
    """An Excel CSV (BOM, Arabic) is previewed with its columns guessed; starting the import
    polls its progress every second until the summary, whose report lists the rejected row."""
    form = client.get("/customers/imports/new")
    assert 'enctype="multipart/form-data"' in form.text
    upload = client.post("/customers/imports", data={
        "file": (io.BytesIO("\ufeff".encode() + IMPORT_CSV.encode()), "عملاء.csv")},
        content_type="multipart/form-data")
    assert upload.status_code == 303
    page = client.get(upload.location)
    assert page.status_code == 200
    assert "أحمد علي" in page.text
    assert '<span dir="auto">الاسم</span>' in page.text  # the BOM is not part of the name
    assert '<option value="phone" selected>' in page.text  # guessed from "الجوال"

    start = client.post(upload.location, data={
        "column-0": "name", "column-1": "phone", "column-2": "email", "on_duplicate": "skip"})
    assert start.status_code == 303
    waiting = client.get(upload.location)
    assert 'hx-trigger="every 1s"' in waiting.text

    run_jobs(app)
    progress = client.get(upload.location, headers=HTMX)
    assert progress.status_code == 200
    assert "hx-trigger" not in progress.text  # finished: the polling stops
    assert arabic("Import finished") in progress.text
    assert customer_named(org, "أحمد علي").phone == "+966501234567"
    report = re.search(r'href="(/customers/imports/\d+/report.csv)"', progress.text)
    download = client.get(report.group(1))
    assert download.status_code == 200
    assert "سارة" in download.get_data(as_text=True)


def test_a_csv_larger_than_the_usual_body_limit_uploads(app, client, org, admin):
    """Imports take files far above the 1 MB the app accepts elsewhere."""
    rows = "".join(f"Customer {n},+9665{n:08d}\n" for n in range(60_000))
    data = f"name,phone\n{rows}".encode()
    assert len(data) > app.config["MAX_CONTENT_LENGTH"]
    upload = client.post("/customers/imports", data={"file": (io.BytesIO(data), "big.csv")},
                         content_type="multipart/form-data")
    assert upload.status_code == 303
    assert client.post("/customers/segments", data={"name": "x" * 2_000_000}).status_code == 413


def test_an_import_with_a_bad_file_or_mapping_is_refused(client, org, admin):
    """No file, a file that is not CSV, or a mapping without name, phone or email: 422 with
    the reason, and no import starts."""
    assert client.post("/customers/imports", data={},
                       content_type="multipart/form-data").status_code == 422
    refused = client.post("/customers/imports", data={
        "file": (io.BytesIO(b"\x89PNG"), "photo.png")}, content_type="multipart/form-data")
    assert refused.status_code == 422
    assert 'id="error-file"' in refused.text
    upload = client.post("/customers/imports", data={
        "file": (io.BytesIO(IMPORT_CSV.encode()), "customers.csv")},
        content_type="multipart/form-data")
    unmapped = client.post(upload.location, data={"column-0": "", "column-1": "",
                                                  "column-2": "", "on_duplicate": "skip"})
    assert unmapped.status_code == 422
    with organization_context(ident(org)):
        assert db.session.scalar(select(CustomerImport.status)) == "uploaded"


# -- permissions --------------------------------------------------------------------------------

def test_an_agent_reads_the_crm_but_cannot_change_it(client, org):
    """Agents see the list, a customer, the board and segments without write controls; every
    change answers 403."""
    customer = make_customer(org, name="Readable")
    customer_id = ident(customer)
    login(client, make_user(org, "agent"))
    for url in ("/customers/", f"/customers/{customer_id}", "/customers/board",
                "/customers/segments"):
        page = client.get(url)
        assert page.status_code == 200, url
        assert 'href="/customers/new"' not in page.text
        assert 'data-sortable="board"' not in page.text
        assert f'action="/customers/{customer_id}/delete"' not in page.text
    for url, data in ((f"/customers/{customer_id}/delete", {}),
                      ("/customers/new", {"name": "X"}),
                      ("/customers/board/move", {"order": []}),
                      (f"/customers/{customer_id}/activities", {"type": "note", "body": "x"})):
        assert client.post(url, data=data).status_code == 403, url
    assert client.get("/customers/settings/stages").status_code == 403
    assert customer_named(org, "Readable") is not None


def test_the_sidebar_and_dashboard_show_the_crm(client, org, admin):
    """The sidebar links to Customers and Pipeline; the dashboard lists the tasks due today."""
    customer = make_customer(org, name="Due today")
    with organization_context(ident(org)):
        services.add_activity(org.admin, customer, "task", "Call about the offer",
                              due_at=utcnow())
    page = client.get("/")
    assert 'href="/customers/"' in page.text
    assert 'href="/customers/board"' in page.text
    assert 'id="card-tasks-today"' in page.text
    assert "Call about the offer" in page.text


# -- settings -----------------------------------------------------------------------------------

def test_stages_are_added_edited_reordered_and_deleted(client, org, admin):
    """The admin adds a stage, renames it (a won and lost stage is refused with 422), moves it
    first by dragging (the order form posts on "end"), and deletes it."""
    page = client.get("/customers/settings/stages")
    assert page.status_code == 200
    assert 'data-sortable="stages"' in page.text
    assert 'hx-trigger="end"' in page.text
    refused = client.post("/customers/settings/stages", data={"name_ar": "", "name_en": "X"})
    assert refused.status_code == 422
    assert 'id="error-name_ar"' in refused.text
    added = client.post("/customers/settings/stages", data={
        "name_ar": "تفاوض", "name_en": "Negotiation", "color": "#123456"})
    assert added.status_code == 303
    stage = next(s for s in stages_of(org) if s.name_en == "Negotiation")
    stage_id = stage.id

    refused = client.post(f"/customers/settings/stages/{stage_id}", data={
        "name_ar": "تفاوض", "name_en": "Negotiation", "is_won": "1", "is_lost": "1"})
    assert refused.status_code == 422
    assert arabic("A stage cannot be both won and lost.") in refused.text
    assert client.post(f"/customers/settings/stages/{stage_id}", data={
        "name_ar": "تفاوض", "name_en": "Talks", "color": "#654321"}).status_code == 303
    assert stages_of(org)[-1].name_en == "Talks"

    ids = [s.id for s in stages_of(org)]
    order = [stage_id, *(i for i in ids if i != stage_id)]
    assert client.post("/customers/settings/stages/order", headers=HTMX,
                       data={"stage_ids": order}).status_code == 204
    assert [s.id for s in stages_of(org)] == order
    assert client.post("/customers/settings/stages/order", headers=HTMX,
                       data={"stage_ids": order[:2]}).status_code == 422

    assert client.post(f"/customers/settings/stages/{stage_id}/delete").status_code == 303
    assert stage_id not in [s.id for s in stages_of(org)]


def test_custom_fields_are_defined_edited_and_deleted(client, org, admin):
    """The admin defines a choice field (a bad key or a taken one is refused), edits its
    choices, and deletes it; the customer form then shows it no more."""
    refused = client.post("/customers/settings/fields", data={
        "key": "Bad Key", "label": "City", "type": "text"})
    assert refused.status_code == 422
    assert 'id="error-key"' in refused.text
    assert client.post("/customers/settings/fields", data={
        "key": "city", "label": "المدينة", "type": "choice", "choices": "جدة, الرياض",
        "is_required": "1"}).status_code == 303
    taken = client.post("/customers/settings/fields", data={
        "key": "city", "label": "Town", "type": "text"})
    assert taken.status_code == 409
    with organization_context(ident(org)):
        definition = db.session.scalar(select(CustomFieldDefinition))
        field_id = definition.id
    assert client.post(f"/customers/settings/fields/{field_id}", data={
        "label": "المدينة", "choices": "جدة, الرياض, مكة"}).status_code == 303
    form = client.get("/customers/new")
    assert '<option value="مكة" dir="auto">' in form.text
    assert client.post(f"/customers/settings/fields/{field_id}/delete").status_code == 303
    assert 'name="cf_city"' not in client.get("/customers/new").text


def test_scoring_rules_are_edited_and_explained(client, org, admin):
    """The admin sees each rule explained, adds one, and saves; an error names the row it is
    in even when a row above was removed; the customer page explains the score."""
    page = client.get("/customers/settings/scoring")
    assert page.status_code == 200
    assert 'name="rules-0-kind"' in page.text
    added = client.get("/customers/settings/scoring?add=message_count")
    rows = len(re.findall(r'name="rules-\d+-kind"', added.text))
    assert f'name="rules-{rows - 1}-min"' in added.text

    refused = client.post("/customers/settings/scoring", data={
        "rules-0-kind": "replied_recently", "rules-0-points": "20", "rules-0-days": "7",
        "rules-0-remove": "1",
        "rules-1-kind": "message_count", "rules-1-points": "5", "rules-1-min": "zero",
        "rules-1-is_active": "1"})
    assert refused.status_code == 422
    assert 'id="rules-1-min"' in refused.text
    assert "has-error" in refused.text
    assert re.search(r'rules-1-min"[^>]*aria-invalid', refused.text)

    saved = client.post("/customers/settings/scoring", data={
        "rules-0-kind": "stage_reached", "rules-0-points": "30",
        "rules-0-stage_id": str(stages_of(org)[0].id), "rules-0-is_active": "1"})
    assert saved.status_code == 303
    with organization_context(ident(org)):
        assert [(r.kind, r.points) for r in db.session.scalars(select(ScoringRule))] == [
            ("stage_reached", 30)]
    customer = make_customer(org, name="Scored")
    page = client.get(f"/customers/{ident(customer)}")
    assert "+30" in page.text


def test_scoring_days_must_be_positive_and_decay_says_it_takes_points(client, org, admin):
    """A negative number of days is refused with a translated error beside the field; the
    form says that decay's points are taken away and that other rules' may be negative."""
    client.get("/customers/settings/scoring")  # the default rules
    refused = client.post("/customers/settings/scoring", data={
        "rules-0-kind": "replied_recently", "rules-0-points": "20", "rules-0-days": "-1",
        "rules-0-is_active": "1",
        "rules-1-kind": "decay", "rules-1-points": "5", "rules-1-every_days": "-7",
        "rules-1-max": "30", "rules-1-is_active": "1"})

    assert refused.status_code == 422
    error = arabic("Enter a whole number from %(low)d to %(high)d.", low=1, high=365)
    assert re.search(r'id="rules-0-days"[^>]*aria-invalid[^<]*>\s*<small class="error">'
                     + re.escape(error), refused.text)
    assert re.search(r'id="rules-1-every_days"[^>]*aria-invalid[^<]*>\s*<small class="error">'
                     + re.escape(error), refused.text)
    with organization_context(ident(org)):
        assert [rule.kind for rule in db.session.scalars(select(ScoringRule))] == [
            "replied_recently", "message_count", "stage_reached", "ticket_opened", "decay"]
    assert re.search(r'<label for="rules-1-points">' + re.escape(arabic("Points taken away")),
                     refused.text)
    assert re.search(r'<label for="rules-0-points">'
                     + re.escape(arabic("Points (negative to take away)")), refused.text)


def test_crm_settings_are_for_admins_only(client, org):
    """A manager writes customers but cannot change the pipeline's settings."""
    login(client, make_user(org, "manager"))
    for url in ("/customers/settings/stages", "/customers/settings/fields",
                "/customers/settings/scoring"):
        assert client.get(url).status_code == 403
    assert client.post("/customers/settings/stages",
                       data={"name_ar": "x", "name_en": "x"}).status_code == 403


def test_a_score_line_keeps_its_sign_before_its_number_in_arabic(client, org, admin):
    """«+20 ردّ…» in a right-to-left page: the signed number is kept left to right, else the
    bidi algorithm shows it as «20+» (and «-5» as «5-») at the start of the Arabic line."""
    customer = make_customer(org, name="Scored")
    with organization_context(ident(org)):
        db.session.get(Customer, ident(customer)).score_breakdown = [
            {"points": 20, "reason": "replied_recently", "detail": {"days": 7}},
            {"points": -5, "reason": "decay", "detail": {"every_days": 7, "max": 30, "days": 10}}]
        db.session.flush()
    page = client.get(f"/customers/{ident(customer)}").text
    lines = page.split('class="score-lines"')[1].split("</ul>")[0]
    assert '<li><span class="ltr" dir="ltr">+20</span> ' in lines
    assert '<li><span class="ltr" dir="ltr">-5</span> ' in lines


def test_editing_a_customer_keeps_the_owner_who_left_the_team(client, org, admin):
    """A customer owned by a removed member keeps that owner through an edit of something
    else: the form offers the owner, marked as no longer in the team (it offered active
    members only, so saving set «No owner» without a word). Choosing them anew elsewhere is
    still refused."""
    leaver = make_user(org, role="agent")
    customer = make_customer(org, name="Kept", owner_id=ident(leaver))
    other = make_customer(org, name="Other")
    with organization_context(ident(org)):
        foundation_services.remove_user(org.admin, leaver)
        commit()
    url = f"/customers/{ident(customer)}/edit"
    owners = client.get(url).text.split('name="owner_id"')[1].split("</select>")[0]
    option = re.search(rf'<option value="{ident(leaver)}"[^>]*>([^<]*)</option>', owners)
    assert option, owners
    assert " selected" in option.group(0)
    assert arabic("%(name)s (no longer in the team)", name=leaver.full_name) in option.group(1)
    stage = str(stages_of(org)[0].id)
    saved = client.post(url, data={"name": "Kept, renamed", "stage_id": stage,
                                   "owner_id": str(ident(leaver))})
    assert saved.status_code == 303
    assert customer_named(org, "Kept, renamed").owner_id == ident(leaver)
    refused = client.post(f"/customers/{ident(other)}/edit",
                          data={"name": "Other", "stage_id": stage,
                                "owner_id": str(ident(leaver))})
    assert refused.status_code == 422
    assert customer_named(org, "Other").owner_id != ident(leaver)


def test_a_checkbox_is_tied_to_its_error(client, org, admin):
    """A refused checkbox (won and lost at once) names its error with aria-describedby, as the
    other fields do."""
    refused = client.post("/customers/settings/stages", data={
        "name_ar": "تفاوض", "name_en": "Talks", "is_won": "1", "is_lost": "1"})
    assert refused.status_code == 422
    assert re.search(r'<input id="field-is_lost"[^>]*aria-describedby="error-is_lost"',
                     refused.text)
    assert 'id="error-is_lost"' in refused.text
