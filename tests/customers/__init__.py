"""Tests of the CRM module: services, API, imports and the WhatsApp integration."""
