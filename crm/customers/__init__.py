"""Module 2: customers, the sales pipeline, the activity timeline, lead scoring, segments."""
