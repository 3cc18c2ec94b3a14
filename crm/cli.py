"""The `crm` command: everything an operator or a newcomer runs.

With DATABASE_URL / REDIS_URL unset, `crm` starts the embedded PostgreSQL and Redis under
`instance/` first (and stops them again when it started them), so every command works on a
machine with nothing but Python.
"""

from __future__ import annotations

import atexit
import importlib
import os
import secrets
import subprocess
import sys
from functools import partial
from pathlib import Path

import click
from flask import Flask, current_app
from flask.cli import FlaskGroup

from crm import create_app, embedded
from crm.billing.cli import set_limits
from crm.billing.plans import LIMITS, PLANS
from crm.billing.services import sync_catalog
from crm.campaigns import demo as campaigns_demo  # noqa: F401 - each module adds its demo part
from crm.config import ROOT, Config
from crm.customers import demo as customers_demo  # noqa: F401 - each module adds its demo part
from crm.extensions import socketio
from crm.foundation.demo import seed
from crm.processes import Child, KeepsDyingError, Supervisor
from crm.tickets import demo as tickets_demo  # noqa: F401
from crm.whatsapp import demo as whatsapp_demo  # noqa: F401
from crm.whatsapp.supervisor import Supervisor as WhatsAppSupervisor
from crm.worker import run as run_worker

# The embedded Redis this process started: `crm up` starts it again should it die.
_started_redis: embedded.EmbeddedRedis | None = None


def prepare_environment(instance: Path | None = None) -> None:
    """Fill DATABASE_URL, MIGRATION_DATABASE_URL, REDIS_URL and SECRET_KEY when unset."""
    global _started_redis
    instance = instance or Path(Config.INSTANCE_PATH)
    instance.mkdir(parents=True, exist_ok=True)
    if not os.environ.get("DATABASE_URL"):
        server = embedded.start_postgres(instance)
        os.environ["DATABASE_URL"] = server.url(embedded.APP_ROLE)
        os.environ["MIGRATION_DATABASE_URL"] = server.url(embedded.OWNER_ROLE)
        if server.started:  # one found running belongs to another `crm` (say `crm up`)
            atexit.register(embedded.stop_postgres, server)
    if not os.environ.get("REDIS_URL"):
        redis_server = embedded.start_redis(instance)
        os.environ["REDIS_URL"] = redis_server.url
        if redis_server.process is not None:
            _started_redis = redis_server
            atexit.register(embedded.stop_redis, redis_server)
    if not os.environ.get("SECRET_KEY"):
        key_file = instance / "secret_key"
        if not key_file.exists():
            key_file.write_text(secrets.token_hex(32))
            key_file.chmod(0o600)
        os.environ["SECRET_KEY"] = key_file.read_text().strip()
    for key in ("DATABASE_URL", "MIGRATION_DATABASE_URL", "REDIS_URL", "SECRET_KEY"):
        setattr(Config, key, os.environ.get(key, ""))


def _create_app() -> Flask:
    try:
        return create_app()
    except RuntimeError as exc:  # a setting or role the app refuses: say why, no traceback
        raise click.ClickException(str(exc)) from exc


@click.group(cls=FlaskGroup, create_app=_create_app, add_default_commands=True,
             add_version_option=False, load_dotenv=False)
def cli() -> None:
    """Wasl (وصل) — run, migrate, seed and measure."""


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] not in ("--help", "-h"):
        prepare_environment()
    cli(prog_name="crm")


@cli.command()
@click.option("--port", type=int, default=lambda: int(os.environ.get("PORT", 5000)))
@click.option("--host", default="127.0.0.1")
def up(port: int, host: str) -> None:
    """Migrate, then run web, workers and the WhatsApp supervisor together until Ctrl-C.

    A process that dies is started again (so is the embedded Redis); one that keeps dying
    stops everything (see crm/processes.py).
    """
    # Unless the operator named the public address, it is the one served here: emailed links
    # and the trusted host follow --port.
    served_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    public_url = os.environ.setdefault("PUBLIC_URL", f"http://{served_host}:{port}")
    subprocess.run([sys.executable, "-m", "crm", "db", "upgrade"], check=True)
    supervisor = Supervisor(_up_children(host, port))
    click.echo(f"Wasl is running on {public_url} — press Ctrl-C to stop.")
    try:
        supervisor.run()
    except KeepsDyingError as exc:
        raise click.ClickException(str(exc)) from exc


