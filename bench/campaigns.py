"""`crm bench campaigns`: a campaign sent by real workers to the fake Graph API at a configured
pace, and the campaigns API beside the bare Flask baseline.

1. Send: one organization, one Cloud API number whose throughput is BENCH_RATE messages a
   second (80, Meta's default) with no messaging limit, an approved template, and an uploaded
   list of BENCH_RECIPIENTS numbers (100,000); one in BENCH_FAIL_EVERY (1,000) is refused by
   WhatsApp as undeliverable (131026), so the results have failures to show; the fake Graph
   API answers each send after BENCH_GRAPH_LATENCY_MS (0; Meta's take 100-300); with
   BENCH_INBOX_OPEN=1 the admin has the inbox open, so every message is announced live.
   Workers run as `crm up` runs them: one for the campaigns queue (whose memory is polled, with any
   children) and one for the interactive queues. Measured: the achieved rate (sends the fake
   Graph API received a second, from the first send to the pause) against the configured
   one, and its stalls; the campaigns worker's memory at a tenth of the list and at the
   pause; then, with PAUSE_SHARE of the list sent, the admin pauses: how long the pause
   takes to answer, and when the last send arrived relative to it (nothing may arrive after
   it answered). Resumed, the campaign completes: every number is sent exactly once (the
   fake Graph API counts).
2. API: GET /api/campaigns (BENCH_CAMPAIGNS drafts besides), one campaign, and the results
   of a finished campaign of BENCH_RESULTS recipients (100,000; frozen by the service from an
   uploaded list, their states then written as a finished campaign leaves them: read,
   delivered, sent, one in FAIL_EVERY failed, some skipped; the sent campaign's recipients
   first, so this one's are not at the start of the table) — first page, deep (cursor),
   filtered by a common and a rare state — in alternating rounds beside bare Flask + one
   indexed SELECT; EXPLAIN (ANALYZE, BUFFERS) of the statement each pages with, checked
   against the index it needs.

3. Preview search (BENCH_PART=preview runs it alone): a draft whose audience is an uploaded
   file of BENCH_PREVIEW_ROWS rows (100,000) with names, 1,000 of its numbers known to the CRM;
   the preview's search as the page sends it while someone types (htmx), BENCH_PREVIEW_TRIES
   times each (5): a name three rows have, a number, a name nobody has, and no search. The
   first of each and the median of the rest: how long a keystroke's answer takes.

100,000 at 80 a second is 21 minutes of sending: on a shared machine, BENCH_RECIPIENTS=20000
(say) gives the same figures in a fifth of the time (the memory then compares a tenth of the
list with its whole, 2,000 to 20,000).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

import psutil
from flask import Flask, request

from bench.common import (
    Scenario,
    baseline_app,
    bench_app,
    check,
    check_plan,
    credentials,
    measure_alternating,
    owner_dsn,
    report,
    sign_in,
    worker_environment,
)
from bench.inbox import page_open
from tests.whatsapp.fake_graph import TOKEN, FakeGraph

RECIPIENTS = int(os.environ.get("BENCH_RECIPIENTS", 100_000))
RATE = int(os.environ.get("BENCH_RATE", 80))  # the number's throughput, messages a second
FAIL_EVERY = int(os.environ.get("BENCH_FAIL_EVERY", 1000))
CAMPAIGNS = int(os.environ.get("BENCH_CAMPAIGNS", 1000))
RESULTS = int(os.environ.get("BENCH_RESULTS", 100_000))  # recipients of the results read
REQUESTS = int(os.environ.get("BENCH_REQUESTS", 300))
# The fake Graph API answers each send after this long (Meta's own: 100-300 ms).
GRAPH_LATENCY = float(os.environ.get("BENCH_GRAPH_LATENCY_MS", 0)) / 1000
# 1: the admin has the inbox open while the campaign sends, so each message is announced.
INBOX_OPEN = os.environ.get("BENCH_INBOX_OPEN") == "1"
PAUSE_SHARE = 0.95  # the share of the list sent when the admin pauses
STALL = 0.25  # a gap between two sends this long is reported (a group leaves every 0.1 s)
WORKER_STARTUP = float(os.environ.get("BENCH_WORKER_STARTUP", 120))  # to start listening
PART = os.environ.get("BENCH_PART", "all")  # "preview": the preview's search alone
PREVIEW_ROWS = int(os.environ.get("BENCH_PREVIEW_ROWS", 100_000))
PREVIEW_TRIES = int(os.environ.get("BENCH_PREVIEW_TRIES", 5))
ACCOUNT_ID = "102290129340398"
PHONE_NUMBER_ID = "106540352242922"
ROOT = Path(__file__).resolve().parents[1]


class CountingGraph(FakeGraph):
    """The fake Graph API, keeping of each send only when it came and to whom (a record of
    every request would weigh hundreds of megabytes)."""

    def __post_init__(self) -> None:
        self.times: list[float] = []
        self.to: Counter[str] = Counter()
        super().__post_init__()

    def _record(self) -> None:
        body = request.get_json(silent=True) or {}
        if request.path.endswith("/messages") and "status" not in body:
            self.times.append(time.perf_counter())
            self.to[body.get("to")] += 1


def phone(n: int) -> str:
    return f"+96650{n:07d}"


def run() -> None:
    # Stopped (SIGTERM), the benchmark still stops its workers on the way out.
    signal.signal(signal.SIGTERM, lambda _signal, _frame: sys.exit(1))
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # the fake Graph API's log
    app = bench_app()
    if PART == "preview":
        with app.app_context():
            org_id, admin_id, profile_id = _organization()
        run_preview(app, org_id, admin_id, profile_id)
        return
    graph = CountingGraph(delay=GRAPH_LATENCY)
    graph.errors_for = {phone(n).lstrip("+"): 131026 for n in range(0, RECIPIENTS, FAIL_EVERY)}
    app.config["WHATSAPP_GRAPH_URL"] = graph.url
    try:
        with app.app_context():
            org_id, admin_id, profile_id = _organization()
        watching = page_open(app, org_id, admin_id) if INBOX_OPEN else contextlib.nullcontext()
        with watching, workers(app, graph) as campaigns_worker:
            sending = run_send(app, graph, org_id, admin_id, profile_id, campaigns_worker)
        sending.print(graph)
        run_api(app, org_id, admin_id, profile_id)
    finally:
        graph.stop()


# -- 1. the send ------------------------------------------------------------------------------

def _organization() -> tuple[int, int, int]:
    """An organization with a connected Cloud API number at RATE messages a second, without a
    messaging limit, and an approved template; its, its admin's and the number's ids."""
    from crm.campaigns.models import WhatsAppTemplate
    from crm.campaigns.settings import update_number_settings
    from crm.crypto import encrypt
    from crm.extensions import db
    from crm.foundation import services as foundation
    from crm.models import utcnow
    from crm.tenancy import organization_context
    from crm.transaction import commit
    from crm.whatsapp import profiles
    from crm.whatsapp.models import WhatsAppProfile

    registration = foundation.register_organization("متجر وصل", "مدير المتجر",
                                                    "campaigns@wasl.example", "bench-password")
    org_id, admin_id = registration.organization.id, registration.user.id
    commit()
    with organization_context(org_id):
        # Written as proven (create_profile would ask the Graph API for the number).
        profile = WhatsAppProfile(
            display_name="التسويق", provider="cloud", state="connected",
            phone_number_id=PHONE_NUMBER_ID, business_account_id=ACCOUNT_ID,
            verify_token=profiles.new_verify_token(),
            secrets=encrypt({"access_token": TOKEN, "app_secret": "bench-secret"}),
            verified_at=utcnow(), webhook_verified_at=utcnow(), connected_at=utcnow())
        db.session.add(profile)
        db.session.flush()
        update_number_settings(registration.user, profile,
                               {"throughput_per_second": RATE, "messaging_limit": None})
        db.session.add(WhatsAppTemplate(profile_id=profile.id, name="spring_offer",
                                        language="ar", category="MARKETING", status="APPROVED",
                                        components=[{"type": "BODY",
                                                     "text": "مرحبا {{1}}، عرض الربيع {{2}}"}]))
        profile_id = profile.id
        commit()
    return org_id, admin_id, profile_id


@contextmanager
def workers(app: Flask, graph: FakeGraph) -> Iterator[subprocess.Popen]:
    """`crm worker` for the campaigns queue and one for the interactive queues, as `crm up`
    runs them, listening before the block starts; the campaigns one is yielded."""
    from crm.config import Config

    environment = worker_environment(app) | {"WHATSAPP_GRAPH_URL": graph.url}
    started = [subprocess.Popen([sys.executable, "-m", "crm", "worker", "--queues",
                                 ",".join(queues)], cwd=ROOT, env=environment,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
               for queues in (Config.RQ_QUEUE_CLASSES["campaigns"],
                              Config.RQ_QUEUE_CLASSES["interactive"])]
    _wait_for_workers(app, len(started))
    try:
        yield started[0]
    finally:
        for process in started:
            process.terminate()
        for process in started:
            process.wait(60)


def _wait_for_workers(app: Flask, count: int) -> None:
    from rq import Worker

    deadline = time.monotonic() + WORKER_STARTUP
    connection = app.extensions["crm.redis"]
    while len(Worker.all(connection=connection)) < count:
        if time.monotonic() > deadline:
            raise SystemExit("the workers did not start")
        time.sleep(0.2)


@dataclass
class Sending:
    campaign_id: int
    started: float  # when the start was committed
    samples: list[tuple[float, int, float]] = field(default_factory=list)  # (t, sends, MB)
    pause_asked: float = 0.0
    pause_answered: float = 0.0
    sent_at_pause: int = 0
    resumed: float = 0.0
    completed: float = 0.0
    status: str = ""

    def print(self, graph: CountingGraph) -> None:
        times = graph.times
        before = [t for t in times if t <= self.pause_answered]
        after = [t for t in times if self.pause_answered < t < self.resumed]
        span = before[-1] - before[0]
        achieved = (len(before) - 1) / span
        tenth = next(mb for _t, sends, mb in self.samples if sends >= RECIPIENTS // 10)
        at_pause = self.samples_before_pause[-1][2]
        peak = max(mb for _t, _sends, mb in self.samples)
        twice = sum(1 for count in graph.to.values() if count > 1)
        print(f"\ncampaigns — {RECIPIENTS:,} recipients (an uploaded list, one in {FAIL_EVERY:,} "
              f"undeliverable), a Cloud API number at {RATE} msg/s, the fake Graph API "
              f"answering each send after {GRAPH_LATENCY * 1000:.0f} ms, the admin's inbox "
              f"{'open' if INBOX_OPEN else 'closed'}; `crm worker` "
              "processes as `crm up` runs them")
        print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} (other "
              "processes share the cores)")
        print(f"start → first send {before[0] - self.started:.1f} s (freezing the list)")
        print(f"achieved rate {achieved:.1f} msg/s over {len(before):,} sends in {span:.0f} s = "
              f"{achieved / RATE:.0%} of the configured {RATE} msg/s")
        gaps = [later - earlier for earlier, later in pairwise(before)
                if later - earlier > STALL]
        print(f"stalls (no send for over {STALL * 1000:.0f} ms): {len(gaps)}, "
              f"{sum(gaps):.1f} s in all, longest {max(gaps, default=0) * 1000:.0f} ms")
        print(f"campaigns worker memory (RSS, with children): {tenth:.0f} MB at "
              f"{RECIPIENTS // 10:,} sent, {at_pause:.0f} MB at {self.sent_at_pause:,} sent "
              f"({at_pause - tenth:+.0f} MB), peak {peak:.0f} MB")
        print(f"pause: answered in {(self.pause_answered - self.pause_asked) * 1000:.0f} ms; "
              f"last send {(before[-1] - self.pause_asked) * 1000:+.0f} ms from asking; "
              f"{len(after)} sends arrived after it answered")
        print(f"resumed → {self.status} {self.completed - self.resumed:.1f} s later; the fake "
              f"Graph API got {len(times):,} sends for {len(graph.to):,} numbers; "
              f"{twice} numbers sent more than once")

    @property
    def samples_before_pause(self) -> list[tuple[float, int, float]]:
        return [s for s in self.samples if s[0] <= self.pause_asked]


def run_send(app: Flask, graph: CountingGraph, org_id: int, admin_id: int, profile_id: int,
             campaigns_worker: subprocess.Popen) -> Sending:
    """Start the campaign, sample the sends and the worker's memory until PAUSE_SHARE of the
    list is sent, pause as the admin, wait, resume, and wait for it to complete."""
    campaign_id = _start(app, org_id, admin_id, profile_id)
    sending = Sending(campaign_id, time.perf_counter())
    watched = psutil.Process(campaigns_worker.pid)
    target = int(RECIPIENTS * PAUSE_SHARE)
    while len(graph.times) < target:
        _sample(sending, graph, watched)
        time.sleep(0.5)
    _sample(sending, graph, watched)
    sending.pause_asked = time.perf_counter()
    _act(app, org_id, admin_id, campaign_id, "pause")
    sending.pause_answered = time.perf_counter()
    sending.sent_at_pause = len(graph.times)
    time.sleep(5)  # anything still on its way would arrive now
    sending.resumed = time.perf_counter()
    _act(app, org_id, admin_id, campaign_id, "resume")
    while (status := _status(app, org_id, campaign_id)) == "running":
        _sample(sending, graph, watched)
        time.sleep(0.5)
    sending.completed, sending.status = time.perf_counter(), status
    return sending


def _start(app: Flask, org_id: int, admin_id: int, profile_id: int, size: int = RECIPIENTS,
           first: int = 0) -> int:
    """Draft a template campaign to an uploaded list of `size` numbers and start it."""
    from werkzeug.datastructures import FileStorage

    from crm.campaigns import services
    from crm.extensions import db
    from crm.foundation.models import User
    from crm.tenancy import organization_context
    from crm.transaction import commit

    listed = "phone\n" + "\n".join(phone(n) for n in range(first, first + size))
    with app.app_context(), organization_context(org_id):
        admin = db.session.get(User, admin_id)
        campaign = services.create_campaign(admin, {
            "name": "عرض الربيع", "profile_id": profile_id,
            "message": {"template": {"name": "spring_offer", "language": "ar",
                                     "parameters": ["{name}", "20%"]}}})
        db.session.flush()
        services.upload_audience(admin, campaign, FileStorage(
            io.BytesIO(listed.encode()), filename="people.csv"))
        services.start_campaign(admin, campaign)
        campaign_id = campaign.id
        commit()
    return campaign_id


def _act(app: Flask, org_id: int, admin_id: int, campaign_id: int, action: str) -> None:
    """The admin pauses or resumes, as the API's handler does (the commit included)."""
    from crm.campaigns import services
    from crm.extensions import db
    from crm.foundation.models import User
    from crm.tenancy import organization_context
    from crm.transaction import commit

    with app.app_context(), organization_context(org_id):
        getattr(services, f"{action}_campaign")(db.session.get(User, admin_id),
                                                services.access_campaign(campaign_id))
        commit()


