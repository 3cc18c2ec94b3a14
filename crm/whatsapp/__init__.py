"""Module 1: WhatsApp numbers (cloud, web, sandbox channels) and the shared team inbox."""
