"""What `crm billing set-limits` does, apart from reading its options (crm/cli.py)."""

from __future__ import annotations

import click
from sqlalchemy import text

from crm.billing import services
from crm.extensions import db
from crm.tenancy import organization_context
from crm.transaction import commit


def set_limits(organization: str, plan: str | None, options: dict[str, str | None]) -> str:
    """Apply the limits given (None: not given) to the organization named; say what it has."""
    org_id = _organization_id(organization)
    limits = {name: _limit(name, raw) for name, raw in options.items() if raw is not None}
    if not limits and plan is None:
        raise click.UsageError("Give at least one limit, or --plan.")
    with organization_context(org_id):
        subscription = services.set_limits(limits, plan)
        summary = (f"Organization {org_id}: plan {subscription.plan}, own limits "
                   f"{subscription.custom_limits or 'none'}")
        commit()
    return summary


def _limit(name: str, raw: str) -> int | None:
    if raw.lower() == "unlimited":
        return None
    if not raw.isdigit():
        raise click.BadParameter(f"{raw!r}: a whole number or `unlimited`",
                                 param_hint=f"--{name.replace('_', '-')}")
    return int(raw)


def _organization_id(organization: str) -> int:
    """The id of the organization named by its id or slug (a SECURITY DEFINER lookup: the
    command runs with no organization)."""
    found = db.session.execute(text("SELECT wasl_organization_by_slug(:slug)"),
                               {"slug": organization}).scalar()
    if found is None and organization.isdigit():
        with organization_context(int(organization)):
            found = db.session.execute(text("SELECT id FROM organizations")).scalar()
    if found is None:
        raise click.BadParameter(f"no organization {organization!r}",
                                 param_hint="ORGANIZATION")
    return found
