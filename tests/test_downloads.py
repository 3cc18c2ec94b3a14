"""Every streamed or file response, downloaded once from a live server.

The test client reads a streamed body inside the request (the session-wide app context keeps the
database session open), so a body that needs the request's session or user after the request
ended passes there and fails in production. A live server ends the request first, as gunicorn
does: these tests read each download over HTTP, after its request has finished.
"""

from __future__ import annotations

import csv
import io

import pytest
import requests

from crm.customers import jobs
from crm.extensions import db
from crm.foundation.models import Organization, User
from tests.customers.factories import make_customer, make_import
from tests.factories import make_user
from tests.live import TIMEOUT, Account, LiveServer
from tests.whatsapp.factories import make_conversation, make_media_message, make_profile, png


def _organization(account: Account) -> Organization:
    """The account's organization as the factories take it (with its admin), on the live
    database; call inside live_server.transaction()."""
    org = db.session.get(Organization, account.organization_id)
    org.admin = db.session.get(User, account.user_id)
    return org


def _get(live_server: LiveServer, cookie: str, path: str) -> requests.Response:
    """Download `path` as a browser does: streamed, then read to the end."""
    response = requests.get(f"{live_server.url}{path}", headers={"Cookie": cookie},
                            stream=True, allow_redirects=False, timeout=TIMEOUT)
    response.content  # noqa: B018 - reads the whole stream; a failure mid-stream raises here
    return response


@pytest.mark.live
def test_the_customer_export_downloads_as_a_manager(live_server):
    """A manager's export of a filtered list answers 200 with the filtered customers, read
    after the request that started it has ended."""
    account = live_server.make_account()
    with live_server.transaction(account.organization_id):
        org = _organization(account)
        manager = make_user(org, "manager")
        manager_account = Account(org.id, manager.id, manager.email)
        make_customer(org, name="عميل مهم", tags=["vip"])
        make_customer(org, name="=HYPERLINK(1)", tags=["vip"])
        make_customer(org, name="Someone else")

    cookie = live_server.session_cookie(manager_account)

    response = _get(live_server, cookie, "/customers/export.csv?tag=vip&sort=name")

    assert response.status_code == 200, response.text[:500]
    assert response.headers["Content-Type"].startswith("text/csv")
    text = response.content.decode("utf-8")
    assert text.startswith("\ufeff")
    rows = list(csv.reader(io.StringIO(text.removeprefix("\ufeff"))))
    assert [row[0] for row in rows[1:]] == ["'=HYPERLINK(1)", "عميل مهم"]
    searched = _get(live_server, cookie, "/customers/export.csv?search=%D9%85%D9%87%D9%85")
    assert searched.status_code == 200
    assert [row[0] for row in csv.reader(io.StringIO(searched.content.decode("utf-8-sig")))
            ][1:] == ["عميل مهم"]


@pytest.mark.live
def test_the_rejected_rows_report_downloads(live_server):
    """An import's report of rejected rows answers 200 with the rejected row."""
    account = live_server.make_account()
    with live_server.transaction(account.organization_id):
        imp = make_import(_organization(account), "name,phone\nGood,0501234567\nBad,12345\n")
        imp.mapping, imp.status = {"name": "name", "phone": "phone"}, "queued"
        import_id = imp.id
    with live_server.transaction(account.organization_id):
        jobs.run_import(import_id)

    response = _get(live_server, live_server.session_cookie(account),
                    f"/customers/imports/{import_id}/report.csv")

    assert response.status_code == 200, response.text[:500]
    rows = list(csv.reader(io.StringIO(response.content.decode("utf-8-sig"))))
    assert [row[2:] for row in rows[1:]] == [["Bad", "12345"]]


@pytest.mark.live
def test_a_whatsapp_media_file_downloads(live_server):
    """A stored WhatsApp image answers 200 with its bytes."""
    account = live_server.make_account()
    with live_server.transaction(account.organization_id):
        conversation = make_conversation(make_profile(_organization(account)))
        message_id = make_media_message(conversation).id

    response = _get(live_server, live_server.session_cookie(account),
                    f"/inbox/messages/{message_id}/media")

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "image/png"
    assert response.content == png()
