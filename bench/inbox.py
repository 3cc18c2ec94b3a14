"""`crm bench inbox`: WhatsApp webhook ingest, then the inbox on a large data set.

1. Ingest: signed Cloud API webhooks (Meta's shape, one new text message each, from 50
   contacts) posted sequentially through the WSGI test client, in alternating rounds with bare
   Flask committing one INSERT of the same body: the webhook verifies and keeps the delivery.
   Then the ingest job applies that backlog in this process with one admin's inbox open (it
   stores each message and, after each commit, the live inbox renders and emits its fragments
   through the Redis message queue; the CRM's reaction is queued as a job). Last, end to end: a
   `crm worker` process applies while deliveries arrive at a steady share of the bare
   ceiling, and each message's time from POST to its broadcast on the Redis channel is taken.
2. Browse: the inbox list, opening a conversation and the search, as users of one of BENCH_ORGS
   organizations sharing BENCH_CONVERSATIONS conversations and BENCH_MESSAGES messages, first on
   a tenth of that (to show the time does not grow with the data); beside them, the page's own
   requests (signed in): a row fetching itself after a change (`conversationChanged-<id>`),
   and the list fragment it spares the page from reloading. The data is generated with
   set-based SQL as the schema owner; the measured requests run as the app role under RLS.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg
from flask import Flask

from bench.common import (
    AR_FIRST,
    AR_LAST,
    EN_FIRST,
    EN_LAST,
    Result,
    Scenario,
    baseline_app,
    bench_app,
    check,
    check_plan,
    create_organizations,
    credentials,
    measure_alternating,
    one_line,
    owner_dsn,
    pick,
    report,
    set_organization,
    sign_in,
    statements_recorded,
    worker_environment,
)

REQUESTS = int(os.environ.get("BENCH_REQUESTS", 1000))
CONVERSATIONS = int(os.environ.get("BENCH_CONVERSATIONS", 100_000))
MESSAGES = int(os.environ.get("BENCH_MESSAGES", 1_000_000))
ORGS = int(os.environ.get("BENCH_ORGS", 100))
WARMUP = 50
CONTACTS = 50  # the warmup opens their conversations; measured messages continue them
APP_SECRET = "bench-platform-app-secret"
PHONE_NUMBER_ID = "106540352242922"
WEBHOOK = "/webhooks/whatsapp"
E2E_REQUESTS = int(os.environ.get("BENCH_E2E_REQUESTS", 1000))
E2E_SHARES = (0.1, 0.25, 0.5)  # arrival rates, as shares of the bare INSERT ceiling
WORKER_STARTUP = 5.0  # seconds for `crm worker` to create its app and listen
LOADERS = os.cpu_count() or 1  # connections generating the data side by side

# Saudi (twice as likely), Emirati, Egyptian and British mobiles: prefix + 8 digits = E.164.
PHONE_PREFIXES = ["+9665", "+9665", "+9715", "+2010", "+4477"]
INBOUND_TEXTS = [
    "السلام عليكم، أبغى أستفسر عن طلبي", "متى يوصل الطلب؟", "شكراً جزيلاً لكم",
    "هل المنتج متوفر باللون الأسود؟", "أرسلت لكم صورة الفاتورة", "كم سعر التوصيل إلى الرياض؟",
    "تم الدفع عن طريق مدى", "أحتاج أغير عنوان التوصيل", "الطلب ما وصلني إلى الآن",
    "ممتاز، بانتظاركم", "هل يوجد فرع في جدة؟", "أبغى أرجع المنتج، وش الطريقة؟",
    "المقاس ما ضبط معي", "وصلني الطلب، الله يعطيكم العافية", "فيه خصم على الكمية؟",
    "Hi, is this still available?", "What time do you open tomorrow?", "Thanks, received!",
    "Can I change my delivery address?", "My order hasn't arrived yet", "Do you ship to Dubai?",
    "I'd like a refund please", "Is there a warranty on this?",
]
OUTBOUND_TEXTS = [
    "أهلاً وسهلاً، كيف أقدر أخدمك؟", "تم شحن طلبك وسيصلك خلال يومين عمل",
    "نعتذر عن التأخير، نتابع الطلب مع شركة الشحن", "تم تحديث العنوان بنجاح",
    "المنتج متوفر، تقدر تطلبه من الرابط", "رسوم التوصيل ٢٥ ريال", "تم استلام طلب الإرجاع",
    "Welcome! How can we help you today?", "Your order has been shipped",
    "We open at 9 am tomorrow", "Your refund has been processed",
]


def run() -> None:
    app = bench_app()
    app.config["WHATSAPP_APP_SECRET"] = APP_SECRET
    # The webhook's answer is measured, not its flood limit.
    app.config["WHATSAPP_WEBHOOK_PER_PROFILE"] = "1000000 per minute"
    baseline_client = baseline_app(app.config["DATABASE_URL"],
                                   app.config["MIGRATION_DATABASE_URL"]).test_client()
    run_ingest(app, baseline_client)
    loader = Loader(app)
    loader.create_organizations(ORGS)
    figures = {}
    for divisor in (10, 1):
        loader.load_inbox(CONVERSATIONS // divisor, MESSAGES // divisor)
        figures[divisor] = run_browse(app, baseline_client, loader, show_plans=divisor == 1)
    print_growth(figures[10], figures[1])


# -- 1. webhook ingest --------------------------------------------------------------------

def run_ingest(app: Flask, baseline_client) -> None:
    """The webhook's answer beside a bare INSERT; the ingest job applying a backlog; then both
    together, a worker process applying while deliveries arrive, from POST to broadcast."""
    with app.app_context():
        org_id, admin_id = _cloud_profile()
    numbers = itertools.count()
    client = app.test_client()

    def post_webhook() -> str:
        """POST the next delivery; its message's WhatsApp id."""
        n = next(numbers)
        body, signature = _delivery(n)
        check(client.post(WEBHOOK, data=body, content_type="application/json",
                          headers={"X-Hub-Signature-256": signature}))
        return _wamid(n)

    bodies = (_delivery(n)[0] for n in itertools.count())

    def post_baseline() -> None:
        check(baseline_client.post("/baseline", data=next(bodies),
                                   content_type="application/json"))

    baseline, accepted = measure_alternating({
        "bare Flask + 1 INSERT (same body)": post_baseline,
        "cloud webhook: verify + keep": post_webhook}, REQUESTS, warmup=WARMUP)
    with statements_recorded(app) as statements:
        post_webhook()
    kept = REQUESTS + WARMUP + 1
    with page_open(app, org_id, admin_id), broadcasts(app) as emits:
        applying = _drain(app)
        emitted = len(emits)
        announced = len({message_id for _time, message_id in emits})
    report(f"inbox ingest — {REQUESTS} signed webhooks, one new text message each, sequential, "
           "in-process WSGI, alternating rounds with the baseline; then the ingest job applying "
           f"and broadcasting the {kept} kept (one admin's inbox open)",
           [accepted, applying], baseline)
    print(f"stored {_count_messages(app, org_id)} of {kept} messages; newMessage emits seen on "
          f"the Redis channel: {emitted} (one per audience), for {announced} messages")
    print(f"SQL statements per webhook: {len(statements)}")
    for statement, _params in statements:
        print(f"  {one_line(statement)[:100]}")
    run_end_to_end(app, post_webhook, baseline, org_id, admin_id)


