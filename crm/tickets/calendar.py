"""The business calendar: which moments are working time for an organization, and business time
added to a moment or measured between two.

Pure functions over a `Calendar` (time zone, working intervals per weekday, holiday dates), so
SLA targets are tested over fixed dates without a database. Working intervals are wall-clock
times of the organization's time zone; each day's intervals are turned into instants with
zoneinfo for that day, so a day of a daylight saving change counts the hours it really has, and
Thursday 16:00 in Riyadh plus four business hours is Sunday 12:00 whatever UTC says.

Defaults come from the `holidays` package: each country's weekend (Friday–Saturday for Saudi
Arabia) and public holidays, Eid al-Fitr, Arafah and Eid al-Adha computed from the Hijri
calendar.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import holidays as holiday_tables

# Minutes from midnight: (540, 1020) is 09:00–17:00; 1440 ends a day at midnight.
Interval = tuple[int, int]
DAY_MINUTES = 24 * 60
DEFAULT_OPENING = (9 * 60, 17 * 60)
# Weekdays as Python counts them: Monday 0 ... Sunday 6 (the `holidays` package does too).
WEEKDAYS = tuple(range(7))
STANDARD_WEEKEND = frozenset({5, 6})
# How far ahead add_business_time looks before it gives up (a calendar of holidays only).
SEARCH_DAYS = 3 * 366
# The package's name for our languages' holiday names.
_PACKAGE_LANGUAGES = {"ar": ("ar",), "en": ("en_US", "en_GB", "en")}


@dataclass(frozen=True)
class Calendar:
    """When an organization works: its zone, intervals per weekday, and days off."""

    zone: ZoneInfo
    hours: Mapping[int, tuple[Interval, ...]]
    holidays: frozenset[date] = field(default_factory=frozenset)

    def working_spans(self, day: date) -> Iterator[tuple[datetime, datetime]]:
        """The day's working intervals as UTC instants (none on a holiday).

        In UTC because Python subtracts and adds aware datetimes of one zone as wall-clock
        times: the short night of a daylight saving change would count an hour too many.
        """
        if day in self.holidays:
            return
        for start, end in self.hours.get(day.weekday(), ()):
            yield self._instant(day, start), self._instant(day, end)

    def _instant(self, day: date, minute: int) -> datetime:
        if minute >= DAY_MINUTES:
            local = datetime.combine(day + timedelta(days=1), time(), self.zone)
        else:
            local = datetime.combine(day, time(minute // 60, minute % 60), self.zone)
        return local.astimezone(UTC)

    def local_day(self, moment: datetime) -> date:
        return moment.astimezone(self.zone).date()


def add_business_time(calendar: Calendar, start: datetime, amount: timedelta) -> datetime:
    """The moment `amount` of working time after `start` (aware), in the calendar's zone."""
    if amount <= timedelta(0):
        return start
    remaining, day, start = amount, calendar.local_day(start), start.astimezone(UTC)
    for _ in range(SEARCH_DAYS):
        for opens, closes in calendar.working_spans(day):
            opens = max(opens, start)
            if closes <= opens:
                continue
            if closes - opens >= remaining:
                return (opens + remaining).astimezone(calendar.zone)
            remaining -= closes - opens
        day += timedelta(days=1)
    raise ValueError("the calendar has no working time ahead")


def business_time_between(calendar: Calendar, start: datetime, end: datetime) -> timedelta:
    """The working time from `start` to `end` (nothing when `end` is not later)."""
    total, day, last = timedelta(0), calendar.local_day(start), calendar.local_day(end)
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    while day <= last:
        for opens, closes in calendar.working_spans(day):
            overlap = min(closes, end) - max(opens, start)
            if overlap > timedelta(0):
                total += overlap
        day += timedelta(days=1)
    return total


def has_working_time(hours: Mapping[int, Iterable[Interval]]) -> bool:
    return any(end > start for intervals in hours.values() for start, end in intervals)


# -- defaults from the `holidays` package ------------------------------------------------------

def _country_table(country: str, years: Iterable[int], language: str | None = None):
    if country not in holiday_tables.list_supported_countries():
        return None
    kwargs = {"years": list(years)}
    if language is not None:
        kwargs["language"] = language
    return holiday_tables.country_holidays(country, **kwargs)


def country_weekend(country: str) -> frozenset[int]:
    """The country's weekly days off (Saturday–Sunday for a country the package lacks)."""
    table = _country_table(country, [])
    return frozenset(table.weekend) if table is not None else STANDARD_WEEKEND


def default_hours(weekend: frozenset[int]) -> dict[int, tuple[Interval, ...]]:
    """09:00–17:00 on every day that is not the weekend."""
    return {day: (DEFAULT_OPENING,) for day in WEEKDAYS if day not in weekend}


def country_holidays(country: str, years: Iterable[int], language: str) -> dict[date, str]:
    """The country's public holidays in `years`, named in `language` where the package can
    (its default language otherwise); several on one day are joined."""
    supported = holiday_tables.list_supported_countries()
    if country not in supported:
        return {}
    offered = holiday_tables.country_holidays(country).supported_languages
    chosen = next((code for code in _PACKAGE_LANGUAGES.get(language, ()) if code in offered),
                  None)
    table = _country_table(country, years, chosen)
    return {day: "; ".join(table.get_list(day)) for day in sorted(table)}
