"""Ticketing's settings: the defaults of a new organization, SLA policies, business hours,
holidays, escalation rules, keywords — each validated, audited, and moving open tickets'
clocks when it should."""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from crm.errors import ConflictError, NotFoundError, ValidationError
from crm.extensions import db
from crm.foundation.models import AuditEntry
from crm.foundation.services import update_organization
from crm.tenancy import organization_context
from crm.tickets import services
from crm.tickets.models import TicketType
from tests.factories import make_user, run_jobs
from tests.foundation import ident
from tests.tickets.factories import make_team, make_ticket, reload_ticket

RIYADH = ZoneInfo("Asia/Riyadh")


def _audited(action: str) -> int:
    return db.session.scalar(select(func.count()).select_from(AuditEntry).where(
        AuditEntry.action == action))


def test_a_new_organization_s_defaults(acting):
    """Four types, the default policy, Sunday–Thursday 09:00–17:00 for Saudi Arabia, its
    holidays through the end of next year (Eid al-Fitr 1448 among them), the keywords."""
    assert [t.key for t in services.list_types()] == ["support", "sales", "question",
                                                       "complaint"]
    assert [t.name_in("ar") for t in services.list_types()][:2] == ["دعم فني", "مبيعات"]
    policies = {p.priority: (p.first_response_minutes, p.resolution_minutes)
                for p in services.list_policies()}
    assert policies == {"low": (480, 2400), "normal": (240, 960), "high": (120, 480),
                        "urgent": (60, 240)}
    assert services.business_hours() == {day: [(540, 1020)] for day in (0, 1, 2, 3, 6)}
    days = {h.day: h.name for h in services.list_holidays(2027)}
    assert date(2027, 3, 9) in days
    assert "عيد الفطر" in days[date(2027, 3, 9)]  # named in the organization's language
    assert services.get_settings().holidays_filled_through == date(2027, 12, 31)
    assert "مشكلة" in [k.keyword for k in services.list_keywords()]
    assert services.get_settings().auto_close_days == 4


def test_defaults_are_made_once(acting):
    services.ensure_defaults()
    services.ensure_defaults()
    assert len(services.list_types()) == 4


def test_the_worked_example_on_the_settings_page(acting):
    """"A normal ticket opened Thursday 16:00 is due Sunday 12:00", for a real organization."""
    preview = services.sla_preview("normal", "2026-12-03T16:00")
    assert preview["first_response_due_at"] == datetime(2026, 12, 6, 12, tzinfo=RIYADH)
    assert preview["resolution_due_at"] == datetime(2026, 12, 7, 16, tzinfo=RIYADH)
    with pytest.raises(ValidationError) as caught:
        services.sla_preview("whenever", "Thursday")
    assert set(caught.value.fields) == {"priority", "opened_at"}


def test_a_policy_change_moves_open_tickets_clocks(app, org):
    with organization_context(org.id):
        ticket = make_ticket(org)
        before = ticket.first_response_due_at
        services.set_policies(org.admin, [
            {"priority": p, "first_response_minutes": 30, "next_response_minutes": 30,
             "resolution_minutes": 60} for p in ("low", "normal", "high", "urgent")])
        assert _audited("tickets.sla_policies_updated") == 1
    run_jobs(app)
    assert reload_ticket(org, ticket).first_response_due_at < before


def test_a_policy_for_one_type(acting):
    org = acting
    complaint = next(t for t in services.list_types() if t.key == "complaint")
    rows = [{"priority": p, "first_response_minutes": 240, "next_response_minutes": 240,
             "resolution_minutes": 960} for p in ("low", "normal", "high", "urgent")]
    rows.append({"priority": "normal", "type_id": complaint.id, "first_response_minutes": 60,
                 "next_response_minutes": 60, "resolution_minutes": 120})
    services.set_policies(org.admin, rows)
    opened = datetime(2026, 12, 3, 16, tzinfo=RIYADH)
    assert services.sla_preview("normal", opened, complaint.id)["first_response_due_at"] == (
        datetime(2026, 12, 3, 17, tzinfo=RIYADH))


