"""Factories and helpers: make organizations and people through the real services."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from email import message_from_bytes, policy
from email.message import EmailMessage

import pyotp
import pytest
from flask import Flask, current_app
from redis.exceptions import ConnectionError as RedisConnectionError
from rq import Queue, SimpleWorker
from sqlalchemy import inspect, text

from crm import events
from crm.extensions import db
from crm.foundation import services, two_factor
from crm.foundation.models import Organization, OutboundEmail, User, UserSession
from crm.security import issue_token
from crm.tenancy import organization_context, set_current_organization
from crm.transaction import commit

PASSWORD = "correct horse battery"
_sequence = itertools.count(1)
# One counter for every made-up phone, whichever module's factory makes it: a customer's and a
# conversation's counters of their own wrote the same numbers.
_phones = itertools.count(1)


def unique_phone() -> str:
    """A valid Saudi mobile number no other test and no other factory uses."""
    return f"+96655{next(_phones) + 1_000_000:07d}"


def make_org(name: str | None = None, language: str = "ar") -> Organization:
    """A new organization with its admin (`org.admin`)."""
    n = next(_sequence)
    registration = services.register_organization(
        name or f"Organization {n}", f"Admin {n}", f"admin{n}@org{n}.example", PASSWORD, language)
    org = registration.organization
    org.admin = registration.user
    db.session.flush()
    set_current_organization(None)
    return org


def make_user(org: Organization, role: str = "agent", email: str | None = None,
              language: str | None = None, full_name: str | None = None) -> User:
    n = next(_sequence)
    with organization_context(org.id):
        user = User(organization_id=org.id, email=email or f"user{n}@org{org.id}.example",
                    full_name=full_name or f"User {n}",
                    password_hash=services.hash_password(PASSWORD),
                    role=role, preferred_language=language)
        db.session.add(user)
        db.session.flush()
    return user


def make_api_key(org: Organization, user: User | None = None, name: str = "Integration"
                 ) -> UserSession:
    """A live API key of `org` acting as `user` (the admin by default); `.credential` is it."""
    with organization_context(org.id):
        key = services.create_api_key(org.admin, name, (user or org.admin).id)
        db.session.flush()
    return key


def make_session(user: User) -> UserSession:
    """A live browser session of `user`, as logging in elsewhere makes."""
    with organization_context(user.organization_id):
        return services.open_session(user, "browser")


def login(client, user: User) -> None:
    """Give the client a new logged-in session of `user` (as a real login would)."""
    credential = make_session(user).credential
    with client.session_transaction() as session:
        session["_user_id"] = credential
        session["_fresh"] = True


# Two-factor codes are computed for time steps around a fixed moment (`totp_clock`).
TOTP_STEP = 1_800_000_000 // two_factor.STEP_SECONDS


@pytest.fixture
def totp_clock(monkeypatch):
    """Stop two-factor's clock at TOTP_STEP; call the fixture with a step to move it there."""

    def move(step: int) -> None:
        monkeypatch.setattr(two_factor, "current_step", lambda: step)

    move(TOTP_STEP)
    return move


def totp_code(secret: str, step: int) -> str:
    """The code an authenticator app with `secret` shows during `step`."""
    return pyotp.TOTP(secret).at(step * two_factor.STEP_SECONDS)


def turn_on_two_factor(user: User) -> tuple[str, list[str]]:
    """Turn two-factor sign-in on for `user` with a code of the current step (which is then
    spent): their secret and recovery codes."""
    with organization_context(user.organization_id):
        secret = two_factor.start_setup(user)
        codes = two_factor.enable(user, totp_code(secret, two_factor.current_step()))
        db.session.flush()
    return secret, codes


def bearer(user: User) -> dict[str, str]:
    """The Authorization header of a new API token of `user` (as an API login answers)."""
    with organization_context(user.organization_id):
        return {"Authorization": f"Bearer {issue_token(user)}"}


def run_jobs(app, queues=("inbound", "default", "mail", "bulk")) -> None:
    """Commit what the test wrote so far, then run every queued job in this process."""
    commit()
    worker = SimpleWorker(list(queues), connection=app.extensions["crm.redis"])
    worker.work(burst=True)


def run_recovery(app) -> None:
    """Run the recovery job (crm/recovery.py) as its clock would, in this process."""
    from crm import recovery

    commit()
    recovery.request_run()
    run_jobs(app, queues=(recovery.QUEUE,))


@contextmanager
def enqueues_failing(monkeypatch) -> Iterator[None]:
    """Redis refuses every enqueue inside the block, as when it is down."""
    def refuse(*args, **kwargs):
        raise RedisConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    with monkeypatch.context() as patch:
        patch.setattr(Queue, "enqueue", refuse)
        patch.setattr(Queue, "enqueue_many", refuse)
        yield


def delivered(email: OutboundEmail) -> EmailMessage:
    """An outbox email as the embedded mail writer delivered it (instance/mail/).

    The outbox row keeps no usable token, so a link is read from what was delivered.
    """
    email_id = inspect(email).identity[0]  # without loading it: RLS may hide it here
    path = current_app.config["INSTANCE_PATH"] / "mail" / f"email-{email_id}.eml"
    assert path.exists(), f"email {email_id} was not delivered (run_jobs?)"
    return message_from_bytes(path.read_bytes(), policy=policy.default)


def delivered_text(email: OutboundEmail) -> str:
    """The plain-text body of an outbox email as delivered, link and token included."""
    return delivered(email).get_body(("plain",)).get_content()


def snapshot(org_id: int) -> dict[str, list[str]]:
    """Every row the organization has, table by table, as text: equal before and after a
    request that must change nothing."""
    with organization_context(org_id):
        return {table: list(db.session.execute(
                    text(f"SELECT t::text FROM {table} t ORDER BY 1")).scalars())
                for table in ["organizations", *_tenant_tables()]}


def _tenant_tables() -> list[str]:
    return list(db.session.execute(text("""
        SELECT c.relname FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid
        WHERE a.attname = 'organization_id' AND c.relkind = 'r' AND NOT a.attisdropped
          AND c.relnamespace = 'public'::regnamespace ORDER BY 1""")).scalars())


@pytest.fixture
def org():
    return make_org()


@pytest.fixture
def other_org():
    return make_org()


@pytest.fixture
def acting(org):
    """Run the test as `org` (services read the organization from the context)."""
    with organization_context(org.id):
        yield org


@pytest.fixture
def published(monkeypatch) -> list[tuple[str, dict]]:
    """Every event published during the test, in order (nothing is delivered)."""
    seen: list[tuple[str, dict]] = []
    monkeypatch.setattr(events, "publish", lambda name, payload: seen.append((name, payload)))
    return seen


@functools.cache
def url_map_app() -> Flask:
    """An app built only to read its URL map at collection time; it never connects."""
    from crm import create_app

    return create_app({"TESTING": True, "SECRET_KEY": "url-map-" + "0" * 32,
                       "DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:9/nothing",
                       "REDIS_URL": "redis://127.0.0.1:9/0", "CHECK_DATABASE_ROLE": False})
