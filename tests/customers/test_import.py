"""CSV imports: Excel's UTF-8 with BOM and Arabic names, Windows Arabic and UTF-16 files and
their separators (detected, and chosen on the preview), preview and mapping (to a new custom
field too), dedupe on phone and email (update or skip), the report of rejected rows, progress,
and a rerun that continues after a crash without writing anything twice."""

from __future__ import annotations

import csv
import io
import re
from collections import defaultdict
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from crm import events
from crm.config import Config
from crm.customers import imports, jobs
from crm.customers.models import Customer, CustomerActivity, CustomerImport, CustomFieldDefinition
from crm.customers.services import scoring
from crm.errors import ConflictError, ValidationError
from crm.extensions import db
from crm.jobs import BULK_QUEUE, get_queue
from crm.models import utcnow
from crm.tenancy import organization_context
from crm.transaction import commit
from tests.customers.factories import csv_upload, make_customer, make_field, make_import
from tests.factories import login, make_org, run_jobs
from tests.foundation import HTMX, arabic, audit_actions, ident

ARABIC_FILE = ("الاسم,الجوال,البريد الإلكتروني,الشركة\n"
               "أحمد العتيبي,0501234567,ahmed@example.com,شركة وصل\n"
               "فاطمة الزهراء,+966 55 000 0001,,\n"
               "\n"
               "نورة,٠٥٥٠٠٠٠٠٠٢,NOURA@example.com,مؤسسة النور\n")
MAPPING = {"الاسم": "name", "الجوال": "phone", "البريد الإلكتروني": "email",
           "الشركة": "company"}


def _reload(org_id: int, imp_id: int) -> CustomerImport:
    """The import as the database has it now (loaded fully: RLS hides it outside its org)."""
    with organization_context(org_id):
        return db.session.get(CustomerImport, imp_id, populate_existing=True)


def _customers(org_id: int) -> dict[str, Customer]:
    with organization_context(org_id):
        return {c.phone or c.email: c for c in db.session.scalars(
            select(Customer).execution_options(populate_existing=True))}


def _run(app, org, text: str, mapping: dict, on_duplicate: str = "skip", **upload):
    """Upload `text`, map it, start the job and run it; the import as it ended."""
    imp = make_import(org, text, **upload)
    org_id, imp_id = ident(org), imp.id
    with organization_context(org_id):
        imports.configure_import(org.admin, imp, mapping, on_duplicate)
        db.session.flush()  # while the organization is set: RLS would hide the row later
    run_jobs(app)
    return _reload(org_id, imp_id)


def _report(imp: CustomerImport) -> list[list[str]]:
    with open(imp.report_path, encoding="utf-8-sig", newline="") as handle:
        return list(csv.reader(handle))


def test_imported_customers_get_no_points_for_a_contact_they_never_had(app, org,
                                                                      monkeypatch):
    """The import scores its rows with the clock read when it started (an hour before its
    rows were written, here): customers never contacted get no "no contact for a while"
    points (it added 5 for "-1 days" to every imported customer)."""
    started = utcnow() - timedelta(hours=1)
    monkeypatch.setattr(scoring, "utcnow", lambda: started)
    _run(app, org, ARABIC_FILE, MAPPING)

    customers = _customers(ident(org)).values()
    assert len(customers) == 3
    assert [(c.score, c.score_breakdown) for c in customers] == [(0, [])] * 3


def test_an_import_runs_on_the_bulk_queue_and_so_does_its_resumption(app, org):
    """An import (and a resumed one) waits for a worker of the bulk queue: the workers of
    replies, deliveries and mail never start one, so it never holds them."""
    imp = make_import(org, ARABIC_FILE)
    org_id, imp_id = ident(org), imp.id
    with organization_context(org_id):
        imports.configure_import(org.admin, imp, MAPPING, "skip")
        db.session.flush()
    run_jobs(app, queues=Config.RQ_QUEUE_CLASSES["interactive"])
    assert _reload(org_id, imp_id).status == "queued"
    run_jobs(app, queues=(BULK_QUEUE,))
    assert _reload(org_id, imp_id).status == "done"

    with organization_context(org_id):
        imp = db.session.get(CustomerImport, imp_id)
        imp.status = "failed"
        imports.resume_import(org.admin, imp)
        db.session.flush()
    commit()
    assert [job.args[0] for job in get_queue(BULK_QUEUE).jobs] == [
        "crm.customers.jobs:run_import"]