def _drain(app: Flask) -> Result:
    """Run the ingest job over everything kept (under pyinstrument with BENCH_PROFILE); one
    'latency' per message applied, so that req/s reads as messages applied and broadcast per
    second."""
    from crm.jobs import run_job
    from crm.whatsapp.ingest import DRAIN_JOB

    def drain() -> int:
        return run_job(DRAIN_JOB, None, (), {})

    with app.app_context():
        start = time.perf_counter()
        applied = _profile(drain) if os.environ.get("BENCH_PROFILE") else drain()
        elapsed = time.perf_counter() - start
    return Result("ingest job: apply + broadcast", [elapsed / max(applied, 1)] * applied)


def run_end_to_end(app: Flask, post_webhook: Callable[[], str], baseline: Result,
                   org_id: int, admin_id: int) -> None:
    """A `crm worker` process applies while deliveries arrive at RATES (a share of the bare
    INSERT ceiling): the time from each POST to its message's first newMessage on the Redis
    channel. Each message is found by its id (a message is announced once per audience, and
    the worker need not apply them in the order they came)."""
    with page_open(app, org_id, admin_id), worker_process(app), broadcasts(app) as emits:
        for share in E2E_SHARES:
            rate = baseline.rps * share
            sent: dict[str, float] = {}
            start = time.perf_counter()
            for i in range(E2E_REQUESTS):
                time.sleep(max(0.0, start + i / rate - time.perf_counter()))
                posted = time.perf_counter()
                sent[post_webhook()] = posted
            ids = _message_ids(app, org_id, list(sent))
            deadline = time.perf_counter() + 120
            while (len(_first_heard(emits, ids.values())) < len(ids)
                   and time.perf_counter() < deadline):
                time.sleep(0.05)
            heard = _first_heard(emits, ids.values())
            latencies = sorted(heard[ids[wamid]] - posted for wamid, posted in sent.items()
                               if ids.get(wamid) in heard)
            span = (max(heard.values()) - start) if heard else float("inf")
            print(f"end to end at {rate:.0f} deliveries/s ({share:.0%} of the bare INSERT "
                  f"ceiling): {len(heard)}/{E2E_REQUESTS} broadcast, "
                  f"{len(heard) / span:.0f} messages/s, POST → broadcast p50 "
                  f"{_ms(latencies, 50)} ms, p99 {_ms(latencies, 99)} ms")


