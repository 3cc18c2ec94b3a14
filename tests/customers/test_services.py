"""The CRM's services against real PostgreSQL: validation, duplicates, search, filters, keyset
pages, the board, the timeline, merging and deleting, segments, custom fields, scoring."""

from __future__ import annotations

import csv
import io
import re
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

import pytest
from flask_babel import force_locale
from rq.registry import ScheduledJobRegistry
from sqlalchemy import func, select, text, update

from crm.customers import imports, jobs, services
from crm.customers.models import Customer, CustomerActivity, SalesStage
from crm.customers.services import nightly, scoring, search
from crm.errors import ConflictError, NotFoundError, ValidationError
from crm.extensions import db
from crm.jobs import BULK_QUEUE, get_queue
from crm.models import utcnow
from crm.search import CUSTOMER_PAGE_SAMPLE_PAGES
from crm.tenancy import organization_context
from crm.transaction import commit
from tests.customers.factories import make_customer, make_field, make_segment
from tests.factories import make_org, make_user, run_jobs
from tests.foundation import ident


def _count(model, *where) -> int:
    return db.session.scalar(select(func.count()).select_from(model).where(*where))


def _ids(rows) -> list[int]:
    return [row.id for row in rows]


def _search(term: str) -> list[int]:
    rows, _cursor = services.list_customers(services.parse_filters({"search": term}))
    return _ids(rows)


# -- creating and validating ---------------------------------------------------------------

def test_create_normalizes_and_files_the_customer(acting):
    """Phone to E.164, email lower-cased, tags split and deduplicated, the first stage, the
    creator as owner, and a `created` entry on the timeline."""
    org = acting
    customer = services.create_customer(org.admin, {
        "name": "  أحمد   علي ", "phone": "050 123 4567", "email": "Ahmed@Example.COM",
        "tags": "vip، Riyadh,vip"})

    assert customer.name == "أحمد علي"
    assert customer.phone == "+966501234567"
    assert customer.email == "ahmed@example.com"
    assert customer.tags == ["vip", "Riyadh"]
    assert customer.stage_id == services.list_stages()[0].id
    assert customer.owner_id == org.admin.id
    assert customer.source == "manual"
    activities, _next = services.list_activities(customer)
    assert [a.type for a in activities] == ["created"]


def test_invalid_fields_are_all_reported_in_arabic_and_nothing_is_written(acting):
    """Every bad field is named at once, in the user's language; no customer is added."""
    with force_locale("ar"), pytest.raises(ValidationError) as caught:
        services.create_customer(acting.admin, {"name": " ", "email": "not-an-email",
                                                "company": "x" * 161, "phone": "12"})

    assert caught.value.fields == {
        "name": "هذا الحقل مطلوب.",
        "email": "أدخل بريدًا إلكترونيًا صحيحًا.",
        "company": "الحد الأقصى لعدد الأحرف هو 160.",
        "phone": caught.value.fields["phone"],
    }
    assert caught.value.fields["phone"]
    assert _count(Customer) == 0


@pytest.mark.parametrize("written", ["0501234567", "+966 50 123 4567", "٠٥٠١٢٣٤٥٦٧",
                                     "00966501234567"])
def test_a_phone_number_in_any_written_form_is_a_duplicate_naming_the_customer(acting, written):
    """The second customer with the same number, however written, is a 409 that names the
    first; nothing is added."""
    first = services.create_customer(acting.admin, {"name": "سارة", "phone": "+966501234567"})

    with pytest.raises(services.DuplicateCustomerError) as caught:
        services.create_customer(acting.admin, {"name": "Other", "phone": written})

    assert caught.value.status == 409
    assert caught.value.existing_id == first.id
    assert "سارة" in caught.value.message
    assert re.search(rf"\b{first.id}\b", caught.value.fields["phone"])
    assert _count(Customer) == 1


def test_a_duplicate_email_in_another_case_is_a_conflict_and_updates_check_too(acting):
    """Emails compare lower-cased; moving a customer onto another's phone is refused and
    leaves both unchanged."""
    first = services.create_customer(acting.admin, {"name": "A", "email": "a@x.example"})
    second = services.create_customer(acting.admin, {"name": "B", "phone": "0551112222"})

    with pytest.raises(ConflictError) as caught:
        services.create_customer(acting.admin, {"name": "C", "email": "A@X.example"})
    assert "email" in caught.value.fields
    with pytest.raises(ConflictError):
        services.update_customer(acting.admin, first, {"phone": "+966 55 111 2222"})

    db.session.expire_all()
    assert first.phone is None
    assert second.phone == "+966551112222"