def test_an_excel_file_with_a_bom_and_arabic_names_is_imported(app, org):
    """The BOM is not part of the first column's name; Arabic names arrive intact, phones in
    any written form become E.164, emails lower-case; the blank line is skipped; each customer
    gets an `imported` entry and the uploaded file is removed at the end."""
    imp = _run(app, org, ARABIC_FILE, MAPPING, bom=True)

    assert imp.status == "done"
    assert (imp.total_rows, imp.processed_rows) == (4, 4)
    assert (imp.created_count, imp.updated_count, imp.skipped_count,
            imp.rejected_count) == (3, 0, 1, 0)
    customers = _customers(ident(org))
    assert customers["+966501234567"].name == "أحمد العتيبي"
    assert customers["+966501234567"].company == "شركة وصل"
    assert customers["+966550000002"].email == "noura@example.com"
    assert customers["+966550000001"].source == "import"
    assert imp.report_path is None
    assert not Path(imp.path).exists()
    with organization_context(ident(org)):
        assert db.session.scalar(select(func.count()).select_from(CustomerActivity).where(
            CustomerActivity.type == "imported")) == 3


def test_the_preview_shows_columns_and_first_rows_and_guesses_the_mapping(org):
    """Arabic and English headers are recognised; the BOM does not stick to the first name."""
    imp = make_import(org, ARABIC_FILE, bom=True)

    with organization_context(org.id):
        columns, rows = imports.preview_import(imp)
    assert columns == list(MAPPING)
    assert rows[0] == ["أحمد العتيبي", "0501234567", "ahmed@example.com", "شركة وصل"]
    assert imp.mapping == MAPPING
    assert imp.status == "uploaded"


@pytest.mark.parametrize(("content", "filename"), [
    (b"", "empty.csv"),
    (bytes(range(256)) * 4, "binary.csv"),
    (b"name,phone\n", "customers.xlsx"),
])
def test_unreadable_files_are_refused_and_not_kept(org, content, filename):
    """An empty file, one whose bytes are text in none of the offered encodings, or not a CSV
    is a 422 on `file`; nothing is stored."""
    import io

    from werkzeug.datastructures import FileStorage

    with organization_context(org.id):
        directory = imports.import_directory()
        with pytest.raises(ValidationError) as caught:
            imports.start_import(org.admin, FileStorage(io.BytesIO(content), filename=filename))
        assert set(caught.value.fields) == {"file"}
        assert list(directory.iterdir()) == []
        assert db.session.scalar(select(func.count()).select_from(CustomerImport)) == 0


def test_a_file_too_large_is_refused(org, monkeypatch):
    monkeypatch.setattr(imports, "IMPORT_MAX_BYTES", 10)
    with organization_context(org.id), pytest.raises(ValidationError):
        imports.start_import(org.admin, csv_upload("name\n" + "x" * 20))


def test_a_body_over_the_import_limit_is_refused_saying_the_limit(client, org):
    """A file over 50 MB is refused before it is read (413), and the page says the limit."""
    login(client, org.admin)
    claimed = imports.IMPORT_MAX_BYTES + 1024 * 1024  # the header is what is checked
    response = client.post("/customers/imports", input_stream=io.BytesIO(b"--x--\r\n"),
                           environ_overrides={"CONTENT_LENGTH": str(claimed)},
                           content_type="multipart/form-data; boundary=x")

    assert response.status_code == 413
    assert arabic("The file is too large: at most %(mb)d MB.", mb=50) in response.get_data(
        as_text=True)


