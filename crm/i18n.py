"""Language and time zone of each request; formatting helpers for templates.

Language: the user's preference, then the organization's default, then Accept-Language, then
Arabic. `<html lang dir>` follows it.

Text people write (names, notes, messages) takes its own direction: templates put it in
elements with dir="auto", in a <bdi> (`|bdi`) inside a sentence, and `isolate()` marks it
inside sentences built as plain text (flashes, explanations, attributes), so an English name
in an Arabic sentence keeps its full stop at its own end.

Dates name their month, day first ("2 Dec 2026", «2 ديسمبر 2026»), in the organization's time
zone: a numeric date reads one way in the US and another everywhere else (12/2/26 is 2
December to Babel's English and 12 February to a reader in Riyadh or London).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo
from decimal import Decimal
from functools import lru_cache
from zoneinfo import ZoneInfo

import phonenumbers
from babel import Locale
from babel.dates import format_date, format_time, format_timedelta, get_timezone_location
from babel.numbers import format_currency, get_currency_symbol
from flask import Flask, g, has_request_context, request
from flask_babel import format_decimal, get_locale
from flask_babel import gettext as _
from flask_login import current_user
from markupsafe import Markup
from sqlalchemy import inspect

from crm.config import ROOT
from crm.extensions import babel
from crm.foundation.services import current_organization
from crm.tenancy import current_organization_id

LANGUAGES = ("ar", "en")
RTL_LANGUAGES = frozenset({"ar"})


def init_app(app: Flask) -> None:
    babel.init_app(app, locale_selector=select_language, timezone_selector=select_timezone,
                   default_translation_directories=str(ROOT / "translations"))
    app.jinja_env.globals.update(text_direction=text_direction, current_language=current_language)
    app.jinja_env.filters["datetime"] = _datetime_filter
    app.jinja_env.filters["bdi"] = bdi
    app.jinja_env.filters["isolate"] = isolate
    app.jinja_env.filters["number"] = format_decimal
    app.jinja_env.filters["ago"] = format_ago
    app.jinja_env.filters["phone"] = format_phone
    app.jinja_env.filters["ltr_phone"] = ltr_phone
    app.jinja_env.filters["money"] = format_money
    app.jinja_env.filters["currency_symbol"] = currency_symbol
    app.jinja_env.filters["ltr"] = ltr
    app.jinja_env.filters["duration"] = format_duration
    app.jinja_env.filters["zone_name"] = lambda zone: timezone_name(zone, current_language())


def select_language() -> str:
    """The user's preference, the organization's default, a visitor's choice, the browser's."""
    if not has_request_context():
        return "ar"  # jobs and commands choose with force_locale where it matters
    if current_user.is_authenticated:
        return current_user.preferred_language or current_user.organization.default_language
    return _request_language()


def language_without_database() -> str:
    """The request's language from what it knows already, never asking the database: for the
    answers to an outage (the user cannot be loaded) or to a failed transaction.

    The user's preference, or their organization's default, when this request loaded them;
    else the request's own choice.
    """
    return _loaded_user_language() or _request_language()


def _request_language() -> str:
    """A visitor's choice (?lang=, the lang cookie), else the browser's Accept-Language."""
    for choice in (request.args.get("lang"), request.cookies.get("lang")):
        if choice in LANGUAGES:
            return choice
    return request.accept_languages.best_match(LANGUAGES, default="ar")


def _loaded_user_language() -> str | None:
    """The language of the user this request loaded, read from what is loaded (no query)."""
    user = g.get("_login_user")  # where Flask-Login keeps the user once loaded
    state = inspect(user, raiseerr=False)  # None for an anonymous user (or none loaded)
    if state is None:
        return None
    organization = inspect(state.dict.get("organization"), raiseerr=False)
    default = organization.dict.get("default_language") if organization is not None else None
    return state.dict.get("preferred_language") or default


def select_timezone() -> str | None:
    if has_request_context() and current_user.is_authenticated:
        return current_user.organization.timezone
    return None


def current_language() -> str:
    return str(get_locale() or "ar")


def text_direction() -> str:
    return "rtl" if current_language() in RTL_LANGUAGES else "ltr"


def isolate(text: object) -> str:
    """`text` between Unicode's first-strong isolate and pop directional isolate marks: the
    plain-text <bdi>, for user text inside a sentence that is not markup."""
    return f"\u2068{text}\u2069"


def bdi(text: object) -> Markup:
    """`text` (escaped) in a <bdi>, for user text inside a translated sentence of a page."""
    return Markup("<bdi>{}</bdi>").format(text)


def ltr(text: object) -> Markup:
    """`text` (escaped) kept left to right in any page: a phone number, an email, an amount,
    a code. The one way templates write them, so «+966 50 123 4567» never turns around in an
    Arabic sentence; empty text gives nothing."""
    if text is None or text == "":
        return Markup("")
    return Markup('<span class="ltr" dir="ltr">{}</span>').format(text)


def ltr_phone(value: str | None) -> Markup:
    """A phone number as people read it (`format_phone`), left to right and one unit that
    never wraps inside: «+966 54 444 3322», not «+966 54 444» over «3322»."""
    text = format_phone(value)
    if not text:
        return Markup("")
    return Markup('<span class="ltr phone" dir="ltr">{}</span>').format(text)


@lru_cache(maxsize=16384)
def format_phone(value: str | None) -> str:
    """An E.164 number written as people read it, in every page alike: +966 50 123 4567.

    Cached: parsing and formatting cost more than the rest of a board card together.
    """
    if not value:
        return ""
    try:
        number = phonenumbers.parse(value)
    except phonenumbers.NumberParseException:
        return value
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)


def organization_currency() -> str:
    """The current organization's currency (SAR outside one)."""
    organization = current_organization()
    return organization.currency if organization else "SAR"