def test_custom_fields_are_checked_against_their_definitions(acting):
    """Numbers (Arabic digits too), dates and choices are parsed; a required field must be
    filled; an unknown key is refused, each keyed cf_<key>."""
    make_field(acting, "budget", "number")
    make_field(acting, "visit", "date")
    make_field(acting, "size", "choice", choices="small\nlarge", is_required=True)

    customer = services.create_customer(acting.admin, {"name": "A", "custom_fields": {
        "budget": "١٢٬٥٠٠".replace("٬", ","), "visit": "2026-01-31", "size": "large"}})
    assert customer.custom_fields == {"budget": 12500, "visit": "2026-01-31", "size": "large"}

    with pytest.raises(ValidationError) as caught:
        services.create_customer(acting.admin, {"name": "B", "custom_fields": {
            "budget": "lots", "visit": "31/01/2026", "nope": "x"}})
    assert set(caught.value.fields) == {"cf_budget", "cf_visit", "cf_nope", "cf_size"}


def test_update_changes_only_the_fields_sent(acting, published):
    """A partial update leaves the other fields alone and announces what changed."""
    customer = make_customer(acting, company="Wasl", notes="keep")
    published.clear()

    services.update_customer(acting.admin, customer, {"company": "Wasl Co", "name": "New"})

    assert (customer.company, customer.name, customer.notes) == ("Wasl Co", "New", "keep")
    assert published == [("customer.updated", {"customer_id": customer.id,
                                               "fields": ["company", "name"]})]


# -- search, filters and pages --------------------------------------------------------------

@pytest.mark.parametrize("term", ["0501234567", "+966 50 123 4567", "٠٥٠١٢٣٤٥٦٧", "501234",
                                  "0501234", "٠٥٠١٢٣", "501 234"])
def test_search_finds_a_phone_however_it_is_written(acting, term):
    """The number typed in any form, or a part of it, finds the customer; others are not."""
    wanted = make_customer(acting, phone="+966501234567")
    make_customer(acting, phone="+966559876543")

    assert _search(term) == [wanted.id]


@pytest.mark.parametrize(("stored", "term"), [("أحمد", "احمد"), ("فاطمة", "فاطمه"),
                                              ("مُحَمَّد", "محمد"), ("مصطفى", "مصطفي"),
                                              ("عبـــدالله", "عبدالله")])
def test_arabic_search_ignores_letter_variants_diacritics_and_tatweel(acting, stored, term):
    """أ إ آ ا, ة ه, ى ي, harakat and tatweel do not matter."""
    wanted = make_customer(acting, name=stored)
    make_customer(acting, name="زيد")

    assert _search(term) == [wanted.id]


def test_search_matches_email_and_company(acting):
    by_email = make_customer(acting, email="layla@souq.example")
    by_company = make_customer(acting, company="Souq Co")
    make_customer(acting, name="Nobody")

    assert sorted(_search("souq")) == sorted([by_email.id, by_company.id])


def test_filters_by_stage_owner_tag_source_score_and_custom_field(acting):
    """Each filter narrows the list; combined they all apply."""
    stages = services.list_stages()
    seller = make_user(acting, "manager")
    make_field(acting, "city", "text")
    wanted = make_customer(acting, stage_id=stages[2].id, owner_id=seller.id, tags=["vip"],
                           custom_fields={"city": "Jeddah"})
    make_customer(acting, stage_id=stages[2].id, tags=["vip"])
    make_customer(acting, owner_id=seller.id, custom_fields={"city": "Riyadh"})
    db.session.execute(update(Customer).where(Customer.id == wanted.id).values(score=40))

    def found(**params) -> list[int]:
        rows, _cursor = services.list_customers(services.parse_filters(params))
        return _ids(rows)

    assert wanted.id in found(stage_id=str(stages[2].id))
    assert len(found(stage_id=str(stages[2].id))) == 2
    assert len(found(owner_id=str(seller.id))) == 2
    assert found(stage_id=str(stages[2].id), owner_id=str(seller.id)) == [wanted.id]
    assert found(cf_city="Jeddah") == [wanted.id]
    assert found(score_min="30", score_max="50") == [wanted.id]
    assert found(tag="vip", owner_id=seller.id) == [wanted.id]
    assert len(found(source="manual")) == 3
    assert found(source="whatsapp") == []
    assert services.count_customers(services.parse_filters({"tag": "vip"})) == 2


def test_bad_filters_are_refused_with_the_field_named(acting):
    """Forms may leave a filter empty; the API (strict) may not, nor name unknown fields."""
    assert services.parse_filters({"stage_id": "", "sort": ""}) == services.CustomerFilters()
    with pytest.raises(ValidationError) as caught:
        services.parse_filters({"stage_id": "x", "score_min": "1.5", "sort": "random",
                                "source": "fax"})
    assert set(caught.value.fields) == {"stage_id", "score_min", "sort", "source"}
    with pytest.raises(ValidationError) as caught:
        services.parse_filters({"stage_id": "", "cf_nope": "1"}, strict=True)
    assert set(caught.value.fields) == {"stage_id", "cf_nope"}


