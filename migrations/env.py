"""Alembic runs as the schema owner (MIGRATION_DATABASE_URL); the app never does."""

import logging
from logging.config import fileConfig

from alembic import context
from flask import current_app
from sqlalchemy import create_engine, pool

from crm.database_roles import migration_url

config = context.config
if config.config_file_name:
    # Keep the app's loggers: migrating inside a running process (the test harness) must not
    # silence them.
    fileConfig(config.config_file_name, disable_existing_loggers=False)
log = logging.getLogger("alembic.env")

target_metadata = current_app.extensions["migrate"].db.metadata


def run_migrations_online() -> None:
    # Never the app's role: a RuntimeError here is what `crm db upgrade` prints, exiting 1.
    engine = create_engine(migration_url(current_app.config), poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata,
                          compare_type=True)
        with context.begin_transaction():
            context.run_migrations()


run_migrations_online()
