"""Each module's events.py lists every event it publishes, with its payload's keys, and every
event it listens to (crm/events.py): a new module finds its hooks in one file, and the file
cannot fall behind the code."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import crm
from crm import events

MODULES = ("foundation", "customers", "whatsapp", "tickets", "campaigns")
ROOT = Path(crm.__file__).parent


def catalogue(module: str):
    return importlib.import_module(f"crm.{module}.events")


def published(module: str) -> list[tuple[str, tuple[str, ...] | None, str]]:
    """Each `events.publish("name", payload)` in the module's code: the name, the payload's
    keys when it is a dict written out (None otherwise; those written beside a `**spread`,
    with "**" among them), and where it stands."""
    found = []
    for path in sorted((ROOT / module).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "publish" and node.args
                    and isinstance(node.args[0], ast.Constant)):
                continue
            payload = node.args[1] if len(node.args) > 1 else None
            keys = (tuple("**" if key is None else key.value for key in payload.keys)
                    if isinstance(payload, ast.Dict) else None)
            found.append((node.args[0].value, keys, f"{path.relative_to(ROOT)}:{node.lineno}"))
    return found


@pytest.mark.parametrize("module", MODULES)
def test_every_event_a_module_publishes_is_in_its_catalogue_with_its_payload(module):
    """A publish names a listed event, and a payload written out has the listed keys."""
    listed = catalogue(module).PUBLISHES
    calls = published(module)
    for name, keys, where in calls:
        assert name in listed, f"{where}: {name} is not in crm/{module}/events.py PUBLISHES"
        if keys is not None and "**" in keys:  # a spread: what is written out is listed
            assert set(keys) - {"**"} <= set(listed[name]), f"{where}: payload of {name}"
        elif keys is not None:
            assert sorted(keys) == sorted(listed[name]), f"{where}: payload of {name}"
    assert {name for name, _keys, _where in calls} == set(listed), "listed, never published"


@pytest.mark.parametrize("module", MODULES)
def test_every_event_a_module_listens_to_is_in_its_catalogue(app, module):
    """The subscribers registered by the module's code are those its LISTENS lists."""
    heard = {name for name, subscribers in events._subscribers.items()
             for subscriber in subscribers
             if subscriber.func.__module__.startswith(f"crm.{module}.")}
    assert heard == set(catalogue(module).LISTENS)


def returned_keys(module: str, function_name: str) -> list[str]:
    """The keys of the dict that `function_name` of `module` returns, as written."""
    source = ast.parse(Path(importlib.import_module(module).__file__).read_text())
    function = next(node for node in ast.walk(source)
                    if isinstance(node, ast.FunctionDef) and node.name == function_name)
    returned = next(node.value for node in ast.walk(function) if isinstance(node, ast.Return))
    return sorted(key.value for key in returned.keys)


def test_a_message_payload_has_the_listed_keys(app):
    """message.received and message.sent carry services.message_payload(), written once."""
    from crm.whatsapp.events import MESSAGE

    assert returned_keys("crm.whatsapp.services", "message_payload") == sorted(MESSAGE)


def test_a_ticket_payload_has_the_listed_keys(app):
    """Every ticket.* event but ticket.suggested carries common.ticket_payload()."""
    from crm.tickets.events import TICKET

    assert returned_keys("crm.tickets.services.common", "ticket_payload") == sorted(TICKET)