@pytest.mark.parametrize("sort", services.SORTS)
def test_keyset_pages_list_each_customer_once_in_order(acting, sort):
    """Walking the pages with the cursor yields every customer once, in the sort's order."""
    made = [make_customer(acting, name=name) for name in ("Badr", "Amal", "Dana", "Carl",
                                                          "Amal", "Eid", "Fay")]
    now = utcnow()
    for index, customer in enumerate(made):
        db.session.execute(update(Customer).where(Customer.id == customer.id).values(
            score=index % 3, last_contacted_at=None if index % 2 else now - timedelta(
                hours=index % 4)))
    db.session.expire_all()
    filters = services.parse_filters({"sort": sort})

    seen, cursor = [], None
    while True:
        rows, cursor = services.list_customers(filters, cursor, limit=3)
        seen += rows
        if cursor is None:
            break

    expected = list(db.session.scalars(services.filtered_query(filters)))
    assert _ids(seen) == _ids(expected)
    assert sorted(_ids(seen)) == sorted(_ids(made))


def _crowd(org) -> list[Customer]:
    """24 customers: every third an «عبدالله», every fourth tagged vip, two stages, scores
    with ties, half of them contacted."""
    stages = services.list_stages()
    made = [make_customer(org, name=f"عبدالله {n}" if n % 3 == 0 else f"Customer {n}",
                          tags=["vip"] if n % 4 == 0 else [], stage_id=stages[n % 2].id)
            for n in range(24)]
    now = utcnow()
    for n, customer in enumerate(made):
        db.session.execute(update(Customer).where(Customer.id == customer.id).values(
            score=n % 3, last_contacted_at=now - timedelta(hours=n % 5) if n % 2 else None))
    db.session.expire_all()
    return made


def _walk(filters: services.CustomerFilters, limit: int) -> list[int]:
    seen, cursor = [], None
    while True:
        rows, cursor = services.list_customers(filters, cursor, limit=limit)
        seen += _ids(rows)
        if cursor is None:
            return seen


@pytest.mark.parametrize("scan", [1, 100])
@pytest.mark.parametrize("sort", services.SORTS)
def test_searches_and_tag_filters_page_through_every_match_once_in_order(acting, monkeypatch,
                                                                         sort, scan):
    """The search function returns a page of the list's order, whether it finds the matches
    by reading the list in order (a broad term) or through its GIN indexes (rare matches: a
    scan of one row per row of the page sends almost every page there); with the other
    filters applied, and counted alike."""
    monkeypatch.setattr(search, "PAGE_SCAN", scan)
    made = _crowd(acting)
    stage_id = services.list_stages()[0].id
    in_order = [c.id for c in db.session.scalars(services.filtered_query(
        services.parse_filters({"sort": sort})))]
    cases = [({"search": "عبد"}, lambda c: c.name.startswith("عبدالله")),
             ({"tag": "vip"}, lambda c: "vip" in c.tags),
             ({"search": "عبد", "tag": "vip", "stage_id": stage_id, "score_min": 0},
              lambda c: c.name.startswith("عبدالله") and "vip" in c.tags
              and c.stage_id == stage_id),
             ({"search": "nobody"}, lambda c: False)]
    for params, wanted in cases:
        filters = services.parse_filters({**params, "sort": sort})
        expected = [i for i in in_order if wanted(db.session.get(Customer, i))]
        assert _walk(filters, limit=2) == expected, params
        assert services.count_customers(filters) == len(expected)
    assert len(made) == len(in_order)


def _search_steps(filters: services.CustomerFilters) -> list[str]:
    """The steps past its first read that the search function took for the first page (it
    names them at DEBUG level)."""
    said: list[str] = []
    connection = db.session.connection().connection.dbapi_connection

    def hear(notice) -> None:
        step = notice.message_primary.removeprefix("wasl_customer_page: ")
        if step != notice.message_primary:
            said.append(step)

    connection.add_notice_handler(hear)
    db.session.execute(text("SET LOCAL client_min_messages = debug1"))
    try:
        services.list_customers(filters, None, limit=2)
    finally:
        db.session.execute(text("SET LOCAL client_min_messages = notice"))
        connection.remove_notice_handler(hear)
    return said


@pytest.mark.parametrize(("matches", "before", "steps"), [
    (40, 70, ["reading 146 rows in name order"]),
    (10, 130, ["sorting every match"]),
    (2, 70, ["sorting every match"])])
def test_a_search_by_name_pages_matches_that_cluster_far_down_the_order(
        acting, monkeypatch, matches, before, steps):
    """Sorted by name, a term's matches can sit in one stretch far down the order, beyond the
    first read (3 rows for a page of 2 with PAGE_SCAN 1). The table sample (all of this small
    table) then finds where the page ends: 73 rows down for 40 matches is within 12 rows a
    match, so the name order is read there without the GIN index; 133 rows for 10 matches is
    not, nor are 2 matches a page, and the GIN step sorts them. Either way every match comes
    once, in order, and the names the term does not match never do."""
    monkeypatch.setattr(search, "PAGE_SCAN", 1)
    assert db.session.scalar(text("SELECT pg_relation_size('customers')")) <= (
        CUSTOMER_PAGE_SAMPLE_PAGES * 8192), "the sample must cover the table for this test"
    matching = [make_customer(acting, name=f"عبدالله {n:02}") for n in range(matches)]
    for n in range(before):
        make_customer(acting, name=f"Aaron {n:03}")
    filters = services.parse_filters({"search": "عبد", "sort": "name"})
    expected = _ids(sorted(matching, key=lambda c: (c.name, c.id)))

    assert _search_steps(filters) == steps
    assert _walk(filters, limit=2) == expected
    assert _walk(services.parse_filters({"search": "عبد", "sort": "name", "tag": "vip"}),
                 limit=2) == []


