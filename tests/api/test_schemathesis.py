"""Schemathesis over /api/openapi.json: every documented operation, authenticated as an admin.

Operations come from the document the app serves, so a module's new endpoints are exercised
the day they are documented (and test_openapi.py fails the day one is not). Each operation
gets valid and invalid data; a run fails on any 5xx, on a status code the document does not
list, on a body or content type that breaks the document, on invalid data that is accepted,
and on an authenticated operation that also answers without a valid token.

The whole run is one test, inside the per-test transaction that is rolled back. Every call
carries a freshly minted token of the admin, so POST /api/auth/logout (which ends the token
it is called with) is exercised for real without disarming the calls after it. Schemathesis
does not generate Authorization headers of its own (they would be overridden by ours, and
the "invalid" data would be valid); the ignored-auth check still replays each successful
authenticated call without a token and with a made-up one, and expects 401. The rate
limits are raised for the run (login, the public forms and the organization's API allowance):
hundreds of made-up requests come from one address and one organization, and the
negative-data check does not count a 429 as a rejection (test_rate_limits.py tests the 429s).
"""

import dataclasses
from collections.abc import Iterator
from datetime import date

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import DataGenerationMethod, GenerationConfig

from crm.extensions import db
from crm.foundation.models import ROLES, User
from crm.tenancy import organization_context
from tests.factories import bearer, make_user

# The document is OpenAPI 3.1 (its schemas are JSON Schema 2020-12, as pydantic writes them).
schemathesis.experimental.OPEN_API_3_1.enable()

schema = schemathesis.from_pytest_fixture(
    "api_schema",
    data_generation_methods=[DataGenerationMethod.positive, DataGenerationMethod.negative],
    generation_config=GenerationConfig(with_security_parameters=False))


@pytest.fixture
def api_schema(app):
    return schemathesis.from_wsgi("/api/openapi.json", app)


# What generated ids are aimed at, by parameter name: real objects of the run's organization
# (for users: colleagues of every role), another organization's and a missing id. Random
# integers would almost never name a real object, so the success answers (and the last-admin
# 409) would go unchecked; and a user id might name the run's own admin.
_TARGETS: dict[str, list[int]] = {}
# Ids in bodies are aimed too, so that sends, forwards and edits are answered for real.
_BODY_IDS = ("conversation_id", "message_id", "profile_id", "user_id")


def _aimed(context, values: dict | None) -> dict | None:
    """Aim each valid generated id at a real target; an invalid one stays invalid. A method
    may have targets of its own ("DELETE profile_id"), so that deleting does not take every
    target away from the operations after it."""
    method = context.operation.method.upper()
    for name, value in list((values or {}).items()):
        targets = _TARGETS.get(f"{method} {name}") or _TARGETS.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and (
                0 <= value <= 2**63 - 1) and targets:
            values[name] = targets[value % len(targets)]
    return values


@schema.hook
def map_path_parameters(context, path_parameters: dict) -> dict:
    return _aimed(context, path_parameters)


@schema.hook
def map_body(context, body):
    if not isinstance(body, dict):
        return body
    return {**body, **_aimed(context, {k: v for k, v in body.items() if k in _BODY_IDS})}


@schema.hook
def filter_case(context, case) -> bool:
    """A multipart body is a form: negative data that is not one (`true`, a list) cannot even
    be sent by the test client, so schemathesis' own transport fails on it."""
    return case.media_type != "multipart/form-data" or isinstance(case.body, dict)


def _whatsapp_targets(org, other_org) -> dict[str, list[int]]:
    """Numbers of each provider, conversations inside and outside the 24-hour window, messages
    in, out and failed; and another organization's of each."""
    from datetime import timedelta

    from crm.models import utcnow
    from tests.whatsapp.factories import make_conversation, make_message, make_profile

    profiles = [make_profile(org, provider) for provider in ("sandbox", "web", "cloud")]
    conversations = [make_conversation(profiles[0]),
                     make_conversation(profiles[2], last_inbound_at=utcnow()),
                     make_conversation(profiles[2], last_inbound_at=utcnow() - timedelta(days=2))]
    messages = [make_message(conversations[0]), make_message(conversations[0], "out"),
                make_message(conversations[1], "out", status="failed", error_code="130429")]
    foreign = make_message(make_conversation(make_profile(other_org, "sandbox")))
    disposable = make_profile(org, "sandbox")
    return {"profile_id": [p.id for p in profiles] + [foreign.profile_id, 2**63 - 1],
            "DELETE profile_id": [disposable.id, foreign.profile_id, 2**63 - 1],
            "conversation_id": [c.id for c in conversations] + [foreign.conversation_id,
                                                               2**63 - 1],
            "message_id": [m.id for m in messages] + [foreign.id, 2**63 - 1]}


