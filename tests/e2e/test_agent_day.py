"""An agent's day in Chromium, in Arabic, on a phone (390 px): a chat started with a customer
added by hand, the customer's stage changed from the inbox (a colleague's board follows),
two agents who see each other in a conversation and each other typing, a conversation taken
from the queue that leaves the other agent's list, and a saved reply inserted with `/`."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from crm.customers import services as crm
from crm.customers.models import Customer
from crm.extensions import db
from crm.foundation.models import Organization, User
from crm.whatsapp import inbox
from crm.whatsapp.models import Conversation, WhatsAppProfile
from tests.e2e.conftest import (
    PHONE,
    expect_live_update,
    expect_settled,
    open_live,
    screenshot,
    translated,
)
from tests.factories import make_user
from tests.live import Account, LiveServer, wait_until
from tests.whatsapp.factories import make_conversation, make_profile

pytestmark = [pytest.mark.e2e, pytest.mark.live, pytest.mark.xdist_group("e2e")]

CUSTOMER, CUSTOMER_PHONE = "نورة العتيبي", "0551112233"


def _shop(live: LiveServer) -> tuple[Account, int]:
    """An organization with a sandbox number: its admin, and the number's id."""
    admin = live.make_account()
    with live.transaction(admin.organization_id):
        org = db.session.get(Organization, admin.organization_id)
        return admin, make_profile(org, "sandbox", display_name="متجر وصل").id


def _agent(live: LiveServer, org_id: int, name: str) -> Account:
    with live.transaction(org_id):
        user = make_user(db.session.get(Organization, org_id), "agent", language="ar",
                         full_name=name)
        return Account(org_id, user.id, user.email)


def _customer(live: LiveServer, admin: Account) -> int:
    with live.transaction(admin.organization_id):
        return crm.create_customer(db.session.get(User, admin.user_id),
                                   {"name": CUSTOMER, "phone": CUSTOMER_PHONE}).id


def _conversation(live: LiveServer, org_id: int, profile_id: int, **fields) -> int:
    with live.transaction(org_id):
        profile = db.session.get(WhatsAppProfile, profile_id)
        return make_conversation(profile, phone="+966551112233", contact_name=CUSTOMER,
                                 **fields).id


def _phone(page: Page) -> Page:
    page.set_viewport_size(PHONE)
    return page


def _no_sideways_scroll(page: Page) -> None:
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]


def test_a_chat_starts_from_the_page_of_a_customer_added_by_hand(browsing, live_server):
    """The customer page's WhatsApp button opens a new conversation with their number, which
    the panel knows as that customer; Enter sends the first message."""
    admin, _profile = _shop(live_server)
    customer_id = _customer(live_server, admin)
    page = _phone(browsing.new_page(account=admin))

    page.goto(f"/customers/{customer_id}")
    page.get_by_role("button", name=translated(live_server, "Message on WhatsApp", "ar")).click()

    expect(page).to_have_url(re.compile(r"/inbox/conversations/\d+$"))
    expect(page.locator(".thread-title h2")).to_have_text(CUSTOMER)
    expect(page.locator(".thread-title")).to_contain_text("+966 55 111 2233")
    composer = page.locator("textarea[name=text]")
    composer.fill("أهلًا نورة، كيف نخدمك؟")
    composer.press("Enter")
    expect(page.locator("article.bubble-out").last).to_contain_text("كيف نخدمك")
    expect(composer).to_have_value("")
    page.locator(".details-link").click()
    expect(page.locator(".panel-customer .customer-card-name")).to_have_text(CUSTOMER)
    _no_sideways_scroll(page)
    screenshot(page, "agent-day-new-chat-ar")
    assert browsing.csp_violations() == []


def test_the_stage_changed_in_the_inbox_moves_the_card_on_the_board(browsing, live_server):
    """At 390 px the agent's manager opens the panel, picks the next stage in the customer's
    card, and a colleague's open board shows the card in that stage's column."""
    admin, profile_id = _shop(live_server)
    customer_id = _customer(live_server, admin)
    conversation_id = _conversation(live_server, admin.organization_id, profile_id,
                                    customer_id=customer_id)
    with live_server.transaction(admin.organization_id):
        target = crm.list_stages()[1]
        target_id, target_name = target.id, target.name_ar
    board = browsing.new_page(account=admin)
    open_live(board, "/customers/board")
    page = _phone(browsing.new_page(account=admin))

    page.goto(f"/inbox/conversations/{conversation_id}")
    page.locator(".details-link").click()
    stage = page.locator(".panel-customer select[name=stage_id]")
    stage.select_option(str(target_id))

    expect(page.locator(".panel-customer select[name=stage_id] option[selected]")).to_have_text(
        target_name)
    expect(board.locator(f"#column-{target_id}-cards")).to_contain_text(CUSTOMER)
    _no_sideways_scroll(page)
    screenshot(page, "agent-day-stage-in-inbox-ar")