def _page_function(search: str | None, tag: str | None, sort: str | None) -> list[int]:
    """Call the search function as the application does, without any page cursor."""
    return list(db.session.scalars(text(
        "SELECT * FROM wasl_customer_page(:search, '{}', :tag, NULL, NULL, NULL, NULL, NULL, "
        "NULL, :sort, NULL, NULL, NULL, NULL, 50, 5000)"),
        {"search": search, "tag": tag, "sort": sort}))


def test_searches_and_tag_filters_never_return_another_organizations_customers(other_org,
                                                                               acting):
    """The search function reads every organization's rows (as the schema owner, so that its
    indexes serve it) and filters by the transaction's organization itself: another
    organization's matching customers never come back, in any sort, paged or counted; with no
    organization set it returns nothing."""
    mine = make_customer(acting, name="عبدالرحمن", tags=["vip"])
    theirs = make_customer(other_org, name="عبدالرحمن", tags=["vip"])
    for sort in services.SORTS:
        for params in ({"search": "عبد"}, {"tag": "vip"}, {"search": "عبد", "tag": "vip"}):
            filters = services.parse_filters({**params, "sort": sort})
            assert _ids(services.list_customers(filters)[0]) == [mine.id]
            assert services.count_customers(filters) == 1
    for sort in (*services.SORTS, None):
        assert _page_function("%عبد%", "vip", sort) == [mine.id]
        with organization_context(ident(other_org)):
            assert _page_function("%عبد%", "vip", sort) == [theirs.id]
        with organization_context(None):
            assert _page_function("%عبد%", "vip", sort) == []
            assert _page_function(None, "vip", sort) == []


def test_a_bad_cursor_is_a_validation_error(acting):
    """A cursor that was not made by this list (or another sort's) is a 422 on `cursor`."""
    make_customer(acting)
    make_customer(acting)
    _rows, cursor = services.list_customers(services.parse_filters({"sort": "name"}), limit=1)

    for bad in ("garbage!", "eyJ4IjoxfQ", cursor):
        with pytest.raises(ValidationError) as caught:
            services.list_customers(services.parse_filters({}), bad)
        assert set(caught.value.fields) == {"cursor"}


# -- the board ------------------------------------------------------------------------------

def _column(stage: SalesStage) -> list[int]:
    rows, _cursor = services.board_column(stage.id)
    return _ids(rows)


def test_cards_are_placed_between_their_neighbours(acting):
    """New cards go on top; a drop lands between the card above (after_id) and the card below
    (before_id); with only the card above it lands right after it."""
    stage = services.list_stages()[1]
    a, b, c = (make_customer(acting, stage_id=stage.id) for _n in range(3))
    assert _column(stage) == [c.id, b.id, a.id]

    services.move_customer(acting.admin, a, stage.id, before_id=b.id, after_id=c.id)
    assert _column(stage) == [c.id, a.id, b.id]
    services.move_customer(acting.admin, b, stage.id, after_id=c.id)
    assert _column(stage) == [c.id, b.id, a.id]
    services.move_customer(acting.admin, c, stage.id, before_id=a.id)
    assert _column(stage) == [b.id, c.id, a.id]
    services.move_customer(acting.admin, a, stage.id)
    assert _column(stage) == [a.id, b.id, c.id]


def test_a_move_between_cards_at_the_same_position_renumbers_the_column(acting):
    """Imported cards all start at position 0; dropping between two of them still works."""
    stage = services.list_stages()[1]
    cards = [make_customer(acting, stage_id=stage.id) for _n in range(4)]
    db.session.execute(update(Customer).where(Customer.stage_id == stage.id)
                       .values(board_position=0))
    db.session.expire_all()
    order = _column(stage)  # by id, as all positions are equal
    moving = db.session.get(Customer, order[0])

    services.move_customer(acting.admin, moving, stage.id, after_id=order[1],
                           before_id=order[2])

    assert _column(stage) == [order[1], order[0], order[2], order[3]]
    assert len(cards) == 4


