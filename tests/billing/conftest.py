"""Fixtures shared by the billing tests: the fake Stripe, connected or not."""

from __future__ import annotations

import pytest

from tests.billing.fake_stripe import FakeStripe


@pytest.fixture
def stripe_api(app, monkeypatch):
    """The local fake of Stripe's API, connected: billing is on (not self-hosted)."""
    fake = FakeStripe()
    monkeypatch.setitem(app.config, "STRIPE_SECRET_KEY", fake.api_key)
    monkeypatch.setitem(app.config, "STRIPE_WEBHOOK_SECRET", fake.webhook_secret)
    monkeypatch.setitem(app.config, "STRIPE_API_BASE", fake.url)
    yield fake
    fake.stop()


@pytest.fixture
def billing_on(app, monkeypatch):
    """Billing connected (a key set) with no Stripe call expected: the gate alone."""
    monkeypatch.setitem(app.config, "STRIPE_SECRET_KEY", "sk_test_gate_only")
