"""Audiences frozen when a campaign starts: from a segment, a tag, hand-picked customers or an
uploaded CSV file of numbers; deduplicated by phone; the invalid ones skipped with a reason;
written set-based however many there are."""

from __future__ import annotations

import io

import pytest
from sqlalchemy import event
from werkzeug.datastructures import FileStorage

from crm.campaigns import audience, jobs, services
from crm.campaigns.models import Campaign
from crm.errors import ValidationError
from crm.extensions import db
from crm.tenancy import organization_context
from tests.campaigns.factories import (
    counts,
    drive,
    make_campaign,
    recipients,
    start,
)
from tests.customers.factories import make_customer, make_field, make_segment
from tests.foundation import ident
from tests.whatsapp.factories import make_profile


@pytest.fixture
def sandbox(org):
    return make_profile(org, "sandbox")


def csv_upload(text: str, name: str = "numbers.csv", encoding: str = "utf-8") -> FileStorage:
    return FileStorage(io.BytesIO(text.encode(encoding)), filename=name, content_type="text/csv")


def upload(org, campaign, text: str, **kwargs) -> Campaign:
    with organization_context(ident(org)):
        campaign = services.upload_audience(org.admin, db.session.get(Campaign, ident(campaign)),
                                            csv_upload(text, **kwargs))
        db.session.flush()
        return campaign


def frozen(app, org, campaign, clock) -> dict:
    """Start the campaign and let the runner freeze (and send to) its audience: phone (or what
    the list said) → (state, reason). The sandbox delivers at once."""
    start(org, campaign)
    drive(app, clock)
    return {r.phone or r.raw_phone or "": (r.state, r.error_code) for r in
            recipients(org, campaign)}


def test_a_segment_is_frozen_with_each_customers_variables(app, org, sandbox, clock):
    """Each customer of the segment becomes a recipient with their variables; one without a
    phone is skipped, saying so."""
    make_field(org, key="city")
    huda = make_customer(org, name="Huda Saleh", company="Noor", tags=["vip"],
                         custom_fields={"city": "Jeddah"}).phone
    make_customer(org, name="No Phone", phone=None, email="np@example.com", tags=["vip"])
    make_customer(org, name="Not VIP")
    segment = make_segment(org, "VIPs", tag="vip")
    campaign = make_campaign(org, sandbox, audience={"segment_id": ident(segment)},
                             message={"text": "{first_name} {company} {custom.city}"})

    assert frozen(app, org, campaign, clock) == {huda: ("delivered", None),
                                                  "": ("skipped", "no_phone")}
    [first] = [r for r in recipients(org, campaign) if r.phone == huda]
    assert first.variables == {"name": "Huda Saleh", "first_name": "Huda", "company": "Noor",
                               "custom": {"city": "Jeddah"}}
    assert counts(org, campaign)["total"] == 2
    assert counts(org, campaign)["skipped"] == 1


def test_a_tag_and_hand_picked_customers_are_audiences_too(app, org, sandbox, clock):
    tagged = make_customer(org, tags=["مهتم"]).phone
    picked = [make_customer(org), make_customer(org)]
    by_tag = make_campaign(org, sandbox, audience={"tag": "مهتم"}, message={"text": "x"})
    by_hand = make_campaign(org, sandbox, audience={"customer_ids": [ident(c) for c in picked]},
                            message={"text": "x"})
    phones = [c.phone for c in picked]

    assert set(frozen(app, org, by_tag, clock)) == {tagged}
    assert set(frozen(app, org, by_hand, clock)) == set(phones)


def test_hand_picked_customers_must_exist_in_the_organization(org, other_org, sandbox):
    stranger = make_customer(other_org)

    with pytest.raises(ValidationError) as refused:
        make_campaign(org, sandbox, audience={"customer_ids": [ident(stranger)]})

    assert "audience" in refused.value.fields


def test_another_organizations_segment_is_refused(org, other_org, sandbox):
    theirs = make_segment(other_org, "Theirs", tag="vip")

    with pytest.raises(ValidationError) as refused:
        make_campaign(org, sandbox, audience={"segment_id": ident(theirs)})

    assert refused.value.fields == {"audience": "اختر إحدى شرائحك."}


