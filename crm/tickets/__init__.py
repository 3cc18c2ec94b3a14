"""Module 3: tickets, comments, attachments, assignment, and SLA clocks on a business calendar."""
