"""The stylesheet's blocks close: a lost `}` (a merge dropped one once) silently put every
rule after it inside the phone-width `@media` block, so laptops lost them."""

from __future__ import annotations

import re

from tests.conftest import ROOT


def test_every_block_of_the_stylesheet_closes_where_it_opened():
    css = re.sub(r"/\*.*?\*/", "", (ROOT / "static/css/app.css").read_text(), flags=re.S)
    depth = 0
    for number, line in enumerate(css.splitlines(), 1):
        depth += line.count("{") - line.count("}")
        assert depth >= 0, f"line {number} closes a block never opened"
    assert depth == 0, "a block of the stylesheet is never closed"
