"""Module 3: tickets, comments, attachments, assignment, and SLA clocks on a business calendar."""

# Subscribers register on import; the app loads this package at start (crm/__init__.py), in
# web processes and workers alike.
from crm.tickets import events  # noqa: F401
