"""The sidebar's entries: each draws its own icon, and the work comes before the administration."""

from __future__ import annotations

import re
from pathlib import Path

from crm import navigation

ICONS = Path(__file__).resolve().parent.parent / "templates" / "_icons.html"


def _drawn_icons() -> set[str]:
    return set(re.findall(r'^\s*"([a-z-]+)":\s*"M', ICONS.read_text(), re.M))


def test_every_entry_names_an_icon_that_is_drawn(app):
    drawn = _drawn_icons()
    assert "megaphone" in drawn
    missing = {item.endpoint: item.icon for item in navigation._items if item.icon not in drawn}
    assert missing == {}


def test_tickets_and_campaigns_are_work_with_their_own_icons(app):
    items = {item.endpoint: item for item in navigation._items}
    for endpoint, icon in (("tickets.list_tickets", "ticket"),
                           ("campaigns.list_campaigns", "megaphone")):
        assert items[endpoint].group == navigation.WORK
        assert items[endpoint].icon == icon
