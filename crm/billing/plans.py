"""The plans: what each includes, what it allows, what it costs. The one place defaults live.

Prices are in Saudi riyals, in halalas (Stripe's minor unit: 9900 = 99.00 SAR): Wasl's first
market is Saudi Arabia (Arabic first, Asia/Riyadh and SA by default), and Stripe charges SAR
cards whatever its account's country. Each plan names its currency, so a plan in another one
can join later. Yearly prices are ten months' worth. docs/billing.md has the table.

A limit of None is unlimited. Enterprise is "contact us": it has no public price, and an
operator sets its limits per organization (`crm billing set-limits`).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

from flask_babel import LazyString, lazy_gettext

from crm.foundation.models import MODULES

INTERVALS = ("month", "year")
LIMITS = ("users", "whatsapp_numbers", "customers", "campaign_messages_per_month",
          "api_requests_per_minute")
TRIAL_PLAN = "pro"
FALLBACK_PLAN = "free"  # where a trial that ends, or a subscription that is canceled, lands
LOOKUP_KEY_PREFIX = "wasl_"


@dataclass(frozen=True)
class Plan:
    code: str
    name: LazyString
    currency: str
    # Minor units per interval; None: no public price (free needs none, enterprise is quoted).
    prices: MappingProxyType
    modules: frozenset[str]
    limits: MappingProxyType
    rank: int  # higher is bigger: moving up is an upgrade (now), down a downgrade (period end)

    @property
    def is_paid(self) -> bool:
        """Can it be bought through Checkout?"""
        return all(self.prices.get(interval) for interval in INTERVALS)

    def lookup_key(self, interval: str) -> str:
        """The Stripe price lookup key of this plan and interval."""
        return f"{LOOKUP_KEY_PREFIX}{self.code}_{interval}"


def _plan(code: str, name: LazyString, rank: int, month: int | None, modules: tuple[str, ...],
          limits: tuple[int | None, ...]) -> Plan:
    return Plan(code=code, name=name, currency="sar", rank=rank,
                prices=MappingProxyType({"month": month,
                                         "year": month * 10 if month is not None else None}),
                modules=frozenset(modules),
                limits=MappingProxyType(dict(zip(LIMITS, limits, strict=True))))


#                                                    users numbers customers messages api/min
PLANS: MappingProxyType = MappingProxyType({plan.code: plan for plan in (
    _plan("free", lazy_gettext("Free"), 0, 0, ("whatsapp", "crm"),
          (2, 1, 1_000, 0, 60)),
    _plan("starter", lazy_gettext("Starter"), 1, 9_900,
          ("whatsapp", "crm", "ticketing"),
          (5, 2, 10_000, 0, 300)),
    _plan("pro", lazy_gettext("Pro"), 2, 29_900, MODULES,
          (25, 5, 100_000, 25_000, 1_200)),
    _plan("enterprise", lazy_gettext("Enterprise"), 3, None, MODULES,
          (None, None, None, None, None)),
)})


def plan_for_lookup_key(lookup_key: str | None) -> tuple[Plan, str] | None:
    """The plan and interval a Stripe price's lookup key names (None: not one of ours)."""
    if not lookup_key or not lookup_key.startswith(LOOKUP_KEY_PREFIX):
        return None
    code, _, interval = lookup_key.removeprefix(LOOKUP_KEY_PREFIX).rpartition("_")
    if code not in PLANS or interval not in INTERVALS:
        return None
    return PLANS[code], interval


# The usage reported to Stripe's Billing Meters (crm/billing/usage.py): usage_records column →
# (meter event name, how the meter aggregates an hour's events over a period).
METERS = MappingProxyType({
    "campaign_messages": ("wasl_campaign_messages", "sum"),
    "whatsapp_numbers": ("wasl_whatsapp_numbers", "last"),
})
