"""The business calendar over fixed dates: Gulf weekends, Hijri holidays, daylight saving time."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from crm.tickets.calendar import (
    Calendar,
    add_business_time,
    business_time_between,
    country_holidays,
    country_weekend,
    default_hours,
)

RIYADH = ZoneInfo("Asia/Riyadh")
BERLIN = ZoneInfo("Europe/Berlin")


def saudi(holidays: frozenset[date] = frozenset()) -> Calendar:
    return Calendar(RIYADH, default_hours(country_weekend("SA")), holidays)


def at(zone: ZoneInfo, *parts: int) -> datetime:
    return datetime(*parts, tzinfo=zone)


def test_saudi_arabia_works_sunday_to_thursday():
    """The package's Saudi weekend is Friday and Saturday, so the default week is Sun–Thu."""
    assert country_weekend("SA") == frozenset({4, 5})
    assert sorted(default_hours(country_weekend("SA"))) == [0, 1, 2, 3, 6]
    assert default_hours(country_weekend("SA"))[6] == ((9 * 60, 17 * 60),)


def test_an_unknown_country_rests_on_saturday_and_sunday():
    """A country the package does not know gets no holidays and the Saturday–Sunday weekend."""
    assert country_weekend("ZZ") == frozenset({5, 6})
    assert country_holidays("ZZ", [2027], "ar") == {}


def test_thursday_afternoon_runs_into_sunday_in_riyadh():
    """Four business hours from Thursday 16:00: one on Thursday, three on Sunday → 12:00."""
    thursday = at(RIYADH, 2026, 12, 3, 16, 0)
    assert thursday.weekday() == 3
    due = add_business_time(saudi(), thursday, timedelta(hours=4))
    assert due == at(RIYADH, 2026, 12, 6, 12, 0)


def test_a_moment_outside_hours_starts_at_the_next_opening():
    """Friday evening (weekend) plus one hour is Sunday 10:00."""
    friday = at(RIYADH, 2026, 12, 4, 20, 30)
    assert add_business_time(saudi(), friday, timedelta(hours=1)) == at(RIYADH, 2026, 12, 6, 10)


def test_an_exact_end_of_day_lands_on_the_closing_time():
    """Exactly the rest of the day ends at 17:00, not at the next opening."""
    start = at(RIYADH, 2026, 12, 6, 13, 0)
    assert add_business_time(saudi(), start, timedelta(hours=4)) == at(RIYADH, 2026, 12, 6, 17)


def test_zero_business_time_is_the_start_itself():
    start = at(RIYADH, 2026, 12, 4, 20, 30)
    assert add_business_time(saudi(), start, timedelta(0)) == start


def test_eid_al_fitr_1448_from_the_package():
    """The package computes Eid al-Fitr 1448 (March 2027) for Saudi Arabia: 9–12 March, with
    Sunday the 14th observed for the day that fell on the weekend."""
    days = country_holidays("SA", [2027], "en")
    eid = sorted(day for day, name in days.items() if "Eid al-Fitr" in name)
    assert eid == [date(2027, 3, 9), date(2027, 3, 10), date(2027, 3, 11), date(2027, 3, 12),
                   date(2027, 3, 14)]
    assert "عيد الفطر" in country_holidays("SA", [2027], "ar")[date(2027, 3, 9)]


def test_a_ticket_across_eid_al_fitr_waits_for_the_holiday_to_end():
    """Monday 8 March 2027 16:00 plus four hours: Eid (Tue–Fri), the weekend, the observed
    Sunday, then Monday 15 March 12:00."""
    calendar = saudi(frozenset(country_holidays("SA", [2027], "en")))
    due = add_business_time(calendar, at(RIYADH, 2027, 3, 8, 16), timedelta(hours=4))
    assert due == at(RIYADH, 2027, 3, 15, 12)
    without_holidays = add_business_time(saudi(), at(RIYADH, 2027, 3, 8, 16), timedelta(hours=4))
    assert without_holidays == at(RIYADH, 2027, 3, 9, 12)


def test_daylight_saving_time_in_berlin():
    """Across the March 2027 change (and Easter, from the package): Thursday 25 March 16:00 CET
    plus four hours is Tuesday 30 March 12:00 CEST, 10:00 UTC — not 11:00 as UTC arithmetic
    would have it."""
    calendar = Calendar(BERLIN, default_hours(country_weekend("DE")),
                        frozenset(country_holidays("DE", [2027], "en")))
    due = add_business_time(calendar, at(BERLIN, 2027, 3, 25, 16), timedelta(hours=4))
    assert due == at(BERLIN, 2027, 3, 30, 12)
    assert due.astimezone(UTC) == datetime(2027, 3, 30, 10, tzinfo=UTC)


def test_round_the_clock_hours_count_the_real_hours_of_the_short_night():
    """With 24-hour days, four hours from Saturday 22:00 CET end at 03:00 CEST: the night of
    the change has one hour less."""
    calendar = Calendar(BERLIN, dict.fromkeys(range(7), ((0, 24 * 60),)), frozenset())
    due = add_business_time(calendar, at(BERLIN, 2027, 3, 27, 22), timedelta(hours=4))
    assert due == at(BERLIN, 2027, 3, 28, 3)
    assert due.astimezone(UTC) - at(BERLIN, 2027, 3, 27, 22).astimezone(UTC) == timedelta(hours=4)


def test_business_time_between_counts_only_working_hours():
    """From Thursday 16:00 to Sunday 12:00 in Riyadh: four business hours; backwards: none."""
    start, end = at(RIYADH, 2026, 12, 3, 16), at(RIYADH, 2026, 12, 6, 12)
    assert business_time_between(saudi(), start, end) == timedelta(hours=4)
    assert business_time_between(saudi(), end, start) == timedelta(0)


@pytest.mark.parametrize("hours", [1, 7, 8, 9, 16, 40, 123])
def test_adding_then_measuring_gives_the_same_time(hours):
    """add_business_time and business_time_between agree, across weekends and holidays."""
    calendar = saudi(frozenset(country_holidays("SA", [2027], "en")))
    start = at(RIYADH, 2027, 3, 4, 11, 17)
    due = add_business_time(calendar, start, timedelta(hours=hours))
    assert business_time_between(calendar, start, due) == timedelta(hours=hours)


def test_split_shifts_and_another_time_zone():
    """Two intervals a day (08:00–12:00, 16:00–20:00): 4 hours from 10:00 end at 18:00; read
    in Berlin, the same hours start from 08:00 there and end at 12:00 Berlin time."""
    hours = dict.fromkeys(range(7), ((8 * 60, 12 * 60), (16 * 60, 20 * 60)))
    riyadh = Calendar(RIYADH, hours, frozenset())
    due = add_business_time(riyadh, at(RIYADH, 2027, 1, 10, 10), timedelta(hours=4))
    assert due == at(RIYADH, 2027, 1, 10, 18)
    berlin = Calendar(BERLIN, hours, frozenset())
    moved = add_business_time(berlin, at(RIYADH, 2027, 1, 10, 10), timedelta(hours=4))
    assert moved == at(BERLIN, 2027, 1, 10, 12)
    assert moved != due


def test_a_calendar_without_working_time_is_refused():
    """Adding time on a calendar with no working hour would never end: it is an error."""
    with pytest.raises(ValueError, match="no working time"):
        add_business_time(Calendar(RIYADH, {}, frozenset()), at(RIYADH, 2027, 1, 1, 9),
                          timedelta(minutes=1))
