"""`crm bench customers`: the customer list, search and board on a million customers, and a
CSV import run by a worker process.

1. Data: BENCH_CUSTOMERS customers (1,000,000) across BENCH_ORGS organizations (100), made with
   set-based SQL as the schema owner. The board's organization holds BENCH_BOARD (10,000); the
   others share the rest unevenly, the k-th largest 1/k of it, as tenants of a SaaS do, so the
   list and the search are measured in the largest one (the worst case).
2. Browse: GET /api/crm/customers (bearer, JSON) newest first, deep in the list, by name and
   by last contact, filtered by stage, by a common and a rare tag, searched by a common
   fragment as typed (first page, deep, by score, by name), an Arabic name written with
   another letter variant, a phone number written differently and an email fragment; then the
   pipeline board (session, HTML), one column page, and the board of the largest organization.
   Alternating rounds beside bare Flask + one SELECT; EXPLAIN (ANALYZE, BUFFERS) of the
   statement each request pages with (and of the search function it calls, if any), checked
   against the indexes it needs.
3. Import: a BENCH_IMPORT_ROWS-row CSV (100,000; UTF-8 with BOM, Arabic header and names, phone
   numbers in every written form, duplicates, invalid and blank rows) started through the
   services and run by `crm worker --burst` in a process of its own, whose wall time and peak
   memory (with any children) are measured.
"""

from __future__ import annotations

import contextlib
import csv
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil
import psycopg
from flask import Flask

from bench.common import (
    AR_FIRST,
    AR_LAST,
    EN_FIRST,
    EN_LAST,
    Scenario,
    baseline_app,
    bench_app,
    check,
    check_plan,
    create_organizations,
    credentials,
    measure_alternating,
    owner_dsn,
    pick,
    report,
    set_organization,
    sign_in,
    worker_environment,
)

REQUESTS = int(os.environ.get("BENCH_REQUESTS", 300))
CUSTOMERS = int(os.environ.get("BENCH_CUSTOMERS", 1_000_000))
ORGS = int(os.environ.get("BENCH_ORGS", 100))
BOARD = int(os.environ.get("BENCH_BOARD", 10_000))
IMPORT_ROWS = int(os.environ.get("BENCH_IMPORT_ROWS", 100_000))
ROOT = Path(__file__).resolve().parents[1]
API = "/api/crm/customers"
FLOOR_CALLER = "the caller alone (GET /api/users/me)"
FLOOR_ONE = "one customer by id (app's 1 SELECT)"

# How the names of AR_FIRST / AR_LAST are spelled in e-mail addresses.
LATIN = {
    "محمد": "mohammed", "أحمد": "ahmed", "عبدالله": "abdullah", "عبدالرحمن": "abdulrahman",
    "خالد": "khalid", "فهد": "fahad", "سعود": "saud", "عمر": "omar", "علي": "ali",
    "يوسف": "yousef", "إبراهيم": "ibrahim", "ناصر": "nasser", "سلطان": "sultan",
    "تركي": "turki", "فيصل": "faisal", "فاطمة": "fatima", "عائشة": "aisha", "نورة": "noura",
    "سارة": "sara", "مريم": "maryam", "ريم": "reem", "هيا": "haya", "لطيفة": "latifa",
    "منى": "mona", "هند": "hind", "جواهر": "jawaher", "أمل": "amal", "دانة": "dana",
    "لمى": "lama", "رهف": "rahaf", "العتيبي": "alotaibi", "القحطاني": "alqahtani",
    "الشمري": "alshammari", "الدوسري": "aldosari", "الحربي": "alharbi", "المطيري": "almutairi",
    "الغامدي": "alghamdi", "الزهراني": "alzahrani", "السبيعي": "alsubaie", "العنزي": "alanazi",
    "الشهري": "alshehri", "البلوي": "albalawi", "المالكي": "almalki", "السلمي": "alsulami",
    "الرشيدي": "alrashidi", "عبدالعزيز": "abdulaziz", "حسن": "hassan", "إسماعيل": "ismail",
    "منصور": "mansour", "الخطيب": "alkhatib",
}
# Saudi (+966 5X) and Egyptian (+20 1X) mobiles; each prefix takes 7 more digits.
PHONE_PREFIXES = ["+96650", "+96654", "+96655", "+96656", "+96650", "+20100", "+20122"]
DOMAINS = ["gmail.com", "hotmail.com", "outlook.sa", "yahoo.com", "icloud.com", "stc.com.sa"]
COMPANIES = ["مؤسسة النور التجارية", "شركة الأفق للتقنية", "متجر الورد", "مطاعم البيت الشامي",
             "شركة الرواد", "مكتبة جرير", "Acme Trading", "Gulf Logistics", "Cairo Textiles",
             "Red Sea Foods"]