def test_moving_to_another_stage_logs_and_announces_it(acting, published):
    """A change of stage is a stage_changed activity naming both stages and a
    customer.stage_changed event; the card lands where it was dropped."""
    stages = services.list_stages()
    target = make_customer(acting, stage_id=stages[1].id)
    customer = make_customer(acting, stage_id=stages[0].id)
    published.clear()

    services.move_customer(acting.admin, customer, str(stages[1].id), after_id=target.id)

    assert _column(stages[1]) == [target.id, customer.id]
    latest = services.list_activities(customer)[0][0]
    assert latest.type == "stage_changed"
    assert latest.data["from_name_en"] == stages[0].name_en
    assert latest.data["to_stage_id"] == stages[1].id
    assert latest.actor_id == acting.admin.id
    assert ("customer.stage_changed", {"customer_id": customer.id,
                                       "from_stage_id": stages[0].id,
                                       "to_stage_id": stages[1].id}) in published
    assert [name for name, _payload in published].count("customer.moved") == 1


def test_a_move_onto_a_card_of_another_column_is_refused(acting):
    stages = services.list_stages()
    elsewhere = make_customer(acting, stage_id=stages[2].id)
    customer = make_customer(acting, stage_id=stages[0].id)

    with pytest.raises(ValidationError) as caught:
        services.move_customer(acting.admin, customer, stages[1].id, before_id=elsewhere.id)

    assert set(caught.value.fields) == {"before_id"}
    assert customer.stage_id == stages[0].id


def test_stage_totals_and_a_paginated_column(acting):
    stages = services.list_stages()
    for _n in range(3):
        make_customer(acting, stage_id=stages[3].id)

    assert services.stage_totals()[stages[3].id].customers == 3
    first, cursor = services.board_column(stages[3].id, limit=2)
    rest, end = services.board_column(stages[3].id, cursor, limit=2)
    assert len(first) == 2
    assert len(rest) == 1
    assert end is None


def test_changing_the_stage_through_an_update_also_logs_it(acting):
    stages = services.list_stages()
    customer = make_customer(acting)

    services.update_customer(acting.admin, customer, {"stage_id": stages[4].id})

    assert customer.stage_id == stages[4].id
    assert services.list_activities(customer)[0][0].type == "stage_changed"


# -- stages ----------------------------------------------------------------------------------

def test_default_stages_come_once_with_each_organization(app):
    """Registering publishes organization.registered; a job gives the new organization its
    default pipeline (and calling it again adds nothing)."""
    org = make_org()
    org_id = org.id
    run_jobs(app)

    with organization_context(org_id):
        assert _count(SalesStage) == len(services.DEFAULT_STAGES)
        services.ensure_default_stages()
        stages = services.list_stages()
        assert [s.name_en for s in stages] == [s[1] for s in services.DEFAULT_STAGES]
        assert _count(SalesStage) == len(services.DEFAULT_STAGES)
        assert next(s for s in stages if s.is_won).name_ar == "تم الفوز"


def test_deleting_a_stage_moves_its_customers_to_the_first_remaining_one(acting):
    stages = services.list_stages()
    customer = make_customer(acting, stage_id=stages[0].id)

    target = services.delete_stage(acting.admin, stages[0])

    assert target.id == stages[1].id
    assert db.session.get(Customer, customer.id).stage_id == stages[1].id
    assert services.list_activities(customer)[0][0].data["from_stage_id"] == stages[0].id
    for stage in services.list_stages()[:-1]:
        services.delete_stage(acting.admin, stage)
    with pytest.raises(ConflictError):
        services.delete_stage(acting.admin, services.list_stages()[0])


def test_stage_validation_and_reordering(acting):
    with pytest.raises(ValidationError) as caught:
        services.create_stage(acting.admin, {"name_ar": "", "name_en": "Won again",
                                             "color": "red", "is_won": "on", "is_lost": "yes"})
    assert set(caught.value.fields) == {"name_ar", "color"}
    with pytest.raises(ValidationError):
        services.create_stage(acting.admin, {"name_ar": "ا", "name_en": "b", "is_won": True,
                                             "is_lost": True})
    ids = [s.id for s in services.list_stages()]
    with pytest.raises(ValidationError):
        services.reorder_stages(acting.admin, ids[1:])

    services.reorder_stages(acting.admin, list(reversed(ids)))

    assert [s.id for s in services.list_stages()] == list(reversed(ids))


# -- merging and deleting --------------------------------------------------------------------

def test_merging_moves_the_timeline_fills_blanks_and_announces_it(acting, published):
    """The duplicate's activities move to the survivor, which takes its email, company and
    tags; the duplicate answers 404 from then on."""
    survivor = make_customer(acting, name="Survivor", tags=["a"])
    duplicate = make_customer(acting, phone=None, name="Dup", email="dup@x.example",
                              company="Dup Co", tags=["b"])
    note = services.add_activity(acting.admin, duplicate, "note", "Called about prices")
    published.clear()

    services.merge_customers(acting.admin, survivor, duplicate)

    assert (survivor.email, survivor.company, survivor.tags) == ("dup@x.example", "Dup Co",
                                                                 ["a", "b"])
    activities, _next = services.list_activities(survivor)
    assert note.id in _ids(activities)
    assert activities[0].type == "merged"
    with pytest.raises(NotFoundError):
        services.access_customer(duplicate.id)
    assert ("customer.merged", {"survivor_id": survivor.id, "merged_id": duplicate.id}
            ) in published
    assert services.resolve_customer(duplicate.id).id == survivor.id