def _status(app: Flask, org_id: int, campaign_id: int) -> str:
    from crm.campaigns.models import Campaign
    from crm.extensions import db
    from crm.tenancy import organization_context

    with app.app_context(), organization_context(org_id):
        return db.session.scalar(db.select(Campaign.status).where(Campaign.id == campaign_id))


def _sample(sending: Sending, graph: CountingGraph, watched: psutil.Process) -> None:
    with contextlib.suppress(psutil.NoSuchProcess):
        rss = sum(p.memory_info().rss for p in [watched, *watched.children(recursive=True)])
        sending.samples.append((time.perf_counter(), len(graph.times), rss / 2**20))


# -- 2. the API -------------------------------------------------------------------------------

def run_api(app: Flask, org_id: int, admin_id: int, profile_id: int) -> None:
    """The list, one campaign and its results beside the baseline; the plans they page with."""
    from crm.api.helpers import encode_cursor
    from crm.foundation.models import User
    from crm.tenancy import organization_context

    campaign_id = _finished(app, org_id, admin_id, profile_id)
    _drafts(app, org_id, admin_id, profile_id)
    with app.app_context(), organization_context(org_id):
        from crm.extensions import db

        headers, _session = credentials(db.session.get(User, admin_id))
        middle = _middle_recipient(campaign_id)
    client = app.test_client()
    base = f"/api/campaigns/{campaign_id}"
    deep = encode_cursor(middle)
    recent = (("ix_campaigns_recent", "organization_id"),)
    by_id = (("ix_campaign_recipients_campaign", "campaign_id"),)
    scenarios = [
        Scenario(f"campaigns list ({CAMPAIGNS + 1:,})", "admin", lambda: "/api/campaigns",
                 recent, "campaigns"),
        Scenario("campaigns list, drafts", "admin", lambda: "/api/campaigns?status=draft",
                 recent, "campaigns"),
        Scenario("results, first page", "admin", lambda: f"{base}/results", by_id,
                 "campaign_recipients"),
        Scenario(f"results, {RESULTS // 2:,} down (cursor)", "admin",
                 lambda: f"{base}/results?cursor={deep}",
                 (("ix_campaign_recipients_campaign", "id >"),), "campaign_recipients"),
        Scenario("results, state=sent", "admin", lambda: f"{base}/results?state=sent",
                 (("ix_campaign_recipients_state", "state"),), "campaign_recipients"),
        Scenario(f"results, state=failed (1 in {FAIL_EVERY:,})", "admin",
                 lambda: f"{base}/results?state=failed",
                 (("ix_campaign_recipients_state", "state"),), "campaign_recipients"),
    ]

    def get(scenario: Scenario) -> Callable[[], dict]:
        return lambda: check(client.get(scenario.url(), headers=headers)).json

    baseline_client = baseline_app(app.config["DATABASE_URL"]).test_client()
    results = measure_alternating({
        "bare Flask + 1 indexed SELECT": lambda: check(baseline_client.get("/baseline/1259")),
        "one campaign": lambda: check(client.get(base, headers=headers)),
        **{scenario.name: get(scenario) for scenario in scenarios}}, REQUESTS)
    report(f"campaigns API — {REQUESTS} sequential requests each as the admin (bearer), "
           "in-process WSGI, alternating rounds with the baseline", results[1:], results[0],
           tail=95)
    sql_ms = {s.name: check_plan(app, org_id, get(s), s, True)[0] for s in scenarios}
    print("\nSQL ms (EXPLAIN ANALYZE of the statement that pages through the rows): "
          + "; ".join(f"{name}: {ms:.2f}" for name, ms in sql_ms.items()))