def test_the_mapping_must_make_sense(org):
    """Nothing that identifies a customer, a field twice, or a field that does not exist is
    refused; a started import cannot be configured again."""
    imp = make_import(org, "a,b,c\n1,2,3\n")
    with organization_context(org.id):
        for mapping in ({"a": "company"}, {"a": "name", "b": "name"}, {"a": "cf:nope"}):
            with pytest.raises(ValidationError):
                imports.configure_import(org.admin, imp, mapping, "skip")
        with pytest.raises(ValidationError):
            imports.configure_import(org.admin, imp, {"a": "name"}, "merge")
        imports.configure_import(org.admin, imp, {"a": "name", "b": "", "c": "notes"}, "skip")
        assert (imp.encoding, imp.delimiter) == ("utf-8", "comma")  # as detected on upload
        with pytest.raises(ConflictError):
            imports.configure_import(org.admin, imp, {"a": "name"}, "skip")


def test_a_refused_mapping_takes_back_the_fields_it_created(org):
    """Without a request to roll back, the service itself leaves no new field behind when
    another column's new field is refused."""
    imp = make_import(org, "a,b,c\n1,2,3\n")
    with organization_context(org.id):
        with pytest.raises(ValidationError) as caught:
            imports.configure_import(
                org.admin, imp, {"a": "name", "b": imports.NEW_FIELD, "c": imports.NEW_FIELD},
                "skip", new_fields={"b": {"label": "B", "key": "twin", "type": "text"},
                                    "c": {"label": "C", "key": "twin", "type": "text"}})
        assert set(caught.value.fields) == {"new-2-key"}
        db.session.flush()
        assert db.session.scalar(select(func.count()).select_from(CustomFieldDefinition)) == 0
        assert imp.status == "uploaded"
    assert "custom_field.created" not in audit_actions(org)


@pytest.mark.parametrize("on_duplicate", ["skip", "update"])
def test_duplicates_on_phone_or_email_are_skipped_or_updated(app, org, on_duplicate):
    """A row whose phone (written another way) or email matches a customer updates it or is
    skipped; empty cells never erase; rows repeating a number in the file make one customer."""
    make_customer(org, name="Old name", phone="+966501234567", company="Old Co")
    make_customer(org, name="Mail", phone=None, email="mail@x.example")
    text = ("name,phone,email,company\n"
            "New name,0501234567,,\n"
            "Mail renamed,,MAIL@x.example,Mail Co\n"
            "Twice,0550000009,,First\n"
            "Twice again,+966550000009,,Second\n")

    imp = _run(app, org, text, {"name": "name", "phone": "phone", "email": "email",
                                "company": "company"}, on_duplicate)

    customers = _customers(ident(org))
    assert len(customers) == 3
    if on_duplicate == "skip":
        assert (imp.created_count, imp.updated_count, imp.skipped_count) == (1, 0, 3)
        assert customers["+966501234567"].name == "Old name"
        assert customers["+966550000009"].company == "First"
    else:
        assert (imp.created_count, imp.updated_count, imp.skipped_count) == (1, 3, 0)
        assert customers["+966501234567"].name == "New name"
        assert customers["+966501234567"].company == "Old Co"  # the empty cell kept it
        assert customers["mail@x.example"].company == "Mail Co"
        assert customers["+966550000009"].name == "Twice again"