def _message_ids(app: Flask, org_id: int, wamids: list[str], wait: float = 120
                 ) -> dict[str, int]:
    """The stored id of each message `wamids` names, waiting for the worker to store them."""
    from sqlalchemy import select

    from crm.extensions import db
    from crm.tenancy import organization_context
    from crm.whatsapp.models import Message

    deadline = time.perf_counter() + wait
    with app.app_context(), organization_context(org_id):
        while True:
            found = dict(db.session.execute(
                select(Message.provider_message_id, Message.id)
                .where(Message.provider_message_id.in_(wamids))).all())
            db.session.rollback()
            if len(found) == len(wamids) or time.perf_counter() > deadline:
                return found
            time.sleep(0.05)


def _first_heard(emits: list[tuple[float, int]], message_ids) -> dict[int, float]:
    """When each of `message_ids` was first announced."""
    wanted, first = set(message_ids), {}
    for moment, message_id in list(emits):
        if message_id in wanted and message_id not in first:
            first[message_id] = moment
    return first


def _ms(latencies: list[float], p: float) -> str:
    if not latencies:
        return "n/a"
    return f"{latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] * 1000:.1f}"


@contextmanager
def page_open(app: Flask, org_id: int, user_id: int) -> Iterator[None]:
    """The user's inbox open in a browser, as far as presence goes: the rooms its socket would
    join, recorded as the connect handler records them (no socket: there is no web server)."""
    from flask_login import login_user

    from crm import realtime
    from crm.foundation.models import User
    from crm.tenancy import get_in_organization, organization_context

    with app.test_request_context(), organization_context(org_id):
        user = get_in_organization(User, user_id)
        login_user(user)
        rooms = realtime.rooms_for(user)
        realtime.arrive(user.organization_id, user.id, "bench-socket", rooms)
    try:
        yield
    finally:
        with app.app_context():
            realtime.leave("bench-socket")


