"""Tests of the JSON API under /api."""

from __future__ import annotations

import re

from crm.extensions import db
from crm.foundation.models import OutboundEmail
from crm.tenancy import organization_context
from tests.factories import delivered_text

# The one-time tokens of emailed links: "<organization id>.<secret>".
EMAILED_TOKEN = re.compile(r"\b(\d{1,18}\.[\w-]{20,100})\b")


def assert_error(response, status: int, code: str | None = None) -> dict:
    """The response is `status` with the API's error shape; return its `error` object."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.is_json, response.headers.get("Content-Type")
    error = response.get_json()["error"]
    assert set(error) == {"code", "message", "fields"}
    assert isinstance(error["message"], str)
    assert error["message"]
    if code is not None:
        assert error["code"] == code
    return error


def emailed_token(org_id: int, to: str) -> str:
    """The token in the link of the latest email sent to `to` (delivered: run_jobs first)."""
    with organization_context(org_id):
        email = db.session.scalars(db.select(OutboundEmail).where(OutboundEmail.to_address == to)
                                   .order_by(OutboundEmail.id.desc())).first()
    assert email is not None, f"no email to {to}"
    text = delivered_text(email)
    match = EMAILED_TOKEN.search(text)
    assert match, text
    return match.group(1)


def walk_pages(client, url: str, headers: dict[str, str]) -> list[list[dict]]:
    """Every page of the list at `url` (its query sets the limit), following `next_cursor` to
    the last: each page's items, in order. Each answer is a 200 holding just `items` and
    `next_cursor`."""
    pages: list[list[dict]] = []
    cursor = None
    while True:
        after = ("&" if "?" in url else "?") + f"cursor={cursor}" if cursor else ""
        response = client.get(url + after, headers=headers)
        assert response.status_code == 200, response.get_json()
        body = response.get_json()
        assert set(body) == {"items", "next_cursor"}
        pages.append(body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages
