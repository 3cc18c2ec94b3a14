"""The results list reads one campaign's recipients through an index of its own, however
many recipients older campaigns hold before them (DESIGN.md: lists use indexes that match
their filters, and the plan is checked)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
from sqlalchemy import event, make_url

from crm.campaigns import services
from crm.campaigns.models import Campaign
from crm.extensions import db
from crm.foundation.models import Organization, User
from tests.campaigns.factories import cloud_number, make_campaign, make_template, template_message
from tests.conftest import _server

pytestmark = pytest.mark.live
INDEX = "ix_campaign_recipients_campaign"


@contextmanager
def paging_statements() -> Iterator[list[tuple[str, dict]]]:
    """The statements that page through campaign_recipients inside the block."""
    seen: list[tuple[str, dict]] = []

    def record(conn, cursor, statement, parameters, context, executemany) -> None:
        if "FROM campaign_recipients" in statement and "LIMIT" in statement:
            seen.append((statement, parameters))

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(db.engine, "before_cursor_execute", record)


def _add_recipients(live_server, org_id: int, campaign_id: int, count: int, first: int) -> None:
    """`count` sent recipients written straight into the table (as a finished campaign leaves
    them), then the table analyzed as autovacuum would."""
    database = make_url(live_server.settings["DATABASE_URL"]).database
    with psycopg.connect(_server().superuser_dsn(database), autocommit=True) as connection:
        connection.execute(
            "INSERT INTO campaign_recipients (organization_id, campaign_id, phone, state, "
            "attempts) SELECT %s, %s, '+9665' || lpad(n::text, 8, '0'), 'sent', 1 "
            "FROM generate_series(%s, %s) AS n", (org_id, campaign_id, first, first + count - 1))
        connection.execute("ANALYZE campaign_recipients")


def test_a_later_campaigns_first_results_page_reads_its_own_index(live_server):
    """Behind an older campaign's 40,000 recipients, the first results page of a newer one
    (no state asked for) is read through ix_campaign_recipients_campaign, not along the
    primary key past every older row. (A page deeper down starts from its cursor's id, where
    the primary key serves as well, and the planner may take either.)"""
    account = live_server.make_account()
    with live_server.transaction(account.organization_id):
        org = db.session.get(Organization, account.organization_id)
        org.admin = db.session.get(User, account.user_id)
        profile = cloud_number(org)
        make_template(org, profile)
        older, newer = (make_campaign(org, profile, message=template_message("{name}", "x")).id
                        for _ in range(2))
    _add_recipients(live_server, account.organization_id, older, 40_000, 80_000_000)
    _add_recipients(live_server, account.organization_id, newer, 2_000, 81_000_000)

    with live_server.transaction(account.organization_id):
        with paging_statements() as statements:
            rows, _after = services.list_recipients(db.session.get(Campaign, newer))
        [(statement, parameters)] = statements
        plan = "\n".join(row[0] for row in db.session.connection().exec_driver_sql(
            f"EXPLAIN {statement}", parameters))

    assert len(rows) == 50
    assert INDEX in plan, plan