def test_rejected_rows_are_reported_with_their_reasons(app):
    """Each rejected row is in the report with its row number, the reason (in the importer's
    language) naming the column, and its cells as they were; the others are imported."""
    org = make_org(language="en")
    make_customer(org, phone="+966501111111")
    make_customer(org, phone=None, email="taken@x.example")
    text = ("Full name,Mobile,E-mail,Stage\n"
            "Good,0502222222,,New lead\n"
            "Bad phone,12345,,\n"
            "Bad mail,,not-an-email,\n"
            "No stage,0503333333,,Negotiation\n"
            ",,,\n"
            "Two owners,0501111111,taken@x.example,\n"
            ",,,Won\n")

    imp = _run(app, org, text, {"Full name": "name", "Mobile": "phone", "E-mail": "email",
                                "Stage": "stage"})

    assert (imp.created_count, imp.rejected_count, imp.skipped_count) == (1, 5, 1)
    report = _report(imp)
    assert report[0] == ["Row", "Reason", "Full name", "Mobile", "E-mail", "Stage"]
    rows = {int(row[0]): row for row in report[1:]}
    assert sorted(rows) == [3, 4, 5, 7, 8]
    assert rows[3][1].startswith("Mobile: ")
    assert rows[4][1].startswith("E-mail: ")
    assert rows[5][1].startswith("Stage: ")
    assert rows[3][2:] == ["Bad phone", "12345", "", ""]
    assert "two different customers" in rows[7][1]
    assert rows[8][2:] == ["", "", "", "Won"]
    with organization_context(ident(org)):
        assert imports.import_report_path(imp) == Path(imp.report_path)


def test_the_report_escapes_cells_a_spreadsheet_would_run(app, org):
    """A rejected cell (or column name) that Excel would run as a formula is written with an
    apostrophe first, as the export writes it; other cells are as they were."""
    text = ('=cmd|"/c calc"!A1,Mobile\n'
            "Bad phone,12345\n"
            "+bad,@SUM(1)\n"
            "-1,-2\n")

    imp = _run(app, org, text, {'=cmd|"/c calc"!A1': "name", "Mobile": "phone"})

    report = _report(imp)
    assert report[0][2:] == ["'=cmd|\"/c calc\"!A1", "Mobile"]
    assert [row[2:] for row in report[1:]] == [["Bad phone", "12345"], ["'+bad", "'@SUM(1)"],
                                               ["'-1", "'-2"]]


def test_progress_is_saved_and_announced_batch_by_batch(app, org, monkeypatch):
    """The counters are committed after each batch, and each batch announces its progress."""
    monkeypatch.setattr(jobs, "BATCH", 2)
    heard: list[dict] = []
    subscribers = defaultdict(list, {k: list(v) for k, v in events._subscribers.items()})
    monkeypatch.setattr(events, "_subscribers", subscribers)
    events.subscribe("customer_import.progress")(heard.append)
    text = "name,phone\n" + "".join(f"N{n},05500001{n:02d}\n" for n in range(5))

    imp = _run(app, org, text, {"name": "name", "phone": "phone"})

    assert imp.created_count == 5
    assert [(p["status"], p["processed_rows"]) for p in heard] == [
        ("running", 2), ("running", 4), ("running", 5), ("done", 5)]
    assert {p["total_rows"] for p in heard} == {5}


def test_a_rerun_after_a_crash_continues_without_duplicates(app, org, monkeypatch):
    """A job cut off after writing its report but before committing a batch fails; resumed,
    it continues after the last committed row: every customer and report line exactly once."""
    monkeypatch.setattr(jobs, "BATCH", 2)
    text = ("name,phone\n" + "A,0550000101\nbad,1\n" + "C,0550000103\nbad,2\n"
            + "E,0550000105\n")
    imp = make_import(org, text)
    org_id, imp_id = ident(org), imp.id
    with organization_context(org_id):
        imports.configure_import(org.admin, imp, {"name": "name", "phone": "phone"}, "skip")
        db.session.flush()
    record = jobs._record
    calls = []

    def crash_on_second_batch(*args, **kwargs):
        calls.append(args)
        if len(calls) == 2:
            raise RuntimeError("worker killed")
        return record(*args, **kwargs)

    monkeypatch.setattr(jobs, "_record", crash_on_second_batch)
    run_jobs(app)
    crashed = _reload(org_id, imp_id)
    assert (crashed.status, crashed.processed_rows, crashed.created_count) == ("failed", 2, 1)
    assert crashed.error
    assert len(_report(crashed)) == 1 + 2  # the header, batch 1's and batch 2's uncommitted

    monkeypatch.setattr(jobs, "_record", record)
    with organization_context(org_id):
        imports.resume_import(org.admin, crashed)
        db.session.flush()
    run_jobs(app)
    done = _reload(org_id, imp_id)

    assert done.status == "done"
    assert (done.processed_rows, done.created_count, done.rejected_count) == (5, 3, 2)
    assert sorted(_customers(org_id)) == ["+966550000101", "+966550000103", "+966550000105"]
    assert [row[0] for row in _report(done)[1:]] == ["3", "5"]

    with organization_context(org_id):
        jobs.run_import(imp_id)  # delivered once more: nothing happens
    assert len(_customers(org_id)) == 3


