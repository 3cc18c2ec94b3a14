"""Emails the mail job renders: what to render them from, kept on the outbox row.

`queue_email` (crm/mail.py) stores the template, the recipient's language and the context
(JSON) instead of the bodies, which the delivery job renders before it sends: the SLA timer
notifies by the hundred and rendering each email in its transaction was most of a breach's
cost. Until then the subject and bodies are empty, so they may be NULL.

Revision ID: 5be1d2a0c7f3
Revises: f1ea96597448
Create Date: 2026-12-02 08:00:00
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "5be1d2a0c7f3"
down_revision = "f1ea96597448"
branch_labels = None
depends_on = None

BODIES = ("subject", "body_text", "body_html")
RENDERED_OR_RENDERABLE = ("(subject IS NOT NULL AND body_text IS NOT NULL AND body_html IS NOT NULL)"
                          " OR template IS NOT NULL")


def upgrade() -> None:
    for column in BODIES:
        op.alter_column("outbound_emails", column, nullable=True)
    op.add_column("outbound_emails", sa.Column("template", sa.String(80)))
    op.add_column("outbound_emails", sa.Column("language", sa.String(8)))
    op.add_column("outbound_emails", sa.Column("context", JSONB))
    op.create_check_constraint(op.f("ck_outbound_emails_rendered_or_renderable"),
                               "outbound_emails", RENDERED_OR_RENDERABLE)


def downgrade() -> None:
    op.drop_constraint(op.f("ck_outbound_emails_rendered_or_renderable"), "outbound_emails")
    op.execute("DELETE FROM outbound_emails WHERE subject IS NULL")
    for column in ("context", "language", "template"):
        op.drop_column("outbound_emails", column)
    for column in BODIES:
        op.alter_column("outbound_emails", column, nullable=False)
