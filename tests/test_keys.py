"""Redis keys (crm/keys.py): Wasl's own under one prefix, an organization's ending with it."""

from __future__ import annotations

from crm import recovery
from crm.keys import key
from crm.whatsapp.ingest import request_drain
from tests.factories import login


def test_a_key_names_its_parts_then_its_organization():
    """`wasl:` first, the parts in order, `org:<id>` last when the key is an organization's."""
    assert key("recovery", "clock") == "wasl:recovery:clock"
    assert key("whatsapp", "web", 7, "qr") == "wasl:whatsapp:web:7:qr"
    assert key("customers", "rescore-scheduled", org=42) == (
        "wasl:customers:rescore-scheduled:org:42")


def test_every_key_wasl_writes_is_under_its_prefix(app, client, org):
    """The nightly rescoring's schedule, the recovery clock and the pending drain all start
    with `wasl:`; only RQ's keys lie outside, in RQ's own namespace."""
    login(client, org.admin)
    assert client.get("/customers/").status_code == 200  # schedules the nightly rescoring
    recovery.tick()
    request_drain()

    written = {name.decode() for name in app.extensions["crm.redis"].scan_iter()}
    assert {key("customers", "rescore-scheduled", org=org.id), recovery.CLOCK_KEY,
            key("whatsapp", "ingest", "pending")} <= written
    assert [name for name in written if not name.startswith(("wasl:", "rq:"))] == []