def test_only_a_failed_import_can_be_resumed(org):
    imp = make_import(org)
    with organization_context(org.id), pytest.raises(ConflictError):
        imports.resume_import(org.admin, imp)


def test_stage_owner_tags_and_custom_fields_are_imported(app, org):
    """Stages are found by name in either language, owners by email, and custom fields are
    checked by their type."""
    from tests.customers.factories import make_field

    make_field(org, "budget", "number")
    with organization_context(org.id):
        owner_email = org.admin.email
    text = ("name,stage,owner,tags,budget\n"
            f"Ali,مؤهل,{owner_email.upper()},\"vip, riyadh\",١٥٠٠\n"
            "Omar,Won,,,lots\n")

    imp = _run(app, org, text, {"name": "name", "stage": "stage", "owner": "owner",
                                "tags": "tags", "budget": "cf:budget"})

    assert (imp.created_count, imp.rejected_count) == (1, 1)
    with organization_context(ident(org)):
        ali = db.session.scalar(select(Customer).where(Customer.name == "Ali"))
        assert ali.stage.name_en == "Qualified"
        assert ali.owner_id == org.admin.id
        assert ali.tags == ["vip", "riyadh"]
        assert ali.custom_fields == {"budget": 1500}
    assert "budget" in _report(imp)[1][1]


# -- encodings and separators, through the pages ----------------------------------------------

WINDOWS_FILE = ("الاسم;الجوال;المدينة\n"
                "أحمد العتيبي;0501234567;الرياض\n"
                "فاطمة الزهراء;0550000001;جدة\n")
UNREADABLE = "This file cannot be read as %(encoding)s. Choose its encoding."


@pytest.fixture
def admin(client, org):
    """The organization's admin, logged in."""
    login(client, org.admin)
    return org.admin


def _upload(client, data: bytes, filename: str = "عملاء.csv"):
    return client.post("/customers/imports", data={"file": (io.BytesIO(data), filename)},
                       content_type="multipart/form-data")


def _hidden(page, name: str) -> str:
    """The value of a hidden input of the mapping form, which the browser posts back."""
    return re.search(rf'<input type="hidden" name="{name}" value="([^"]*)">', page.text).group(1)


def _start(client, url: str, page, mapping: dict[str, str], **extra):
    """Submit the mapping form of `page` as a browser would: its hidden fields, `mapping`
    ({column index: target}) and `extra` fields."""
    data = {"encoding": _hidden(page, "encoding"), "delimiter": _hidden(page, "delimiter"),
            "on_duplicate": "skip", **{f"column-{i}": t for i, t in mapping.items()}, **extra}
    return client.post(url, data=data)