def _ticket_targets(org, other_org) -> dict[str, list[int]]:
    """Tickets open and closed, holidays; and another organization's of each."""
    from crm.tenancy import organization_context as acting
    from crm.tickets import services
    from tests.tickets.factories import make_holiday, make_ticket

    tickets = [make_ticket(org), make_ticket(org, priority="urgent"), make_ticket(org)]
    with acting(org.id):
        services.update_ticket(org.admin, tickets[2], {"status": "closed"})
    holidays = [make_holiday(org, date(2027, 1, 7)), make_holiday(org, date(2027, 1, 8))]
    return {"ticket_id": [t.id for t in tickets] + [make_ticket(other_org).id, 2**63 - 1],
            "holiday_id": [h.id for h in holidays] + [make_holiday(other_org).id, 2**63 - 1]}


def _campaign_targets(org, other_org, profile_ids: list[int]) -> dict[str, list[int]]:
    """Drafts of campaigns, one ready to start (a template of a cloud number to a tag), and
    another organization's."""
    from tests.campaigns.factories import make_campaign, make_template, template_message
    from tests.customers.factories import make_customer
    from tests.whatsapp.factories import make_profile

    cloud = make_profile(org, "cloud")
    make_template(org, cloud)
    make_customer(org, tags=["vip"])
    ready = make_campaign(org, cloud, audience={"tag": "vip"},
                          message=template_message("{name}", "x"))
    drafts = [ready.id, make_campaign(org, cloud).id]
    foreign = make_campaign(other_org, make_profile(other_org, "sandbox")).id
    return {"campaign_id": [*drafts, foreign, 2**63 - 1],
            "DELETE campaign_id": [make_campaign(org, cloud).id, foreign, 2**63 - 1],
            "profile_id": [*profile_ids, cloud.id]}


@pytest.fixture
def admin(app, org, other_org, monkeypatch) -> Iterator[tuple[int, int]]:
    """(organization id, user id) of the admin whose tokens the run uses; targets for ids."""
    monkeypatch.setitem(app.config, "RATELIMIT_LOGIN_PER_IP", "10000 per minute")
    monkeypatch.setitem(app.config, "RATELIMIT_LOGIN_PER_ACCOUNT", "10000 per minute")
    monkeypatch.setitem(app.config, "RATELIMIT_PUBLIC_PER_IP", "10000 per minute")
    monkeypatch.setitem(app.config, "RATELIMIT_PUBLIC_PER_EMAIL", "10000 per minute")
    monkeypatch.setitem(app.config, "RATELIMIT_API_PER_ORG", "100000 per minute")
    colleagues = [make_user(org, role) for role in ROLES]
    _TARGETS["user_id"] = [user.id for user in colleagues] + [other_org.admin.id, 2**63 - 1]
    _TARGETS.update(_whatsapp_targets(org, other_org))
    _TARGETS.update(_ticket_targets(org, other_org))
    _TARGETS.update(_campaign_targets(org, other_org, _TARGETS["profile_id"]))
    yield org.id, org.admin.id
    _TARGETS.clear()


def _fresh_token(admin: tuple[int, int]) -> dict[str, str]:
    """A new token of the admin, as they are now (a logout ends the token it is sent with)."""
    org_id, user_id = admin
    with organization_context(org_id):
        return bearer(db.session.get(User, user_id))


def _path_values_are_ids(case) -> bool:
    """Is every path parameter (all ids here) a valid id, whatever schemathesis meant?"""
    values = [str(value) for value in (case.path_parameters or {}).values()]
    return all(value.isascii() and value.isdigit() and int(value) < 2**63
               for value in values)


@schema.parametrize()
@settings(max_examples=25, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.filter_too_much])
def test_api_answers_as_its_document_says(case, admin):
    """Every answer of every documented operation is one the document describes."""
    # The ignored-auth check writes a made-up token into case.headers, which must be a dict.
    case.headers = case.headers or {}
    if case.meta is not None and _path_values_are_ids(case):
        # Schemathesis 3.39 marks path parameters negated even where there are none, or where
        # the value it generated is a valid id after all, which defeats its own rule that
        # unknown query parameters alone (the API ignores them, as most do) are not invalid
        # data.
        case.meta = dataclasses.replace(case.meta, path_parameters=None)
    case.call_and_validate(headers=_fresh_token(admin))