def test_a_csv_file_is_read_like_the_crm_import_and_deduplicated_by_phone(app, org, sandbox,
                                                                          clock):
    """Numbers in any written form, in the organization's country (SA): the same number twice
    is one recipient; a row that is no number is skipped with what it said; a number the CRM
    knows takes its customer's variables."""
    known = make_customer(org, name="Layla Ahmed", company="Dar").phone
    campaign = make_campaign(org, sandbox, message={"text": "{name}"})
    upload(org, campaign, "الاسم,الجوال\n"
                          "سارة,0551234567\n"
                          "سارة مرة أخرى,+966 55 123 4567\n"
                          "محمد,٠٥٥٧٦٥٤٣٢١\n"
                          "خطأ,12ab\n"
                          f"ليلى,{known}\n")

    assert frozen(app, org, campaign, clock) == {
        "+966551234567": ("delivered", None), "+966557654321": ("delivered", None),
        "12ab": ("skipped", "invalid_phone"), known: ("delivered", None)}
    by_phone = {r.phone: r for r in recipients(org, campaign)}
    assert by_phone["+966551234567"].variables["name"] == "سارة"
    assert by_phone[known].variables["company"] == "Dar"
    assert by_phone[known].customer_id is not None
    assert counts(org, campaign)["total"] == 4


def test_a_csv_file_of_numbers_alone_has_no_header_to_skip(app, org, sandbox, clock):
    """Excel's "CSV" on Arabic Windows (Windows-1256), one column of numbers, no header."""
    campaign = make_campaign(org, sandbox, message={"text": "x"})
    stored = upload(org, campaign, "0551234567\r\n0557654321\r\n", encoding="cp1256")

    assert stored.audience["csv"]["header"] is False
    assert stored.audience["csv"]["rows"] == 2
    assert set(frozen(app, org, campaign, clock)) == {"+966551234567", "+966557654321"}


def test_a_file_without_phone_numbers_is_refused_and_not_kept(org, sandbox):
    campaign = make_campaign(org, sandbox, message={"text": "x"})

    with pytest.raises(ValidationError) as refused:
        upload(org, campaign, "name,city\nHuda,Jeddah\nOmar,Riyadh\n")

    assert "file" in refused.value.fields
    with organization_context(ident(org)):
        assert list(audience.csv_directory().iterdir()) == []


@pytest.mark.parametrize("text", ["phone,name\n", "\ufeffphone,name\n\n"])
def test_a_file_with_a_header_and_no_rows_is_refused_and_not_kept(org, sandbox, text):
    """Nobody to send to is said at the upload, not at the start."""
    campaign = make_campaign(org, sandbox, message={"text": "x"})

    with pytest.raises(ValidationError) as refused:
        upload(org, campaign, text)

    assert set(refused.value.fields) == {"file"}
    with organization_context(ident(org)):
        assert list(audience.csv_directory().iterdir()) == []


def test_freezing_a_large_audience_takes_a_handful_of_statements(app, org, sandbox, clock):
    """3,000 numbers are written in a few multi-row INSERTs, never a statement per person."""
    campaign = make_campaign(org, sandbox, message={"text": "x"})
    upload(org, campaign, "phone\n" + "".join(f"05{n:08d}\n" for n in range(5_500_000,
                                                                               5_503_000)))
    start(org, campaign)
    statements = []

    def count(conn, cursor, statement, *args):
        if "campaign_recipients" in statement and statement.lstrip().upper().startswith(
                "INSERT"):
            statements.append(statement)

    with organization_context(ident(org)):
        event.listen(db.engine, "before_cursor_execute", count)
        try:
            jobs._freeze(ident(campaign))
        finally:
            event.remove(db.engine, "before_cursor_execute", count)

    assert len(statements) == 3  # batches of 1,000
    assert counts(org, campaign)["total"] == 3000
    assert counts(org, campaign)["queued"] == 3000
