"""Schemathesis over /api/openapi.json: every documented operation, authenticated as an admin.

Operations come from the document the app serves, so a module's new endpoints are exercised
the day they are documented (and test_openapi.py fails the day one is not). Each operation
gets valid and invalid data; a run fails on any 5xx, on a status code the document does not
list, on a body or content type that breaks the document, on invalid data that is accepted,
and on an authenticated operation that also answers without a valid token.

The whole run is one test, inside the per-test transaction that is rolled back. Every call
carries a freshly minted token of the admin, so POST /api/auth/logout (which revokes every
token of its caller) is exercised for real without disarming the calls after it. Schemathesis
does not generate Authorization headers of its own (they would be overridden by ours, and
the "invalid" data would be valid); the ignored-auth check still replays each successful
authenticated call without a token and with a made-up one, and expects 401. The login rate
limits are raised for the run: hundreds of made-up logins come from one address, and the
negative-data check does not count a 429 as a rejection (test_auth.py tests the 429).
"""

import dataclasses
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import DataGenerationMethod, GenerationConfig

from crm.extensions import db
from crm.foundation.models import ROLES, User
from crm.tenancy import organization_context
from tests.factories import bearer, make_user

schema = schemathesis.from_pytest_fixture(
    "api_schema",
    data_generation_methods=[DataGenerationMethod.positive, DataGenerationMethod.negative],
    generation_config=GenerationConfig(with_security_parameters=False))


@pytest.fixture
def api_schema(app):
    return schemathesis.from_wsgi("/api/openapi.json", app)


# What generated user ids are aimed at: colleagues of every role, another organization's
# user and a missing id. Random integers would almost never name a real user, so the success
# answers (and the last-admin 409) would go unchecked; and one might name the run's own admin.
_USER_IDS: list[int] = []


@schema.hook
def map_path_parameters(context, path_parameters: dict) -> dict:
    """Aim a valid generated user_id at a real target (never the admin the run acts as)."""
    user_id = (path_parameters or {}).get("user_id")
    if isinstance(user_id, int) and 0 <= user_id <= 2**63 - 1 and _USER_IDS:
        path_parameters["user_id"] = _USER_IDS[user_id % len(_USER_IDS)]
    return path_parameters


@pytest.fixture
def admin(app, org, other_org, monkeypatch) -> Iterator[tuple[int, int]]:
    """(organization id, user id) of the admin whose tokens the run uses; targets for ids."""
    monkeypatch.setitem(app.config, "RATELIMIT_LOGIN_PER_IP", "10000 per minute")
    monkeypatch.setitem(app.config, "RATELIMIT_LOGIN_PER_ACCOUNT", "10000 per minute")
    colleagues = [make_user(org, role) for role in ROLES]
    _USER_IDS[:] = [user.id for user in colleagues] + [other_org.admin.id, 2**63 - 1]
    yield org.id, org.admin.id
    _USER_IDS.clear()


def _fresh_token(admin: tuple[int, int]) -> dict[str, str]:
    """A token for the admin as they are now (logout rotates the nonce a token carries)."""
    org_id, user_id = admin
    with organization_context(org_id):
        return bearer(db.session.get(User, user_id))


@schema.parametrize()
@settings(max_examples=25, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.filter_too_much])
def test_api_answers_as_its_document_says(case, admin):
    """Every answer of every documented operation is one the document describes."""
    # The ignored-auth check writes a made-up token into case.headers, which must be a dict.
    case.headers = case.headers or {}
    if case.meta is not None and not case.operation.path_parameters:
        # Schemathesis 3.39 marks path parameters negated even where there are none, which
        # defeats its own rule that unknown query parameters alone (the API ignores them, as
        # most do) are not invalid data.
        case.meta = dataclasses.replace(case.meta, path_parameters=None)
    case.call_and_validate(headers=_fresh_token(admin))
