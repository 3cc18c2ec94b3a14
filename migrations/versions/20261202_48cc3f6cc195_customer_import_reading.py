"""How an import reads its file: the encoding and separator detected on upload or chosen on
the preview, so the job reads the file exactly as the preview showed it.

Imports uploaded before were read as UTF-8 with the separator their header line used most;
they get UTF-8 and the comma. A waiting import of a semicolon or tab file shows one column until
its separator is chosen on the preview; a failed one of such a file, resumed, would reject its
remaining rows and must be uploaded again.

Revision ID: 48cc3f6cc195
Revises: b0c4d3e8658e
Create Date: 2026-12-02 10:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = "48cc3f6cc195"
down_revision = "b0c4d3e8658e"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("customer_imports", sa.Column("encoding", sa.String(16), nullable=False,
                                                server_default="utf-8"))
    op.add_column("customer_imports", sa.Column("delimiter", sa.String(16), nullable=False,
                                                server_default="comma"))


def downgrade():
    op.drop_column("customer_imports", "delimiter")
    op.drop_column("customer_imports", "encoding")
