"""In-app notifications: written for users, rendered in the reader's language, counted,
marked read; and sent by email when their kind has a template."""

from __future__ import annotations

import pytest
from flask import current_app
from flask_babel import force_locale, lazy_gettext
from sqlalchemy import select

from crm.extensions import db
from crm.foundation import notifications
from crm.foundation.models import OutboundEmail
from crm.foundation.services import set_module_enabled
from crm.tenancy import organization_context
from tests.factories import login, make_user, run_jobs


@pytest.fixture
def kind(monkeypatch):
    """A kind of notification of the test's own."""
    monkeypatch.setitem(notifications.KINDS, "test_hello", notifications.Kind(
        lazy_gettext("Ticket #%(number)s"), lazy_gettext("The ticket is due soon.")))
    return "test_hello"


def test_notify_and_render_in_the_reader_s_language(acting, kind):
    org = acting
    agent = make_user(org, "agent")
    [note] = notifications.notify([agent.id], kind, {"number": 12}, link="/tickets/5")
    with force_locale("en"):
        assert notifications.render(note) == ("Ticket #12", "The ticket is due soon.")
    assert note.link == "/tickets/5"
    assert notifications.unread_count(agent) == 1


def test_each_user_once_and_only_active_users(acting, kind):
    from crm.foundation.services import remove_user

    org = acting
    agent, gone = make_user(org, "agent"), make_user(org, "agent")
    remove_user(org.admin, gone)
    written = notifications.notify([agent.id, agent.id, gone.id, 999_999], kind, {"number": 1})
    assert [note.user_id for note in written] == [agent.id]


def test_list_newest_first_and_mark_read(acting, kind):
    org = acting
    agent = make_user(org, "agent")
    first = notifications.notify([agent.id], kind, {"number": 1})[0]
    second = notifications.notify([agent.id], kind, {"number": 2})[0]
    notifications.notify([org.admin.id], kind, {"number": 3})
    rows, before = notifications.list_notifications(agent, limit=1)
    assert ([n.id for n in rows], before) == ([second.id], second.id)
    rows, before = notifications.list_notifications(agent, before_id=before, limit=1)
    assert ([n.id for n in rows], before) == ([first.id], None)
    assert notifications.mark_read(agent, [first.id]) == 1
    assert notifications.unread_count(agent) == 1
    assert notifications.mark_read(agent) == 1
    assert notifications.unread_count(agent) == 0
    assert notifications.unread_count(org.admin) == 1  # someone else's stay unread


def test_a_kind_with_an_email_template_is_emailed(acting, monkeypatch):
    org = acting
    agent = make_user(org, "agent", language="en")
    monkeypatch.setitem(notifications.KINDS, "test_mail", notifications.Kind(
        lazy_gettext("Ticket #%(number)s"), lazy_gettext("The ticket is due soon."),
        email_template="ticket_sla_warning"))
    notifications.notify([agent.id], "test_mail", {"number": 7}, link="/tickets/3",
                         email_context={"subject": "Printer on fire", "clock": "resolution",
                                        "due_at": None})
    run_jobs(current_app, ("mail",))  # the mail job renders it
    email = db.session.scalar(select(OutboundEmail).where(OutboundEmail.to_address == agent.email))
    assert "#7" in email.subject
    assert "http://localhost/tickets/3" in email.body_text


def test_a_switched_off_modules_notifications_link_nowhere(client, org, monkeypatch):
    """A notification of a module that is switched off is still listed, but its link (to a
    page that answers 404 now) is not offered; switched on again, it is."""
    monkeypatch.setitem(notifications.KINDS, "test_ticket", notifications.Kind(
        lazy_gettext("Ticket #%(number)s"), lazy_gettext("The ticket is due soon."),
        module="ticketing"))
    with organization_context(org.id):
        notifications.notify([org.admin.id], "test_ticket", {"number": 7}, link="/tickets/7")
        db.session.flush()
    login(client, org.admin)
    assert 'href="/tickets/7"' in client.get("/notifications").text

    with organization_context(org.id):
        set_module_enabled(org.admin, "ticketing", False)
        db.session.flush()
    listed = client.get("/notifications").text
    assert 'href="/tickets/7"' not in listed
    assert "#7" in listed
