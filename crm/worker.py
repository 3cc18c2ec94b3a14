"""RQ worker entry point: the app is created once, jobs run without forking.

Jobs of this product are small and frequent (deliveries, sends, timers); forking per job would
cost more than the job. Run several workers for more throughput.
"""

from __future__ import annotations

import sys

from rq import SimpleWorker

from crm import create_app, recovery
from crm.config import Config
from crm.whatsapp import ingest


def run(queues: list[str], burst: bool = False) -> None:
    """Work off `queues` (in priority order) with RQ's scheduler, until stopped."""
    app = create_app()
    with app.app_context():
        connection = app.extensions["crm.redis"]
        if ingest.QUEUE in queues:
            ingest.request_drain()  # what was kept while no worker ran
        recovery.start(queues, burst)  # now, then every RECOVERY_INTERVAL while it runs
        SimpleWorker(queues, connection=connection).work(with_scheduler=True, burst=burst)


def main() -> None:
    """Run a worker on the queues named on the command line, else on all of them."""
    run(sys.argv[1:] or list(Config.RQ_QUEUES))
