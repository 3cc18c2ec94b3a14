"""Two-factor sign-in (TOTP) for members: the secret, encrypted; when it was turned on; the
last time step a code was accepted for (no code is accepted twice); the recovery codes'
argon2 hashes, each removed when used.

`users` is a tenant table already (FORCEd RLS): new columns need nothing more.

Revision ID: a7c3e2f19b04
Revises: a7c3e1f05b92
Create Date: 2026-12-02 19:40:00
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "a7c3e2f19b04"
down_revision = "a7c3e1f05b92"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("users", sa.Column("totp_secret", sa.LargeBinary(), nullable=True))
    op.add_column("users", sa.Column("totp_enabled_at", sa.DateTime(timezone=True),
                                     nullable=True))
    op.add_column("users", sa.Column("totp_last_step", sa.BigInteger(), nullable=True))
    op.add_column("users", sa.Column("recovery_code_hashes", postgresql.JSONB(),
                                     server_default=sa.text("'[]'::jsonb"), nullable=False))


def downgrade() -> None:
    for column in ("recovery_code_hashes", "totp_last_step", "totp_enabled_at", "totp_secret"):
        op.drop_column("users", column)