TAGS = ["جملة", "تجزئة", "رمضان", "معرض الرياض", "b2b", "newsletter", "متجر إلكتروني"]
RARE_TAG = "شريك"  # on 0.2 % of customers: the tag filter must use its GIN index
NOTES = ["يفضل التواصل مساءً", "طلب عرض سعر للكميات", "عميل من معرض الرياض",
         "Prefers e-mail", "Asked for a demo next week"]

# One organization's customers over the last two years. Ids interleave the organizations as
# they do in production, where every tenant writes all the time: customer g of n takes the
# slot g/n of the way along a timeline of `span` slots, and the id slot * orgs + k + 1.
# 20 % of the Arabic names are written without hamza or with ه for ة, as people type them.
CUSTOMERS_SQL = """
WITH team AS (SELECT array_agg(id ORDER BY id) AS ids FROM users
              WHERE organization_id = %(org)s),
     pipeline AS (SELECT array_agg(id ORDER BY position) AS ids FROM sales_stages
                  WHERE organization_id = %(org)s),
     s AS (SELECT g, floor((g - 1)::numeric * %(span)s / %(n)s)::bigint AS slot,
                  random() AS r_first, random() AS r_last,
                  random() AS r_kind, random() AS r_phone, random() AS r_email,
                  random() AS r_owner, power(random(), 1.6) AS r_stage, random() AS r_tags,
                  random() AS r_source, random() AS r_contact
           FROM generate_series(1, %(n)s) g),
     p AS (SELECT s.*, {ar_name} AS ar_name, {latin} AS latin, {en_name} AS en_name,
                  now() - (1 - slot::float / %(span)s) * interval '730 days' AS created
           FROM s),
     q AS (SELECT p.*,
                  CASE WHEN r_contact < 0.6
                       THEN now() - (r_contact / 0.6) * (now() - created) END AS contacted
           FROM p),
     r AS (SELECT q.*, r_contact < 0.05 AS replied,
                  least(30, 5 * floor(extract(epoch FROM now() - coalesce(contacted, created))
                                      / 86400 / 7))::int AS decay,
                  floor(extract(epoch FROM now() - coalesce(contacted, created))
                        / 86400)::int AS idle
           FROM q)
INSERT INTO customers (id, organization_id, name, phone, email, company, owner_id, stage_id,
                       board_position, tags, source, notes, score, score_breakdown,
                       last_contacted_at, created_at, updated_at)
SELECT slot * %(orgs)s + %(k)s + 1, %(org)s,
       CASE WHEN r_kind < 0.15 THEN translate(ar_name, 'أإآة', 'اااه')
            WHEN r_kind < 0.75 THEN ar_name ELSE en_name END,
       CASE WHEN r_phone < 0.9
            THEN {prefix} || lpad(mod(g::bigint * 7919, 10000000)::text, 7, '0') END,
       CASE WHEN r_email < 0.7
            THEN CASE WHEN r_kind < 0.75 THEN latin ELSE lower(replace(en_name, ' ', '.')) END
                 || g || '@' || {domain} END,
       CASE WHEN random() < 0.35 THEN {company} ELSE '' END,
       CASE WHEN r_owner < 0.8
            THEN team.ids[1 + floor(r_owner / 0.8 * cardinality(team.ids))::int] END,
       pipeline.ids[1 + floor(r_stage * cardinality(pipeline.ids))::int],
       (%(span)s - slot) * 1024.0,
       CASE WHEN r_tags < 0.002 THEN ARRAY[%(rare_tag)s]
            WHEN r_tags < 0.05 THEN ARRAY['vip', {tag}]
            WHEN r_tags < 0.45 THEN ARRAY[{tag}] ELSE '{{}}'::text[] END,
       CASE WHEN r_source < 0.4 THEN 'manual' WHEN r_source < 0.75 THEN 'whatsapp'
            WHEN r_source < 0.95 THEN 'import' ELSE 'api' END,
       CASE WHEN random() < 0.1 THEN {note} ELSE '' END,
       greatest(0, CASE WHEN replied THEN 20 ELSE 0 END - decay),
       CASE WHEN replied THEN jsonb_build_array(jsonb_build_object(
                'points', 20, 'reason', 'replied_recently', 'detail', '{{"days": 7}}'::jsonb))
            ELSE '[]'::jsonb END
       || CASE WHEN decay > 0 THEN jsonb_build_array(jsonb_build_object(
                'points', -decay, 'reason', 'decay', 'detail', jsonb_build_object(
                    'every_days', 7, 'max', 30, 'days', idle)))
               ELSE '[]'::jsonb END,
       contacted, created, created
FROM r, team, pipeline
""".format(ar_name=pick("ar_first", "r_first") + " || ' ' || " + pick("ar_last", "r_last"),
           latin=pick("latin_first", "r_first") + " || '.' || " + pick("latin_last", "r_last"),
           en_name=pick("en_first", "r_first") + " || ' ' || " + pick("en_last", "r_last"),
           prefix=pick("prefixes", "r_phone / 0.9"), domain=pick("domains"),
           company=pick("companies"), tag=pick("tags"), note=pick("notes"))


