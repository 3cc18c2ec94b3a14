"""Settings the app refuses to start without, and roles it refuses to run as.

Row Level Security binds neither a superuser, nor a role with BYPASSRLS, nor (FORCE aside, which
the owner can undo) a table's owner: an app connecting as one of them would see every
organization. So the app checks its role when it starts, and migrations never run as it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from flask import Flask
from sqlalchemy.engine import make_url

from tests.conftest import ROOT, _server, worker_number
from tests.live import app_like


def _start(app: Flask, **overrides) -> None:
    """Build an app like the test session's, with `overrides`."""
    with app_like(app, **overrides):
        pass


def _as_role(app: Flask, role: str) -> str:
    return make_url(app.config["DATABASE_URL"]).set(username=role).render_as_string(
        hide_password=False)


def test_production_refuses_to_start_without_its_own_encryption_key(app):
    """With SESSION_COOKIE_SECURE=1 and no ENCRYPTION_KEY the app does not start, saying why
    (secrets at rest would be encrypted under a key derived from SECRET_KEY)."""
    with pytest.raises(RuntimeError, match="ENCRYPTION_KEY"):
        _start(app, SESSION_COOKIE_SECURE=True, ENCRYPTION_KEY="",
               PUBLIC_URL="https://crm.example.com")


def test_production_refuses_to_start_without_an_https_public_url(app):
    """In production the emailed links must point at the https address users reach."""
    key = "0" * 43 + "="
    with pytest.raises(RuntimeError, match="PUBLIC_URL"):
        _start(app, SESSION_COOKIE_SECURE=True, ENCRYPTION_KEY=key,
               PUBLIC_URL="http://127.0.0.1:5000")


def test_the_app_refuses_to_run_as_the_table_owner(app):
    """Connected as the schema owner the app does not start, and says it owns the tables."""
    with pytest.raises(RuntimeError, match=r"wasl_owner.*owns the tenant tables .*users"):
        _start(app, DATABASE_URL=app.config["MIGRATION_DATABASE_URL"])


def test_the_app_refuses_to_run_as_a_superuser(app):
    """Connected as a superuser the app does not start, and says so."""
    with pytest.raises(RuntimeError, match=r"postgres.*superuser"):
        _start(app, DATABASE_URL=_as_role(app, "postgres"))


@pytest.fixture
def bypassing_role(request):
    """A login role with BYPASSRLS that owns nothing (dropped afterwards)."""
    role = f"wasl_bypass_probe_{worker_number(request)}"
    with psycopg.connect(_server().superuser_dsn(), autocommit=True) as conn:
        conn.execute(f"DROP ROLE IF EXISTS {role}")
        conn.execute(f"CREATE ROLE {role} LOGIN NOSUPERUSER BYPASSRLS")
    try:
        yield role
    finally:
        with psycopg.connect(_server().superuser_dsn(), autocommit=True) as conn:
            conn.execute(f"DROP ROLE IF EXISTS {role}")


def test_the_app_refuses_to_run_as_a_role_with_bypassrls(app, bypassing_role):
    """Connected as a role with BYPASSRLS the app does not start, and says so."""
    with pytest.raises(RuntimeError, match=rf"{bypassing_role}.*BYPASSRLS"):
        _start(app, DATABASE_URL=_as_role(app, bypassing_role))


def _crm(app: Flask, *args: str, **environment: str) -> subprocess.CompletedProcess:
    """Run `crm ARGS` on the test database, with `environment` over the app's settings."""
    config = app.config
    env = {**os.environ, "DATABASE_URL": config["DATABASE_URL"],
           "MIGRATION_DATABASE_URL": config["MIGRATION_DATABASE_URL"],
           "REDIS_URL": config["REDIS_URL"], "SECRET_KEY": config["SECRET_KEY"],
           "CRM_INSTANCE_PATH": str(Path(config["INSTANCE_PATH"])), **environment}
    return subprocess.run([sys.executable, "-m", "crm", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def test_migrations_refuse_to_run_as_the_applications_role(app):
    """`crm db upgrade` with both URLs naming one role exits non-zero and says why."""
    result = _crm(app, "db", "upgrade", MIGRATION_DATABASE_URL=app.config["DATABASE_URL"])
    assert result.returncode != 0
    assert "wasl_app" in result.stderr
    assert "same role" in result.stderr


def test_migrations_need_their_own_url(app):
    """Without MIGRATION_DATABASE_URL, `crm db upgrade` refuses instead of migrating as the app."""
    result = _crm(app, "db", "upgrade", MIGRATION_DATABASE_URL="")
    assert result.returncode != 0
    assert "MIGRATION_DATABASE_URL is not set" in result.stderr


def test_a_crm_command_refused_its_role_says_why_in_one_line(app):
    """`crm` run with the owner's URL as DATABASE_URL exits 1 with the reason, no traceback."""
    result = _crm(app, "seed-demo", DATABASE_URL=app.config["MIGRATION_DATABASE_URL"])
    assert result.returncode == 1
    assert "Error: DATABASE_URL connects as the role wasl_owner" in result.stderr
    assert "Traceback" not in result.stderr
