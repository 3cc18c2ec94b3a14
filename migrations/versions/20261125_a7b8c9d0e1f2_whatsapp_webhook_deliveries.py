"""WhatsApp webhook deliveries: stored by the webhook, applied by the ingest job.

Measured by `crm bench inbox` (docs/PERFORMANCE.md): applying a delivery and rendering its live
fragments inside Meta's request ran at a twentieth of a bare INSERT.

Revision ID: a7b8c9d0e1f2
Revises: f6a7b8c9d0e1
Create Date: 2026-11-25 16:20:00
"""
import sqlalchemy as sa
from alembic import op

revision = "a7b8c9d0e1f2"
down_revision = "f6a7b8c9d0e1"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "whatsapp_webhook_deliveries",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("profile_id", sa.BigInteger(), nullable=True),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_whatsapp_webhook_deliveries")),
    )


def downgrade():
    op.drop_table("whatsapp_webhook_deliveries")
