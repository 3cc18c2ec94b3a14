"""The JSON REST API under /api: bearer tokens, snake_case bodies, one error shape.

Conventions every module follows: every object has an `id`; a create answers 201 with the
object; a list answers `{"items": [...], "next_cursor": ...}` (keyset); errors answer
`{"error": {"code", "message", "fields"}}`. Module endpoints live in each module's api.py and
call the same services as the pages.
"""

from flask import Blueprint

from crm.extensions import csrf

blueprint = Blueprint("api", __name__, url_prefix="/api")
# Bearer tokens are not sent by browsers on their own, so the API needs no CSRF token; it never
# accepts the session cookie (crm/security.py).
csrf.exempt(blueprint)

# Route modules register on the blueprint (and in the OpenAPI document) when imported.
from crm.api import openapi  # noqa: E402, F401
from crm.billing import api as billing_api  # noqa: E402, F401
from crm.campaigns import api as campaigns_api  # noqa: E402, F401
from crm.customers import api as customers_api  # noqa: E402, F401
from crm.foundation import api as foundation_api  # noqa: E402, F401
from crm.tickets import api as tickets_api  # noqa: E402, F401
from crm.whatsapp import api as whatsapp_api  # noqa: E402, F401