@contextmanager
def worker_process(app: Flask) -> Iterator[None]:
    """`crm worker` on the benchmark's database and Redis, stopped afterwards."""
    process = subprocess.Popen([sys.executable, "-m", "crm", "worker"],
                               env=worker_environment(app), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    time.sleep(WORKER_STARTUP)
    try:
        yield
    finally:
        process.terminate()
        process.wait(30)


@contextmanager
def broadcasts(app: Flask) -> Iterator[list[tuple[float, int]]]:
    """When each newMessage emit is published on the Redis channel (by any process), with the
    message it announces: (time, message id)."""
    from crm.realtime import message_channel

    times: list[tuple[float, int]] = []

    def heard(message: dict) -> None:
        moment, emitted = time.perf_counter(), json.loads(message["data"])
        if emitted.get("method") == "emit" and emitted.get("event") == "newMessage":
            times.append((moment, emitted["data"][0]["message_id"]))

    pubsub = app.extensions["crm.redis"].pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(**{message_channel(app.config["REDIS_URL"]): heard})
    thread = pubsub.run_in_thread(sleep_time=0.001, daemon=True)
    try:
        yield times
    finally:
        time.sleep(0.2)  # let the last publishes arrive
        thread.stop()
        thread.join(1)
        pubsub.close()


def _cloud_profile() -> tuple[int, int]:
    """An organization with a Cloud API number on the platform's Meta app; its and its admin's
    ids."""
    from crm.crypto import encrypt
    from crm.extensions import db
    from crm.foundation import services as foundation
    from crm.models import utcnow
    from crm.tenancy import organization_context
    from crm.transaction import commit
    from crm.whatsapp import profiles
    from crm.whatsapp.models import WhatsAppProfile

    registration = foundation.register_organization("متجر وصل", "مدير المتجر",
                                                    "ingest@wasl.example", "bench-password")
    org_id, admin_id = registration.organization.id, registration.user.id
    commit()
    with organization_context(org_id):
        # Written as proven (no Graph API here): what create_profile leaves once Graph
        # answered for the number, and Meta's handshake has reached its webhook.
        db.session.add(WhatsAppProfile(
            display_name="خدمة العملاء", provider="cloud", state="connected",
            phone_number_id=PHONE_NUMBER_ID, verify_token=profiles.new_verify_token(),
            secrets=encrypt({"access_token": "bench-token", "app_secret": APP_SECRET}),
            verified_at=utcnow(), webhook_verified_at=utcnow(), connected_at=utcnow()))
        commit()
    return org_id, admin_id


def _contact(n: int) -> tuple[int, str]:
    """Who sends the n-th delivery: one of CONTACTS, and their WhatsApp id."""
    contact = (n * 7) % CONTACTS
    return contact, f"9665{(contact * 7919) % 10**8:08d}"


def _wamid(n: int) -> str:
    """The WhatsApp id of the n-th delivery's message."""
    return f"wamid.HBgM{_contact(n)[1]}FQIAEhgUM0E{n:016X}AA=="


def _delivery(n: int) -> tuple[bytes, str]:
    """Meta's webhook body for one inbound text message, and its X-Hub-Signature-256."""
    contact, wa_id = _contact(n)
    name = f"{AR_FIRST[contact % len(AR_FIRST)]} {AR_LAST[contact % len(AR_LAST)]}"
    message = {"from": wa_id, "id": _wamid(n),
               "timestamp": str(1_764_000_000 + n), "type": "text",
               "text": {"body": INBOUND_TEXTS[n % len(INBOUND_TEXTS)]}}
    value = {"messaging_product": "whatsapp",
             "metadata": {"display_phone_number": "966920001234",
                          "phone_number_id": PHONE_NUMBER_ID},
             "contacts": [{"profile": {"name": name}, "wa_id": wa_id}], "messages": [message]}
    body = json.dumps({"object": "whatsapp_business_account",
                       "entry": [{"id": "102290129340398",
                                  "changes": [{"value": value, "field": "messages"}]}]},
                      ensure_ascii=False).encode()
    digest = hmac.new(APP_SECRET.encode(), body, hashlib.sha256).hexdigest()
    return body, f"sha256={digest}"


def _count_messages(app: Flask, org_id: int) -> int:
    from sqlalchemy import func, select

    from crm.extensions import db
    from crm.tenancy import organization_context
    from crm.whatsapp.models import Message

    with app.app_context(), organization_context(org_id):
        return db.session.scalar(select(func.count(Message.id)))


def _profile(call: Callable[[], int]) -> int:
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.0005)
    with profiler:
        result = call()
    print(profiler.output_text(color=False, show_all=False, short_mode=True))
    return result


# -- 2. the inbox on a large data set --------------------------------------------------------

# Each organization's Cloud API number (create_organizations makes the team).
PROFILE_SQL = """INSERT INTO whatsapp_profiles (organization_id, display_name, provider, state,
                                   phone_number, phone_number_id, verify_token, verified_at,
                                   webhook_verified_at)
VALUES (%(org)s, 'خدمة العملاء', 'cloud', 'connected',
        '+9669200' || lpad(%(org)s::text, 5, '0'), 'bench-' || %(org)s, md5('verify' || %(org)s),
        now(), now())
RETURNING id"""