# Installed in the page (a function: the CSP forbids eval): the moment an answer's swap is
# done, before anything else the page runs, pick `value` in the new card's stage list, as a
# key pressed then would.
PICK_AS_THE_ANSWER_LANDS = """(value) => {
  function pick(event) {
    const stage = event.detail.xhr && event.detail.target.querySelector(
      ".panel-customer select[name=stage_id]");
    if (!stage) return;  // a live update's swap, or another answer (a section loading)
    document.body.removeEventListener("htmx:afterSwap", pick);
    queueMicrotask(() => {
      stage.value = value;
      stage.dispatchEvent(new Event("change", {bubbles: true}));
    });
  }
  document.body.addEventListener("htmx:afterSwap", pick);
}"""


def test_a_stage_picked_as_the_card_comes_back_is_saved(browsing, live_server):
    """The customer card's stage list, changed again the moment the answer to a first change
    shows it, sends that change too: the stage the list shows is the one kept (a change made
    before htmx wired the new list was lost, the list showing a stage the customer was not
    in)."""
    admin, profile_id = _shop(live_server)
    customer_id = _customer(live_server, admin)
    conversation_id = _conversation(live_server, admin.organization_id, profile_id,
                                    customer_id=customer_id)
    with live_server.transaction(admin.organization_id):
        second, third = [stage.id for stage in crm.list_stages()[1:3]]
    page = browsing.new_page(account=admin)
    page.goto(f"/inbox/conversations/{conversation_id}")

    page.evaluate(PICK_AS_THE_ANSWER_LANDS, str(third))
    page.locator(".panel-customer select[name=stage_id]").select_option(str(second))

    def stage_kept() -> int:
        with live_server.transaction(admin.organization_id):
            return db.session.get(Customer, customer_id).stage_id

    wait_until(lambda: stage_kept() == third, "the stage picked as the card came back kept")
    expect(page.locator(".panel-customer select[name=stage_id]")).to_have_value(str(third))


def test_two_agents_see_each_other_and_each_other_typing(browsing, live_server):
    """Two agents open the same unassigned conversation: each sees the other's avatar, and
    the first reads «ليلى تكتب…» while the second types."""
    admin, profile_id = _shop(live_server)
    conversation_id = _conversation(live_server, admin.organization_id, profile_id)
    sara = _agent(live_server, admin.organization_id, "سارة")
    layla = _agent(live_server, admin.organization_id, "ليلى")
    url = f"/inbox/conversations/{conversation_id}"
    first = _phone(browsing.new_page(account=sara))
    open_live(first, url)
    second = _phone(browsing.new_page(account=layla))
    open_live(second, url)

    presence = f"#conversation-{conversation_id}-presence .avatar"
    expect(first.locator(presence)).to_have_attribute("title", "ليلى")
    expect(second.locator(presence)).to_have_attribute("title", "سارة")
    second.locator("textarea[name=text]").press_sequentially("لحظة من فضلك")

    typing = first.locator(f"#conversation-{conversation_id}-typing")
    expect(typing).to_contain_text("ليلى")
    expect(typing).to_contain_text(translated(live_server, "%(name)s is typing…", "ar")
                                   .replace("%(name)s", "").strip())
    second.close()
    expect(first.locator(presence)).to_have_count(0)
    _no_sideways_scroll(first)
    screenshot(first, "agent-day-presence-ar")


def test_a_conversation_taken_from_the_queue_leaves_the_other_agents_list(browsing,
                                                                          live_server):
    """Both agents see the unassigned queue; one takes the conversation and the other's list
    loses it at once."""
    admin, profile_id = _shop(live_server)
    conversation_id = _conversation(live_server, admin.organization_id, profile_id)
    sara = _agent(live_server, admin.organization_id, "سارة")
    layla = _agent(live_server, admin.organization_id, "ليلى")
    other = _phone(browsing.new_page(account=layla))
    open_live(other, "/inbox?scope=unassigned")
    row = f"#conversation-row-{conversation_id}"
    expect(other.locator(row)).to_have_count(1)
    page = _phone(browsing.new_page(account=sara))

    open_live(page, "/inbox?scope=unassigned")
    page.locator(f"{row} a").click()
    page.get_by_role("button", name=translated(live_server, "Take it", "ar")).click()

    expect(page.get_by_role("button", name=translated(live_server, "Resolve", "ar"))
           ).to_be_visible()
    expect(other.locator(row)).to_have_count(0)
    _no_sideways_scroll(page)
    screenshot(other, "agent-day-queue-ar")


