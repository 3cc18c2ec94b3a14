"""Outages of PostgreSQL and Redis, told apart from the request's own errors.

While a server is down, every request that needs it answers 503 with Retry-After (crm/web.py)
and sockets are refused (crm/realtime.py), each logged in one line, never a traceback per
request. Nothing needs a restart afterwards: the database pool checks a connection before
lending it (pool_pre_ping) and redis-py connects again on the next command.

Only a server that cannot take the request counts: a refused or cut connection, a server
shutting down or starting up, out of connections, a pool with no connection free in time. A
statement that fails on a working server (a constraint, a deadlock, a statement timeout) is the
request's own error and stays one.
"""

from __future__ import annotations

import logging

import psycopg
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy import exc as sqlalchemy_errors

log = logging.getLogger("crm.outages")

# The errors to look into: an outage is always one of them, though not every one is an outage.
ERRORS: tuple[type[Exception], ...] = (
    sqlalchemy_errors.DBAPIError, sqlalchemy_errors.TimeoutError, psycopg.Error,
    RedisConnectionError, RedisTimeoutError)

# SQLSTATEs of a server that cannot take a request: connection exceptions (class 08),
# insufficient resources (53, as too many connections), shutting down or starting up (57P0x).
# Errors raised by the client itself, as a refused connection, carry none.
_UNREACHABLE_STATES = ("08", "53", "57P01", "57P02", "57P03")


def unavailable_service(exc: BaseException) -> str | None:
    """"database" or "redis" when `exc` says that server cannot be reached now, else None."""
    if isinstance(exc, (RedisConnectionError, RedisTimeoutError)):
        return "redis"
    if isinstance(exc, sqlalchemy_errors.TimeoutError):  # no pooled connection free in time
        return "database"
    if isinstance(exc, sqlalchemy_errors.DBAPIError):
        if exc.connection_invalidated:
            return "database"
        exc = exc.orig
    if isinstance(exc, psycopg.OperationalError) and (
            exc.sqlstate is None or exc.sqlstate.startswith(_UNREACHABLE_STATES)):
        return "database"
    return None


def outage_of(exc: Exception, during: str) -> str:
    """The server that `exc` says is down, logged in one line with what was `during`; any
    other error is raised again.

    One line, not a traceback: during an outage every request fails alike.
    """
    service = unavailable_service(exc)
    if service is None:
        raise exc
    log.warning("%s unavailable (%s): %s", service, during,
                (str(exc) or repr(exc)).splitlines()[0])
    return service