def test_bad_policies_are_refused_whole(acting):
    org = acting
    with pytest.raises(ValidationError) as caught:
        services.set_policies(org.admin, [{"priority": "normal", "first_response_minutes": 0,
                                           "next_response_minutes": "x",
                                           "resolution_minutes": 10**9}])
    assert set(caught.value.fields) == {"policies.0.first_response_minutes",
                                        "policies.0.next_response_minutes",
                                        "policies.0.resolution_minutes"}
    with pytest.raises(ValidationError) as caught:
        services.set_policies(org.admin, [{"priority": "normal", "first_response_minutes": 1,
                                           "next_response_minutes": 1,
                                           "resolution_minutes": 1}])
    assert "policies" in caught.value.fields  # every priority needs a policy
    assert len(services.list_policies()) == 4


def test_business_hours_split_shifts_and_mistakes(acting):
    org = acting
    hours = services.set_business_hours(org.admin, [
        {"weekday": 6, "start": "08:00", "end": "12:00"},
        {"weekday": 6, "start": "١٦:٠٠", "end": "20:00"},
        {"weekday": 0, "start": "00:00", "end": "24:00"}])
    assert hours == {6: [(480, 720), (960, 1200)], 0: [(0, 1440)]}
    for rows, field in (
            ([{"weekday": 7, "start": "9:00", "end": "17:00"}], "hours.0.weekday"),
            ([{"weekday": 1, "start": "17:00", "end": "09:00"}], "hours.0.end"),
            ([{"weekday": 1, "start": "9am", "end": "25:00"}], "hours.0.start"),
            ([], "hours"),
            ([{"weekday": 1, "start": "09:00", "end": "13:00"},
              {"weekday": 1, "start": "12:00", "end": "17:00"}], "hours")):
        with pytest.raises(ValidationError) as caught:
            services.set_business_hours(org.admin, rows)
        assert field in caught.value.fields
    assert services.business_hours() == hours


def test_holidays_added_renamed_and_removed(acting):
    """Admins add their own days, rename and remove any; a removed country holiday stays
    removed when the year ahead is topped up again."""
    org = acting
    eid = next(h for h in services.list_holidays(2027) if h.day == date(2027, 3, 9))
    services.rename_holiday(org.admin, eid, "إجازة العيد")
    services.remove_holiday(org.admin, next(h for h in services.list_holidays(2027)
                                            if h.day == date(2027, 3, 10)))
    company = services.add_holiday(org.admin, {"day": "2027-01-07", "name": "يوم الشركة"})
    services.top_up_holidays()
    days = {h.day: h.name for h in services.list_holidays(2027)}
    assert days[date(2027, 3, 9)] == "إجازة العيد"
    assert date(2027, 3, 10) not in days
    assert days[date(2027, 1, 7)] == "يوم الشركة"
    assert date(2027, 3, 10) not in services.load_context().calendar.holidays
    with pytest.raises(ConflictError):
        services.add_holiday(org.admin, {"day": "2027-01-07", "name": "Again"})
    revived = services.add_holiday(org.admin, {"day": "2027-03-10", "name": "Eid, after all"})
    assert (revived.source, revived.removed_at) == ("custom", None)
    services.remove_holiday(org.admin, company)
    with pytest.raises(NotFoundError):
        services.access_holiday(company.id)
    with pytest.raises(ValidationError) as caught:
        services.add_holiday(org.admin, {"day": "31/12/2027", "name": ""})
    assert set(caught.value.fields) == {"day", "name"}


def test_a_time_zone_change_moves_open_tickets_clocks(app, org):
    """Riyadh to New York: the same working hours are 7-8 hours later in UTC. (Not
    Berlin: a ticket opened within both cities' hours was due at the same instant.)"""
    with organization_context(org.id):
        ticket = make_ticket(org)
        before = ticket.resolution_due_at
        update_organization(org.admin, org.name, "ar", "America/New_York", "SA")
        db.session.flush()
    run_jobs(app)
    assert reload_ticket(org, ticket).resolution_due_at != before