def test_taking_a_conversation_missing_from_the_list_on_screen(browsing, live_server):
    """An agent opens an unassigned conversation by its address beside her resolved ones: its
    row is not on screen, nor does taking it or labelling it bring it there. Neither answer
    looks for the row: no htmx error."""
    admin, profile_id = _shop(live_server)
    conversation_id = _conversation(live_server, admin.organization_id, profile_id)
    sara = _agent(live_server, admin.organization_id, "سارة")
    page = _phone(browsing.new_page(account=sara))
    open_live(page, f"/inbox/conversations/{conversation_id}?scope=mine&status=resolved")
    row = page.locator(f"#conversation-row-{conversation_id}")

    page.get_by_role("button", name=translated(live_server, "Take it", "ar")).click()
    expect(page.get_by_role("button", name=translated(live_server, "Resolve", "ar"))
           ).to_be_visible()
    page.locator(".details-link").click()
    page.locator("input[name=labels]").fill("مميز")
    with page.expect_response(re.compile(r"/labels$")):
        page.locator("input[name=labels]").press("Enter")

    expect_settled(page.locator(f"#conversation-{conversation_id}-panel"))
    expect(row).to_have_count(0)
    assert [text for text in browsing.console_errors if "htmx" in text] == []


def test_the_conversation_headers_phone_never_wraps(browsing, live_server):
    """At 390 px, beside a long name, «Take it» and «Details», the contact's number stays on
    one line, and the header does not scroll sideways."""
    admin, profile_id = _shop(live_server)
    with live_server.transaction(admin.organization_id):
        profile = db.session.get(WhatsAppProfile, profile_id)
        conversation_id = make_conversation(
            profile, phone="+966544443322",
            contact_name="عبدالرحمن بن عبدالعزيز آل عبدالمحسن").id
    page = _phone(browsing.new_page(account=admin))

    page.goto(f"/inbox/conversations/{conversation_id}")

    phone = page.locator(".thread-title .ltr")
    expect(phone).to_have_text("+966 54 444 3322")
    assert phone.evaluate("(element) => element.getClientRects().length") == 1
    _no_sideways_scroll(page)
    screenshot(page, "agent-day-header-phone-ar")


def test_a_saved_reply_is_inserted_by_typing_a_slash(browsing, live_server):
    """Typing «/شكر» offers the saved reply with the customer's name filled in; Enter inserts
    it in place of what was typed."""
    admin, profile_id = _shop(live_server)
    with live_server.transaction(admin.organization_id):
        actor = db.session.get(User, admin.user_id)
        inbox.save_canned_reply(actor, "شكر", "ar", "شكرًا لتواصلك يا {name}، نرد خلال ساعة.")
        inbox.save_canned_reply(actor, "hours", "en", "We open at nine.")
    sara = _agent(live_server, admin.organization_id, "سارة")
    conversation_id = _conversation(live_server, admin.organization_id, profile_id,
                                    assigned_user_id=sara.user_id)
    page = _phone(browsing.new_page(account=sara))
    open_live(page, f"/inbox/conversations/{conversation_id}")
    composer = page.locator("textarea[name=text]")

    composer.press_sequentially("مرحبًا /شك")
    option = page.locator(".replies-menu [role=option][aria-selected=true]")
    expect(option).to_contain_text("نرد خلال ساعة")
    composer.press("Enter")

    expect(composer).to_have_value(f"مرحبًا شكرًا لتواصلك يا {CUSTOMER}، نرد خلال ساعة.")
    expect(page.locator(".replies-menu")).to_be_hidden()
    expect(page.locator("article.bubble-out")).to_have_count(0)  # inserted, not sent
    _no_sideways_scroll(page)
    screenshot(page, "agent-day-saved-reply-ar")
    assert browsing.csp_violations() == []


def test_on_a_laptop_the_composer_offers_a_file_button_in_the_pages_language(browsing,
                                                                              live_server):
    """At 1280 px the composer's attachment is the labelled Arabic button alone: the browser's
    own «Choose File / No file chosen» control stays hidden, as it does on a phone."""
    admin, profile_id = _shop(live_server)
    conversation_id = _conversation(live_server, admin.organization_id, profile_id)
    page = browsing.new_page(account=admin)

    page.goto(f"/inbox/conversations/{conversation_id}")

    expect(page.locator(".composer .file-input-button")).to_have_text(
        translated(live_server, "Choose a file", "ar"))
    native = page.locator(".composer input[type=file]").bounding_box()
    assert native is not None
    assert native["width"] <= 1, native
    assert native["height"] <= 1, native
    screenshot(page, "agent-day-composer-laptop-ar")


