"""Each WhatsApp number's sending settings: throughput and messaging limit (cloud), the
pause between messages and the daily cap (web). docs/campaigns.md says where the defaults
come from."""

from __future__ import annotations

from collections.abc import Mapping

from flask_babel import gettext as _
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert

from crm.campaigns.models import MESSAGING_LIMITS, NUMBER_DEFAULTS, NumberSettings
from crm.customers.services import check_int
from crm.errors import ValidationError
from crm.extensions import db
from crm.foundation.models import User
from crm.foundation.services import audit
from crm.validation import collect
from crm.whatsapp.models import WhatsAppProfile

MAX_THROUGHPUT = 1000  # Meta's highest throughput, messages a second
MAX_DELAY = 3600
MAX_DAILY_CAP = 100_000


def number_settings(profile: WhatsAppProfile) -> NumberSettings:
    """The number's settings; the defaults (unsaved) until an admin changes them."""
    row = db.session.scalar(select(NumberSettings).where(NumberSettings.profile_id == profile.id))
    return row or NumberSettings(profile_id=profile.id, **NUMBER_DEFAULTS)


def number_settings_row(profile: WhatsAppProfile) -> NumberSettings:
    """The number's settings row, created with the defaults if it has none (to write to)."""
    db.session.execute(insert(NumberSettings).values(organization_id=profile.organization_id,
                                                     profile_id=profile.id, **NUMBER_DEFAULTS)
                       .on_conflict_do_nothing(constraint="uq_campaign_number_settings"))
    return db.session.scalar(select(NumberSettings).where(NumberSettings.profile_id == profile.id)
                             .execution_options(populate_existing=True))


def update_number_settings(actor: User, profile: WhatsAppProfile, data: Mapping
                           ) -> NumberSettings:
    """Change what `data` names of throughput_per_second, messaging_limit (one of Meta's tiers,
    None for unlimited), web_delay_seconds ([min, max]) and web_daily_cap."""
    checks = {}
    if "throughput_per_second" in data:
        checks["throughput_per_second"] = lambda: check_int(
            data["throughput_per_second"], "throughput_per_second", 1, MAX_THROUGHPUT)
    if "messaging_limit" in data:
        checks["messaging_limit"] = lambda: _check_limit(data["messaging_limit"])
    if "web_delay_seconds" in data:
        checks["web_delay_seconds"] = lambda: check_delay(data["web_delay_seconds"],
                                                          "web_delay_seconds")
    if "web_daily_cap" in data:
        checks["web_daily_cap"] = lambda: check_int(data["web_daily_cap"], "web_daily_cap", 1,
                                                    MAX_DAILY_CAP)
    values = collect(checks)
    if "web_delay_seconds" in values:
        values["web_delay_min_seconds"], values["web_delay_max_seconds"] = values.pop(
            "web_delay_seconds")
    settings = number_settings_row(profile)
    for key, value in values.items():
        setattr(settings, key, value)
    audit("campaigns.number_settings_changed", actor, profile, **values)
    return settings


def _check_limit(raw: object) -> int | None:
    if raw in ("", "unlimited"):
        raw = None
    if isinstance(raw, str) and raw.isdigit():
        raw = int(raw)
    if raw not in MESSAGING_LIMITS or isinstance(raw, bool):
        raise ValidationError({"messaging_limit": _("Choose one of the listed options.")})
    return raw


def check_delay(raw: object, field_name: str) -> tuple[int, int]:
    """A [min, max] pause in whole seconds, min at most max."""
    if not isinstance(raw, list | tuple) or len(raw) != 2:
        raise ValidationError({field_name: _("Give the shortest and the longest pause.")})
    low, high = (check_int(value, field_name, 1, MAX_DELAY) for value in raw)
    if low > high:
        raise ValidationError({field_name: _("The shortest pause is longer than the longest.")})
    return low, high
