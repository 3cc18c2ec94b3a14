"""Billing: plans, the gate every module asks, Stripe subscriptions, invoices and usage.

plans.py holds the defaults; gate.py answers what an organization may use (cached per
organization in Redis); services.py talks to Stripe for Checkout, plan changes, cancelling and
the portal; webhooks.py stores Stripe's signed events and jobs.py applies each once; usage.py
counts billable usage per hour and reports it to Stripe's meters. docs/billing.md has the
whole story.
"""
