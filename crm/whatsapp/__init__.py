"""Module 1: WhatsApp numbers (cloud, web, sandbox channels) and the shared team inbox."""

# Subscribers register on import (the app loads this package at start: webhooks).
from crm.whatsapp import events  # noqa: F401
