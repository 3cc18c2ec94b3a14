"""The sidebar's entries: each draws its own icon, and the work comes before the administration."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from crm import navigation
from crm.extensions import db
from crm.foundation import services
from crm.permissions import SWITCHABLE
from crm.tenancy import organization_context
from tests.factories import login

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


@pytest.mark.parametrize("module", SWITCHABLE)
def test_no_entry_leads_into_a_switched_off_module(client, org, module):
    """With a module switched off, every entry the admin's sidebar shows opens (none leads
    to the 404 of the module's pages, its settings among them)."""
    with organization_context(org.id):
        services.set_module_enabled(org.admin, module, False)
        db.session.flush()
    login(client, org.admin)
    page = client.get("/settings").text
    sidebar = page[page.index('class="sidebar'):]
    sidebar = sidebar[:sidebar.index("</nav>")]
    links = re.findall(r'href="(/[^"]*)"', sidebar)
    assert links
    refused = [link for link in links if client.get(link).status_code in (403, 404)]
    assert refused == []