def run() -> None:
    app = bench_app()
    data = load(app)
    baseline_client = baseline_app(app.config["DATABASE_URL"]).test_client()
    run_browse(app, baseline_client, data)
    run_import(app, data.largest)


# -- 1. data ------------------------------------------------------------------------------------

@dataclass
class Dataset:
    sizes: dict[int, int]  # organization → its customers
    board: int  # the organization whose board is measured
    largest: int  # the organization whose list and search are measured

    def describe(self, org: int) -> str:
        return f"{self.sizes[org]:,} of {sum(self.sizes.values()):,} customers"


def organization_sizes(total: int, count: int, board: int) -> list[int]:
    """The board's organization first, then the others sharing the rest, the k-th 1/k of it."""
    if count == 1:
        return [total]
    board = min(board, total // 2)
    weights = [1 / k for k in range(1, count)]
    return [board, *(max(1, round((total - board) * w / sum(weights))) for w in weights)]


def load(app: Flask) -> Dataset:
    """Organizations with their team and default pipeline, then their customers; VACUUM
    ANALYZE (as autovacuum would after a load)."""
    from crm.customers import services
    from crm.tenancy import organization_context
    from crm.transaction import commit

    sizes = organization_sizes(CUSTOMERS, ORGS, BOARD)
    start = time.perf_counter()
    with psycopg.connect(owner_dsn(app)) as conn:
        org_ids = list(create_organizations(conn, len(sizes)))
    with app.app_context():
        for org in org_ids:
            with organization_context(org):
                services.ensure_default_stages()
                commit()
    with psycopg.connect(owner_dsn(app)) as conn:
        # Trigram GIN entries gather in the pending list and are merged in big batches.
        conn.execute("SET gin_pending_list_limit = '64MB'")
        conn.execute("SET maintenance_work_mem = '256MB'")
        conn.execute("SELECT setseed(0.42)")
        for k, (org, size) in enumerate(zip(org_ids, sizes, strict=True)):
            set_organization(conn, org)
            conn.execute(CUSTOMERS_SQL, {
                "org": org, "n": size, "k": k, "orgs": len(sizes), "span": max(sizes),
                "ar_first": AR_FIRST, "ar_last": AR_LAST,
                "latin_first": [LATIN[name] for name in AR_FIRST],
                "latin_last": [LATIN[name] for name in AR_LAST], "en_first": EN_FIRST,
                "en_last": EN_LAST, "prefixes": PHONE_PREFIXES, "domains": DOMAINS,
                "companies": COMPANIES, "tags": TAGS, "rare_tag": RARE_TAG, "notes": NOTES})
        conn.execute("SELECT setval(pg_get_serial_sequence('customers', 'id'), %s)",
                     (max(sizes) * len(sizes),))
    loaded = time.perf_counter()
    with psycopg.connect(owner_dsn(app), autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE customers")
        size = conn.execute("SELECT pg_size_pretty(pg_total_relation_size('customers'))"
                            ).fetchone()[0]
    print(f"\ngenerated {sum(sizes):,} customers in {len(sizes)} organizations (the board's: "
          f"{sizes[0]:,}, the largest: {max(sizes):,}, the smallest: {min(sizes):,}) in "
          f"{loaded - start:.1f} s (+ VACUUM ANALYZE {time.perf_counter() - loaded:.1f} s); "
          f"table and indexes: {size}")
    by_org = dict(zip(org_ids, sizes, strict=True))
    return Dataset(by_org, org_ids[0], max(by_org, key=by_org.get))


# -- 2. list, search, board ------------------------------------------------------------------

@dataclass
class Tenant:
    """What the requests of one organization's admin need."""

    headers: dict[str, str]  # bearer token
    admin_id: int
    session_id: str  # what the login session holds
    stages: dict[str, int]  # English stage name → id


def _tenant(org: int) -> Tenant:
    from sqlalchemy import select

    from crm.customers import services
    from crm.extensions import db
    from crm.foundation.models import User
    from crm.tenancy import organization_context

    with organization_context(org):
        admin = db.session.scalar(select(User).where(User.role == "admin").limit(1))
        stages = {stage.name_en: stage.id for stage in services.list_stages()}
        admin_id = admin.id
    headers, session_id = credentials(admin)
    return Tenant(headers, admin_id, session_id, stages)


def _deep_cursor(client, headers: dict[str, str], pages: int, query: str = "") -> str:
    """The cursor `pages` pages of 200 down the list (with `query`'s filters), newest first."""
    cursor = None
    for _page in range(pages):
        answer = check(client.get(f"{API}?limit=200{query}"
                                  + (f"&cursor={cursor}" if cursor else ""),
                                  headers=headers)).json
        cursor = answer["next_cursor"]
    return cursor


def _board_cursor(org: int, stage_id: int) -> str:
    """The cursor of the second page of a board column."""
    from crm.customers import services
    from crm.customers.live import BOARD_PAGE
    from crm.tenancy import organization_context

    with organization_context(org):
        return services.board_column(stage_id, limit=BOARD_PAGE)[1]


@dataclass
class Probe:
    scenario: Scenario
    call: Callable[[], object]
    org: int  # the organization whose plan is checked


def run_browse(app: Flask, baseline_client, data: Dataset) -> None:
    """Measure the list, search and board requests in alternating rounds beside the baseline;
    check the plan of the statement each pages with."""
    api_client = app.test_client()
    page_clients = {org: app.test_client() for org in (data.board, data.largest)}
    with app.app_context():
        tenant, board = _tenant(data.largest), _tenant(data.board)
        column = board.stages["New lead"]
        after = _board_cursor(data.board, column)
    sign_in(page_clients[data.board], board.session_id)
    sign_in(page_clients[data.largest], tenant.session_id)
    pages = [check(page_clients[data.board].get(f"/customers/board/{column}{query}",
                                                  headers={"HX-Request": "true"})).text
             for query in ("", f"?cursor={after}")]
    assert pages[0] != pages[1], "the board column's cursor was ignored"
    deep = _deep_cursor(api_client, tenant.headers, 25)
    deep_search = _deep_cursor(api_client, tenant.headers, 5, "&search=عبد")
    recent = (("ix_customers_recent", "organization_id"),)
    search = (("ix_customers_search_name", "~~"), ("ix_customers_search_email", "~~"))
    phone = (("ix_customers_search_phone", "~~"),)
    listed = [
        Scenario("list, newest first", "admin", lambda: API, recent, "customers"),
        Scenario("list, 5,000 rows down (cursor)", "admin", lambda: f"{API}?cursor={deep}",
                 (("ix_customers_recent", "id <"),), "customers"),
        Scenario("filter: stage Qualified", "admin",
                 lambda: f"{API}?stage_id={tenant.stages['Qualified']}",
                 (("ix_customers_stage_recent", "stage_id"),), "customers"),
        Scenario("filter: tag vip", "admin", lambda: f"{API}?tag=vip", recent, "customers"),
        Scenario(f"filter: rare tag «{RARE_TAG}» (0.2 %)", "admin",
                 lambda: f"{API}?tag={RARE_TAG}", (("ix_customers_tags", "@>"),), "customers"),
        Scenario("search «عبد» (as typed, common)", "admin", lambda: f"{API}?search=عبد",
                 recent, "customers"),
        Scenario("search «عبد», 1,000 matches down (cursor)", "admin",
                 lambda: f"{API}?search=عبد&cursor={deep_search}",
                 (("ix_customers_recent", "id <"),), "customers"),
        Scenario("search «عبد», highest score first", "admin",
                 lambda: f"{API}?search=عبد&sort=score",
                 (("ix_customers_score", "organization_id"),), "customers"),
        Scenario("search «عبد», by name", "admin", lambda: f"{API}?search=عبد&sort=name",
                 (("ix_customers_name", "organization_id"),), "customers"),
        Scenario("list by name", "admin", lambda: f"{API}?sort=name",
                 (("ix_customers_name", "organization_id"),), "customers"),
        Scenario("list, last contacted first", "admin", lambda: f"{API}?sort=last_contacted",
                 (("ix_customers_contacted", "organization_id"),), "customers"),
        Scenario("search name «فاطمه» (stored فاطمة)", "admin", lambda: f"{API}?search=فاطمه",
                 recent, "customers"),
        Scenario("search «ابراهيم الحربي» (إبراهيم)", "admin",
                 lambda: f"{API}?search=ابراهيم الحربي", search, "customers"),
        Scenario("search phone «٠٥٠١٢٣»", "admin", lambda: f"{API}?search=٠٥٠١٢٣",
                 search + phone, "customers"),
        Scenario("search email «sara.alharbi»", "admin", lambda: f"{API}?search=sara.alharbi",
                 search, "customers"),
    ]
    in_board = (("ix_customers_board", "stage_id"),)
    boards = [
        (Scenario("board page (6 columns, HTML)", "admin", lambda: "/customers/board",
                  in_board, "customers"), data.board),
        (Scenario("board column, 2nd page (htmx)", "admin",
                  lambda: f"/customers/board/{column}?cursor={after}",
                  (("ix_customers_board", "board_position"),), "customers"), data.board),
        (Scenario("board page, largest organization", "admin", lambda: "/customers/board",
                  in_board, "customers"), data.largest),
    ]

    def api_get(scenario: Scenario) -> Callable[[], dict]:
        return lambda: check(api_client.get(scenario.url(), headers=tenant.headers)).json

    def page_get(scenario: Scenario, org: int) -> Callable[[], object]:
        htmx = {"HX-Request": "true"} if "/board/" in scenario.url() else {}
        return lambda: check(page_clients[org].get(scenario.url(), headers=htmx))

    probes = [Probe(s, api_get(s), data.largest) for s in listed]
    probes += [Probe(s, page_get(s, org), org) for s, org in boards]
    one = api_client.get(f"{API}?limit=1", headers=tenant.headers).json["items"][0]["id"]
    results = measure_alternating({
        "bare Flask + 1 indexed SELECT": lambda: check(baseline_client.get("/baseline/1259")),
        # The app's floor: what any API request costs before its own work (the caller
        # identified, the organization set for RLS, the transaction committed)...
        FLOOR_CALLER: lambda: check(api_client.get("/api/users/me", headers=tenant.headers)),
        # ...and the app's counterpart of the baseline: that floor and one indexed SELECT.
        FLOOR_ONE: lambda: check(api_client.get(f"{API}/{one}", headers=tenant.headers)),
        **{p.scenario.name: p.call for p in probes}}, REQUESTS)
    report(f"customers — list and search as the admin of the largest organization "
           f"({data.describe(data.largest)}), the board of one with {data.describe(data.board)}; "
           f"{REQUESTS} sequential requests each (API: bearer, board: session), in-process "
           "WSGI, alternating rounds", results[1:], results[0], tail=95, floor=results[2])
    sql_ms = {p.scenario.name: check_plan(app, p.org, p.call, p.scenario, True)[0]
              for p in probes}
    print("\nSQL ms (EXPLAIN ANALYZE of the statement that pages through the rows): "
          + "; ".join(f"{name}: {ms:.2f}" for name, ms in sql_ms.items()))


# -- 3. CSV import ------------------------------------------------------------------------------

HEADER = ["الاسم", "الجوال", "البريد الإلكتروني", "الشركة", "الوسوم", "ملاحظات"]
# A phone number (digits after the country code) in the ways people write it in a sheet.
SAUDI_FORMS = [lambda n: f"0{n}", lambda n: f"+966 {n[:2]} {n[2:5]} {n[5:]}",
               lambda n: f"٠{n}".translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")),
               lambda n: f"00966{n}"]
EGYPT_FORMS = [lambda n: f"+20 {n[:3]} {n[3:6]} {n[6:]}", lambda n: f"0020{n}"]


@dataclass
class ImportFile:
    path: Path
    rows: int
    invalid: int  # rows the import must reject
    blank: int  # rows it must skip


def write_import_file(directory: Path, rows: int, existing: list[str]) -> ImportFile:
    """A CSV as Excel saves it (UTF-8 with BOM): mostly new customers; every 100 rows one
    bad phone number, one bad email, one too-long name, one repeat of a row 50 rows earlier
    and one customer already in the organization; every 200 rows a blank line."""
    rng = random.Random(42)
    path = directory / "عملاء.csv"
    invalid = blank = 0
    lines: list[list[str]] = []
    for i in range(rows):
        kind = i % 100
        if kind in (1, 2, 3):
            invalid += 1
        if kind == 4 and i % 200 == 4:
            blank += 1
            lines.append([""] * len(HEADER))
            continue
        line = _new_row(rng, i)
        if kind == 1:
            line[1] = "12345"
        elif kind == 2:
            line[2] = "sara@"
        elif kind == 3:
            line[0] = "أ" * 200
        elif kind == 5 and i >= 50:
            line = list(lines[i - 50])
        elif kind == 6 and existing:
            line[1] = _written(existing[i % len(existing)], rng)
        lines.append(line)
    with open(path, "w", encoding="utf-8-sig", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        writer.writerows(lines)
    return ImportFile(path, rows, invalid, blank)


def _new_row(rng: random.Random, i: int) -> list[str]:
    first, last = rng.choice(AR_FIRST), rng.choice(AR_LAST)
    arabic = rng.random() < 0.8
    name = f"{first} {last}" if arabic else f"{rng.choice(EN_FIRST)} {rng.choice(EN_LAST)}"
    # Prefixes the generated customers do not use, so only the intended rows are duplicates.
    phone = (f"+96653{i:07d}" if i % 3 else f"+20112{i:07d}")
    email = f"{LATIN[first]}.{LATIN[last]}.{i}@{rng.choice(DOMAINS)}" \
        if rng.random() < 0.6 else ""
    return [name, _written(phone, rng), email,
            rng.choice(COMPANIES) if rng.random() < 0.3 else "",
            "vip، جملة" if rng.random() < 0.05 else rng.choice(["", "", "", *TAGS]),
            rng.choice(NOTES) if rng.random() < 0.1 else ""]


def _written(e164: str, rng: random.Random) -> str:
    if e164.startswith("+966"):
        return rng.choice(SAUDI_FORMS)(e164[4:])
    return rng.choice(EGYPT_FORMS)(e164[3:])


@dataclass
class WorkerRun:
    seconds: float
    peak_mb: float
    returncode: int
    output: str


def run_worker(app: Flask) -> WorkerRun:
    """Run `crm worker --burst` on the benchmark's database and Redis until the bulk queue
    (where imports run) is empty, polling its memory (with any children it starts) every 10 ms."""
    from crm.jobs import BULK_QUEUE

    with tempfile.TemporaryFile("w+") as log:
        start = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-m", "crm", "worker", "--burst", "--queues", BULK_QUEUE], cwd=ROOT,
            env=worker_environment(app), stdout=log, stderr=subprocess.STDOUT)
        watched, peak = psutil.Process(process.pid), 0
        while process.poll() is None:
            with contextlib.suppress(psutil.NoSuchProcess):  # it has just ended
                peak = max(peak, sum(p.memory_info().rss for p in
                                     [watched, *watched.children(recursive=True)]))
            time.sleep(0.01)
        seconds = time.perf_counter() - start
        log.seek(0)
        return WorkerRun(seconds, peak / 2**20, process.returncode, log.read())


def _existing_phones(org: int, count: int) -> list[str]:
    from sqlalchemy import select

    from crm.customers.models import Customer
    from crm.extensions import db
    from crm.tenancy import organization_context

    with organization_context(org):
        return list(db.session.scalars(select(Customer.phone).where(Customer.phone.is_not(None))
                                       .order_by(Customer.id).limit(count)))


def run_import(app: Flask, org: int) -> None:
    """Upload and configure an import as the admin would, then run its job in a worker."""
    from sqlalchemy import func, select
    from werkzeug.datastructures import FileStorage

    from crm.customers import imports
    from crm.customers.models import Customer
    from crm.extensions import db
    from crm.foundation.models import User
    from crm.tenancy import organization_context
    from crm.transaction import commit

    idle = run_worker(app)  # nothing queued: what starting a worker costs
    assert idle.returncode == 0, idle.output
    with app.app_context(), tempfile.TemporaryDirectory() as directory:
        sheet = write_import_file(Path(directory), IMPORT_ROWS,
                                  _existing_phones(org, IMPORT_ROWS // 100))
        size_mb = sheet.path.stat().st_size / 2**20
        with organization_context(org), open(sheet.path, "rb") as stream:
            admin = db.session.get(User, _tenant(org).admin_id)
            before = db.session.scalar(select(func.count(Customer.id)))
            imp = imports.start_import(admin, FileStorage(stream, filename=sheet.path.name))
            imports.configure_import(admin, imp, imp.mapping, "update")
            import_id = imp.id
            commit()  # enqueues the job
    worker = run_worker(app)
    assert worker.returncode == 0, worker.output
    with app.app_context(), organization_context(org):
        imp = imports.access_import(import_id)
        after = db.session.scalar(select(func.count(Customer.id)))
        report_path = imports.import_report_path(imp)
        outcome = (imp.status, imp.processed_rows, imp.created_count, imp.updated_count,
                   imp.skipped_count, imp.rejected_count)
        if report_path:
            report_path.unlink()
    _print_import(sheet, size_mb, outcome, after - before, idle, worker)


def _print_import(sheet: ImportFile, size_mb: float, outcome: tuple, added: int,
                  idle: WorkerRun, worker: WorkerRun) -> None:
    status, processed, created, updated, skipped, rejected = outcome
    print(f"\ncustomers import — {sheet.rows:,} rows ({size_mb:.1f} MB, UTF-8 with BOM, "
          f"{sheet.invalid:,} invalid, {sheet.blank:,} blank), on_duplicate=update, one "
          "`crm worker --burst` process")
    print(f"status {status}: {processed:,} rows processed — {created:,} created, {updated:,} "
          f"updated, {skipped:,} skipped, {rejected:,} rejected; the table gained {added:,}")
    print(f"worker wall time {worker.seconds:.1f} s → {sheet.rows / worker.seconds:,.0f} rows/s; "
          f"starting a worker with nothing queued takes {idle.seconds:.1f} s")
    print(f"peak worker memory (RSS, with children) {worker.peak_mb:.0f} MB; idle worker "
          f"{idle.peak_mb:.0f} MB")
    problems = [f"{name}: expected {want:,}, got {got:,}" for name, want, got in (
        ("processed", sheet.rows, processed), ("rejected", sheet.invalid, rejected),
        ("skipped", sheet.blank, skipped), ("accounted for", sheet.rows,
                                            created + updated + skipped + rejected),
        ("new rows in the table", created, added)) if want != got]
    if status != "done":
        problems.append(f"status {status}")
    print("checks: " + ("; ".join(problems) if problems else "all rows accounted for"))
