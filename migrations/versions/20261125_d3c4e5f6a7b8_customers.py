"""Customers: stages, customers, custom fields, activities, segments, scoring, imports (RLS).

Revision ID: d3c4e5f6a7b8
Revises: c2b3d4e5f6a7
Create Date: 2026-11-25 14:11:28.661814
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from crm.schema import protect_tenant_tables

revision = 'd3c4e5f6a7b8'
down_revision = 'c2b3d4e5f6a7'
branch_labels = None
depends_on = None


def upgrade():
    op.execute("CREATE EXTENSION IF NOT EXISTS btree_gin")
    op.create_table('custom_field_definitions',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('key', sa.String(length=40), nullable=False),
    sa.Column('label', sa.String(length=80), nullable=False),
    sa.Column('type', sa.String(length=16), nullable=False),
    sa.Column('choices', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'[]'::jsonb"), nullable=False),
    sa.Column('is_required', sa.Boolean(), server_default=sa.text('false'), nullable=False),
    sa.Column('position', sa.Integer(), server_default='0', nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('organization_id', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['organization_id'], ['organizations.id'], name=op.f('fk_custom_field_definitions_organization_id_organizations'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_custom_field_definitions'))
    )
    op.create_index('uq_custom_field_definitions_key', 'custom_field_definitions', ['organization_id', 'key'], unique=True)
    op.create_table('sales_stages',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('name_ar', sa.String(length=80), nullable=False),
    sa.Column('name_en', sa.String(length=80), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('color', sa.String(length=7), server_default='#64748b', nullable=False),
    sa.Column('is_won', sa.Boolean(), server_default=sa.text('false'), nullable=False),
    sa.Column('is_lost', sa.Boolean(), server_default=sa.text('false'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('organization_id', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['organization_id'], ['organizations.id'], name=op.f('fk_sales_stages_organization_id_organizations'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sales_stages'))
    )
    op.create_index('ix_sales_stages_organization_id_position', 'sales_stages', ['organization_id', 'position'], unique=False)
    op.create_table('scoring_rules',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('params', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('points', sa.Integer(), nullable=False),
    sa.Column('is_active', sa.Boolean(), server_default=sa.text('true'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('organization_id', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['organization_id'], ['organizations.id'], name=op.f('fk_scoring_rules_organization_id_organizations'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_scoring_rules'))
    )
    op.create_index('ix_scoring_rules_organization_id_id', 'scoring_rules', ['organization_id', 'id'], unique=False)
    op.create_table('customer_imports',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('filename', sa.String(length=255), nullable=False),
    sa.Column('path', sa.String(length=500), nullable=False),
    sa.Column('status', sa.String(length=16), server_default='uploaded', nullable=False),
    sa.Column('mapping', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('on_duplicate', sa.String(length=8), server_default='skip', nullable=False),
    sa.Column('total_rows', sa.Integer(), server_default='0', nullable=False),
    sa.Column('processed_rows', sa.Integer(), server_default='0', nullable=False),
    sa.Column('created_count', sa.Integer(), server_default='0', nullable=False),
    sa.Column('updated_count', sa.Integer(), server_default='0', nullable=False),
    sa.Column('skipped_count', sa.Integer(), server_default='0', nullable=False),
    sa.Column('rejected_count', sa.Integer(), server_default='0', nullable=False),
    sa.Column('report_path', sa.String(length=500), nullable=True),
    sa.Column('error', sa.String(length=500), nullable=True),
    sa.Column('created_by_id', sa.BigInteger(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('organization_id', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['created_by_id'], ['users.id'], name=op.f('fk_customer_imports_created_by_id_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['organization_id'], ['organizations.id'], name=op.f('fk_customer_imports_organization_id_organizations'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_customer_imports'))
    )
    op.create_index('ix_customer_imports_organization_id_id', 'customer_imports', ['organization_id', 'id'], unique=False)
    op.create_table('customers',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('name', sa.String(length=160), nullable=False),
    sa.Column('phone', sa.String(length=20), nullable=True),
    sa.Column('email', sa.String(length=254), nullable=True),
    sa.Column('company', sa.String(length=160), server_default='', nullable=False),
    sa.Column('owner_id', sa.BigInteger(), nullable=True),
    sa.Column('stage_id', sa.BigInteger(), nullable=True),
    sa.Column('board_position', sa.Float(), server_default='0', nullable=False),
    sa.Column('tags', postgresql.ARRAY(sa.Text()), server_default=sa.text("'{}'::text[]"), nullable=False),
    sa.Column('source', sa.String(length=16), server_default='manual', nullable=False),
    sa.Column('custom_fields', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('notes', sa.Text(), server_default='', nullable=False),
    sa.Column('score', sa.Integer(), server_default='0', nullable=False),
    sa.Column('score_breakdown', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'[]'::jsonb"), nullable=False),
    sa.Column('last_contacted_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('merged_into_id', sa.BigInteger(), nullable=True),
    sa.Column('search_name', sa.Text(), sa.Computed("wasl_fold(name || ' ' || company)", persisted=True), nullable=False),
    sa.Column('search_phone', sa.Text(), sa.Computed("wasl_digits(coalesce(phone, ''))", persisted=True), nullable=False),
    sa.Column('search_email', sa.Text(), sa.Computed("coalesce(email, '')", persisted=True), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('organization_id', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['organization_id'], ['organizations.id'], name=op.f('fk_customers_organization_id_organizations'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['owner_id'], ['users.id'], name=op.f('fk_customers_owner_id_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['stage_id'], ['sales_stages.id'], name=op.f('fk_customers_stage_id_sales_stages'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_customers'))
    )
    op.create_index('ix_customers_board', 'customers', ['organization_id', 'stage_id', 'board_position', 'id'], unique=False)
    op.create_index('ix_customers_owner', 'customers', ['organization_id', 'owner_id', sa.literal_column('id DESC')], unique=False)
    op.create_index('ix_customers_recent', 'customers', ['organization_id', sa.literal_column('id DESC')], unique=False)
    op.create_index('ix_customers_score', 'customers', ['organization_id', sa.literal_column('score DESC'), sa.literal_column('id DESC')], unique=False)
    op.create_index('ix_customers_search_email', 'customers', ['organization_id', 'search_email'], unique=False, postgresql_using='gin', postgresql_ops={'search_email': 'gin_trgm_ops'})
    op.create_index('ix_customers_search_name', 'customers', ['organization_id', 'search_name'], unique=False, postgresql_using='gin', postgresql_ops={'search_name': 'gin_trgm_ops'})
    op.create_index('ix_customers_search_phone', 'customers', ['organization_id', 'search_phone'], unique=False, postgresql_using='gin', postgresql_ops={'search_phone': 'gin_trgm_ops'})
    op.create_index('ix_customers_tags', 'customers', ['organization_id', 'tags'], unique=False, postgresql_using='gin')
    op.create_index('uq_customers_email', 'customers', ['organization_id', 'email'], unique=True, postgresql_where=sa.text('email IS NOT NULL'))
    op.create_index('uq_customers_phone', 'customers', ['organization_id', 'phone'], unique=True, postgresql_where=sa.text('phone IS NOT NULL'))
    op.create_table('segments',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('name', sa.String(length=120), nullable=False),
    sa.Column('filters', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('created_by_id', sa.BigInteger(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('organization_id', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['created_by_id'], ['users.id'], name=op.f('fk_segments_created_by_id_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['organization_id'], ['organizations.id'], name=op.f('fk_segments_organization_id_organizations'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_segments'))
    )
    op.create_index('ix_segments_organization_id_id', 'segments', ['organization_id', 'id'], unique=False)
    op.create_table('customer_activities',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('customer_id', sa.BigInteger(), nullable=False),
    sa.Column('type', sa.String(length=24), nullable=False),
    sa.Column('body', sa.Text(), server_default='', nullable=False),
    sa.Column('data', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('due_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('assignee_id', sa.BigInteger(), nullable=True),
    sa.Column('done_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('actor_id', sa.BigInteger(), nullable=True),
    sa.Column('source_key', sa.String(length=80), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('organization_id', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['actor_id'], ['users.id'], name=op.f('fk_customer_activities_actor_id_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['assignee_id'], ['users.id'], name=op.f('fk_customer_activities_assignee_id_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['customer_id'], ['customers.id'], name=op.f('fk_customer_activities_customer_id_customers'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['organization_id'], ['organizations.id'], name=op.f('fk_customer_activities_organization_id_organizations'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_customer_activities'))
    )
    op.create_index('ix_customer_activities_tasks_due', 'customer_activities', ['organization_id', 'assignee_id', 'due_at'], unique=False, postgresql_where=sa.text("type = 'task' AND done_at IS NULL"))
    op.create_index('ix_customer_activities_timeline', 'customer_activities', ['organization_id', 'customer_id', sa.literal_column('id DESC')], unique=False)
    op.create_index('uq_customer_activities_source_key', 'customer_activities', ['organization_id', 'source_key'], unique=True, postgresql_where=sa.text('source_key IS NOT NULL'))
    protect_tenant_tables(*TENANT_TABLES)


TENANT_TABLES = ("sales_stages", "customers", "custom_field_definitions", "customer_activities",
                 "segments", "scoring_rules", "customer_imports")


def downgrade():
    op.drop_index('uq_customer_activities_source_key', table_name='customer_activities', postgresql_where=sa.text('source_key IS NOT NULL'))
    op.drop_index('ix_customer_activities_timeline', table_name='customer_activities')
    op.drop_index('ix_customer_activities_tasks_due', table_name='customer_activities', postgresql_where=sa.text("type = 'task' AND done_at IS NULL"))
    op.drop_table('customer_activities')
    op.drop_index('ix_segments_organization_id_id', table_name='segments')
    op.drop_table('segments')
    op.drop_index('uq_customers_phone', table_name='customers', postgresql_where=sa.text('phone IS NOT NULL'))
    op.drop_index('uq_customers_email', table_name='customers', postgresql_where=sa.text('email IS NOT NULL'))
    op.drop_index('ix_customers_tags', table_name='customers', postgresql_using='gin')
    op.drop_index('ix_customers_search_phone', table_name='customers', postgresql_using='gin', postgresql_ops={'search_phone': 'gin_trgm_ops'})
    op.drop_index('ix_customers_search_name', table_name='customers', postgresql_using='gin', postgresql_ops={'search_name': 'gin_trgm_ops'})
    op.drop_index('ix_customers_search_email', table_name='customers', postgresql_using='gin', postgresql_ops={'search_email': 'gin_trgm_ops'})
    op.drop_index('ix_customers_score', table_name='customers')
    op.drop_index('ix_customers_recent', table_name='customers')
    op.drop_index('ix_customers_owner', table_name='customers')
    op.drop_index('ix_customers_board', table_name='customers')
    op.drop_table('customers')
    op.drop_index('ix_customer_imports_organization_id_id', table_name='customer_imports')
    op.drop_table('customer_imports')
    op.drop_index('ix_scoring_rules_organization_id_id', table_name='scoring_rules')
    op.drop_table('scoring_rules')
    op.drop_index('ix_sales_stages_organization_id_position', table_name='sales_stages')
    op.drop_table('sales_stages')
    op.drop_index('uq_custom_field_definitions_key', table_name='custom_field_definitions')
    op.drop_table('custom_field_definitions')
