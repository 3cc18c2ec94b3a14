"""Styles as a desktop browser applies them (1280 px), in Arabic: the sidebar's icons stand
apart from their labels (a sidebar rule once held its entries to `display: block`)."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import screenshot

pytestmark = [pytest.mark.e2e, pytest.mark.live, pytest.mark.xdist_group("e2e")]

# The room between an entry's icon and its label, whichever side the icon sits on.
GAP = """(link) => {
  const icon = link.querySelector(".icon").getBoundingClientRect();
  const label = link.querySelector(".nav-label").getBoundingClientRect();
  return Math.max(icon.left - label.right, label.left - icon.right);
}"""


def test_the_sidebars_icons_stand_apart_from_their_labels(browsing, live_server):
    page = browsing.new_page(account=live_server.make_account())
    page.goto("/")
    links = page.locator(".sidebar .nav-link")
    assert links.count() > 3
    gaps = [links.nth(index).evaluate(GAP) for index in range(links.count())]
    screenshot(page, "desktop-sidebar-ar")
    assert min(gaps) >= 6, gaps
