"""Module 2: customers, the sales pipeline, the activity timeline, lead scoring, segments."""

# Subscribers register on import; this package is loaded at app start (crm.api imports its api),
# in web processes and workers alike.
from crm.customers import events  # noqa: F401