CONVERSATIONS_SQL = """
WITH agents AS (SELECT array_agg(id ORDER BY id) AS ids FROM users
                WHERE organization_id = %(org)s AND role = 'agent'),
     s AS (SELECT g, random() AS r_status, random() AS r_assign, random() AS r_name
           FROM generate_series(1, %(n)s) g)
INSERT INTO conversations (organization_id, profile_id, contact_phone, contact_name, status,
                           assigned_user_id, created_at)
SELECT %(org)s, %(profile)s,
       {prefix} || lpad(mod(g * 7919, 100000000)::text, 8, '0'),
       CASE WHEN r_name < 0.75 THEN {ar_name} ELSE {en_name} END,
       CASE WHEN r_status < 0.6 THEN 'open' WHEN r_status < 0.8 THEN 'pending' ELSE 'resolved' END,
       CASE WHEN r_assign < 0.4 THEN NULL
            ELSE ids[1 + floor((r_assign - 0.4) / 0.6 * cardinality(ids))::int] END,
       now() - interval '120 days'
FROM s, agents
""".format(prefix=pick("prefixes", "mod(g, 5) / 5.0"),
           ar_name=pick("ar_first") + " || ' ' || " + pick("ar_last"),
           en_name=pick("en_first") + " || ' ' || " + pick("en_last"))

# Every conversation gets one message, the rest go to conversations with a skew (some threads
# run to hundreds of messages); ids ascend with time, as they do in production.
MESSAGES_SQL = """
WITH c AS (SELECT id, assigned_user_id, row_number() OVER (ORDER BY id) - 1 AS idx
           FROM conversations WHERE organization_id = %(org)s),
     admin AS (SELECT min(id) AS id FROM users WHERE organization_id = %(org)s),
     s AS (SELECT i, random() AS r_dir, random() AS r_type,
                  CASE WHEN i <= %(n)s THEN i - 1
                       ELSE floor(%(n)s * power(random(), 2))::int END AS idx
           FROM generate_series(1, %(m)s) i)
INSERT INTO messages (organization_id, conversation_id, profile_id, direction, type, body,
                      content, provider_message_id, status, sender_user_id, sent_at,
                      created_at)
SELECT %(org)s, c.id, %(profile)s, dir, type,
       CASE WHEN type = 'image' THEN ''
            WHEN dir = 'in' THEN {inbound} ||
                 CASE WHEN random() < 0.15 THEN ' #' || (10000 + floor(random() * 90000))::int
                      ELSE '' END
            ELSE {outbound} END,
       CASE WHEN type = 'image' THEN jsonb_build_object('media_id', md5(i::text),
                                                        'mime_type', 'image/jpeg')
            ELSE '{{}}'::jsonb END,
       'wamid.' || md5(%(org)s || ':' || i), CASE dir WHEN 'in' THEN 'received' ELSE 'read' END,
       CASE dir WHEN 'out' THEN coalesce(c.assigned_user_id, admin.id) END,
       CASE dir WHEN 'out' THEN at END, at
FROM (SELECT s.*, CASE WHEN r_dir < 0.55 THEN 'in' ELSE 'out' END AS dir,
             CASE WHEN r_type < 0.05 THEN 'image' ELSE 'text' END AS type,
             now() - (%(m)s - i) * interval '3 minutes' AS at
      FROM s) s
JOIN c USING (idx), admin
ORDER BY i
""".format(inbound=pick("inbound"), outbound=pick("outbound"))

SUMMARY_SQL = """
UPDATE conversations c
SET last_message_at = m.at,
    last_message_preview = left(CASE WHEN m.body <> '' THEN m.body ELSE '[' || m.type || ']' END,
                                200),
    last_inbound_at = m.last_inbound_at,
    unread_count = CASE WHEN c.status = 'open' AND m.direction = 'in' THEN 1 + mod(c.id, 3)
                        ELSE 0 END
FROM (SELECT DISTINCT ON (conversation_id) conversation_id, created_at AS at, body, type,
             direction, max(created_at) FILTER (WHERE direction = 'in')
                 OVER (PARTITION BY conversation_id) AS last_inbound_at
      FROM messages WHERE organization_id = %(org)s
      ORDER BY conversation_id, id DESC) m
WHERE c.organization_id = %(org)s AND c.id = m.conversation_id
"""