def test_a_customer_cannot_be_merged_with_itself(acting):
    customer = make_customer(acting)
    with pytest.raises(ValidationError):
        services.merge_customers(acting.admin, customer, customer)


def test_deleting_removes_the_timeline_and_announces_it(acting, published):
    """Activities go with the customer (and so do merged duplicates pointing at it); other
    modules learn of it through customer.deleted."""
    customer = make_customer(acting)
    duplicate = make_customer(acting)
    services.merge_customers(acting.admin, customer, duplicate)
    services.add_activity(acting.admin, customer, "note", "hello")
    customer_id, duplicate_id = customer.id, duplicate.id

    services.delete_customer(acting.admin, customer)

    assert _count(CustomerActivity, CustomerActivity.customer_id == customer_id) == 0
    assert _count(Customer, Customer.id.in_((customer_id, duplicate_id))) == 0
    assert ("customer.deleted", {"customer_id": customer_id}) in published


def test_another_organizations_customer_is_not_found(acting, other_org):
    """The access helper answers 404 for a customer of another organization."""
    theirs = make_customer(other_org)
    with pytest.raises(NotFoundError):
        services.access_customer(theirs.id)


# -- activities -------------------------------------------------------------------------------

def test_activities_tasks_and_the_timeline(acting):
    """A task goes to its author unless assigned; a naive due time is in the organization's
    zone; tasks due today (and overdue) are listed; the timeline pages newest first."""
    customer = make_customer(acting)
    colleague = make_user(acting, "manager")
    task = services.add_activity(acting.admin, customer, "task", "Send the offer",
                                 due_at=(utcnow() - timedelta(hours=1)).isoformat())
    theirs = services.add_activity(acting.admin, customer, "task", "Visit", "2030-01-01T09:00",
                                   colleague.id)
    services.add_activity(acting.admin, customer, "call", "Talked")

    assert task.assignee_id == acting.admin.id
    assert theirs.assignee_id == colleague.id
    assert theirs.due_at.utcoffset() == timedelta(hours=3)  # Asia/Riyadh
    assert customer.last_contacted_at is not None
    assert [(a.id, c.id) for a, c in services.tasks_due_today(acting.admin)] == [
        (task.id, customer.id)]

    first, before = services.list_activities(customer, limit=2)
    rest, end = services.list_activities(customer, before, limit=2)
    assert [a.type for a in first + rest] == ["call", "task", "task", "created"]
    assert end is None

    services.complete_task(acting.admin, task)
    assert services.tasks_due_today(acting.admin) == []
    with pytest.raises(ConflictError):
        services.complete_task(acting.admin, first[0])


def test_bad_activities_are_refused(acting):
    customer = make_customer(acting)
    with pytest.raises(ValidationError) as caught:
        services.add_activity(acting.admin, customer, "email", "", due_at="tomorrow",
                              assignee_id=999_999)
    assert set(caught.value.fields) == {"type", "body", "due_at", "assignee_id"}


def test_an_automatic_entry_with_a_source_key_is_logged_once(acting):
    customer = make_customer(acting)
    first = services.log_automatic(customer, "whatsapp_in", "hi", source_key="wa:1")
    again = services.log_automatic(customer, "whatsapp_in", "hi", source_key="wa:1")

    assert first is not None
    assert again is None
    assert _count(CustomerActivity, CustomerActivity.source_key == "wa:1") == 1


# -- segments and export ----------------------------------------------------------------------

def test_a_segment_saves_filters_and_lists_what_they_select_now(acting):
    make_customer(acting, tags=["vip"])
    segment = make_segment(acting, "VIPs", tag="vip", sort="name", stage_id="")

    assert segment.filters == {"tag": "vip"}
    later = make_customer(acting, tags=["vip"])
    rows, _cursor = services.segment_customers(segment)
    assert later.id in _ids(rows)
    assert services.count_customers(services.segment_filters(segment)) == 2
    with pytest.raises(ValidationError):
        services.create_segment(acting.admin, "", {"score_min": "many"})


def test_export_is_csv_for_excel_with_the_filter_applied(acting, monkeypatch):
    """UTF-8 with a BOM, Arabic intact, one line per filtered customer (read page by page),
    formulas defused."""
    monkeypatch.setattr(imports, "EXPORT_PAGE", 1)
    make_customer(acting, name="=HYPERLINK(1)", tags=["x"])
    make_customer(acting, name="نورة", tags=["x"])
    make_customer(acting, name="Other")

    text = "".join(imports.export_csv(acting.admin, services.parse_filters({"tag": "x"})))

    assert text.startswith("\ufeff")
    rows = list(csv.reader(io.StringIO(text.lstrip("\ufeff"))))
    assert len(rows) == 3
    assert {rows[1][0], rows[2][0]} == {"نورة", "'=HYPERLINK(1)"}


# -- scoring ---------------------------------------------------------------------------------

