"""SLA badges: each running clock of a ticket as people read it — time left, or overdue by — in
the reader's language («متبقٍ 17 س 12 د»).

The units follow the CLDR locale of the reader's language in the organization's country; the
digits are Latin, as Babel writes every other number of the product (the `number` filter,
crm/i18n.py). Durations show their two largest units ("3 hr 59 min", "12 min 5 sec"), so a
badge under an hour counts down by the second as the page polls it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache

from babel import Locale, UnknownLocaleError
from babel.units import format_unit
from flask_babel import gettext as _
from flask_babel import lazy_gettext

from crm.foundation.services import current_organization
from crm.i18n import current_language
from crm.models import utcnow
from crm.tickets.models import Ticket

LABELS = {"first_response": lazy_gettext("First response"),
          "next_response": lazy_gettext("Next response"),
          "resolution": lazy_gettext("Resolution")}
_UNITS = (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1))
# How often an open ticket page asks for its badges again: often when a clock is close, so
# the seconds move; rarely when every clock is hours away.
FAST_POLL = 5
SLOW_POLL = 30


@dataclass(frozen=True)
class Badge:
    """One clock: `state` is ok, warning, breached, paused or met; `text` what it says."""

    clock: str
    state: str
    text: str
    due_at: datetime | None

    @property
    def label(self) -> str:
        return str(LABELS[self.clock])


@lru_cache(maxsize=64)
def _locale(language: str, country: str) -> Locale:
    try:
        return Locale.parse(f"{language}_{country}")
    except (UnknownLocaleError, ValueError):
        return Locale.parse(language)


def reader_locale() -> Locale:
    """The reader's language in the organization's country (ar_SA, en_AE, ...)."""
    return _locale(current_language(), current_organization().country)


def format_duration(delta: timedelta, locale: Locale | None = None) -> str:
    """A duration in its two largest units, at least one second: "3 hr 59 min"."""
    locale = locale or reader_locale()
    left = max(int(delta.total_seconds()), 1)
    parts = []
    for unit, size in _UNITS:
        amount, left = divmod(left, size)
        if amount or parts:
            parts.append(format_unit(amount, f"duration-{unit}", length="short",
                                     locale=locale))
        if len(parts) == 2:
            break
    return " ".join(parts)


def badges(ticket: Ticket, now: datetime | None = None) -> list[Badge]:
    """The ticket's clocks that matter now: the first response until it is given, the next
    response while one is awaited, the resolution until the ticket is solved."""
    now = now or utcnow()
    locale = reader_locale()
    shown = []
    if ticket.first_responded_at is None:
        shown.append("first_response")
    if ticket.next_response_started_at is not None:
        shown.append("next_response")
    if ticket.status not in ("solved", "closed"):
        shown.append("resolution")
    return [_badge(ticket, clock, now, locale) for clock in shown
            if getattr(ticket, f"{clock}_due_at") is not None]


def _badge(ticket: Ticket, clock: str, now: datetime, locale: Locale) -> Badge:
    due_at = getattr(ticket, f"{clock}_due_at")
    if ticket.is_paused:
        return Badge(clock, "paused", _("Paused"), due_at)
    if getattr(ticket, f"{clock}_breached_at") is not None or due_at <= now:
        return Badge(clock, "breached", _(
            "Overdue by %(duration)s", duration=format_duration(now - due_at, locale)), due_at)
    state = "warning" if getattr(ticket, f"{clock}_warned_at") is not None else "ok"
    return Badge(clock, state, _(
        "%(duration)s left", duration=format_duration(due_at - now, locale)), due_at)


def poll_seconds(shown: list[Badge], now: datetime | None = None) -> int | None:
    """How soon the page should ask again: None when no clock runs."""
    now = now or utcnow()
    running = [badge for badge in shown if badge.state != "paused" and badge.due_at]
    if not running:
        return None
    if any(abs(badge.due_at - now) < timedelta(hours=1) for badge in running):
        return FAST_POLL
    return SLOW_POLL