def test_a_country_change_brings_the_new_country_s_holidays(app, org):
    with organization_context(org.id):
        services.ensure_defaults()
        update_organization(org.admin, org.name, "en", "Asia/Riyadh", "AE")
        db.session.flush()
    run_jobs(app)
    with organization_context(ident(org)):
        names = [h.name for h in services.list_holidays(2027)]
    assert "National Day Holiday" not in names  # Saudi Arabia's, from today on
    assert "New Year's Day" in names  # the UAE's


def test_escalation_rules(acting):
    org = acting
    manager = make_user(org, "manager")
    team = make_team(org, members=[manager])
    rule = services.create_escalation_rule(org.admin, {
        "metric": "resolution", "minutes_after": 30, "raise_priority": True,
        "team_id": team.id, "notify": True})
    assert [r.id for r in services.list_escalation_rules()] == [rule.id]
    assert services.load_context().rules[0].minutes_after == 30
    services.update_escalation_rule(org.admin, rule, {"minutes_after": 60})
    assert rule.minutes_after == 60
    with pytest.raises(ValidationError) as caught:
        services.create_escalation_rule(org.admin, {"metric": "never", "minutes_after": -1,
                                                    "assignee_id": make_user(org, "member").id})
    assert set(caught.value.fields) == {"metric", "minutes_after", "assignee_id"}
    with pytest.raises(ValidationError) as caught:
        services.create_escalation_rule(org.admin, {"metric": "resolution", "minutes_after": 5,
                                                    "notify": False})
    assert "actions" in caught.value.fields
    services.delete_escalation_rule(org.admin, rule)
    assert services.list_escalation_rules() == []


def test_keywords_are_folded_and_unique(acting):
    org = acting
    keyword = services.add_keyword(org.admin, "تأخير")
    assert keyword.folded == "تاخير"
    with pytest.raises(ConflictError):
        services.add_keyword(org.admin, "تاخير")
    assert services.match_keyword("هناك تأخير في الشحنة") == "تأخير"
    services.remove_keyword(org.admin, keyword)
    assert services.match_keyword("هناك تأخير في الشحنة") is None


def test_types_added_renamed_and_deleted(acting):
    org = acting
    billing = services.create_type(org.admin, {"name_ar": "فواتير", "name_en": "Billing"})
    services.update_type(org.admin, billing, {"name_en": "Invoices"})
    assert (billing.name_ar, billing.name_en, billing.position) == ("فواتير", "Invoices", 4)
    ticket = make_ticket(org, type_id=billing.id)
    services.delete_type(org.admin, billing)
    assert reload_ticket(org, ticket).type_id is None
    assert db.session.get(TicketType, ident(billing)) is None
    with pytest.raises(ValidationError):
        services.create_type(org.admin, {"name_ar": "", "name_en": "X"})


def test_settings(acting):
    org = acting
    services.update_settings(org.admin, {"auto_close_days": "7", "round_robin": True})
    assert (services.get_settings().auto_close_days, services.get_settings().round_robin) == (
        7, True)
    with pytest.raises(ValidationError) as caught:
        services.update_settings(org.admin, {"auto_close_days": 0, "round_robin": "maybe"})
    assert set(caught.value.fields) == {"auto_close_days", "round_robin"}
    assert _audited("tickets.settings_updated") == 1


def test_another_organization_s_settings_are_not_found(org, other_org):
    with organization_context(other_org.id):
        theirs = services.list_holidays()[0]
        rule = services.create_escalation_rule(other_org.admin, {
            "metric": "resolution", "minutes_after": 1, "notify": True})
        db.session.flush()
        their_type = services.list_types()[0]
    with organization_context(org.id):
        for access, object_id in ((services.access_holiday, theirs.id),
                                  (services.access_escalation_rule, rule.id),
                                  (services.access_type, their_type.id)):
            with pytest.raises(NotFoundError):
                access(object_id)
        assert all(h.organization_id == org.id for h in services.list_holidays())
