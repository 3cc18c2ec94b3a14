"""`crm seed-demo`: a demo organization with a whole team, to look around in.

The foundation makes the organization and its team; each module adds what shows it off
through `add_demo` (crm/customers/demo.py: customers across the pipeline, with activities
and scores; crm/whatsapp/demo.py: a sandbox number and its conversations; crm/tickets/demo.py:
tickets with SLA clocks; crm/campaigns/demo.py: a completed campaign and its results).
"""

from __future__ import annotations

import random
from collections.abc import Callable

from crm.extensions import db
from crm.foundation import services
from crm.foundation.models import Organization, User
from crm.tenancy import organization_context, set_current_organization
from crm.transaction import commit

DEMO_ORGANIZATION = "شركة وصل التجريبية"
# .example, not .local: email validation refuses special-use domains such as .local, while
# .example is reserved (RFC 2606) and never delivers anywhere.
DEMO_EMAIL = "demo@wasl.example"
DEMO_PASSWORD = "demo-password"
# (full name, email, role): the rest of the team, all with DEMO_PASSWORD.
DEMO_TEAM = (
    ("خالد الحربي", "manager@wasl.example", "manager"),
    ("نورة القحطاني", "agent1@wasl.example", "agent"),
    ("فهد الدوسري", "agent2@wasl.example", "agent"),
    ("ريم الشمري", "member@wasl.example", "member"),
)
DEMO_INVITATION = ("invited@wasl.example", "agent")
SEED = 16  # the same demo every time

# What each module adds: given the admin, the team and a seeded random, a line for the
# summary. Run in the order added, in one transaction.
DemoBuilder = Callable[[User, list[User], random.Random], str]
_builders: list[DemoBuilder] = []


def add_demo(builder: DemoBuilder) -> DemoBuilder:
    """Have `builder` add its module's part of the demo organization (a decorator)."""
    _builders.append(builder)
    return builder


def seed() -> str:
    """Create the demo organization once and return what to print (how to log in)."""
    if services.login_candidates(DEMO_EMAIL):
        return f"The demo organization already exists: log in as {DEMO_EMAIL} / {DEMO_PASSWORD}"
    registration = services.register_organization(DEMO_ORGANIZATION, "سارة العتيبي", DEMO_EMAIL,
                                                  DEMO_PASSWORD, "ar")
    org, admin = registration.organization, registration.user
    with organization_context(org.id):
        team = [_add_member(org, full_name, email, role) for full_name, email, role in DEMO_TEAM]
        db.session.flush()
        email, role = DEMO_INVITATION
        services.invite_user(admin, email, role, "ar")
        rng = random.Random(SEED)
        shown = [builder(admin, [admin, *team], rng) for builder in _builders]
        summary = "\n".join([_summary(org), *shown])
        commit()
    set_current_organization(None)
    return summary


def _add_member(org: Organization, full_name: str, email: str, role: str) -> User:
    """Add a teammate directly: demo people have no inbox to accept an invitation from."""
    user = User(organization_id=org.id, email=email, full_name=full_name, role=role,
                password_hash=services.hash_password(DEMO_PASSWORD), preferred_language="ar")
    db.session.add(user)
    return user


def _summary(org: Organization) -> str:
    team = "\n".join(f"  {role:<8} {email}" for _, email, role in DEMO_TEAM)
    return (f"Created the demo organization {org.name} (workspace {org.slug}).\n"
            f"Log in as {DEMO_EMAIL} with the password {DEMO_PASSWORD} (admin).\n"
            f"The rest of the team uses the same password:\n{team}\n"
            f"A pending invitation waits for {DEMO_INVITATION[0]}.")
