"""Arabic first: every message translated, layout written in logical CSS properties only."""

import re
from pathlib import Path

from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

ROOT = Path(__file__).resolve().parent.parent
KEYWORDS = {"_": None, "gettext": None, "ngettext": (1, 2), "lazy_gettext": None,
            "lazy_ngettext": (1, 2), "pgettext": ((1, "c"), 2),
            "lazy_pgettext": ((1, "c"), 2)}
METHODS = [("crm/**.py", "python"), ("templates/**.html", "jinja2"),
           ("templates/**.txt", "jinja2")]
PHYSICAL = re.compile(
    r"(margin|padding|border)-(left|right)\b|(^|[^-\w])(left|right)\s*:|"
    r"text-align:\s*(left|right)|float:\s*(left|right)|\b(ml|mr|pl|pr)-[0-9]")


def _source_messages() -> set[tuple[str, str | None]]:
    found = set()
    for _filename, _lineno, message, _comments, context in extract_from_dir(
            str(ROOT), METHODS, keywords=KEYWORDS):
        found.add((message if isinstance(message, str) else message[0], context))
    return found


def _catalog(language: str):
    with open(ROOT / "translations" / language / "LC_MESSAGES" / "messages.po", "rb") as f:
        return read_po(f)


def test_every_message_has_an_arabic_translation():
    """A string shown to users without an Arabic translation fails the build."""
    catalog = _catalog("ar")
    missing = sorted(
        msgid for msgid, context in _source_messages()
        if not (entry := catalog.get(msgid, context=context)) or entry.fuzzy
        or not _translated(entry.string))
    assert missing == [], f"{len(missing)} messages lack Arabic: {missing[:20]}"


def _translated(string) -> bool:
    return all(string) if isinstance(string, tuple) else bool(string)


def test_no_physical_left_or_right_in_styles_or_templates():
    """Layout uses inline-start/inline-end so that RTL and LTR share one stylesheet."""
    files = [*ROOT.glob("static/css/**/*.css"), *ROOT.glob("templates/**/*.html")]
    hits = [f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
            for path in files for n, line in enumerate(path.read_text().splitlines(), 1)
            if PHYSICAL.search(line)]
    assert hits == []


def test_pages_follow_the_language(client):
    """Arabic by default (rtl); Accept-Language picks English (ltr) for a visitor."""
    arabic = client.get("/login").get_data(as_text=True)
    english = client.get("/login", headers={"Accept-Language": "en"}).get_data(as_text=True)
    assert '<html lang="ar" dir="rtl">' in arabic
    assert '<html lang="en" dir="ltr">' in english
