"""Conditional requests on versioned objects (crm/versions.py): their ETag, If-Match on the
edits, and the 412 that answers a stale edit with the object as it is now.

The ETag is the version, strong and quoted: "3". An edit whose If-Match names none of the
current version answers 412 with the usual error shape plus `current`, the object as it is
now, and its ETag: the client applies its change to it and sends it again, or overwrites by
sending it without If-Match. An edit without If-Match, or with *, goes through: clients that
never read an ETag keep working.
"""

from __future__ import annotations

from flask import Response, jsonify, request
from werkzeug.http import parse_etags

from crm.api import blueprint as api
from crm.api.kit import Answer
from crm.versions import Expected, StaleVersionError, VersionedMixin
from crm.web import error_body

_CURRENT: dict[type[VersionedMixin], type[Answer]] = {}


def answer_stale_with(row: type[VersionedMixin], model: type[Answer]) -> None:
    """Say how a 412 shows a `row` as it is now: as the `model` its edits answer with."""
    _CURRENT[row] = model


def if_match() -> Expected:
    """The versions the request's If-Match names: None for any (no header, or *). A tag that
    is no version (weak, made up) names none, and so does a garbled header: the client asked
    for a condition, which then never holds."""
    raw = request.headers.get("If-Match", "").strip()
    if not raw:
        return None
    tags = parse_etags(raw)
    if tags.star_tag:
        return None
    return frozenset(int(tag) for tag in tags.as_set()
                     if tag.isascii() and tag.isdigit() and len(tag) <= 9)


def tagged(response: Response, row: VersionedMixin) -> Response:
    """`response` with the ETag of `row`."""
    response.set_etag(str(row.version))
    return response


@api.errorhandler(StaleVersionError)
def _stale(exc: StaleVersionError) -> Response:
    current = exc.current
    shown = _CURRENT[type(current)].model_validate(current, from_attributes=True)
    response = jsonify(error_body(exc.status, exc.code, exc.message)
                       | {"current": shown.model_dump(mode="json")})
    response.status_code = exc.status
    return tagged(response, current)