def format_money(amount: Decimal | int | None, currency: str | None = None) -> str:
    """An amount in the organization's currency (or `currency`), as the language writes it."""
    if amount is None:
        return ""
    return format_currency(amount, currency or organization_currency(), locale=_locale())


def currency_symbol(currency: str | None = None) -> str:
    """The organization's currency (or `currency`) as the language writes it: ر.س. / SAR."""
    return get_currency_symbol(currency or organization_currency(), locale=_locale())


DATE_PATTERN = "d MMM y"  # 2 Dec 2026; Arabic names its months itself


def organization_zone() -> tzinfo:
    """The current organization's time zone (UTC outside one), looked up once per request,
    job or live event (which render outside any request)."""
    zones = g.setdefault("organization_zones", {})
    key = current_organization_id()
    if key not in zones:
        organization = current_organization() if key is not None else None
        zones[key] = ZoneInfo(organization.timezone if organization else "UTC")
    return zones[key]



@lru_cache(maxsize=1024)
def timezone_name(zone: str, language: str) -> str:
    """A time zone as people name it in `language` («توقيت مصر», "Egypt Time"); its IANA
    name stays what is stored and posted. UTC stays UTC (Babel calls it an unknown region),
    and a name Babel does not know is shown as it is."""
    if zone == "UTC":
        return zone
    try:
        return get_timezone_location(zone, locale=language)
    except LookupError:
        return zone

def _locale() -> Locale:
    return get_locale() or Locale.parse("ar")


def format_day(value: datetime) -> str:
    """The date of `value` in the organization's time zone: 2 Dec 2026."""
    return format_date(value.astimezone(organization_zone()), DATE_PATTERN, locale=_locale())


def format_clock(value: datetime) -> str:
    """The time of day of `value` in the organization's time zone: 12:05 PM."""
    return format_time(value, "short", tzinfo=organization_zone(), locale=_locale())


def format_moment(value: datetime) -> str:
    """Date and time, joined as the language joins them: 2 Dec 2026, 12:05 PM."""
    return _locale().datetime_formats["medium"].format(format_clock(value), format_day(value))


def format_recent(value: datetime) -> str:
    """A list's date: the time of day for today, the date before and after."""
    zone = organization_zone()
    if value.astimezone(zone).date() == datetime.now(zone).date():
        return format_clock(value)
    return format_day(value)


def format_ago(value: datetime | None) -> str:
    """How long ago `value` was, in words: "a moment ago", "5 minutes ago", "2 days ago"."""
    if value is None:
        return ""
    elapsed = datetime.now(UTC) - value
    if elapsed < timedelta(minutes=1):
        return _("a moment ago")
    return format_timedelta(-elapsed, add_direction=True, locale=_locale())


def format_duration(value: timedelta) -> str:
    """A span of time in words, rounded as people say it: "4 minutes", «ساعتان»."""
    return format_timedelta(value, threshold=1.5, locale=_locale())


_STYLES = {"medium": format_moment, "short": format_recent}


def _datetime_filter(value: datetime | None, style: str = "medium") -> str:
    """`|datetime`: date and time (details, logs); `|datetime("short")`: a list's date."""
    return _STYLES[style](value) if value else ""
