"""Billing: an upgrade waiting on its payment (Stripe's `pending_update`).

`subscriptions` gains what Wasl shows of it meanwhile: the plan and interval waiting, the
invoice's page to pay it, whether the bank asks the card holder to confirm the payment (3-D
Secure), and when Stripe drops the upgrade unpaid. Columns of an existing tenant table: its
row-level security already covers them.

Revision ID: a7c3e1f05b92
Revises: 5dc53288f326
Create Date: 2026-12-02 20:30:00
"""
import sqlalchemy as sa
from alembic import op

revision = "a7c3e1f05b92"
down_revision = "5dc53288f326"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("subscriptions", sa.Column("pending_plan", sa.String(16)))
    op.add_column("subscriptions", sa.Column("pending_interval", sa.String(8)))
    op.add_column("subscriptions", sa.Column("pending_invoice_url", sa.String(1000)))
    op.add_column("subscriptions", sa.Column("pending_requires_action", sa.Boolean(),
                                             nullable=False, server_default=sa.text("false")))
    op.add_column("subscriptions", sa.Column("pending_expires_at",
                                             sa.DateTime(timezone=True)))


def downgrade() -> None:
    for column in ("pending_expires_at", "pending_requires_action", "pending_invoice_url",
                   "pending_interval", "pending_plan"):
        op.drop_column("subscriptions", column)