class Loader:
    """Bulk data as the schema owner. RLS is FORCEd even for the owner, so each organization's
    rows are written in a transaction set to that organization, as production imports are."""

    def __init__(self, app: Flask) -> None:
        self.dsn = owner_dsn(app)
        self.org_ids: list[int] = []
        self.profiles: dict[int, int] = {}
        self.loaded = ""

    def create_organizations(self, count: int) -> None:
        with psycopg.connect(self.dsn) as conn:
            for org in create_organizations(conn, count):
                self.profiles[org] = conn.execute(PROFILE_SQL, {"org": org}).fetchone()[0]
                self.org_ids.append(org)

    def load_inbox(self, conversations: int, messages: int) -> None:
        """Replace every conversation and message with `conversations` and `messages` spread
        evenly over the organizations, then VACUUM ANALYZE (as autovacuum would)."""
        per_org = max(1, conversations // len(self.org_ids))
        messages_per_org = max(per_org, messages // len(self.org_ids))
        start = time.perf_counter()
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            # The counters go too: their triggers see rows, not a TRUNCATE. CASCADE: what
            # refers to messages (a campaign's recipients) has nothing to refer to.
            conn.execute("TRUNCATE messages, conversations, inbox_counts CASCADE")
        # One connection per core, each loading its share of the organizations.
        shares = [self.org_ids[n::LOADERS] for n in range(LOADERS)]
        with ThreadPoolExecutor(LOADERS) as pool:
            list(pool.map(lambda orgs: self._load_organizations(orgs, per_org, messages_per_org),
                          shares))  # list(): a share that failed raises here
        loaded = time.perf_counter()
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE conversations, messages")
        total = len(self.org_ids)
        self.loaded = (f"{per_org * total:,} conversations, {messages_per_org * total:,} messages, "
                       f"{total} organizations")
        print(f"\ngenerated {self.loaded} in {loaded - start:.1f} s "
              f"(+ VACUUM ANALYZE {time.perf_counter() - loaded:.1f} s)")

    def _load_organizations(self, org_ids: list[int], conversations: int,
                            messages: int) -> None:
        with psycopg.connect(self.dsn) as conn:
            # Trigram GIN entries gather in the pending list and are merged in big batches.
            conn.execute("SET gin_pending_list_limit = '64MB'")
            conn.execute("SELECT setseed(0.42)")
            for org in org_ids:
                set_organization(conn, org)
                params = {"org": org, "profile": self.profiles[org], "n": conversations,
                          "m": messages, "prefixes": PHONE_PREFIXES, "ar_first": AR_FIRST,
                          "ar_last": AR_LAST, "en_first": EN_FIRST, "en_last": EN_LAST,
                          "inbound": INBOUND_TEXTS, "outbound": OUTBOUND_TEXTS}
                for statement in (CONVERSATIONS_SQL, MESSAGES_SQL, SUMMARY_SQL):
                    conn.execute(statement, params)


@dataclass
class Figures:
    result: Result
    plan_ms: float  # execution time of the main statement (EXPLAIN ANALYZE)
    buffers: int  # pages it touched: what grows if the time grows with the data


def run_browse(app: Flask, baseline_client, loader: Loader, show_plans: bool
               ) -> dict[str, Figures]:
    """Measure each inbox scenario through the JSON API as a user of one organization, in
    alternating rounds; check the plan of its main statement."""
    org = loader.org_ids[len(loader.org_ids) // 2]
    with app.app_context():
        tenant = _tenant(org)
    headers = tenant.headers
    thread_ids = itertools.cycle(tenant.conversation_ids)
    api = "/api/whatsapp/conversations"
    scenarios = [
        Scenario("inbox list, all (admin)", "admin", lambda: f"{api}?scope=all",
                 (("ix_conversations_recent", "organization_id"),), "conversations"),
        Scenario("inbox list, mine (agent)", "agent", lambda: f"{api}?scope=mine",
                 (("ix_conversations_assignee_recent", "assigned_user_id"),), "conversations"),
        Scenario("open a conversation (its messages)", "admin",
                 lambda: f"{api}/{next(thread_ids)}/messages",
                 (("ix_messages_thread", "conversation_id"),), "messages"),
        Scenario("search a name: «فاطم»", "admin", lambda: f"{api}?search=فاطم",
                 (("ix_conversations_search_name", "~~"), ("ix_messages_search_body", "~~")),
                 "conversations"),
        Scenario("search a phone: «50123»", "admin", lambda: f"{api}?search=50123",
                 (("ix_conversations_search_phone", "~~"), ("ix_messages_search_body", "~~")),
                 "conversations"),
    ]
    client = app.test_client()

    def get(scenario: Scenario) -> Callable[[], dict]:
        return lambda: check(client.get(scenario.url(), headers=headers[scenario.role])).json

    pages = _page_requests(app, tenant)
    results = measure_alternating({
        "bare Flask + 1 indexed SELECT": lambda: check(baseline_client.get("/baseline/1259")),
        **{scenario.name: get(scenario) for scenario in scenarios}, **pages}, REQUESTS)
    report(f"inbox browse — {loader.loaded}; {REQUESTS} sequential requests each "
           "(in-process WSGI) as one organization's users, alternating rounds: the JSON API "
           "(bearer), then the page's htmx requests (signed in)", results[1:], results[0],
           tail=95)
    for name, call in pages.items():
        with statements_recorded(app) as statements:
            call()
        print(f"\nSQL statements of «{name}»: {len(statements)}")
        for statement, _params in statements:
            print(f"  {one_line(statement)[:100]}")
    return {scenario.name: Figures(result, *check_plan(app, org, get(scenario), scenario,
                                                       show_plans))
            for scenario, result in zip(scenarios, results[1:len(scenarios) + 1], strict=True)}


def _page_requests(app: Flask, tenant: Tenant) -> dict[str, Callable[[], object]]:
    """The inbox page's own htmx requests, each user signed in on a client of their own: a row
    asking for itself (the conversations on the user's list, at random), and the list fragment
    that would otherwise be reloaded."""
    clients = {}
    for role, session in tenant.sessions.items():
        clients[role] = app.test_client()
        sign_in(clients[role], session)
    rows = {role: itertools.cycle(ids) for role, ids in tenant.row_ids.items()}
    htmx = {"HX-Request": "true"}

    def row(role: str) -> Callable[[], object]:
        return lambda: check(clients[role].get(
            f"/inbox/conversations/{next(rows[role])}/row", headers=htmx))

    return {"a row fetches itself (admin)": row("admin"),
            "a row fetches itself (agent)": row("agent"),
            "list fragment, mine (agent, htmx)":
                lambda: check(clients["agent"].get("/inbox?scope=mine", headers=htmx))}


@dataclass
class Tenant:
    headers: dict[str, dict]  # role -> bearer header
    sessions: dict[str, str]  # role -> login session credential
    conversation_ids: list[int]  # to open
    row_ids: dict[str, list[int]]  # role -> conversations on that user's list


def _tenant(org: int) -> Tenant:
    """Credentials of the organization's admin and first agent, 500 of its conversations at
    random to open, and 500 on each user's list (the agent's own) for their rows."""
    from sqlalchemy import func, select

    from crm.extensions import db
    from crm.foundation.models import User
    from crm.tenancy import organization_context
    from crm.whatsapp.models import Conversation

    def sample(*conditions) -> list[int]:
        return list(db.session.scalars(select(Conversation.id).where(*conditions)
                                       .order_by(func.random()).limit(500)))

    with organization_context(org):
        users = {role: db.session.scalar(select(User).where(User.role == role)
                                         .order_by(User.id).limit(1))
                 for role in ("admin", "agent")}
        ids = sample()
        row_ids = {"admin": ids, "agent": sample(Conversation.assigned_user_id
                                                 == users["agent"].id)}
        # Inside the organization: each credential's commit expires the other user, whom
        # only the organization's context may read again.
        issued = {role: credentials(user) for role, user in users.items()}
    return Tenant({role: header for role, (header, _s) in issued.items()},
                  {role: session for role, (_h, session) in issued.items()}, ids, row_ids)


def print_growth(small: dict[str, Figures], big: dict[str, Figures]) -> None:
    print("\ndoes the time grow with the data? (the smaller set, then 10x the data)")
    print(f"{'scenario':38} {'p50 ms':>13} {'p95 ms':>13} {'SQL ms':>13} {'pages':>13}")
    for name, after in big.items():
        before = small[name]
        cells = [(before.result.pct(50), after.result.pct(50)),
                 (before.result.pct(95), after.result.pct(95)),
                 (before.plan_ms, after.plan_ms)]
        print(f"{name:38} " + " ".join(f"{a:6.2f}→{b:6.2f}" for a, b in cells)
              + f" {before.buffers:6d}→{after.buffers:<6d}")
    print("(SQL ms and pages: EXPLAIN (ANALYZE, BUFFERS) of the statement that pages through "
          "the rows)")
