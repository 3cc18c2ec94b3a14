"""Tests never reach the internet (tests/conftest.py's no_internet): connections and name
lookups past this machine are refused and fail the test; loopback and unix sockets work."""

from __future__ import annotations

import socket
import tempfile
from pathlib import Path

import pytest
import requests

from tests.conftest import InternetBlockedError


def test_a_connection_past_loopback_is_refused(no_internet):
    """Even one the code would catch as a network failure: the refusal is recorded, and
    would fail the test (emptied here, as this test is about the refusal)."""
    with pytest.raises(InternetBlockedError):
        socket.create_connection(("192.0.2.1", 443), timeout=0.5)  # TEST-NET-1
    with pytest.raises(InternetBlockedError):
        requests.get("https://graph.facebook.com/v23.0/me", timeout=0.5)
    assert no_internet == ["192.0.2.1:443", "graph.facebook.com (a name lookup)"]
    no_internet.clear()


def test_loopback_and_unix_sockets_still_work():
    """The servers the tests start listen there."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        socket.create_connection(server.getsockname(), timeout=1).close()
    with tempfile.TemporaryDirectory() as folder:
        path = str(Path(folder) / "server.sock")
        with socket.socket(socket.AF_UNIX) as server, socket.socket(socket.AF_UNIX) as client:
            server.bind(path)
            server.listen()
            client.connect(path)


def test_the_providers_default_to_nowhere_in_tests(app):
    """A test that forgot a fake reaches a closed loopback port, never Meta or Stripe."""
    assert app.config["WHATSAPP_GRAPH_URL"].startswith("http://127.0.0.1:")
    assert app.config["STRIPE_API_BASE"].startswith("http://127.0.0.1:")
