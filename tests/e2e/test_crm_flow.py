"""The CRM in Chromium: a customer created in Arabic, found by a phone number written another
way, dragged to another stage on the board (seen live by a colleague), with the move on the
customer's timeline; an edit someone saved meanwhile told, then saved anyway."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Locator, Page, expect

from crm.customers import services, views
from crm.customers.live import EVENT as CARD_MOVED
from crm.customers.models import Customer
from crm.extensions import db
from crm.foundation.models import Organization, User
from tests.e2e.conftest import (
    PHONE,
    expect_live_update,
    expect_page_settled,
    expect_settled,
    open_live,
    screenshot,
    translated,
)
from tests.factories import make_user
from tests.live import LiveServer

pytestmark = [pytest.mark.e2e, pytest.mark.live, pytest.mark.xdist_group("e2e")]

NAME = "فاطمة الزهراء"


def drag(page: Page, card: Locator, target: Locator) -> None:
    """Drag `card` onto `target` with real pointer moves, as SortableJS needs them."""
    start, end = card.bounding_box(), target.bounding_box()
    x, y = start["x"] + start["width"] / 2, start["y"] + start["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 8, y + 8, steps=4)  # past Sortable's threshold: the drag starts
    page.mouse.move(end["x"] + end["width"] / 2, end["y"] + 20, steps=20)
    page.mouse.up()


def stage_names(live: LiveServer, org_id: int) -> list[str]:
    with live.transaction(org_id):
        return [stage.name_ar for stage in services.list_stages()]


def test_create_find_and_move_a_customer_on_the_board(browsing, live_server):
    """An admin adds a customer in Arabic, finds them by typing the phone number in Arabic
    digits, drags their card to the next stage (a colleague's board follows at once), and the
    customer's timeline shows the change of stage."""
    account = live_server.make_account()
    with live_server.transaction(account.organization_id):
        services.create_customer(db.session.get(User, account.user_id),
                                 {"name": "Someone else", "phone": "0559876543"})
    first_stage, second_stage = stage_names(live_server, account.organization_id)[:2]
    page = browsing.new_page(account=account)

    page.goto("/customers/new")
    page.locator("input[name='name']").fill(NAME)
    page.locator("input[name='phone']").fill("0501234567")
    page.locator("form[action='/customers/new'] button[type='submit']").click()
    expect(page.locator("h1")).to_have_text(NAME)
    customer_id = int(re.search(r"/customers/(\d+)$", page.url).group(1))
    expect(page.locator(f"#customer-{customer_id}-details")).to_contain_text("+966 50 123 4567")

    page.goto("/customers/")
    expect(page.locator("#customer-rows tr")).to_have_count(2)
    page.locator("#field-search").fill("٠٥٠١٢٣٤٥٦٧")
    expect(page.locator("#customer-rows tr")).to_have_count(1)
    expect(page.locator(f"#customer-{customer_id}")).to_contain_text(NAME)
    expect(page).to_have_url(re.compile(r"search="))  # the filtered list has an address
    screenshot(page, "customers-search-ar")

    colleague = browsing.new_page(account=account)
    colleague.goto("/customers/board")
    colleague.wait_for_function("() => window.waslSocket && window.waslSocket.connected")
    page.locator(".sidebar a[href='/customers/board']").click()  # boosted: Sortable starts
    expect(page).to_have_url(f"{live_server.url}/customers/board")
    columns = page.locator("section.board-column")
    expect(columns.nth(0).locator("h2")).to_have_text(first_stage)
    card = page.locator(f"#card-{customer_id}")
    expect(columns.nth(0).locator(f"#card-{customer_id}")).to_be_visible()
    target = columns.nth(1).locator("ol.board-cards")
    expect_page_settled(page)  # Sortable starts on the boosted board once htmx settled it
    with page.expect_response(lambda r: r.url.endswith("/customers/board/move")) as moved:
        drag(page, card, target)
    assert moved.value.status == 200
    expect(columns.nth(1).locator(f"#card-{customer_id}")).to_be_visible()
    expect(columns.nth(1).locator(".badge")).to_have_text("1")
    expect(columns.nth(0).locator(".badge")).to_have_text("1")  # "Someone else" stays
    seen = colleague.locator("section.board-column").nth(1).locator(f"#card-{customer_id}")
    expect(seen).to_be_visible()
    screenshot(page, "board-ar")

    page.set_viewport_size(PHONE)
    page.reload()
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    screenshot(page, "board-ar-phone")

    page.goto(f"/customers/{customer_id}")
    entry = page.locator("#timeline-items .activity-stage_changed")
    expect(entry).to_contain_text(translated(live_server, "Stage changed", "ar"))
    expect(entry).to_contain_text(second_stage)
    screenshot(page, "customer-ar-phone")
    assert browsing.csp_violations() == []
    assert [error for error in browsing.console_errors if error.startswith("htmx:")] == []
    assert browsing.dialogs == []


def test_import_a_windows_arabic_file_into_a_new_custom_field(browsing, live_server, tmp_path):
    """Excel's Arabic "CSV" (Windows-1256, semicolons) previews with its encoding named; read
    as UTF-8 it says it cannot be and reading it as detected again shows the names; with the
    keyboard a column becomes a new custom field, whose inputs show only then; the import
    creates the field and fills it."""
    account = live_server.make_account()
    sheet = tmp_path / "عملاء.csv"
    sheet.write_bytes("الاسم;الجوال;المدينة\nأحمد العتيبي;0501234567;الرياض\n".encode("cp1256"))
    page = browsing.new_page(account=account)

    page.goto("/customers/imports/new")
    page.locator("#field-file").set_input_files(sheet)
    page.locator("form[action='/customers/imports'] button[type='submit']").click()
    encoding, table = page.locator("#import-encoding"), page.locator("table")
    expect(encoding).to_have_value("windows-1256")
    expect(page.locator("#import-delimiter")).to_have_value("semicolon")
    expect(table).to_contain_text("أحمد العتيبي")
    expect_page_settled(page)  # the boosted answer's select is wired: its change is sent
    encoding.select_option("utf-8")
    expect(page.locator("#error-encoding")).to_be_visible()
    expect(table).to_have_count(0)
    expect_settled(page.locator("section[id$='-mapping']"))
    encoding.select_option("windows-1256")
    expect(table).to_contain_text("أحمد العتيبي")
    screenshot(page, "import-preview-ar")

    label = page.locator("#new-2-label")
    expect(label).to_be_hidden()
    page.locator("#column-2").focus()
    page.keyboard.press("End")  # the last choice: "New custom field"
    expect(page.locator("#column-2")).to_have_value("new")
    expect(label).to_be_visible()
    expect(label).to_have_value("المدينة")
    page.keyboard.press("Tab")
    expect(label).to_be_focused()
    page.keyboard.press("Tab")
    page.keyboard.press("ControlOrMeta+a")
    page.keyboard.type("city")
    expect(page.locator("#new-0-label")).to_be_hidden()  # other columns show no inputs
    screenshot(page, "import-new-field-ar")
    page.get_by_role("button", name=translated(live_server, "Start the import", "ar")).click()
    expect(page.locator("h2#progress-title")).to_be_visible()

    assert live_server.run_worker().returncode == 0
    expect(page.locator("h2#progress-title")).to_have_text(
        translated(live_server, "Import finished", "ar"))
    with live_server.transaction(account.organization_id):
        customer = services.customer_by_phone("+966501234567")
        assert customer.name == "أحمد العتيبي"
        assert customer.custom_fields == {"city": "الرياض"}
        assert [d.key for d in services.list_field_definitions()] == ["city"]
    assert browsing.csp_violations() == []
    assert [error for error in browsing.console_errors if error.startswith("htmx:")] == []


def test_an_edit_saved_meanwhile_is_told_then_saved_anyway(browsing, live_server):
    """An admin edits a customer in place while سارة saves a change to them: saving says who
    changed it, in place, keeping what the admin typed; "Save anyway" saves it."""
    account = live_server.make_account()
    with live_server.transaction(account.organization_id):
        customer_id = services.create_customer(db.session.get(User, account.user_id),
                                               {"name": "أمل", "phone": "0501234567"}).id
        sara = make_user(db.session.get(Organization, account.organization_id), "manager")
        sara.full_name, sara_id = "سارة", sara.id
    page = browsing.new_page(account=account)
    page.goto(f"/customers/{customer_id}")
    details = page.locator(f"#customer-{customer_id}-details")
    details.locator(f"a[href='/customers/{customer_id}/edit']").click()
    name = details.locator("input[name='name']")
    expect(name).to_be_visible()
    expect_settled(details)  # the form swapped in posts in place only once htmx wired it

    with live_server.transaction(account.organization_id):
        services.update_customer(db.session.get(User, sara_id),
                                 db.session.get(Customer, customer_id), {"company": "وصل"})
    name.fill("أمل سالم")
    details.locator("button[type='submit']").click()

    notice = details.locator(".conflict")
    expect(notice).to_contain_text("سارة")
    expect(notice).to_contain_text(translated(live_server, "a moment ago", "ar"))
    expect(name).to_have_value("أمل سالم")
    screenshot(page, "customer-conflict-ar")
    expect_settled(details)
    details.get_by_role("button", name=translated(live_server, "Save anyway", "ar")).click()
    expect(details.locator(".conflict")).to_have_count(0)
    expect(details.locator("input[name='name']")).to_have_count(0)  # the details again
    with live_server.transaction(account.organization_id):
        saved = db.session.get(Customer, customer_id)
        assert (saved.name, saved.company, saved.version) == ("أمل سالم", "", 3)
    assert browsing.csp_violations() == []
    assert browsing.dialogs == []


def test_load_more_brings_the_next_page_of_customers(browsing, live_server):
    """Past a page of customers, "Load more" (a `?cursor=` link, as the API's lists take)
    swaps the next page in under the first, each customer once."""
    account = live_server.make_account()
    with live_server.transaction(account.organization_id):
        admin = db.session.get(User, account.user_id)
        for n in range(views.PAGE + 3):
            services.create_customer(admin, {"name": f"Customer {n:03}"})
    page = browsing.new_page(account=account)

    page.goto("/customers/?sort=name")
    rows = page.locator("#customer-rows tr[id^='customer-']")
    expect(rows).to_have_count(views.PAGE)
    more = page.locator("#customers-more a")
    expect(more).to_have_attribute("href", re.compile(r"[?&]cursor="))
    more.click()
    expect(rows).to_have_count(views.PAGE + 3)
    expect(page.locator("#customers-more")).to_have_count(0)
    names = rows.locator("td:first-child").all_inner_texts()
    assert len(set(names)) == views.PAGE + 3
    assert browsing.csp_violations() == []


def test_a_colleagues_move_keeps_the_keyboard_on_its_card(browsing, live_server):
    """A live refresh of the column holding the focused stage list (a colleague moved another
    card out of it) gives the focus back to that list: the keyboard user goes on from there."""
    account = live_server.make_account()
    with live_server.transaction(account.organization_id):
        admin = db.session.get(User, account.user_id)
        customer_id = services.create_customer(admin, {"name": NAME}).id
        other_id = services.create_customer(admin, {"name": "Someone else"}).id
        second_stage_id = services.list_stages()[1].id
    page = browsing.new_page(account=account)
    open_live(page, "/customers/board")
    move = page.locator(f"#card-{customer_id}-stage")
    move.focus()

    with live_server.transaction(account.organization_id):
        services.move_customer(db.session.get(User, account.user_id),
                               db.session.get(Customer, other_id), second_stage_id)
    columns = page.locator("section.board-column")
    expect(columns.nth(0).locator(f"#card-{other_id}")).to_have_count(0)  # the column is new
    expect(move).to_be_focused()


def test_a_card_moves_to_another_stage_with_the_keyboard(browsing, live_server):
    """Without dragging: the card's stage list, reached with Tab and changed with the keys,
    moves the customer to that column, the counts of both columns follow, and the page does
    not scroll sideways for a card far along the board."""
    account = live_server.make_account()
    with live_server.transaction(account.organization_id):
        customer_id = services.create_customer(db.session.get(User, account.user_id),
                                               {"name": NAME, "phone": "0501234567"}).id
    stages = stage_names(live_server, account.organization_id)
    page = browsing.new_page(account=account)
    page.set_viewport_size(PHONE)
    socket = open_live(page, "/customers/board")
    columns = page.locator("section.board-column")
    move = page.get_by_label(translated(live_server, "Move %(name)s to a stage", "ar")
                             .replace("%(name)s", NAME))
    expect(move).to_have_value(re.compile(r"\d+"))

    move.focus()
    with expect_live_update(page, socket, CARD_MOVED), \
            page.expect_response(lambda r: f"/customers/{customer_id}/stage" in r.url) as moved:
        page.keyboard.press("ArrowDown")
    assert moved.value.status == 200
    expect(columns.nth(1).locator(f"#card-{customer_id}")).to_be_visible()
    expect(columns.nth(0).locator(f"#card-{customer_id}")).to_have_count(0)
    expect(columns.nth(1).locator(".badge")).to_have_text("1")
    expect(columns.nth(0).locator(".badge")).to_have_text("0")
    expect(page.locator(f"#card-{customer_id} select option[selected]")).to_have_text(stages[1])

    move.focus()
    page.keyboard.press("End")
    last = columns.nth(len(stages) - 1)
    expect(last.locator(f"#card-{customer_id}")).to_have_count(1)
    # The card's hidden label stays inside the board's own scrolling, off the page's.
    assert page.evaluate("() => document.documentElement.scrollWidth") <= PHONE["width"]
    screenshot(page, "board-keyboard-ar-phone")
    assert [error for error in browsing.console_errors if error.startswith("htmx:")] == []
