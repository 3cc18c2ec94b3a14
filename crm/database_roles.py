"""The two database roles Row Level Security depends on, checked before anything runs.

RLS binds neither a superuser, nor a role with BYPASSRLS, nor a table's owner (FORCE makes it
apply to the owner, but the owner can switch it off again). So the application connects as a
role that is none of these, and migrations, which create the tables and so own them, run as
another role (MIGRATION_DATABASE_URL), never as the application's.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import create_engine, pool, text
from sqlalchemy.engine import make_url

# One query: the connected role's attributes and the tenant tables (those with an
# organization_id) it owns, itself or through a role it belongs to.
_ROLE_SQL = text("""
    SELECT r.rolname, r.rolsuper, r.rolbypassrls,
           ARRAY(SELECT DISTINCT c.relname::text FROM pg_class c
                 JOIN pg_attribute a ON a.attrelid = c.oid
                 WHERE a.attname = 'organization_id' AND NOT a.attisdropped
                   AND c.relkind IN ('r', 'p') AND pg_has_role(c.relowner, 'MEMBER')
                 ORDER BY 1) AS owned_tables
    FROM pg_roles r WHERE r.rolname = current_user
""")


def check_app_role(database_url: str) -> None:
    """Refuse to start when the app's role is one that Row Level Security does not bind."""
    engine = create_engine(database_url, poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            role = connection.execute(_ROLE_SQL).one()
    finally:
        engine.dispose()
    reasons = []
    if role.rolsuper:
        reasons.append("it is a superuser")
    if role.rolbypassrls:
        reasons.append("it has BYPASSRLS")
    if role.owned_tables and not role.rolsuper:
        reasons.append(f"it owns the tenant tables {', '.join(role.owned_tables)}")
    if reasons:
        raise RuntimeError(
            f"DATABASE_URL connects as the role {role.rolname}, which Row Level Security does "
            f"not bind: {'; '.join(reasons)}. Connect the application as a role that is not a "
            "superuser, lacks BYPASSRLS and owns no table; migrations run as the owner "
            "(MIGRATION_DATABASE_URL).")


def migration_url(config: Mapping[str, str]) -> str:
    """The owner's URL that migrations run with; refuse the application's role.

    Tables belong to the role that creates them: migrated as the application's role, the app
    would own its tables and RLS would no longer bind it.
    """
    url = config["MIGRATION_DATABASE_URL"]
    if not url:
        raise RuntimeError(
            "MIGRATION_DATABASE_URL is not set: migrations run as the role that owns the "
            "schema, never as the application's role (DATABASE_URL)")
    role = make_url(url).username
    if role == make_url(config["DATABASE_URL"]).username:
        raise RuntimeError(
            f"MIGRATION_DATABASE_URL and DATABASE_URL name the same role ({role}): the "
            "application would own its tables and Row Level Security would not bind it. "
            "Migrate as the role that owns the schema.")
    return url
