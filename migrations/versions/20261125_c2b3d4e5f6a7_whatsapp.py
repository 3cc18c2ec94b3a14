"""WhatsApp: numbers, conversations and messages, with RLS and the webhook routing lookups.

Revision ID: c2b3d4e5f6a7
Revises: b1a2c3d4e5f6
Create Date: 2026-11-25 14:02:58.990095
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from crm.schema import allow_owner_lookups, grant_function, protect_tenant_tables

revision = 'c2b3d4e5f6a7'
down_revision = 'b1a2c3d4e5f6'
branch_labels = None
depends_on = None

FUNCTIONS = ("wasl_whatsapp_profile_organization(bigint)",
             "wasl_whatsapp_profile_by_phone_number_id(text)", "wasl_whatsapp_web_profiles()")


def upgrade():
    # Lets GIN indexes lead with organization_id, beside the trigram search column.
    op.execute("CREATE EXTENSION IF NOT EXISTS btree_gin")
    op.create_table('whatsapp_profiles',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('display_name', sa.String(length=120), nullable=False),
    sa.Column('phone_number', sa.String(length=20), nullable=True),
    sa.Column('provider', sa.String(length=16), nullable=False),
    sa.Column('state', sa.String(length=16), server_default='disconnected', nullable=False),
    sa.Column('phone_number_id', sa.String(length=64), nullable=True),
    sa.Column('business_account_id', sa.String(length=64), nullable=True),
    sa.Column('verify_token', sa.String(length=64), nullable=False),
    sa.Column('secrets', sa.LargeBinary(), nullable=True),
    sa.Column('auto_assign', sa.Boolean(), server_default=sa.text('false'), nullable=False),
    sa.Column('last_error', sa.String(length=500), nullable=True),
    sa.Column('connected_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('is_deleted', sa.Boolean(), server_default=sa.text('false'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('organization_id', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['organization_id'], ['organizations.id'], name=op.f('fk_whatsapp_profiles_organization_id_organizations'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_whatsapp_profiles'))
    )
    op.create_index('ix_whatsapp_profiles_organization_id_id', 'whatsapp_profiles', ['organization_id', 'id'], unique=False)
    op.create_index('uq_whatsapp_profiles_phone_number_id', 'whatsapp_profiles', ['phone_number_id'], unique=True, postgresql_where=sa.text('phone_number_id IS NOT NULL'))
    op.create_table('conversations',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('profile_id', sa.BigInteger(), nullable=False),
    sa.Column('contact_phone', sa.String(length=20), nullable=True),
    sa.Column('contact_user_id', sa.String(length=128), nullable=True),
    sa.Column('contact_name', sa.String(length=120), server_default='', nullable=False),
    sa.Column('search_name', sa.Text(), sa.Computed("wasl_fold(coalesce(contact_name, ''))", persisted=True), nullable=False),
    sa.Column('search_phone', sa.Text(), sa.Computed("wasl_digits(coalesce(contact_phone, ''))", persisted=True), nullable=False),
    sa.Column('status', sa.String(length=16), server_default='open', nullable=False),
    sa.Column('assigned_user_id', sa.BigInteger(), nullable=True),
    sa.Column('unread_count', sa.Integer(), server_default='0', nullable=False),
    sa.Column('last_message_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_message_preview', sa.String(length=200), server_default='', nullable=False),
    sa.Column('last_inbound_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('customer_id', sa.BigInteger(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('organization_id', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['assigned_user_id'], ['users.id'], name=op.f('fk_conversations_assigned_user_id_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['organization_id'], ['organizations.id'], name=op.f('fk_conversations_organization_id_organizations'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['profile_id'], ['whatsapp_profiles.id'], name=op.f('fk_conversations_profile_id_whatsapp_profiles'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_conversations'))
    )
    op.create_index('ix_conversations_assignee_recent', 'conversations', ['organization_id', 'assigned_user_id', sa.literal_column('last_message_at DESC'), sa.literal_column('id DESC')], unique=False)
    op.create_index('ix_conversations_recent', 'conversations', ['organization_id', sa.literal_column('last_message_at DESC'), sa.literal_column('id DESC')], unique=False)
    op.create_index('ix_conversations_search_name', 'conversations', ['organization_id', 'search_name'], unique=False, postgresql_using='gin', postgresql_ops={'search_name': 'gin_trgm_ops'})
    op.create_index('ix_conversations_search_phone', 'conversations', ['organization_id', 'search_phone'], unique=False, postgresql_using='gin', postgresql_ops={'search_phone': 'gin_trgm_ops'})
    op.create_index('uq_conversations_profile_phone', 'conversations', ['organization_id', 'profile_id', 'contact_phone'], unique=True, postgresql_where=sa.text('contact_phone IS NOT NULL'))
    op.create_index('uq_conversations_profile_user_id', 'conversations', ['organization_id', 'profile_id', 'contact_user_id'], unique=True, postgresql_where=sa.text('contact_user_id IS NOT NULL'))
    op.create_table('messages',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('conversation_id', sa.BigInteger(), nullable=False),
    sa.Column('profile_id', sa.BigInteger(), nullable=False),
    sa.Column('direction', sa.String(length=3), nullable=False),
    sa.Column('type', sa.String(length=16), nullable=False),
    sa.Column('body', sa.Text(), server_default='', nullable=False),
    sa.Column('search_body', sa.Text(), sa.Computed("wasl_fold(coalesce(body, ''))", persisted=True), nullable=False),
    sa.Column('content', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('provider_message_id', sa.String(length=128), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('error_code', sa.String(length=32), nullable=True),
    sa.Column('error_message', sa.String(length=500), nullable=True),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('delivered_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('read_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('failed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('reply_to_id', sa.BigInteger(), nullable=True),
    sa.Column('is_forwarded', sa.Boolean(), server_default=sa.text('false'), nullable=False),
    sa.Column('edited_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('deleted_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('sender_user_id', sa.BigInteger(), nullable=True),
    sa.Column('provider_timestamp', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('organization_id', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['conversation_id'], ['conversations.id'], name=op.f('fk_messages_conversation_id_conversations'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['organization_id'], ['organizations.id'], name=op.f('fk_messages_organization_id_organizations'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['profile_id'], ['whatsapp_profiles.id'], name=op.f('fk_messages_profile_id_whatsapp_profiles'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['reply_to_id'], ['messages.id'], name=op.f('fk_messages_reply_to_id_messages'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['sender_user_id'], ['users.id'], name=op.f('fk_messages_sender_user_id_users'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_messages'))
    )
    op.create_index('ix_messages_outbox', 'messages', ['organization_id', 'status'], unique=False, postgresql_where=sa.text("status IN ('queued', 'sending')"))
    op.create_index('ix_messages_search_body', 'messages', ['organization_id', 'search_body'], unique=False, postgresql_using='gin', postgresql_ops={'search_body': 'gin_trgm_ops'})
    op.create_index('ix_messages_thread', 'messages', ['organization_id', 'conversation_id', sa.literal_column('id DESC')], unique=False)
    op.create_index('uq_messages_provider_id', 'messages', ['organization_id', 'profile_id', 'provider_message_id'], unique=True, postgresql_where=sa.text('provider_message_id IS NOT NULL'))
    protect_tenant_tables("whatsapp_profiles", "conversations", "messages")
    # Webhooks and the linked-device supervisor act before any organization is known: these
    # functions, run with the owner's rights, return only the ids that route them.
    allow_owner_lookups("whatsapp_profiles")
    op.execute("""
        CREATE FUNCTION wasl_whatsapp_profile_organization(p_profile_id bigint) RETURNS bigint
        LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
            SELECT organization_id FROM whatsapp_profiles
            WHERE id = p_profile_id AND NOT is_deleted
        $$""")
    op.execute("""
        CREATE FUNCTION wasl_whatsapp_profile_by_phone_number_id(p_phone_number_id text)
        RETURNS TABLE (organization_id bigint, profile_id bigint)
        LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
            SELECT organization_id, id FROM whatsapp_profiles
            WHERE phone_number_id = p_phone_number_id AND NOT is_deleted
        $$""")
    op.execute("""
        CREATE FUNCTION wasl_whatsapp_web_profiles()
        RETURNS TABLE (organization_id bigint, profile_id bigint)
        LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
            SELECT organization_id, id FROM whatsapp_profiles
            WHERE provider = 'web' AND NOT is_deleted ORDER BY id
        $$""")
    for function in FUNCTIONS:
        grant_function(function)


def downgrade():
    for function in FUNCTIONS:
        op.execute(f"DROP FUNCTION IF EXISTS {function}")
    op.drop_index('uq_messages_provider_id', table_name='messages', postgresql_where=sa.text('provider_message_id IS NOT NULL'))
    op.drop_index('ix_messages_thread', table_name='messages')
    op.drop_index('ix_messages_search_body', table_name='messages', postgresql_using='gin', postgresql_ops={'search_body': 'gin_trgm_ops'})
    op.drop_index('ix_messages_outbox', table_name='messages', postgresql_where=sa.text("status IN ('queued', 'sending')"))
    op.drop_table('messages')
    op.drop_index('uq_conversations_profile_user_id', table_name='conversations', postgresql_where=sa.text('contact_user_id IS NOT NULL'))
    op.drop_index('uq_conversations_profile_phone', table_name='conversations', postgresql_where=sa.text('contact_phone IS NOT NULL'))
    op.drop_index('ix_conversations_search_phone', table_name='conversations', postgresql_using='gin', postgresql_ops={'search_phone': 'gin_trgm_ops'})
    op.drop_index('ix_conversations_search_name', table_name='conversations', postgresql_using='gin', postgresql_ops={'search_name': 'gin_trgm_ops'})
    op.drop_index('ix_conversations_recent', table_name='conversations')
    op.drop_index('ix_conversations_assignee_recent', table_name='conversations')
    op.drop_table('conversations')
    op.drop_index('uq_whatsapp_profiles_phone_number_id', table_name='whatsapp_profiles', postgresql_where=sa.text('phone_number_id IS NOT NULL'))
    op.drop_index('ix_whatsapp_profiles_organization_id_id', table_name='whatsapp_profiles')
    op.drop_table('whatsapp_profiles')
