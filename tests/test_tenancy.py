"""The two walls between organizations, each proven alone."""

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import ProgrammingError

from crm.extensions import db
from crm.foundation.models import Organization, User
from crm.tenancy import SKIP_TENANT_FILTER, organization_context, set_current_organization
from tests.factories import make_user


def test_orm_shows_only_the_current_organization(org, other_org):
    """With an organization set, a query of a tenant model returns only its rows."""
    make_user(other_org)
    with organization_context(org.id):
        emails = db.session.scalars(select(User.email)).all()
    assert emails == [org.admin.email]


def _rls_shows(org_id: int) -> None:
    """Point RLS at `org_id` behind the ORM's back, so the ORM's filter alone is tested."""
    db.session.execute(text("SELECT set_config('app.current_organization_id', :org, true)"),
                       {"org": str(org_id)})


def test_orm_filter_alone_follows_the_current_organization(org, other_org):
    """With RLS pointed at another organization, the ORM's filter alone hides its rows; the
    same statement, run again after the organization changes, filters by the new one (and
    by none, with none set)."""
    other = make_user(other_org)
    statement = select(User.email)
    with organization_context(org.id):
        _rls_shows(other_org.id)
        assert db.session.scalars(statement).all() == []
    with organization_context(other_org.id):
        _rls_shows(other_org.id)
        assert other.email in db.session.scalars(statement).all()
        set_current_organization(None)
        _rls_shows(other_org.id)
        assert db.session.scalars(statement).all() == []


def test_rls_alone_hides_other_organizations(org, other_org):
    """With the ORM filter switched off, PostgreSQL RLS still returns nothing of another org."""
    make_user(other_org)
    with organization_context(org.id):
        users = db.session.scalars(
            select(User).execution_options(**{SKIP_TENANT_FILTER: True})).all()
        organizations = db.session.scalars(select(Organization)).all()
    assert {u.organization_id for u in users} == {org.id}
    assert [o.id for o in organizations] == [org.id]


def test_raw_sql_without_an_organization_sees_nothing(org, other_org):
    """A raw query with no organization set reads zero rows of every tenant table."""
    tables = db.session.execute(text(
        "SELECT c.relname FROM pg_class c WHERE c.relrowsecurity AND c.relforcerowsecurity "
        "AND c.relkind = 'r'")).scalars().all()
    assert {"users", "organizations", "audit_log"} <= set(tables)
    for table in tables:
        assert db.session.execute(text(f"SELECT count(*) FROM {table}")).scalar() == 0, table


def test_every_table_with_organization_id_has_forced_rls():
    """No tenant table can be added without its policy."""
    unprotected = db.session.execute(text("""
        SELECT c.relname FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid
        WHERE a.attname = 'organization_id' AND c.relkind = 'r'
          AND c.relnamespace = 'public'::regnamespace
          AND NOT (c.relrowsecurity AND c.relforcerowsecurity)""")).scalars().all()
    assert unprotected == []


def test_app_role_cannot_bypass_rls():
    """The application's role owns no table and lacks BYPASSRLS and superuser."""
    row = db.session.execute(text(
        "SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user")).one()
    assert row == (False, False)
    owned = db.session.execute(text(
        "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' "
        "AND tableowner = current_user")).scalar()
    assert owned == 0


def test_writing_into_another_organization_is_refused(org, other_org):
    """RLS's WITH CHECK refuses a row stamped with another organization."""
    with organization_context(org.id):
        savepoint = db.session.begin_nested()
        with pytest.raises(ProgrammingError):
            db.session.execute(text(
            "INSERT INTO module_settings (organization_id, module, is_enabled) "
                "VALUES (:o, 'crm', false)"), {"o": other_org.id})
        savepoint.rollback()


def test_every_organization_id_goes_with_its_organization():
    """Deleting an organization deletes every row that belongs to it (ON DELETE CASCADE)."""
    orphaned = db.session.execute(text("""
        SELECT c.relname FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid
        WHERE a.attname = 'organization_id' AND c.relkind = 'r'
          AND c.relnamespace = 'public'::regnamespace
          AND NOT EXISTS (SELECT 1 FROM pg_constraint k
                          WHERE k.conrelid = c.oid AND k.contype = 'f'
                            AND k.confrelid = 'organizations'::regclass
                            AND k.conkey = ARRAY[a.attnum] AND k.confdeltype = 'c')""")
    ).scalars().all()
    assert orphaned == []