def test_the_score_follows_the_rules_and_explains_itself(acting):
    """Replies, message count and the stage reached add points; the explanation says why."""
    stages = services.list_stages()
    customer = make_customer(acting, stage_id=stages[2].id)
    for n in range(5):
        services.log_automatic(customer, "whatsapp_in", "hi", source_key=f"wa:s{n}")
    services.touch_contact(customer)

    score, breakdown = scoring.recompute_score(customer)

    assert score == 20 + 10 + 15
    assert [entry["reason"] for entry in breakdown] == ["replied_recently", "message_count",
                                                        "stage_reached"]
    with force_locale("en"):
        assert scoring.explain_score(customer)[0] == ("+20 replied on WhatsApp in the last 7 "
                                                       "days")
        assert scoring.explain_score(customer)[2] == "+15 reached the stage \u2068Qualified\u2069"


def test_the_score_decays_without_contact_and_never_goes_below_zero(acting):
    customer = make_customer(acting)
    scoring.save_rules(acting.admin, [
        {"kind": "decay", "params": {"every_days": 7, "max": 30}, "points": 5},
        {"kind": "custom_field", "params": {"key": make_field(acting, "vip", "choice",
                                                              choices=["yes", "no"]).key,
                                            "value": "yes"}, "points": 20}])
    customer.custom_fields = {"vip": "yes"}
    customer.last_contacted_at = utcnow() - timedelta(days=15)

    assert scoring.recompute_score(customer)[0] == 20 - 10
    customer.last_contacted_at = utcnow() - timedelta(days=400)
    assert scoring.recompute_score(customer)[0] == 0
    with force_locale("en"):
        assert scoring.explain_score(customer) == ["-30 no contact for 400 days",
                                                    "+20 \u2068Vip\u2069 is \u2068yes\u2069"]


@pytest.mark.parametrize("typed", [5, -5, "-5"])
def test_each_rule_counts_its_sign_and_decay_only_takes_away(acting, typed):
    """A rule adds its points, a rule with negative points takes them away, and decay takes
    away what an admin typed whether as 5 or -5 (saved as 5): 15 days without contact at 5
    every 7 days cost 10."""
    customer = make_customer(acting)
    vip = make_field(acting, "vip", "choice", choices=["yes", "no"])
    churned = make_field(acting, "churned", "choice", choices=["yes", "no"])
    saved = scoring.save_rules(acting.admin, [
        {"kind": "custom_field", "params": {"key": vip.key, "value": "yes"}, "points": 30},
        {"kind": "custom_field", "params": {"key": churned.key, "value": "yes"}, "points": -10},
        {"kind": "decay", "params": {"every_days": 7, "max": 30}, "points": typed}])
    assert saved[2].points == 5
    customer.custom_fields = {"vip": "yes", "churned": "yes"}
    customer.last_contacted_at = utcnow() - timedelta(days=15)

    score, breakdown = scoring.recompute_score(customer)

    assert [(entry["reason"], entry["points"]) for entry in breakdown] == [
        ("custom_field", 30), ("custom_field", -10), ("decay", -10)]
    assert score == 10
    with force_locale("en"):
        assert scoring.describe_rule(saved[2]) == ("-5 every 7 days without contact "
                                                   "(at most -30)")


def test_a_customer_never_contacted_has_no_recency_signal(acting):
    """No contact yet is not "no contact for a while": decay counts only from a contact, however
    long ago the customer was created."""
    customer = make_customer(acting)
    scoring.save_rules(acting.admin, [
        {"kind": "decay", "params": {"every_days": 7, "max": 30}, "points": 5}])
    db.session.execute(update(Customer).where(Customer.id == customer.id).values(
        created_at=utcnow() - timedelta(days=400)))
    db.session.refresh(customer)

    assert scoring.recompute_score(customer) == (0, [])


def test_a_contact_after_the_scoring_clock_counts_no_days(acting):
    """Scoring many customers reads the clock once, before they are written (an import, the
    nightly run): a contact made after that moment is zero days old, never -1 (which made
    decay add points)."""
    customer = make_customer(acting)
    scoring.save_rules(acting.admin, [
        {"kind": "decay", "params": {"every_days": 7, "max": 30}, "points": 5}])
    customer.last_contacted_at = utcnow()
    context = replace(scoring.ScoringContext.load(), now=utcnow() - timedelta(hours=1))

    assert scoring.recompute_score(customer, context) == (0, [])


def test_bad_rules_are_refused_and_saving_enqueues_rescoring(app, acting):
    with pytest.raises(ValidationError) as caught:
        scoring.save_rules(acting.admin, [{"kind": "magic", "points": 1},
                                           {"kind": "replied_recently", "points": 5000,
                                            "params": {"days": 0}}])
    assert set(caught.value.fields) == {"rules-0-kind", "rules-1-points", "rules-1-days"}
    assert len(scoring.list_rules()) == 5  # the defaults are still there

    scoring.save_rules(acting.admin, [{"kind": "message_count", "params": {"min": 1},
                                        "points": 3}])
    commit()
    assert [rule.kind for rule in scoring.list_rules()] == ["message_count"]
    queued = [job.args[0] for job in get_queue(BULK_QUEUE).jobs]  # beside replies, not before
    assert queued.count("crm.customers.jobs:rescore_all") == 1


