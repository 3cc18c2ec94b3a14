"""Emails keep no usable token: the link of a queued email is stored encrypted, apart.

The bodies are stored with the one-time token left out of the link; `secrets` holds the link,
encrypted, until the email is sent, so no row (and no backup of one) lets anyone reset a
password or join a team.

Revision ID: 5057a4a5852b
Revises: b0c4d3e8658e
Create Date: 2026-12-02 09:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = "5057a4a5852b"
down_revision = "d375e06fc218"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("outbound_emails", sa.Column("secrets", sa.LargeBinary(), nullable=True))


def downgrade():
    op.drop_column("outbound_emails", "secrets")
