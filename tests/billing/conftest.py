"""Fixtures shared by the billing tests: the fake Stripe, connected or not."""

from __future__ import annotations

import pytest

from tests.conftest import fake_stripe


@pytest.fixture
def stripe_api(app, monkeypatch):
    """The run's local fake of Stripe's API, as new, connected: billing is on (not
    self-hosted). STRIPE_API_BASE points at it for every test already."""
    fake = fake_stripe()
    fake.reset()
    assert app.config["STRIPE_API_BASE"] == fake.url
    monkeypatch.setitem(app.config, "STRIPE_SECRET_KEY", fake.api_key)
    monkeypatch.setitem(app.config, "STRIPE_WEBHOOK_SECRET", fake.webhook_secret)
    yield fake
    fake.reset()


@pytest.fixture
def billing_on(app, monkeypatch):
    """Billing connected (a key set) with no Stripe call expected: the gate alone."""
    monkeypatch.setitem(app.config, "STRIPE_SECRET_KEY", "sk_test_gate_only")