def test_the_nightly_run_lowers_only_the_scores_of_customers_once_contacted(app, acting):
    """The nightly rescoring applies decay as a subtraction from the last contact, and leaves
    a customer never contacted alone however old the record is."""
    contacted, never = make_customer(acting), make_customer(acting)
    ids = (contacted.id, never.id)
    db.session.execute(update(Customer).where(Customer.id.in_(ids)).values(
        created_at=utcnow() - timedelta(days=60)))
    db.session.execute(update(Customer).where(Customer.id == contacted.id).values(
        last_contacted_at=utcnow() - timedelta(days=15)))

    jobs.rescore_all()

    rows = {row.id: row.score_breakdown for row in db.session.execute(
        select(Customer.id, Customer.score_breakdown).where(Customer.id.in_(ids)))}
    assert rows[never.id] == []
    assert [(entry["reason"], entry["points"], entry["detail"]["days"])
            for entry in rows[contacted.id]] == [("decay", -10, 15)]


def test_nightly_rescoring_is_scheduled_once_and_reschedules_itself(app, acting, monkeypatch):
    """However often the organization is used, one run is scheduled for the night; the
    nightly run rescores everyone and schedules the next night's; a stale run (its chain
    replaced meanwhile) schedules nothing."""
    monkeypatch.setattr(nightly, "_armed", {})
    registry = ScheduledJobRegistry(queue=get_queue(BULK_QUEUE))
    customer = make_customer(acting)
    customer_id = customer.id
    services.list_stages()
    commit()
    services.list_stages()
    commit()
    [job_id] = registry.get_job_ids()
    scheduled_for = get_queue(BULK_QUEUE).fetch_job(job_id).args[3]["scheduled_for"]
    when = nightly.next_night(services.organization_timezone(), acting.id, utcnow())
    assert scheduled_for == when.isoformat()
    assert utcnow() < when <= utcnow() + timedelta(days=1)

    db.session.execute(update(Customer).where(Customer.id == customer_id).values(
        last_contacted_at=utcnow() - timedelta(days=30)))
    assert jobs.rescore_all("2000-01-01T02:00:00+00:00") == 1  # stale: its chain was replaced
    assert registry.count == 1
    assert db.session.get(Customer, customer_id).score == 0
    assert db.session.get(Customer, customer_id).score_breakdown[0]["reason"] == "decay"

    jobs.rescore_all(scheduled_for)

    assert registry.count == 2  # the next night's, and the one this test ran by hand


# -- the pipeline's value ---------------------------------------------------------------------

def _totals(owner_id: int | None = None) -> dict[int | None, tuple[int, Decimal]]:
    return {stage: (total.customers, total.value)
            for stage, total in services.stage_totals(owner_id).items()}


def test_an_expected_value_is_read_in_any_written_form(acting):
    """Amounts take Arabic digits and separators, at most two decimals, never below zero."""
    assert services.check_amount("١٬٢٥٠٫٥٠", "v") == Decimal("1250.50")
    assert services.check_amount("1,250.5", "v") == Decimal("1250.50")
    assert services.check_amount("", "v") == Decimal(0)
    for bad in ("-5", "12.345", "abc", "1e400", "NaN", True, [1]):
        with pytest.raises(ValidationError) as caught:
            services.check_amount(bad, "expected_value")
        assert set(caught.value.fields) == {"expected_value"}


def test_the_pipeline_totals_follow_every_change_of_a_customer(acting):
    """Customers and value per stage and owner follow creating, revaluing, moving, changing
    the owner, merging and deleting, whatever path the change takes."""
    stages = services.list_stages()
    agent = make_user(acting, "agent")
    first = make_customer(acting, stage_id=stages[0].id, expected_value="1000")
    second = make_customer(acting, stage_id=stages[0].id, expected_value="250.50",
                           owner_id=agent.id)
    assert _totals()[stages[0].id] == (2, Decimal("1250.50"))
    assert _totals(agent.id) == {stages[0].id: (1, Decimal("250.50"))}

    services.update_customer(acting.admin, first, {"expected_value": "2000"})
    services.move_customer(acting.admin, second, stages[2].id)
    db.session.flush()
    assert _totals()[stages[0].id] == (1, Decimal("2000.00"))
    assert _totals()[stages[2].id] == (1, Decimal("250.50"))

    services.update_customer(acting.admin, second, {"owner_id": None})
    services.merge_customers(acting.admin, first, second)
    db.session.flush()
    assert stages[2].id not in _totals()
    assert _totals(agent.id) == {}
    assert _totals()[stages[0].id] == (1, Decimal("2000.00"))

    services.delete_customer(acting.admin, first)
    assert _totals() == {}
