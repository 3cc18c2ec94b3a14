"""Module 4: bulk WhatsApp campaigns to CRM audiences, paced, consented and reported."""

# Subscribers register on import (the app loads this package at start, in web processes and
# workers alike).
from crm.campaigns import events  # noqa: F401
