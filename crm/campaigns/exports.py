"""CSV exports of campaigns: a campaign's recipients, and the consent ledger (admins).

As the CRM's export (crm/customers/imports.py): UTF-8 with a BOM for Excel, a cell that a
spreadsheet would run as a formula defused (`spreadsheet_row`), streamed page by page. The
lines are sent after the request has ended, so everything they need from it is read first, and
they read the rows in an app context and a transaction of their own, as the organization read
in the request; no transaction is held while the client reads.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Iterator

from flask import Flask, current_app
from flask_babel import gettext as _

from crm.campaigns import consent, services
from crm.campaigns.labels import CONSENT_ACTION_LABELS, CONSENT_METHOD_LABELS, STATE_LABELS
from crm.campaigns.models import Campaign
from crm.customers.imports import spreadsheet_row
from crm.extensions import db
from crm.foundation.models import User
from crm.foundation.services import audit
from crm.tenancy import current_organization_id, organization_context

PAGE = 1000
# The moments a recipient's export gives, each a column: when it was sent, delivered...
MOMENTS = ("sent", "delivered", "read", "replied", "failed")


def recipients_csv(actor: User, campaign: Campaign, state: str | None) -> Iterator[str]:
    """Audit the export; the campaign's recipients (of `state`, if given) as CSV lines."""
    services.list_recipients(campaign, state, limit=1)  # refuses an unknown state now
    audit("campaign.exported", actor, campaign, state=state)
    header = [_("Phone"), _("Name"), _("Customer"), _("State"), _("Reason"),
              *(str(STATE_LABELS[state]) for state in MOMENTS)]
    campaign_id = campaign.id

    def pages() -> Iterator[list[list[object]]]:
        after = None
        while True:
            rows, after = services.list_recipients(
                db.session.get(Campaign, campaign_id), state, after, PAGE)
            yield [[r.phone or r.raw_phone, (r.variables or {}).get("name"), r.customer_id,
                    str(STATE_LABELS.get(r.state, r.state)), services.reason_text(r.error_code,
                                                                       r.error_reason),
                    *(_moment(getattr(r, f"{state}_at")) for state in MOMENTS)]
                   for r in rows]
            if after is None:
                return

    return _stream(current_app._get_current_object(), current_organization_id(), header,
                   pages)


def ledger_csv(actor: User) -> Iterator[str]:
    """Audit the export; every opt-out and opt-in of the organization as CSV lines."""
    audit("consent.exported", actor, None)
    header = [_("Date"), _("Phone"), _("Customer"), _("Action"), _("How"), _("Words"),
              _("Recorded by"), _("Customer ID")]  # the id last, to match other exports

    def pages() -> Iterator[list[list[object]]]:
        page: list[list[object]] = []
        for event in consent.export_ledger():
            page.append([event["at"], event["phone"], event["customer_name"],
                         str(CONSENT_ACTION_LABELS[event["action"]]),
                         str(CONSENT_METHOD_LABELS.get(event["method"], event["method"])),
                         event["text"], event["actor_name"], event["customer_id"]])
            if len(page) == PAGE:
                yield page
                page = []
        yield page

    return _stream(current_app._get_current_object(), current_organization_id(), header,
                   pages)


def _moment(value) -> str:
    return value.isoformat() if value else ""


def _stream(app: Flask, organization_id: int, header: list[str],
            pages: Callable[[], Iterable[list[list[object]]]]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)

    def lines(rows: Iterable[Iterable[object]]) -> str:
        buffer.seek(0)
        buffer.truncate()
        for row in rows:
            writer.writerow(spreadsheet_row(row))
        return buffer.getvalue()

    yield "\ufeff" + lines([header])
    with app.app_context(), organization_context(organization_id):
        for rows in pages():
            text = lines(rows)
            db.session.close()  # no transaction or connection held while the client reads
            yield text

