"""What every migration that adds tenant tables does, written once.

Migrations run as the schema owner; the app role (from DATABASE_URL) gets DML rights only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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


@dataclass(frozen=True)
class Counter:
    """A table of counts kept by triggers: per organization and value of the `keys` (column:
    SQL expression over a `source` row), the sum of each of the `amounts` (column: expression;
    by default `n`, how many rows) over the rows of `source` that match `counted`."""

    table: str
    source: str
    keys: dict[str, str]
    counted: str
    amounts: dict[str, str] = field(default_factory=lambda: {"n": "1"})


def keep_counts(counter: Counter) -> None:
    """Statement-level triggers with transition tables add what each statement changed to
    `counter.table`, so a reader sums a few rows instead of counting the rows; the rows there
    already are counted now."""
    op.execute(counter_function(counter))
    for name, event, tables in _COUNT_TRIGGERS:
        op.execute(f"CREATE TRIGGER {counter.source}_{counter.table}_{name} AFTER {event} ON "
                   f"{counter.source} REFERENCING {tables} FOR EACH STATEMENT "
                   f"EXECUTE FUNCTION wasl_{counter.table}()")
    # RLS is lifted for the owner while it counts every organization's rows.
    for table in (counter.source, counter.table):
        op.execute(f"ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY")
    op.execute(count_rows(counter))
    for table in (counter.source, counter.table):
        op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")


def counter_function(counter: Counter) -> str:
    """The trigger function of `counter` (created, or replaced if there is one)."""
    keys, amounts = ", ".join(counter.keys), ", ".join(counter.amounts)
    key_values = ", ".join(f"{value} AS {key}" for key, value in counter.keys.items())

    def delta(rows: str, sign: str) -> str:
        values = ", ".join(f"{sign}({value}) AS {amount}"
                           for amount, value in counter.amounts.items())
        return (f"SELECT organization_id, {key_values}, {values} FROM {rows} "
                f"WHERE {counter.counted}")

    def apply(deltas: str, where: str = "true") -> str:
        # In key order, so two statements that touch the same counts lock them in the same
        # order; a statement that changes no key (a message bumping a conversation) writes
        # nothing.
        sums = ", ".join(f"sum({amount})" for amount in counter.amounts)
        changed = " OR ".join(f"sum({amount}) <> 0" for amount in counter.amounts)
        added = ", ".join(f"{amount} = t.{amount} + excluded.{amount}"
                          for amount in counter.amounts)
        return f"""
        INSERT INTO {counter.table} AS t (organization_id, {keys}, {amounts})
        SELECT organization_id, {keys}, {sums} FROM ({deltas}) d WHERE {where}
        GROUP BY organization_id, {keys} HAVING {changed}
        ORDER BY organization_id, {keys}
        ON CONFLICT (organization_id, {keys}) DO UPDATE SET {added};"""

    # Each branch reads only the transition tables its event has (PL/pgSQL plans a statement
    # when it first runs it).
    return f"""
    CREATE OR REPLACE FUNCTION wasl_{counter.table}() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF TG_OP = 'INSERT' THEN {apply(delta("new_rows", "+"))}
      ELSIF TG_OP = 'DELETE' THEN {apply(delta("old_rows", "-"), _ORGANIZATION_LEFT)}
      ELSE {apply(delta("new_rows", "+") + " UNION ALL " + delta("old_rows", "-"))}
      END IF;
      RETURN NULL;
    END $$"""


def count_rows(counter: Counter) -> str:
    """The statement that fills `counter.table` from the rows its source has."""
    keys, amounts = ", ".join(counter.keys), ", ".join(counter.amounts)
    values = ", ".join([*counter.keys.values(),
                        *(f"sum({value})" for value in counter.amounts.values())])
    positions = ", ".join(str(n) for n in range(1, len(counter.keys) + 2))
    return (f"INSERT INTO {counter.table} (organization_id, {keys}, {amounts}) "
            f"SELECT organization_id, {values} FROM {counter.source} WHERE {counter.counted} "
            f"GROUP BY {positions}")


def drop_counts(counter: Counter) -> None:
    """Undo `keep_counts` (the table itself is the migration's)."""
    for name, _event, _tables in _COUNT_TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {counter.source}_{counter.table}_{name} "
                   f"ON {counter.source}")
    op.execute(f"DROP FUNCTION IF EXISTS wasl_{counter.table}()")


# Rows deleted with their organization (ON DELETE CASCADE) count nowhere: the organization's
# counts went with it.
_ORGANIZATION_LEFT = "EXISTS (SELECT FROM organizations o WHERE o.id = d.organization_id)"
_COUNT_TRIGGERS = (("insert", "INSERT", "NEW TABLE AS new_rows"),
                   ("update", "UPDATE", "OLD TABLE AS old_rows NEW TABLE AS new_rows"),
                   ("delete", "DELETE", "OLD TABLE AS old_rows"))