def _finished(app: Flask, org_id: int, admin_id: int, profile_id: int) -> int:
    """A completed campaign of RESULTS recipients, frozen by the service, its states and
    counts written as the send and status paths leave them; its id."""
    import psycopg
    from sqlalchemy import text

    from crm.campaigns import audience
    from crm.campaigns.models import Campaign
    from crm.extensions import db
    from crm.tenancy import organization_context
    from crm.transaction import commit

    campaign_id = _start(app, org_id, admin_id, profile_id, RESULTS, first=5_000_000)
    with app.app_context(), organization_context(org_id):
        campaign = db.session.get(Campaign, campaign_id)
        audience.freeze(campaign)
        db.session.execute(text("""
            UPDATE campaign_recipients SET
              state = CASE WHEN mod(id, :fail) = 0 THEN 'failed'
                           WHEN mod(id, 25) = 1 THEN 'skipped'
                           WHEN mod(id, 10) < 6 THEN 'read'
                           WHEN mod(id, 10) < 8 THEN 'delivered' ELSE 'sent' END,
              error_code = CASE WHEN mod(id, :fail) = 0 THEN '131026'
                                WHEN mod(id, 25) = 1 THEN 'opted_out' END,
              sent_at = now(), attempts = 1, provider_message_id = 'wamid.' || id
            WHERE campaign_id = :campaign"""), {"fail": FAIL_EVERY, "campaign": campaign_id})
        db.session.execute(text("""
            UPDATE campaign_results r SET total = c.total, queued = 0, sent = c.sent,
                   delivered = c.delivered, read = c.read, failed = c.failed,
                   skipped = c.skipped
            FROM (SELECT count(*) AS total,
                         count(*) FILTER (WHERE state IN ('sent', 'delivered', 'read')) AS sent,
                         count(*) FILTER (WHERE state IN ('delivered', 'read')) AS delivered,
                         count(*) FILTER (WHERE state = 'read') AS read,
                         count(*) FILTER (WHERE state = 'failed') AS failed,
                         count(*) FILTER (WHERE state = 'skipped') AS skipped
                  FROM campaign_recipients WHERE campaign_id = :campaign) c
            WHERE r.campaign_id = :campaign"""), {"campaign": campaign_id})
        campaign.status, campaign.frozen_at = "completed", campaign.started_at
        commit()
    with psycopg.connect(owner_dsn(app), autocommit=True) as conn:
        conn.execute("ANALYZE campaign_recipients")  # as autovacuum would, soon
    return campaign_id