def test_the_customer_stays_beside_the_chat_after_a_note_and_labels(browsing, live_server):
    """A private note and labels saved from the panel redraw it, and the live update of the
    same change may land first: the customer's card stays in the panel either way."""
    admin, profile_id = _shop(live_server)
    customer_id = _customer(live_server, admin)
    conversation_id = _conversation(live_server, admin.organization_id, profile_id,
                                    customer_id=customer_id)
    page = browsing.new_page(account=admin)
    socket = open_live(page, f"/inbox/conversations/{conversation_id}")
    card = page.locator(".panel-customer .customer-card-name")
    expect(card).to_have_text(CUSTOMER)

    for n in range(2):
        page.locator("textarea[name=note]").fill(f"تفضّل التوصيل مساءً {n}")
        # Both redraws of the panel come before the next note is typed: one landing after it
        # would take the typed note away with the panel it replaces.
        with expect_live_update(page, socket, "conversationUpdated"), \
                page.expect_response(lambda r: r.url.endswith("/notes")):
            page.get_by_role("button", name=translated(live_server, "Add note", "ar")).click()
        expect(page.locator(".notes .note")).to_have_count(n + 1)
        expect(card).to_have_text(CUSTOMER)
    page.locator("input[name=labels]").fill("مميز، ورد")
    page.locator("input[name=labels]").press("Enter")
    expect(page.locator(f"#conversation-row-{conversation_id} .chip")).to_have_count(2)
    expect(card).to_have_text(CUSTOMER)


def _colleagues_note(live: LiveServer, org_id: int, conversation_id: int, text: str) -> None:
    """A note a manager adds from their own page: the panel's live update reaches the others."""
    with live.transaction(org_id):
        colleague = make_user(db.session.get(Organization, org_id), "manager", full_name="سارة")
        inbox.add_note(db.session.get(Conversation, conversation_id), colleague, text)


def test_a_note_being_typed_stays_through_a_colleagues_live_update(browsing, live_server):
    """An admin is typing a private note when a colleague's note redraws the panel live: what
    they typed stays in the box, and the focus in it."""
    admin, profile_id = _shop(live_server)
    conversation_id = _conversation(live_server, admin.organization_id, profile_id)
    page = browsing.new_page(account=admin)
    socket = open_live(page, f"/inbox/conversations/{conversation_id}")
    box = page.locator("textarea[name=note]")
    box.fill("تفضّل التوصيل")

    with expect_live_update(page, socket, "conversationUpdated"):
        _colleagues_note(live_server, admin.organization_id, conversation_id, "من سارة")
    expect(page.locator(".notes .note")).to_have_count(1)  # the panel is the new one
    expect(box).to_have_value("تفضّل التوصيل")
    expect(box).to_be_focused()


def test_a_panel_redrawn_by_a_colleagues_change_still_sends(browsing, live_server):
    """After a colleague's note redrew the panel live, the admin's note from the redrawn form
    is added: the form carries no token of the colleague's session (nor of a job's), which
    the server refused before the page's own (400 in the panel)."""
    admin, profile_id = _shop(live_server)
    conversation_id = _conversation(live_server, admin.organization_id, profile_id)
    page = browsing.new_page(account=admin)
    socket = open_live(page, f"/inbox/conversations/{conversation_id}")
    with expect_live_update(page, socket, "conversationUpdated"):
        _colleagues_note(live_server, admin.organization_id, conversation_id, "من سارة")
    expect(page.locator(".notes .note")).to_have_count(1)

    page.locator("textarea[name=note]").fill("تفضّل التوصيل")
    with page.expect_response(lambda r: r.url.endswith("/notes")) as sent:
        page.get_by_role("button", name=translated(live_server, "Add note", "ar")).click()
    assert sent.value.status == 200
    expect(page.locator(".notes .note")).to_have_count(2)
    expect(page.locator(".notes")).to_contain_text("تفضّل التوصيل")


def test_the_sidebars_icons_stand_apart_from_their_labels(browsing, live_server):
    """On a laptop each sidebar entry's icon sits beside its label with a gap, not touching
    it (the sidebar's own rule once made its entries blocks, undoing the gap)."""
    admin, _profile = _shop(live_server)
    page = browsing.new_page(account=admin)

    page.goto("/")

    entry = page.locator(".sidebar .nav-link").first
    icon = entry.locator(".icon").bounding_box()
    label = entry.locator(".nav-label").bounding_box()
    assert icon is not None
    assert label is not None
    gap = icon["x"] - (label["x"] + label["width"])  # right to left: the icon comes first
    assert gap >= 6, (icon, label)
    assert abs((icon["y"] + icon["height"] / 2) - (label["y"] + label["height"] / 2)) < 4