def _up_children(host: str, port: int) -> list[Child]:
    """Web, a worker per class of queues (so a bulk job never holds a reply), the WhatsApp
    supervisor; and the embedded Redis when this process started it."""
    crm = [sys.executable, "-m", "crm"]
    children = [Child("web", partial(subprocess.Popen, [*crm, "run-web", "--host", host,
                                                        "--port", str(port)]))]
    children += [Child(f"worker ({name})", partial(subprocess.Popen, [
        *crm, "worker", "--queues", ",".join(queues)]))
        for name, queues in Config.RQ_QUEUE_CLASSES.items()]
    children.append(Child("whatsapp supervisor", partial(subprocess.Popen,
                                                         [*crm, "whatsapp", "supervise"])))
    if _started_redis is not None:
        children.append(Child("redis", partial(embedded.restart_redis, _started_redis),
                              process=_started_redis.process, server=True))
    return children


@cli.command("run-web")
@click.option("--port", type=int, default=5000)
@click.option("--host", default="127.0.0.1")
def run_web(port: int, host: str) -> None:
    """Serve HTTP and Socket.IO (threading mode) in this process."""
    os.environ.pop("FLASK_RUN_FROM_CLI", None)  # else Flask refuses to serve from a CLI command
    socketio.run(current_app, host=host, port=port, allow_unsafe_werkzeug=True,
                 use_reloader=False, log_output=True)


@cli.command()
@click.option("--queues", default=",".join(Config.RQ_QUEUES),
              help="Comma-separated, in priority order.")
@click.option("--burst", is_flag=True, help="Stop when the queues are empty.")
def worker(queues: str, burst: bool) -> None:
    """Run an RQ worker (with the scheduler) with the app created once."""
    run_worker(queues.split(","), burst=burst)


@cli.group()
def whatsapp() -> None:
    """WhatsApp linked devices (`web` profiles)."""


@whatsapp.command()
def supervise() -> None:
    """Hold the session of every `web` profile until SIGTERM or Ctrl-C."""
    WhatsAppSupervisor(current_app._get_current_object()).run_until_signalled()


@cli.group()
def billing() -> None:
    """Stripe billing: the catalog, and an organization's own limits (docs/billing.md)."""


@billing.command("sync")
def billing_sync() -> None:
    """Create the products, prices and meters the Stripe account lacks (safe to run again)."""
    created = sync_catalog()
    click.echo(f"Created: {', '.join(created)}" if created else "Stripe already had everything.")


def _limit_options(command):
    """--plan, and an option per limit: a whole number, or `unlimited`."""
    for limit in reversed(LIMITS):
        command = click.option(f"--{limit.replace('_', '-')}", limit, metavar="N|unlimited",
                               help=f"{limit.replace('_', ' ')}")(command)
    return click.option("--plan", type=click.Choice(list(PLANS)), help=(
        "Put the organization on this plan outside Stripe (a contract)."))(command)


@billing.command("set-limits")
@click.argument("organization")
@_limit_options
def billing_set_limits(organization: str, plan: str | None, **limits: str | None) -> None:
    """Set ORGANIZATION's (its id or workspace slug) own limits over its plan's."""
    click.echo(set_limits(organization, plan, limits))


@cli.command("seed-demo")
def seed_demo() -> None:
    """Create a demo organization to look around in (and print how to log in)."""
    click.echo(seed())


@cli.command()
@click.argument("name")
def bench(name: str) -> None:
    """Run the benchmark scenario NAME (bench/NAME.py) and print its figures."""
    # Benchmarks run from a checkout and use the tests' fakes (Stripe, the Graph API).
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    module = importlib.import_module(f"bench.{name}")
    module.run()