def _drafts(app: Flask, org_id: int, admin_id: int, profile_id: int) -> None:
    """CAMPAIGNS drafts beside the sent one, made through the service."""
    from crm.campaigns import services
    from crm.extensions import db
    from crm.foundation.models import User
    from crm.tenancy import organization_context
    from crm.transaction import commit

    with app.app_context(), organization_context(org_id):
        admin = db.session.get(User, admin_id)
        for n in range(CAMPAIGNS):
            services.create_campaign(admin, {"name": f"مسودة {n + 1}", "profile_id": profile_id})
        commit()


def _middle_recipient(campaign_id: int) -> int:
    from crm.campaigns.models import CampaignRecipient
    from crm.extensions import db

    return db.session.scalar(db.select(CampaignRecipient.id)
                             .where(CampaignRecipient.campaign_id == campaign_id)
                             .order_by(CampaignRecipient.id).offset(RESULTS // 2).limit(1))


# -- 3. the preview's search ------------------------------------------------------------------

def run_preview(app: Flask, org_id: int, admin_id: int, profile_id: int) -> None:
    """How long the preview's search answers a keystroke, for a file of PREVIEW_ROWS rows."""
    from statistics import median

    from werkzeug.datastructures import FileStorage

    from crm.campaigns import audience, services
    from crm.customers import services as customers
    from crm.extensions import db
    from crm.foundation.models import User
    from crm.tenancy import organization_context
    from crm.transaction import commit

    lines = [f"{phone(n)},عميل رقم {n}" for n in range(PREVIEW_ROWS)]
    for n in (PREVIEW_ROWS // 3, PREVIEW_ROWS // 2, PREVIEW_ROWS - 1):
        lines[n] = f"{phone(n)},نورة السبيعي"
    with app.app_context(), organization_context(org_id):
        admin = db.session.get(User, admin_id)
        for n in range(0, PREVIEW_ROWS, max(1, PREVIEW_ROWS // 1000)):
            customers.create_customer(admin, {"name": f"زبون {n}", "phone": phone(n)})
        campaign = services.create_campaign(admin, {
            "name": "معاينة", "profile_id": profile_id,
            "message": {"template": {"name": "spring_offer", "language": "ar",
                                     "parameters": ["{name}", "20%"]}}})
        db.session.flush()
        services.upload_audience(admin, campaign, FileStorage(
            io.BytesIO(("phone,name\n" + "\n".join(lines)).encode()), filename="people.csv"))
        campaign_id = campaign.id
        _headers, credential = credentials(admin)
        commit()
    client = app.test_client()
    sign_in(client, credential)
    url = f"/campaigns/{campaign_id}/preview"
    # As the page is used: opened (no search), then searches typed.
    searches = {"no search": "", "a name 3 rows have": "نورة",
                "a number": phone(PREVIEW_ROWS * 2 // 3)[-9:], "a name nobody has": "زززز"}
    print(f"\npreview search — a file of {PREVIEW_ROWS:,} rows, {PREVIEW_TRIES} tries each "
          f"(htmx GET {url}?q=…), load average {os.getloadavg()[0]:.1f}")
    print(f"{'search':24} {'first ms':>9} {'median of the rest ms':>22}")
    for name, term in searches.items():
        times = []
        for _ in range(PREVIEW_TRIES):
            start = time.perf_counter()
            check(client.get(url, query_string={"q": term}, headers={"HX-Request": "true"}))
            times.append((time.perf_counter() - start) * 1000)
        print(f"{name:24} {times[0]:9.1f} {median(times[1:] or times):22.1f}")
    index = next(iter(audience._indexes.values()), None)
    if index is not None:
        size = sum(sys.getsizeof(part) for part in (
            index.rows, *(part for column in (index.phones, index.names, index.folded)
                          for part in (column.text, column.starts))))
        print(f"the file's index: {len(index.rows):,} recipients, {size / 2**20:.1f} MiB")
