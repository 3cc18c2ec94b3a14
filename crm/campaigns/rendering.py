"""What one recipient's message says: variables in a text or a template's parameters.

A text (web and sandbox numbers) or a template parameter (cloud numbers) may hold `{name}`,
`{first_name}`, `{company}` and `{custom.<key>}` (a custom field of the CRM); each recipient's
values are frozen with the list (`variables_of`, and its SQL twin in audience.py). A template's
body numbers its parameters `{{1}}`, `{{2}}`...; the campaign gives one parameter for each, in
order, and the outbox sends them as the body's parameters in Meta's template format.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from flask_babel import gettext as _

from crm.errors import ValidationError

VARIABLE = re.compile(r"\{(name|first_name|company|custom\.([a-z][a-z0-9_]{0,39}))\}")
# Anything written like a variable: one that is not VARIABLE is a mistake to point out.
BRACED = re.compile(r"(?<!\{)\{([^{}\s]{1,60})\}(?!\})")
PLACEHOLDER = re.compile(r"\{\{\s*(\d{1,3})\s*\}\}")
# Meta refuses an empty parameter; a recipient without the value gets this instead.
EMPTY_PARAMETER = "-"


def variables_of(name: str, company: str, custom: Mapping[str, Any]) -> dict[str, Any]:
    """A recipient's variables from their customer record (audience.py freezes the same in
    SQL)."""
    return {"name": name, "first_name": name.split(" ", 1)[0] if name else "",
            "company": company, "custom": dict(custom)}


def _value(match: re.Match, variables: Mapping[str, Any]) -> str:
    if match.group(2):
        found = (variables.get("custom") or {}).get(match.group(2))
    else:
        found = variables.get(match.group(1))
    return "" if found is None else str(found)


def render(text: str, variables: Mapping[str, Any]) -> str:
    """`text` with each variable replaced by the recipient's value ("" when they have none)."""
    return VARIABLE.sub(lambda match: _value(match, variables), text)


def empty_variables(message: Mapping[str, Any], variables: Mapping[str, Any]) -> list[str]:
    """The variables a message uses (in its text or its template's parameters) that are empty
    for one recipient, as written (`{company}`), each once: the holes their message will
    have, for the preview to point out."""
    template = message.get("template")
    texts = template.get("parameters", []) if template else [message.get("text", "")]
    return list(dict.fromkeys(match.group(0) for text in texts
                              for match in VARIABLE.finditer(text)
                              if not _value(match, variables).strip()))


def check_variables(text: str, field_name: str, custom_keys: set[str] | None) -> None:
    """Refuse a variable that is not one of VARIABLE, or a custom field the CRM lacks
    (`custom_keys`; None: not checked)."""
    for match in BRACED.finditer(text):
        known = VARIABLE.fullmatch(match.group(0))
        if known is None or (known.group(2) and custom_keys is not None
                             and known.group(2) not in custom_keys):
            raise ValidationError({field_name: _(
                "%(variable)s is not a variable: use {name}, {first_name}, {company} or "
                "{custom.key} with the key of a custom field.", variable=match.group(0))})


def template_body(components: list[dict]) -> str:
    """The text of a template's body component ("" without one)."""
    return next((component.get("text", "") for component in components
                 if str(component.get("type", "")).upper() == "BODY"), "")


def placeholder_count(body: str) -> int:
    """How many parameters a body takes: its highest {{n}}."""
    return max((int(number) for number in PLACEHOLDER.findall(body)), default=0)


def fill_placeholders(body: str, values: list[str]) -> str:
    """A template body as the phone shows it, {{n}} replaced by the n-th value."""
    def value(match: re.Match) -> str:
        index = int(match.group(1)) - 1
        return values[index] if 0 <= index < len(values) else match.group(0)

    return PLACEHOLDER.sub(value, body)


@dataclass(frozen=True)
class Outbound:
    """A recipient's message as the outbox takes it (whatsapp.services.queue_outbound)."""

    type: str
    body: str
    content: dict = field(default_factory=dict)


def outbound(message: Mapping[str, Any], variables: Mapping[str, Any],
             components: list[dict] | None = None) -> Outbound:
    """The message a campaign sends one recipient: a text (with its media, if any), or a
    template whose `components` (as synced) give the body shown in the conversation."""
    template = message.get("template")
    if template:
        values = [render(parameter, variables).strip() or EMPTY_PARAMETER
                  for parameter in template.get("parameters", [])]
        content: dict[str, Any] = {"name": template["name"], "language": template["language"]}
        if values:
            content["components"] = [{"type": "body", "parameters": [
                {"type": "text", "text": value} for value in values]}]
        body = fill_placeholders(template_body(components or []), values) or template["name"]
        return Outbound("template", body, content)
    text = render(message.get("text", ""), variables)
    media = message.get("media")
    if media:
        return Outbound(media["kind"], text[:1024], {
            key: media[key] for key in ("path", "mime_type", "filename", "size")})
    return Outbound("text", text)
