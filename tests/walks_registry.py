"""What the route walks (tests/test_walks.py) need to know to request every route for real.

Each module that adds routes adds its entries here:
- OBJECTS: a URL parameter that names an object → a factory that makes one object of the given
  organization and returns the value to put in the URL. The cross-organization probe asks for
  organization B's object as A; the permission walk asks for the caller's own.
- OTHER_PARAMETERS: URL parameters that name no object of an organization, each with a sample
  value and the reason it is not probed.
- BODY: fields a plausible form or JSON body carries, so a request is not refused for a
  missing field before the route looks its object up.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable

from flask import current_app

from crm.extensions import db
from crm.foundation.models import MODULES, Invitation, Organization
from crm.models import utcnow
from crm.tenancy import organization_context
from tests.campaigns.factories import make_campaign
from tests.customers.factories import (
    make_activity,
    make_customer,
    make_field,
    make_import,
    make_segment,
    make_stage,
)
from tests.factories import PASSWORD, make_api_key, make_session, make_user
from tests.tickets.factories import (
    make_attachment,
    make_escalation_rule,
    make_holiday,
    make_keyword,
    make_suggestion,
    make_team,
    make_ticket,
    make_type,
)
from tests.whatsapp.factories import (
    make_canned_reply,
    make_conversation,
    make_media_message,
    make_profile,
)


def make_invitation(org: Organization) -> Invitation:
    """A pending invitation of `org` (made directly: the walks must not depend on email)."""
    with organization_context(org.id):
        invitation = Invitation(
            email=f"invitee-{secrets.token_hex(4)}@org{org.id}.example", role="agent",
            language="en", invited_by_id=org.admin.id,
            token_hash=hashlib.sha256(secrets.token_bytes(16)).hexdigest(),
            expires_at=utcnow() + current_app.config["INVITATION_LIFETIME"])
        db.session.add(invitation)
        db.session.flush()
    return invitation


OBJECTS: dict[str, Callable[[Organization], object]] = {
    "user_id": lambda org: make_user(org, "agent").id,
    # The admin's: the permission walk's admin may end it, other roles get 404.
    "session_id": lambda org: make_session(org.admin).id,
    "key_id": lambda org: make_api_key(org).id,
    "invitation_id": lambda org: make_invitation(org).id,
    "customer_id": lambda org: make_customer(org).id,
    "stage_id": lambda org: make_stage(org).id,
    "activity_id": lambda org: make_activity(org).id,  # a task: it can be completed
    "segment_id": lambda org: make_segment(org).id,
    "import_id": lambda org: make_import(org).id,
    "field_id": lambda org: make_field(org).id,
    "profile_id": lambda org: make_profile(org).id,
    # Assigned to the admin: agents take from the unassigned queue, so only a conversation
    # someone else answers is out of an agent's sight.
    "conversation_id": lambda org: make_conversation(make_profile(org),
                                                     assigned_user_id=org.admin.id).id,
    # Unassigned: agents get 404 for it, like for another organization's.
    "ticket_id": lambda org: make_ticket(org).id,
    "attachment_id": lambda org: make_attachment(make_ticket(org)).id,
    "suggestion_id": lambda org: make_suggestion(make_conversation(make_profile(org))).id,
    "rule_id": lambda org: make_escalation_rule(org).id,
    "holiday_id": lambda org: make_holiday(org).id,
    "type_id": lambda org: make_type(org).id,
    "keyword_id": lambda org: make_keyword(org).id,
    "team_id": lambda org: make_team(org).id,
    # A draft on a sandbox number: every page and action of a campaign applies to one.
    "campaign_id": lambda org: make_campaign(org, make_profile(org, "sandbox")).id,
    # With its file stored, so the media view has something to serve.
    "message_id": lambda org: make_media_message(make_conversation(
        make_profile(org), assigned_user_id=org.admin.id)).id,
    "reply_id": lambda org: make_canned_reply(org).id,
}

OTHER_PARAMETERS: dict[str, tuple[str, str]] = {
    "filename": ("css/app.css", "static files belong to no organization"),
    "token": ("1.not-a-token-of-anyone-xxxxxxxxxxxxxxxx",
              "invitation and password-reset links are public: the secret token, never the "
              "session, names the organization, and services test a token of another "
              "organization"),
}

BODY: dict[str, object] = {
    "email": "probe@walk.example",
    "role": "manager",
    "language": "en",
    "preferred_language": "en",
    "default_language": "en",
    "full_name": "Walk Probe",
    "name": "Walk Probe",
    "organization_name": "Walk Probe Org",
    "password": PASSWORD,
    "password_confirmation": PASSWORD,
    "current_password": PASSWORD,
    "new_password": PASSWORD + " 2",
    "new_password_confirmation": PASSWORD + " 2",
    "timezone": "Asia/Riyadh",
    "country": "SA",
    "modules": list(MODULES),
    "next": "/",
    "plan": "starter",
    "interval": "month",
}
