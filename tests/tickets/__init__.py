"""Tests of ticketing: the business calendar, SLA clocks, services, events and timers."""
