"""The plans: one file of defaults, with the shape the API and Stripe rely on."""

from __future__ import annotations

import itertools

from crm.billing.plans import INTERVALS, LIMITS, PLANS, plan_for_lookup_key
from crm.foundation.models import MODULES


def test_the_four_plans_grow_in_modules_and_limits():
    """Free, Starter, Pro, Enterprise: each includes what the one below does and allows at
    least as much (None: unlimited), and every plan includes billing, so anyone can pay."""
    plans = sorted(PLANS.values(), key=lambda plan: plan.rank)
    assert [plan.code for plan in plans] == ["free", "starter", "pro", "enterprise"]
    for lower, higher in itertools.pairwise(plans):
        assert lower.modules <= higher.modules
        for limit in LIMITS:
            big, small = higher.limits[limit], lower.limits[limit]
            assert big is None or (small is not None and big >= small), (higher.code, limit)
    assert PLANS["enterprise"].modules == frozenset(MODULES)
    assert set(PLANS["enterprise"].limits.values()) == {None}


def test_paid_plans_have_monthly_and_yearly_prices_in_their_currency():
    """Starter and Pro are bought through Checkout (a year costs ten months); Free needs no
    price and Enterprise is quoted."""
    paid = {code for code, plan in PLANS.items() if plan.is_paid}
    assert paid == {"starter", "pro"}
    for code in paid:
        plan = PLANS[code]
        assert plan.currency == "sar"
        assert plan.prices["year"] == plan.prices["month"] * 10


def test_lookup_keys_name_their_plan_and_interval():
    """wasl_<plan>_<month|year> maps back to its plan; any other key is not ours."""
    for plan in PLANS.values():
        for interval in INTERVALS:
            assert plan_for_lookup_key(plan.lookup_key(interval)) == (plan, interval)
    for foreign in (None, "", "pro_month", "wasl_pro_week", "wasl_gold_month", "wasl_"):
        assert plan_for_lookup_key(foreign) is None
