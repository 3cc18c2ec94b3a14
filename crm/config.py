"""Settings from the environment (and `.env`), with defaults that run on a bare laptop."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

from dotenv import load_dotenv
from pydantic_core import from_json

ROOT = Path(__file__).resolve().parent.parent
load_dotenv(ROOT / ".env")


def _bool(name: str, default: bool = False) -> bool:
    return os.environ.get(name, str(default)).lower() in {"1", "true", "yes", "on"}


class Config:
    INSTANCE_PATH = Path(os.environ.get("CRM_INSTANCE_PATH", ROOT / "instance"))
    SECRET_KEY = os.environ.get("SECRET_KEY", "")
    ENCRYPTION_KEY = os.environ.get("ENCRYPTION_KEY", "")
    # The app connects as a role that owns no table and lacks BYPASSRLS; migrations run as
    # the owner.
    DATABASE_URL = os.environ.get("DATABASE_URL", "")
    MIGRATION_DATABASE_URL = os.environ.get("MIGRATION_DATABASE_URL", "")
    REDIS_URL = os.environ.get("REDIS_URL", "")
    # The address users reach: every emailed link is built from it, and the app answers only
    # to its host (TRUSTED_HOSTS, set by create_app). `crm up --port N` makes it
    # http://127.0.0.1:N when it is unset.
    PUBLIC_URL = (os.environ.get("PUBLIC_URL")
                  or f"http://127.0.0.1:{os.environ.get('PORT', '5000')}")
    # How many reverse proxies stand in front of the app (0: none, so X-Forwarded-* headers
    # are ignored, as anyone can send them).
    TRUSTED_PROXIES = int(os.environ.get("TRUSTED_PROXIES", 0))
    # Checked at start: the app's role must not be one that Row Level Security does not bind.
    # False only for an app that never connects (one built to read its URL map).
    CHECK_DATABASE_ROLE = True

    # No server-side prepared statements: after five runs PostgreSQL would switch a statement
    # to one generic plan for every organization, which is wrong for tenants of very different
    # sizes (a stage filter went from 0.25 ms to 244 ms in `crm bench customers`).
    # JSONB is read by pydantic's JSON parser, four times faster than json.loads with the same
    # results: decoding two JSONB columns per row was a tenth of an API list's time.
    SQLALCHEMY_ENGINE_OPTIONS = {"pool_pre_ping": True, "pool_size": 10, "max_overflow": 10,
                                 "connect_args": {"prepare_threshold": None},
                                 "json_deserializer": from_json}
    MAX_CONTENT_LENGTH = int(os.environ.get("MAX_CONTENT_LENGTH", 1 * 1024 * 1024))
    # While PostgreSQL or Redis is down, requests that need it answer 503 with this
    # Retry-After (seconds); a page asked for then reloads itself after as long.
    UNAVAILABLE_RETRY_AFTER = int(os.environ.get("UNAVAILABLE_RETRY_AFTER", 5))

    SESSION_COOKIE_HTTPONLY = True
    SESSION_COOKIE_SAMESITE = "Lax"
    SESSION_COOKIE_SECURE = _bool("SESSION_COOKIE_SECURE", False)
    REMEMBER_COOKIE_HTTPONLY = True
    REMEMBER_COOKIE_SAMESITE = "Lax"
    REMEMBER_COOKIE_SECURE = SESSION_COOKIE_SECURE
    PERMANENT_SESSION_LIFETIME = timedelta(days=14)
    # A browser session unused for this long is no longer live: a forgotten laptop or a copied
    # cookie does not keep an account open. API tokens expire with their JWT; API keys are
    # for integrations and live until revoked.
    SESSION_IDLE_LIFETIME = timedelta(days=int(os.environ.get("SESSION_IDLE_DAYS", 14)))
    PREFERRED_URL_SCHEME = "https" if SESSION_COOKIE_SECURE else "http"
    WTF_CSRF_TIME_LIMIT = None

    JWT_LIFETIME = timedelta(hours=int(os.environ.get("JWT_LIFETIME_HOURS", 12)))
    PASSWORD_RESET_LIFETIME = timedelta(hours=1)
    EMAIL_CHANGE_LIFETIME = timedelta(hours=24)
    INVITATION_LIFETIME = timedelta(days=7)

    BABEL_DEFAULT_LOCALE = "ar"
    BABEL_DEFAULT_TIMEZONE = "UTC"
    LANGUAGES = ("ar", "en")

    RATELIMIT_LOGIN_PER_IP = os.environ.get("RATELIMIT_LOGIN_PER_IP", "30 per minute")
    RATELIMIT_LOGIN_PER_ACCOUNT = os.environ.get("RATELIMIT_LOGIN_PER_ACCOUNT", "10 per 15 minutes")
    # Register, forgot-password, reset-password and accept-invitation (pages and API alike).
    RATELIMIT_PUBLIC_PER_IP = os.environ.get("RATELIMIT_PUBLIC_PER_IP", "20 per hour")
    RATELIMIT_PUBLIC_PER_EMAIL = os.environ.get("RATELIMIT_PUBLIC_PER_EMAIL", "5 per hour")
    # Every /api request of one organization, whoever of its people or tokens makes it.
    RATELIMIT_API_PER_ORG = os.environ.get("RATELIMIT_API_PER_ORG", "1200 per minute")
    RATELIMIT_HEADERS_ENABLED = True

    SMTP_HOST = os.environ.get("SMTP_HOST", "")
    SMTP_PORT = int(os.environ.get("SMTP_PORT", 587))
    SMTP_USERNAME = os.environ.get("SMTP_USERNAME", "")
    SMTP_PASSWORD = os.environ.get("SMTP_PASSWORD", "")
    SMTP_STARTTLS = _bool("SMTP_STARTTLS", True)
    MAIL_FROM = os.environ.get("MAIL_FROM", "Wasl <no-reply@wasl.local>")

    # WhatsApp Cloud API. The platform-wide webhook (/webhooks/whatsapp) is verified with the
    # platform's own Meta app: its app secret signs deliveries, its verify token answers the
    # subscription check. Per-profile webhooks use each profile's own secrets instead.
    WHATSAPP_GRAPH_URL = os.environ.get("WHATSAPP_GRAPH_URL", "https://graph.facebook.com")
    WHATSAPP_GRAPH_VERSION = os.environ.get("WHATSAPP_GRAPH_VERSION", "v23.0")
    WHATSAPP_APP_SECRET = os.environ.get("WHATSAPP_APP_SECRET", "")
    WHATSAPP_VERIFY_TOKEN = os.environ.get("WHATSAPP_VERIFY_TOKEN", "")
    # Where the media URLs that the Graph API answers may lead (their download carries the
    # access token), comma-separated: an entry matches its host and every subdomain, over https
    # only; an entry written "http://host" allows plain http too (a local fake). A host must
    # resolve to public addresses only, unless it is itself an entry (a subdomain of one does
    # not do): private, loopback, link-local and reserved ranges are refused. No redirects.
    WHATSAPP_MEDIA_HOSTS = os.environ.get("WHATSAPP_MEDIA_HOSTS",
                                          "lookaside.fbsbx.com,fbcdn.net,whatsapp.net")
    # Deliveries one number's webhook accepts (either door); over it Meta is told 429 and
    # retries later. Deliveries that used up their attempts are purged after the retention.
    WHATSAPP_WEBHOOK_PER_PROFILE = os.environ.get("WHATSAPP_WEBHOOK_PER_PROFILE",
                                                  "600 per minute")
    WHATSAPP_DELIVERY_RETENTION_DAYS = int(os.environ.get("WHATSAPP_DELIVERY_RETENTION_DAYS", 7))

    # Billing (docs/billing.md). Without STRIPE_SECRET_KEY Wasl is self-hosted: every module and
    # limit unlocked. STRIPE_API_BASE points the client elsewhere (tests: a local fake).
    STRIPE_SECRET_KEY = os.environ.get("STRIPE_SECRET_KEY", "")
    STRIPE_WEBHOOK_SECRET = os.environ.get("STRIPE_WEBHOOK_SECRET", "")
    STRIPE_API_BASE = os.environ.get("STRIPE_API_BASE", "https://api.stripe.com")
    # A new organization's trial of Pro, and how long a payment may stay overdue before the
    # organization becomes read-only.
    BILLING_TRIAL_DAYS = int(os.environ.get("BILLING_TRIAL_DAYS", 14))
    BILLING_GRACE_DAYS = int(os.environ.get("BILLING_GRACE_DAYS", 7))

    # Jobs run on RQ, queues in priority order (inbound: applying WhatsApp webhook deliveries;
    # campaigns: the campaign runners' slices, docs/campaigns.md; bulk: imports and rescoring
    # whole organizations, which run for minutes); tests drain the queues in-process instead
    # of running a worker. `crm up` runs a worker per class, so neither a campaign nor a bulk
    # job ever holds a reply.
    RQ_QUEUE_CLASSES = {"interactive": ("inbound", "whatsapp", "default", "mail"),
                        "campaigns": ("campaigns",), "bulk": ("bulk",)}
    RQ_QUEUES = tuple(queue for queues in RQ_QUEUE_CLASSES.values() for queue in queues)
    # The recovery job (crm/recovery.py) runs every RECOVERY_INTERVAL seconds and enqueues
    # again what has waited RECOVERY_QUEUED_AFTER seconds in an outbox with its job lost.
    RECOVERY_INTERVAL = float(os.environ.get("RECOVERY_INTERVAL", 30))
    RECOVERY_QUEUED_AFTER = float(os.environ.get("RECOVERY_QUEUED_AFTER", 60))
    # Seconds a campaign runner holds its campaign without a word (it renews this before
    # each send): a runner killed mid-campaign is replaced this long after, at the recovery
    # job's next run.
    CAMPAIGN_RUNNER_LEASE = float(os.environ.get("CAMPAIGN_RUNNER_LEASE", 30))
    # A campaign's sends on their way to the Graph API at once, at most: its pace times
    # Meta's latency (80 a second at 100-300 ms a request is 8 to 24).
    CAMPAIGN_SENDS_IN_FLIGHT = int(os.environ.get("CAMPAIGN_SENDS_IN_FLIGHT", 24))
    TESTING = False


LOOPBACK_NAMES = ("localhost", "127.0.0.1")


def trusted_hosts(public_url: str) -> list[str]:
    """The host names to answer to: PUBLIC_URL's (any port), never one a caller made up.

    A loopback address stands for both loopback names, since people type either.
    """
    host = urlsplit(public_url).hostname or ""
    return list(LOOPBACK_NAMES) if host in LOOPBACK_NAMES else [host]
