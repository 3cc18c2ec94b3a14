"""The words pages and exports show for campaigns' statuses, recipients' states and consent.

With a context (pgettext): "Sent", "Failed" or "Imported" say other things elsewhere.
"""

from __future__ import annotations

from flask_babel import lazy_pgettext

STATUS_LABELS = {
    "draft": lazy_pgettext("campaign status", "Draft"),
    "scheduled": lazy_pgettext("campaign status", "Scheduled"),
    "running": lazy_pgettext("campaign status", "Sending"),
    "paused": lazy_pgettext("campaign status", "Paused"),
    "completed": lazy_pgettext("campaign status", "Completed"),
    "cancelled": lazy_pgettext("campaign status", "Cancelled"),
    "failed": lazy_pgettext("campaign status", "Failed"),
}
# A recipient's state; "replied" is a filter of the list, not a state.
STATE_LABELS = {
    "queued": lazy_pgettext("recipient state", "Waiting"),
    "sending": lazy_pgettext("recipient state", "Sending"),
    "sent": lazy_pgettext("recipient state", "Sent"),
    "delivered": lazy_pgettext("recipient state", "Delivered"),
    "read": lazy_pgettext("recipient state", "Read"),
    "failed": lazy_pgettext("recipient state", "Failed"),
    "unknown": lazy_pgettext("recipient state", "Waiting for WhatsApp"),
    "skipped": lazy_pgettext("recipient state", "Skipped"),
    "replied": lazy_pgettext("recipient state", "Replied"),
}
CONSENT_ACTION_LABELS = {"opt_out": lazy_pgettext("consent", "Opted out"),
                         "opt_in": lazy_pgettext("consent", "Opted in")}
CONSENT_METHOD_LABELS = {"keyword": lazy_pgettext("consent", "Wrote a keyword"),
                         "button": lazy_pgettext("consent", "Tapped a button"),
                         "manual": lazy_pgettext("consent", "Recorded by hand"),
                         "import": lazy_pgettext("consent", "Imported")}
