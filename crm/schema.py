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


def keep_counts(counts: str, source: str, keys: dict[str, str], counted: str) -> None:
    """Keep `counts` (organization_id, *keys, n): how many rows of `source` match `counted`,
    per value of the `keys` (column: expression over a `source` row). Statement-level triggers
    with transition tables add what each statement changed, so a reader sums a few rows
    instead of counting the rows; the rows there already are counted now."""
    columns = ", ".join(keys)
    values = ", ".join(f"{expression} AS {column}" for column, expression in keys.items())

    def delta(rows: str, sign: int) -> str:
        return (f"SELECT organization_id, {values}, {sign} AS n FROM {rows} "
                f"WHERE {counted}")

    def apply(deltas: str, where: str = "true") -> str:
        # In key order, so two statements that touch the same counts lock them in the same
        # order; a statement that changes no key (a message bumping a conversation) writes
        # nothing.
        return f"""
        INSERT INTO {counts} AS t (organization_id, {columns}, n)
        SELECT organization_id, {columns}, sum(n) FROM ({deltas}) d WHERE {where}
        GROUP BY organization_id, {columns} HAVING sum(n) <> 0
        ORDER BY organization_id, {columns}
        ON CONFLICT (organization_id, {columns}) DO UPDATE SET n = t.n + excluded.n;"""

    # Each branch reads only the transition tables its event has (PL/pgSQL plans a statement
    # when it first runs it).
    op.execute(f"""
    CREATE FUNCTION wasl_{counts}() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF TG_OP = 'INSERT' THEN {apply(delta("new_rows", 1))}
      ELSIF TG_OP = 'DELETE' THEN {apply(delta("old_rows", -1), _ORGANIZATION_LEFT)}
      ELSE {apply(delta("new_rows", 1) + " UNION ALL " + delta("old_rows", -1))}
      END IF;
      RETURN NULL;
    END $$""")
    for name, event, tables in _COUNT_TRIGGERS:
        op.execute(f"CREATE TRIGGER {source}_{counts}_{name} AFTER {event} ON {source} "
                   f"REFERENCING {tables} FOR EACH STATEMENT EXECUTE FUNCTION wasl_{counts}()")
    # RLS is lifted for the owner while it counts every organization's rows.
    for table in (source, counts):
        op.execute(f"ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY")
    op.execute(count_rows(counts, source, keys, counted))
    for table in (source, counts):
        op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")


def count_rows(counts: str, source: str, keys: dict[str, str], counted: str) -> str:
    """The statement that fills `counts` (of `keep_counts`) from the rows `source` has."""
    values = ", ".join(keys.values())
    positions = ", ".join(str(n) for n in range(1, len(keys) + 2))
    return (f"INSERT INTO {counts} (organization_id, {', '.join(keys)}, n) "
            f"SELECT organization_id, {values}, count(*) FROM {source} WHERE {counted} "
            f"GROUP BY {positions}")


def drop_counts(counts: str, source: str) -> None:
    """Undo `keep_counts` (the table itself is the migration's)."""
    for name, _event, _tables in _COUNT_TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {source}_{counts}_{name} ON {source}")
    op.execute(f"DROP FUNCTION IF EXISTS wasl_{counts}()")


# Rows deleted with their organization (ON DELETE CASCADE) count nowhere: the organization's
# counts went with it.
_ORGANIZATION_LEFT = "EXISTS (SELECT FROM organizations o WHERE o.id = d.organization_id)"
_COUNT_TRIGGERS = (("insert", "INSERT", "NEW TABLE AS new_rows"),
                   ("update", "UPDATE", "OLD TABLE AS old_rows NEW TABLE AS new_rows"),
                   ("delete", "DELETE", "OLD TABLE AS old_rows"))
