"""Fixtures shared by the WhatsApp module's tests."""

from __future__ import annotations

import pytest

from tests.whatsapp.fake_graph import FakeGraph


@pytest.fixture
def graph(app, monkeypatch):
    """The local fake of Meta's Graph API, which the app talks to for this test."""
    fake = FakeGraph()
    monkeypatch.setitem(app.config, "WHATSAPP_GRAPH_URL", fake.url)
    yield fake
    fake.stop()
