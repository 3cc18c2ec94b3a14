"""Every Redis key Wasl writes, named one way: `wasl:<module>:<what>[:...][:org:<id>]`.

One prefix keeps Wasl's keys apart from the libraries' that share the server (RQ's `rq:`,
Flask-SocketIO's channel, Flask-Limiter's `LIMITS:`), so an operator can list or clear them
with one pattern. A key that belongs to an organization ends with `org:<id>`, as DESIGN.md
asks of cache keys, so an organization's keys can be found (`wasl:*:org:42`) and never meet
another's.
"""

from __future__ import annotations

PREFIX = "wasl"


def key(*parts: str | int, org: int | None = None) -> str:
    """The Redis key `wasl:<part>:<part>...`, ending with `:org:<id>` when `org` is given."""
    names = [PREFIX, *(str(part) for part in parts)]
    if org is not None:
        names += ["org", str(org)]
    return ":".join(names)