@pytest.mark.parametrize(("codec", "separator", "encoding", "delimiter", "label"), [
    ("cp1256", ";", "windows-1256", "semicolon", "Windows-1256 (Arabic)"),  # Excel's "CSV"
    ("cp1256", ",", "windows-1256", "comma", "Windows-1256 (Arabic)"),
    ("utf-8-sig", ",", "utf-8", "comma", "UTF-8 (Unicode)"),  # Excel's "CSV UTF-8"
    ("utf-8", ";", "utf-8", "semicolon", "UTF-8 (Unicode)"),
    ("utf-16", "\t", "utf-16", "tab", "UTF-16 (Unicode)"),  # Excel's "Unicode text"
])
def test_the_encoding_and_separator_are_detected_and_the_import_reads_the_file_so(
        app, client, org, admin, codec, separator, encoding, delimiter, label):
    """The preview names the detected encoding, selects it and the separator, and shows the
    Arabic columns and names intact; the job reads the file the same way."""
    upload = _upload(client, WINDOWS_FILE.replace(";", separator).encode(codec))
    assert upload.status_code == 303
    page = client.get(upload.location)

    assert page.status_code == 200
    assert arabic("Detected encoding: %(encoding)s", encoding=arabic(label)) in page.text
    assert f'<option value="{encoding}" selected>' in page.text
    assert f'<option value="{delimiter}" selected>' in page.text
    assert '<span dir="auto">المدينة</span>' in page.text
    assert '<td dir="auto">فاطمة الزهراء</td>' in page.text
    start = _start(client, upload.location, page, {0: "name", 1: "phone"})
    assert start.status_code == 303
    run_jobs(app)

    customers = _customers(ident(org))
    assert customers["+966501234567"].name == "أحمد العتيبي"
    assert customers["+966550000001"].name == "فاطمة الزهراء"
    with organization_context(ident(org)):
        imp = db.session.scalar(select(CustomerImport))
        assert (imp.status, imp.encoding, imp.delimiter) == ("done", encoding, delimiter)


def test_another_encoding_or_separator_can_be_chosen_on_the_preview(app, client, org, admin):
    """The choice re-renders the preview (a fragment for htmx, the page without it): a Windows
    Arabic file read as UTF-8 cannot be, and says so with the choice still offered; read as
    Windows-1252 its names come out visibly wrong; a file that is not UTF-8 cannot start as
    UTF-8; what is chosen when the import starts is what the job reads."""
    upload = _upload(client, WINDOWS_FILE.encode("cp1256"))
    preview = upload.location + "/preview"

    as_utf8 = client.get(preview, query_string={"encoding": "utf-8", "delimiter": "semicolon"},
                         headers=HTMX)
    assert as_utf8.status_code == 422
    assert arabic(UNREADABLE, encoding=arabic("UTF-8 (Unicode)")) in as_utf8.text
    assert '<option value="utf-8" selected>' in as_utf8.text
    assert "<table" not in as_utf8.text  # nothing mangled is shown
    assert "<html" not in as_utf8.text

    latin = client.get(preview, query_string={"encoding": "windows-1252",
                                              "delimiter": "semicolon"}, headers=HTMX)
    assert latin.status_code == 200
    assert "أحمد العتيبي" not in latin.text
    assert "أحمد العتيبي".encode("cp1256").decode("cp1252") in latin.text
    assert _hidden(latin, "encoding") == "windows-1252"

    one_column = client.get(preview, query_string={"encoding": "windows-1256",
                                                   "delimiter": "comma"})
    assert one_column.status_code == 200
    assert "<html" in one_column.text  # without htmx, the whole page
    assert '<span dir="auto">الاسم;الجوال;المدينة</span>' in one_column.text

    refused = _start(client, upload.location, latin, {0: "name", 1: "phone"},
                     encoding="utf-8")
    assert refused.status_code == 422
    assert arabic(UNREADABLE, encoding=arabic("UTF-8 (Unicode)")) in refused.text
    with organization_context(ident(org)):
        assert db.session.scalar(select(CustomerImport.status)) == "uploaded"
    assert client.get(preview, query_string={"encoding": "ebcdic"}).status_code == 422

    assert _start(client, upload.location, latin, {0: "name", 1: "phone"}).status_code == 303
    run_jobs(app)
    customer = _customers(ident(org))["+966501234567"]
    assert customer.name == "أحمد العتيبي".encode("cp1256").decode("cp1252")
    with organization_context(ident(org)):
        assert db.session.scalar(select(CustomerImport.encoding)) == "windows-1252"


