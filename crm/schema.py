"""What every migration that adds tenant tables does, written once.

Migrations run as the schema owner; the app role (from DATABASE_URL) gets DML rights only.
"""

from __future__ import annotations

from alembic import op
from flask import current_app
from sqlalchemy.engine import make_url

from crm.tenancy import rls_statements


def app_role() -> str:
    """The role the application connects as (DATABASE_URL's user)."""
    return make_url(current_app.config["DATABASE_URL"]).username


def protect_tenant_tables(*tables: str) -> None:
    """FORCEd Row Level Security on each table, scoped to the transaction's organization."""
    for table in tables:
        for statement in rls_statements(table):
            op.execute(statement)


def allow_owner_lookups(table: str) -> None:
    """Let SECURITY DEFINER functions (owned by the migrating role) read every row of `table`;
    the app role can never become the owner, so the policy never applies to it."""
    op.execute(f"CREATE POLICY owner_lookup ON {table} FOR SELECT TO CURRENT_USER USING (true)")


def grant_function(signature: str) -> None:
    """Only the app role may call a SECURITY DEFINER function."""
    op.execute(f"REVOKE ALL ON FUNCTION {signature} FROM PUBLIC")
    op.execute(f'GRANT EXECUTE ON FUNCTION {signature} TO "{app_role()}"')
