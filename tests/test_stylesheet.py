"""The stylesheet's blocks close: a `@media` left open swallows every rule after it, which
then holds only at that width (the campaigns' funnel bars drew black on a desktop)."""

from __future__ import annotations

import re
from pathlib import Path

STYLESHEETS = sorted((Path(__file__).resolve().parent.parent / "static" / "css").glob("*.css"))
_COMMENTS_AND_STRINGS = re.compile(r"/\*.*?\*/|\"(?:\\.|[^\"\\])*\"|'(?:\\.|[^'\\])*'", re.S)


def _blanked(css: str) -> str:
    """`css` with its comments and strings blanked out, line breaks kept."""
    return _COMMENTS_AND_STRINGS.sub(lambda m: re.sub(r"[^\n]", " ", m.group()), css)


def test_there_are_stylesheets():
    assert STYLESHEETS


def test_every_block_closes_and_top_level_lines_sit_outside_blocks():
    for path in STYLESHEETS:
        css = path.read_text()
        depth = 0
        lines = zip(css.splitlines(), _blanked(css).splitlines(), strict=True)
        for number, (line, code) in enumerate(lines, start=1):
            # The file is written with nested rules indented: a line at column 0 that is not
            # a closing brace starts a top-level rule, so no block may be open around it.
            if line[:1] not in ("", " ", "}"):
                assert depth == 0, f"{path.name}:{number} sits inside a block left open"
            depth += code.count("{") - code.count("}")
            assert depth >= 0, f"{path.name}:{number} closes a block never opened"
        assert depth == 0, f"{path.name} ends with {depth} block(s) open"