def test_a_file_that_stops_being_readable_past_its_start_cannot_be_imported(client, org,
                                                                            admin):
    """The encoding is detected from the start of a file; starting the import checks the
    whole file, so one whose later rows are in another encoding is refused (422, naming the
    encoding) rather than imported half or mangled."""
    rows = "".join(f"Customer {n},+9665{n:08d}\n" for n in range(4000))
    data = f"name,phone\n{rows}".encode() + "أحمد,0501234567\n".encode("cp1256")
    upload = _upload(client, data)
    page = client.get(upload.location)
    assert page.status_code == 200

    start = _start(client, upload.location, page, {0: "name", 1: "phone"})

    assert start.status_code == 422
    assert arabic(UNREADABLE, encoding=arabic("UTF-8 (Unicode)")) in start.text
    with organization_context(ident(org)):
        assert db.session.scalar(select(CustomerImport.status)) == "uploaded"


# -- a column as a new custom field -------------------------------------------------------------

FIELDS_FILE = "الاسم,الجوال,المدينة,الميزانية\nأحمد,0501234567,الرياض,١٥٠٠\n"


def _fields(org) -> dict[str, CustomFieldDefinition]:
    with organization_context(ident(org)):
        return {d.key: d for d in db.session.scalars(
            select(CustomFieldDefinition).execution_options(populate_existing=True))}


def test_a_column_can_become_a_new_custom_field(app, client, org, admin):
    """"New custom field" offers a name (the column's), a key and a type beside the column;
    starting the import creates the fields (audited) and the import fills them."""
    upload = _upload(client, FIELDS_FILE.encode())
    page = client.get(upload.location)
    assert '<option value="new">' in page.text
    assert re.search(r'<input id="new-2-label" name="new-2-label" value="المدينة"', page.text)
    for type_ in ("text", "number", "date", "choice"):
        assert f'<option value="{type_}"' in page.text

    start = _start(client, upload.location, page, {0: "name", 1: "phone", 2: "new", 3: "new"},
                   **{"new-2-label": "المدينة", "new-2-key": "city", "new-2-type": "choice",
                      "new-2-choices": "الرياض, جدة",
                      "new-3-label": "الميزانية", "new-3-key": "budget",
                      "new-3-type": "number"})

    assert start.status_code == 303
    fields = _fields(org)
    assert (fields["city"].label, fields["city"].type) == ("المدينة", "choice")
    assert fields["city"].choices == ["الرياض", "جدة"]
    assert (fields["budget"].label, fields["budget"].type) == ("الميزانية", "number")
    assert audit_actions(org).count("custom_field.created") == 2
    run_jobs(app)
    assert _customers(ident(org))["+966501234567"].custom_fields == {"city": "الرياض",
                                                                     "budget": 1500}


@pytest.mark.parametrize(("new_field", "bad"), [
    ({"new-2-key": "city"}, "key"),  # taken by an existing field
    ({"new-2-key": "City!"}, "key"),
    ({"new-2-label": ""}, "label"),
    ({"new-2-type": "money"}, "type"),
    ({"new-2-type": "choice", "new-2-choices": ""}, "choices"),
])
def test_a_bad_new_custom_field_changes_nothing(client, org, admin, new_field, bad):
    """A taken or malformed key, no name, an unknown type or a choice without choices shows
    the mapping again (422) with the reason beside the input and what was typed; no field is
    created, not even another column's good one, and the import does not start."""
    make_field(org, "city")
    upload = _upload(client, FIELDS_FILE.encode())
    page = client.get(upload.location)
    typed = {"new-2-label": "المدينة", "new-2-key": "town", "new-2-type": "text",
             "new-3-label": "الميزانية", "new-3-key": "budget", "new-3-type": "number",
             **new_field}

    start = _start(client, upload.location, page, {0: "name", 1: "phone", 2: "new", 3: "new"},
                   **typed)

    assert start.status_code == 422
    assert f'id="error-new-2-{bad}"' in start.text
    assert 'id="error-new-3-' not in start.text
    assert '<option value="new" selected>' in start.text
    assert f'value="{typed["new-2-key"]}"' in start.text
    assert set(_fields(org)) == {"city"}
    assert audit_actions(org).count("custom_field.created") == 1
    with organization_context(ident(org)):
        assert db.session.scalar(select(CustomerImport.status)) == "uploaded"
