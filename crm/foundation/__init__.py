"""Module 0: organizations, accounts, team, roles, module switches, audit log."""
