"""Foundation: organizations, users, invitations, tokens, module switches, audit, outbox.

Every tenant table gets FORCEd Row Level Security; the app role gets DML rights only.

Revision ID: caaa8d6b179c
Revises: 
Create Date: 2026-11-25 13:17:30.519341
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from crm.schema import allow_owner_lookups, app_role, grant_function, protect_tenant_tables
from crm.tenancy import current_organization_sql

revision = 'caaa8d6b179c'
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('organizations',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('name', sa.String(length=120), nullable=False),
    sa.Column('slug', sa.String(length=60), nullable=False),
    sa.Column('default_language', sa.String(length=5), server_default='ar', nullable=False),
    sa.Column('timezone', sa.String(length=64), server_default='Asia/Riyadh', nullable=False),
    sa.Column('country', sa.String(length=2), server_default='SA', nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_organizations')),
    sa.UniqueConstraint('slug', name=op.f('uq_organizations_slug'))
    )
    op.create_table('module_settings',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('module', sa.String(length=32), nullable=False),
    sa.Column('is_enabled', sa.Boolean(), nullable=False),
    sa.Column('organization_id', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['organization_id'], ['organizations.id'], name=op.f('fk_module_settings_organization_id_organizations'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_module_settings'))
    )
    op.create_index('uq_module_settings_organization_id_module', 'module_settings', ['organization_id', 'module'], unique=True)
    op.create_table('outbound_emails',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('to_address', sa.String(length=254), nullable=False),
    sa.Column('subject', sa.String(length=255), nullable=False),
    sa.Column('body_text', sa.Text(), nullable=False),
    sa.Column('body_html', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=16), server_default='queued', nullable=False),
    sa.Column('error', sa.String(length=500), nullable=True),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('organization_id', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['organization_id'], ['organizations.id'], name=op.f('fk_outbound_emails_organization_id_organizations'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_outbound_emails'))
    )
    op.create_index('ix_outbound_emails_organization_id_status', 'outbound_emails', ['organization_id', 'status'], unique=False)
    op.create_table('users',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('email', sa.String(length=254), nullable=False),
    sa.Column('full_name', sa.String(length=120), nullable=False),
    sa.Column('password_hash', sa.String(length=255), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('preferred_language', sa.String(length=5), nullable=True),
    sa.Column('is_active', sa.Boolean(), server_default=sa.text('true'), nullable=False),
    sa.Column('session_nonce', sa.String(length=32), nullable=False),
    sa.Column('last_login_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('organization_id', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['organization_id'], ['organizations.id'], name=op.f('fk_users_organization_id_organizations'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_users'))
    )
    op.create_index('ix_users_email', 'users', ['email'], unique=False)
    op.create_index('uq_users_organization_id_email', 'users', ['organization_id', 'email'], unique=True)
    op.create_table('audit_log',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('actor_id', sa.BigInteger(), nullable=True),
    sa.Column('action', sa.String(length=64), nullable=False),
    sa.Column('target_type', sa.String(length=32), nullable=True),
    sa.Column('target_id', sa.BigInteger(), nullable=True),
    sa.Column('details', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('ip_address', sa.String(length=64), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('organization_id', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['actor_id'], ['users.id'], name=op.f('fk_audit_log_actor_id_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['organization_id'], ['organizations.id'], name=op.f('fk_audit_log_organization_id_organizations'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_log'))
    )
    op.create_index('ix_audit_log_organization_id_id', 'audit_log', ['organization_id', 'id'], unique=False)
    op.create_table('invitations',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('email', sa.String(length=254), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('language', sa.String(length=5), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('invited_by_id', sa.BigInteger(), nullable=True),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('accepted_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('organization_id', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['invited_by_id'], ['users.id'], name=op.f('fk_invitations_invited_by_id_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['organization_id'], ['organizations.id'], name=op.f('fk_invitations_organization_id_organizations'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_invitations'))
    )
    op.create_index('ix_invitations_organization_id_email', 'invitations', ['organization_id', 'email'], unique=False)
    op.create_index('uq_invitations_token_hash', 'invitations', ['token_hash'], unique=True)
    op.create_table('password_reset_tokens',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('user_id', sa.BigInteger(), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('used_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('organization_id', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['organization_id'], ['organizations.id'], name=op.f('fk_password_reset_tokens_organization_id_organizations'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_password_reset_tokens_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_password_reset_tokens'))
    )
    op.create_index('uq_password_reset_tokens_token_hash', 'password_reset_tokens', ['token_hash'], unique=True)
    _secure()


TENANT_TABLES = ("module_settings", "outbound_emails", "users", "audit_log", "invitations",
                 "password_reset_tokens")


def _secure():
    role = app_role()
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    protect_tenant_tables(*TENANT_TABLES)
    # The tenant registry itself: a transaction sees only its own organization.
    op.execute("ALTER TABLE organizations ENABLE ROW LEVEL SECURITY")
    op.execute("ALTER TABLE organizations FORCE ROW LEVEL SECURITY")
    op.execute(f"CREATE POLICY tenant_isolation ON organizations USING (id = {current_organization_sql()})"
               f" WITH CHECK (id = {current_organization_sql()})")
    # Login is the one read across organizations: this function, run with the owner's rights,
    # returns only the ids of active accounts with one email. The policy that lets it read is
    # granted to the owner role alone, which the app can never become.
    allow_owner_lookups("users")
    op.execute("""
        CREATE FUNCTION wasl_login_candidates(p_email text)
        RETURNS TABLE (organization_id bigint, user_id bigint)
        LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
            SELECT u.organization_id, u.id FROM users u
            WHERE u.email = lower(p_email) AND u.is_active
            ORDER BY u.organization_id LIMIT 20
        $$""")
    grant_function("wasl_login_candidates(text)")
    op.execute(f'GRANT USAGE ON SCHEMA public TO "{role}"')
    op.execute(f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO "{role}"')
    op.execute(f'GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO "{role}"')
    op.execute(f'ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE '
               f'ON TABLES TO "{role}"')
    op.execute(f'ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES '
               f'TO "{role}"')
    op.execute(f'REVOKE ALL ON alembic_version FROM "{role}"')


def downgrade():
    op.execute("DROP FUNCTION IF EXISTS wasl_login_candidates(text)")
    op.drop_index('uq_password_reset_tokens_token_hash', table_name='password_reset_tokens')
    op.drop_table('password_reset_tokens')
    op.drop_index('uq_invitations_token_hash', table_name='invitations')
    op.drop_index('ix_invitations_organization_id_email', table_name='invitations')
    op.drop_table('invitations')
    op.drop_index('ix_audit_log_organization_id_id', table_name='audit_log')
    op.drop_table('audit_log')
    op.drop_index('uq_users_organization_id_email', table_name='users')
    op.drop_index('ix_users_email', table_name='users')
    op.drop_table('users')
    op.drop_index('ix_outbound_emails_organization_id_status', table_name='outbound_emails')
    op.drop_table('outbound_emails')
    op.drop_index('uq_module_settings_organization_id_module', table_name='module_settings')
    op.drop_table('module_settings')
    op.drop_table('organizations')
