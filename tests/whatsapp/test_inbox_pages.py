"""The inbox pages: the conversation list, a thread, the composer and the contact panel, as
agents, managers and members use them in the browser (full pages and htmx fragments)."""

from __future__ import annotations

import io
import re
from datetime import timedelta

import pytest
from sqlalchemy import select

from crm.extensions import db
from crm.models import utcnow
from crm.tenancy import organization_context
from crm.whatsapp import media
from crm.whatsapp.models import Conversation, Message
from tests.campaigns.factories import make_template
from tests.customers.factories import make_customer
from tests.factories import login, make_org, make_user, run_jobs
from tests.foundation import HTMX
from tests.queries import assert_max_queries, count_queries
from tests.whatsapp.factories import (
    close_queue,
    make_conversation,
    make_media_message,
    make_message,
    make_profile,
    page_text,
    png,
)


def _get(model, org_id: int, object_id: int):
    """The row as stored now (a request commits and expires what the test holds)."""
    with organization_context(org_id):
        return db.session.get(model, object_id, populate_existing=True)


def _messages(org_id: int, conversation_id: int) -> list[Message]:
    with organization_context(org_id):
        return list(db.session.scalars(select(Message).where(
            Message.conversation_id == conversation_id).order_by(Message.id)
            .execution_options(populate_existing=True)))



def _row_ids(html: str) -> list[int]:
    return [int(n) for n in re.findall(r'<li id="conversation-row-(\d+)"', html)]


@pytest.fixture
def org():
    """An organization working in English, so the tests read the messages they expect."""
    return make_org(language="en")


@pytest.fixture
def sandbox(org):
    return make_profile(org, "sandbox", display_name="Demo number")


@pytest.fixture
def conversation(sandbox):
    return make_conversation(sandbox, contact_name="Fatima")


@pytest.fixture
def agent(org):
    return make_user(org, "agent")


# -- the list ----------------------------------------------------------------------------------

def test_the_list_shows_newest_first_with_preview_time_and_unread(client, org, sandbox):
    """Rows come newest first, each with its last message, its time and its unread count."""
    now = utcnow()
    old = make_conversation(sandbox, contact_name="Old", last_message_at=now - timedelta(days=3),
                            last_message_preview="See you", unread_count=0)
    new = make_conversation(sandbox, contact_name="New", last_message_at=now,
                            last_message_preview="Where is my order?", unread_count=2)
    login(client, org.admin)

    html = page_text(client, "/inbox")

    assert _row_ids(html) == [new.id, old.id]
    row = html[html.index(f'id="conversation-row-{new.id}"'):]
    assert "Where is my order?" in row.split("</li>")[0]
    assert 'class="unread-badge"' in row.split("</li>")[0]
    assert ">2</span>" in row.split("</li>")[0]
    assert 'class="conversation-row unread"' in html
    assert "unread-badge" not in html[html.index(f'id="conversation-row-{old.id}"'):]


def test_a_contact_without_a_name_is_shown_by_the_number_written_as_everywhere(client, org,
                                                                             sandbox):
    """A contact who gave no name is titled by their number in the one format of the product
    («+966 55 012 3456», kept left to right), in the list and in the thread's header."""
    conversation = make_conversation(sandbox, phone="+966550123456")
    login(client, org.admin)

    row = page_text(client, "/inbox").split(f'id="conversation-row-{conversation.id}"')[1]
    thread = page_text(client, f"/inbox/conversations/{conversation.id}")

    shown = '<span class="ltr phone" dir="ltr">+966 55 012 3456</span>'
    assert shown in row.split('class="row-preview"')[0]
    assert shown in thread.split(f'id="conversation-{conversation.id}-title"')[1].split("</h2>")[0]
    header = thread.split('class="thread-title"')[1].split("</div>")[0]
    assert header.count("+966 55 012 3456") == 1, header  # not again under the title
    assert "+966550123456" not in row.split("</li>")[0]


def test_filters_narrow_the_list_and_the_list_says_which_it_shows(client, org, sandbox):
    """Mine, unassigned and all; a status; a number. The list element carries its filters,
    which is how live rows find the lists they belong in."""
    manager = make_user(org, "manager")
    other_number = make_profile(org, "sandbox", display_name="Second number")
    mine = make_conversation(sandbox, assigned_user_id=manager.id)
    unassigned = make_conversation(sandbox, status="pending")
    elsewhere = make_conversation(other_number, status="resolved")
    login(client, manager)

    assert _row_ids(page_text(client, "/inbox?scope=mine")) == [mine.id]
    assert set(_row_ids(page_text(client, "/inbox?scope=unassigned"))) == {unassigned.id,
                                                                          elsewhere.id}
    assert _row_ids(page_text(client, "/inbox?status=pending")) == [unassigned.id]
    assert _row_ids(page_text(client, f"/inbox?profile={other_number.id}")) == [elsewhere.id]
    fragment = page_text(
        client, f"/inbox?scope=unassigned&status=resolved&profile={other_number.id}",
        headers=HTMX)
    assert fragment.lstrip().startswith("<section id=\"inbox-list\"")
    assert (f'data-scope="unassigned" data-viewer="{manager.id}"' in fragment)
    assert ('data-status="resolved"' in fragment)
    assert (f'data-profile="{other_number.id}"' in fragment)
    assert ('data-search=""' in fragment)
    assert _row_ids(fragment) == [elsewhere.id]
    # Nonsense filters fall back to the whole list rather than failing.
    assert len(_row_ids(page_text(client, "/inbox?scope=everything&status=x&profile=abc"))) == 3


@pytest.mark.parametrize("term", ["احمد", "أحمد", "اَحْمَد", "ahmad"])
def test_search_treats_arabic_letter_variants_alike(client, org, sandbox, term):
    """أحمد is found as احمد or with diacritics; another name is not."""
    ahmad = make_conversation(sandbox, contact_name="أحمد السالم")
    make_conversation(sandbox, contact_name="Ahmad Latin")
    make_conversation(sandbox, contact_name="منى")
    login(client, org.admin)

    ids = _row_ids(page_text(client, "/inbox", query_string={"q": term}))

    if term == "ahmad":
        assert ahmad.id not in ids
        assert len(ids) == 1
    else:
        assert ids == [ahmad.id]


@pytest.mark.parametrize("term", ["٠٥٠١٢٣٤٥٦٧", "+966 50 123 4567", "050-123-4567", "4567"])
def test_search_finds_a_phone_however_it_is_written(client, org, sandbox, term):
    """Arabic-Indic digits, spaces, a national prefix: all find +966501234567."""
    wanted = make_conversation(sandbox, phone="+966501234567")
    make_conversation(sandbox, phone="+966559998877")
    login(client, org.admin)

    assert _row_ids(page_text(client, "/inbox", query_string={"q": term})) == [wanted.id]


@pytest.mark.parametrize("term", ["٠٥٥١٢٣", "551 234", "0551234"])
def test_search_finds_a_partial_number_as_the_crm_does(client, org, sandbox, term):
    """The start of a local number (its leading 0 too, in Arabic-Indic digits or spaced) finds
    +966551234567, by the rule the customers search uses (crm.search.search_terms)."""
    wanted = make_conversation(sandbox, phone="+966551234567")
    make_conversation(sandbox, phone="+966501234567")
    login(client, org.admin)

    assert _row_ids(page_text(client, "/inbox", query_string={"q": term})) == [wanted.id]


def test_search_finds_message_text_and_says_when_nothing_matches(client, org, sandbox):
    """A word from a message finds its conversation; a search list is marked as such."""
    wanted = make_conversation(sandbox)
    make_message(wanted, body="The invoice for September")
    make_conversation(sandbox)
    login(client, org.admin)

    html = page_text(client, "/inbox?q=invoice")
    assert _row_ids(html) == [wanted.id]
    assert 'data-search="1"' in html
    assert "Nothing matches this search." in page_text(client, "/inbox?q=nothing-like-this")


def test_load_more_continues_where_the_page_ended(client, org, sandbox):
    """30 rows, then "load more" brings the rest (keyset), and no further link."""
    now = utcnow()
    made = [make_conversation(sandbox, last_message_at=now - timedelta(minutes=n))
            for n in range(33)]
    login(client, org.admin)

    first = page_text(client, "/inbox")
    assert _row_ids(first) == [c.id for c in made[:30]]
    more = re.search(r'class="load-more">\s*<a class="button secondary" href="([^"]+)"', first)
    assert more
    rest = page_text(client, more.group(1).replace("&amp;", "&"), headers=HTMX)
    assert _row_ids(rest) == [c.id for c in made[30:]]
    assert "load-more" not in rest
    assert "<section" not in rest


# -- who sees what -------------------------------------------------------------------------------

def test_an_agent_with_nothing_assigned_is_pointed_to_the_queue(client, org, sandbox, agent):
    """An agent's own list, empty, says where the work waits: the unassigned queue they take
    from (not that customers' messages appear there, which they do not until taken)."""
    make_conversation(sandbox)
    login(client, agent)

    empty = page_text(client, "/inbox").split('class="empty-row"')[1].split("</li>")[0]

    assert "Nothing is assigned to you." in empty
    assert 'href="/inbox?scope=unassigned"' in empty
    close_queue(org)
    assert "scope=unassigned" not in page_text(client, "/inbox").split(
        'class="empty-row"')[1].split("</li>")[0]


def test_an_agent_sees_only_conversations_assigned_to_them(client, org, sandbox, agent):
    """With the unassigned queue closed to agents, the list holds only the agent's
    conversations whatever they ask for; another's conversation, an unassigned one, their
    messages and their files answer 404."""
    close_queue(org)
    mine = make_conversation(sandbox, assigned_user_id=agent.id)
    colleague = make_user(org, "agent")
    theirs = make_conversation(sandbox, assigned_user_id=colleague.id)
    unassigned = make_conversation(sandbox)
    picture = make_media_message(theirs)
    login(client, agent)

    for query in ("", "?scope=all", "?scope=unassigned"):
        assert _row_ids(page_text(client, f"/inbox{query}")) == [mine.id]
    assert "segmented" not in page_text(client, "/inbox")  # no mine/unassigned/all to choose
    for url in (f"/inbox/conversations/{theirs.id}", f"/inbox/conversations/{unassigned.id}",
                f"/inbox/conversations/{theirs.id}/messages",
                f"/inbox/messages/{picture.id}", f"/inbox/messages/{picture.id}/media"):
        assert client.get(url).status_code == 404, url
    response = client.post(f"/inbox/conversations/{theirs.id}/messages", data={"text": "Hi"})
    assert response.status_code == 404
    assert len(_messages(org.id, theirs.id)) == 1
    assert client.get(f"/inbox/conversations/{mine.id}").status_code == 200


def test_a_member_reads_conversations_but_cannot_answer(client, org, conversation):
    """Read-only: the thread shows without composer, actions or assignment forms, opening it
    leaves it unread, and a send is refused."""
    make_message(conversation)
    with organization_context(org.id):
        conversation.unread_count = 1
        db.session.flush()
    member = make_user(org, "member")
    login(client, member)

    html = page_text(client, f"/inbox/conversations/{conversation.id}")

    assert "You can read this conversation" in html
    assert 'name="text"' not in html
    assert "message-menu" not in html
    assert 'name="assignee_id"' not in html
    assert _get(Conversation, org.id, conversation.id).unread_count == 1
    response = client.post(f"/inbox/conversations/{conversation.id}/messages",
                           data={"text": "Hi"})
    assert response.status_code == 403


# -- a thread ------------------------------------------------------------------------------------

def test_opening_a_conversation_marks_it_read(client, org, conversation):
    """Opening clears the unread count; the htmx answer carries the updated row out of band."""
    make_message(conversation)
    with organization_context(org.id):
        conversation.unread_count = 3
        db.session.flush()
    login(client, org.admin)

    html = page_text(client, f"/inbox/conversations/{conversation.id}", headers=HTMX)

    assert html.lstrip().startswith(f'<div id="conversation-{conversation.id}"')
    assert f'id="conversation-row-{conversation.id}" class="conversation-row" hx-swap-oob' in html
    assert _get(Conversation, org.id, conversation.id).unread_count == 0


def test_a_thread_shows_bubbles_on_both_sides_with_ticks_quotes_and_states(client, org,
                                                                         conversation):
    """The contact's messages on one side and ours on the other, each with time and ticks;
    replies quote their message; forwarded, edited and deleted messages say so; reactions
    show; an unconfirmed send says so."""
    question = make_message(conversation, body="Is it in stock?",
                            content={"reactions": {"contact": "👍"}})
    replies = {status: make_message(conversation, "out", body=f"Answer {status}",
                                    status=status, reply_to_id=question.id)
               for status in ("queued", "sent", "delivered", "read", "unknown")}
    forwarded = make_message(conversation, body="Forwarded text", is_forwarded=True)
    edited = make_message(conversation, "out", body="Edited text", edited_at=utcnow())
    deleted = make_message(conversation, "out", body="Secret", deleted_at=utcnow())
    login(client, org.admin)

    html = page_text(client, f"/inbox/conversations/{conversation.id}")

    def bubble(message: Message) -> str:
        start = html.index(f'<article id="message-{message.id}"')
        return html[start:html.index("</article>", start)]

    assert 'class="bubble bubble-in"' in bubble(question)
    assert "👍" in bubble(question)
    assert "ticks pending" in bubble(replies["queued"])
    assert "ticks sent" in bubble(replies["sent"])
    assert "✓✓" not in bubble(replies["sent"])
    assert "ticks delivered" in bubble(replies["delivered"])
    assert "ticks read" in bubble(replies["read"])
    assert "not confirmed yet" in bubble(replies["unknown"])
    assert all('class="bubble bubble-out"' in bubble(m) for m in replies.values())
    assert 'class="reply-quote"' in bubble(replies["sent"])
    assert "Is it in stock?" in bubble(replies["sent"])
    assert "Forwarded" in bubble(forwarded)
    assert "Edited" in bubble(edited)
    assert "This message was deleted." in bubble(deleted)
    assert "Secret" not in bubble(deleted)


def test_load_older_brings_the_page_before(client, org, conversation):
    """A long thread opens on its newest 50 messages; "load older" fetches those before."""
    made = [make_message(conversation, body=f"Line {n}") for n in range(55)]
    login(client, org.admin)

    html = page_text(client, f"/inbox/conversations/{conversation.id}")
    shown = [int(n) for n in re.findall(r'<article id="message-(\d+)"', html)]
    assert shown == [m.id for m in made[5:]]
    older = re.search(r'class="load-older">\s*<a class="button secondary" href="([^"]+)"', html)
    assert older
    assert page_text(client, f"/inbox/conversations/{conversation.id}/messages?cursor={'9' * 30}",
                 headers=HTMX).count("<article") == 50  # a nonsense cursor: the newest page
    page = page_text(client, older.group(1).replace("&amp;", "&"), headers=HTMX)
    assert [int(n) for n in re.findall(r'<article id="message-(\d+)"', page)] == [
        m.id for m in made[:5]]
    assert "load-older" not in page


def test_media_are_previewed_and_served_only_to_those_who_may_see_them(client, org,
                                                                      conversation, agent):
    """An image shows inline through the media view; a file that claims to be HTML is a
    download, never a page of ours; an agent not assigned gets 404 (with the unassigned queue
    closed to agents)."""
    close_queue(org)
    picture = make_media_message(conversation)
    page_like = make_media_message(conversation, mime_type="text/html", type="document",
                                   data=b"<script>alert(1)</script>", filename="x.html")
    login(client, org.admin)

    html = page_text(client, f"/inbox/conversations/{conversation.id}")
    assert f'src="/inbox/messages/{picture.id}/media"' in html
    assert f'href="/inbox/messages/{page_like.id}/media" download' in html

    image = client.get(f"/inbox/messages/{picture.id}/media")
    assert image.status_code == 200
    assert image.mimetype == "image/png"
    assert image.data == png()
    assert image.headers["X-Content-Type-Options"] == "nosniff"
    download = client.get(f"/inbox/messages/{page_like.id}/media")
    assert download.mimetype == "application/octet-stream"
    assert download.headers["Content-Disposition"].startswith("attachment")
    assert "sandbox" in download.headers["Content-Security-Policy"]

    login(client, agent)
    assert client.get(f"/inbox/messages/{picture.id}/media").status_code == 404


def test_a_file_not_downloaded_yet_is_shown_as_loading(client, org, conversation):
    """An inbound image whose download job has not run says so, and its URL is 404."""
    pending = make_message(conversation, type="image", body="",
                           content={"media_id": "123", "mime_type": "image/jpeg"})
    login(client, org.admin)

    assert "loading…" in page_text(client, f"/inbox/conversations/{conversation.id}")
    assert client.get(f"/inbox/messages/{pending.id}/media").status_code == 404


# -- sending ---------------------------------------------------------------------------------------

def test_a_text_is_queued_then_sent_and_delivered_by_the_jobs(client, app, org, conversation):
    """Send answers with the queued bubble, a fresh composer and the updated row; the outbox
    job sends it through the sandbox channel, which then delivers it."""
    login(client, org.admin)

    response = client.post(f"/inbox/conversations/{conversation.id}/messages",
                           data={"text": "  Your order ships today  "}, headers=HTMX)

    assert response.status_code == 200
    html = response.get_data(as_text=True)
    [message] = _messages(org.id, conversation.id)
    assert (message.status, message.body, message.direction) == ("queued",
                                                                 "Your order ships today", "out")
    assert html.lstrip().startswith(f'<article id="message-{message.id}" class="bubble bubble-out"')
    assert "ticks pending" in html
    assert f'id="composer-{conversation.id}" class="composer" hx-swap-oob="true"' in html
    assert f'id="conversation-row-{conversation.id}"' not in html  # the list may not show it
    assert response.headers["HX-Trigger"] == f"conversationChanged-{conversation.id}"

    run_jobs(app, queues=("whatsapp",))

    sent = _get(Message, org.id, message.id)
    assert sent.status == "delivered"
    assert sent.sent_at
    assert sent.provider_message_id
    assert "ticks delivered" in page_text(client, f"/inbox/conversations/{conversation.id}")


def test_a_plain_form_post_sends_and_redirects(client, org, conversation):
    """Without htmx the composer still works: the post redirects back to the conversation."""
    login(client, org.admin)

    response = client.post(f"/inbox/conversations/{conversation.id}/messages",
                           data={"text": "Hello"})

    assert response.status_code == 303
    assert response.location.endswith(f"/inbox/conversations/{conversation.id}")
    assert [m.body for m in _messages(org.id, conversation.id)] == ["Hello"]


@pytest.mark.parametrize("text", ["", "   ", "x" * 4097, "a\x00b"])
def test_a_bad_message_rerenders_the_composer_with_422_and_queues_nothing(client, app, org,
                                                                         conversation, text):
    """Empty, too long or with a NUL: the composer comes back (retargeted) with the error and
    what was typed; nothing is stored or queued."""
    login(client, org.admin)

    response = client.post(f"/inbox/conversations/{conversation.id}/messages",
                           data={"text": text}, headers=HTMX)

    assert response.status_code == 422
    assert response.headers["HX-Retarget"] == f"#composer-{conversation.id}"
    assert response.headers["HX-Reswap"] == "outerHTML"
    html = response.get_data(as_text=True)
    assert 'class="error"' in html
    assert 'aria-invalid="true"' in html
    assert _messages(org.id, conversation.id) == []
    assert app.extensions["crm.redis"].llen("rq:queue:whatsapp") == 0


def test_a_plain_bad_post_renders_the_page_with_422(client, org, conversation):
    login(client, org.admin)

    response = client.post(f"/inbox/conversations/{conversation.id}/messages", data={"text": ""})

    assert response.status_code == 422
    assert "Write a message first." in response.get_data(as_text=True)
    assert "<html" in response.get_data(as_text=True)


def _upload(data: bytes, filename: str, mime_type: str) -> dict:
    return {"text": "The catalogue", "file": (io.BytesIO(data), filename, mime_type)}


def test_an_image_is_sent_with_its_caption(client, app, org, conversation):
    """The file is stored, the caption is the message's text, and the bubble previews it."""
    login(client, org.admin)

    response = client.post(f"/inbox/conversations/{conversation.id}/messages",
                           data=_upload(png(4, 4), "catalogue.png", "image/png"), headers=HTMX,
                           content_type="multipart/form-data")

    assert response.status_code == 200
    [message] = _messages(org.id, conversation.id)
    assert (message.type, message.body, message.status) == ("image", "The catalogue", "queued")
    assert media.path_of(message).read_bytes() == png(4, 4)
    assert f'src="/inbox/messages/{message.id}/media"' in response.get_data(as_text=True)


@pytest.mark.parametrize(("data", "filename", "mime_type", "error"), [
    (b"\x00" * (5 * 1024 * 1024 + 1), "big.png", "image/png", "at most 5 MB"),
    (b"MZ-binary", "setup.exe", "application/x-msdownload", "cannot be sent on WhatsApp"),
], ids=["too large", "wrong type"])
def test_an_upload_outside_the_limits_is_422_and_nothing_is_queued(client, app, org,
                                                                   conversation, data, filename,
                                                                   mime_type, error):
    """A file too large for its kind, or of a type WhatsApp refuses: the composer says why."""
    login(client, org.admin)

    response = client.post(f"/inbox/conversations/{conversation.id}/messages",
                           data=_upload(data, filename, mime_type), headers=HTMX,
                           content_type="multipart/form-data")

    assert response.status_code == 422
    assert error in response.get_data(as_text=True)
    assert _messages(org.id, conversation.id) == []
    assert app.extensions["crm.redis"].llen("rq:queue:whatsapp") == 0


def test_a_body_over_the_upload_limit_is_refused_before_anything_is_read(client, app, org,
                                                                       conversation):
    """Over 16 MB the request is refused (413) before the form is parsed; htmx keeps the page
    as it is and the flash area says why."""
    login(client, org.admin)

    response = client.post(f"/inbox/conversations/{conversation.id}/messages", headers=HTMX,
                           content_type="multipart/form-data",
                           data=_upload(b"\x00" * (17 * 1024 * 1024), "film.mp4", "video/mp4"))

    assert response.status_code == 413
    assert response.headers["HX-Reswap"] == "none"
    assert "The file is too large: at most 16 MB." in response.get_data(as_text=True)
    assert _messages(org.id, conversation.id) == []
    assert app.extensions["crm.redis"].llen("rq:queue:whatsapp") == 0


def test_a_reply_quotes_its_message(client, org, conversation, sandbox):
    """Reply opens the composer with the quote (keeping the typed text); the sent message
    carries it. Quoting a message of another conversation is refused."""
    question = make_message(conversation, body="Do you deliver to Jeddah?")
    elsewhere = make_message(make_conversation(sandbox))
    login(client, org.admin)

    composer = page_text(client, f"/inbox/conversations/{conversation.id}/composer",
                     query_string={"reply_to": question.id, "text": "Yes, we"}, headers=HTMX)
    assert f'name="reply_to_id" value="{question.id}"' in composer
    assert "Do you deliver to Jeddah?" in composer
    assert ">Yes, we</textarea>" in composer

    response = client.post(f"/inbox/conversations/{conversation.id}/messages",
                           data={"text": "Yes, we do", "reply_to_id": question.id}, headers=HTMX)
    assert response.status_code == 200
    assert 'class="reply-quote"' in response.get_data(as_text=True)
    assert _messages(org.id, conversation.id)[-1].reply_to_id == question.id

    for bad in (elsewhere.id, "9" * 30, "x"):
        refused = client.post(f"/inbox/conversations/{conversation.id}/messages",
                              data={"text": "No", "reply_to_id": bad}, headers=HTMX)
        assert refused.status_code == 422
        assert "This message cannot be replied to." in refused.get_data(as_text=True)
    assert len(_messages(org.id, conversation.id)) == 2
    composer = client.get(f"/inbox/conversations/{conversation.id}/composer",
                          query_string={"reply_to": elsewhere.id}, headers=HTMX)
    assert composer.status_code == 422
    assert 'name="reply_to_id"' not in composer.get_data(as_text=True)


def test_outside_the_window_the_composer_offers_only_a_template(client, org):
    """A cloud conversation whose customer last wrote over 24 hours ago: the composer says so
    before anything is typed and offers the number's approved templates; a text is refused."""
    cloud = make_profile(org, "cloud")
    make_template(org, cloud, name="order_update", body="Hello {{1}}")
    closed = make_conversation(cloud, last_inbound_at=utcnow() - timedelta(hours=25))
    open_ = make_conversation(cloud, last_inbound_at=utcnow() - timedelta(hours=1))
    login(client, org.admin)

    html = page_text(client, f"/inbox/conversations/{closed.id}")
    assert "The 24-hour window has closed." in html
    assert 'name="template_id"' in html
    assert 'name="text"' not in html
    assert 'name="text"' in page_text(client, f"/inbox/conversations/{open_.id}")

    refused = client.post(f"/inbox/conversations/{closed.id}/messages", data={"text": "Hi"},
                          headers=HTMX)
    assert refused.status_code == 422
    assert "The 24-hour window has closed" in refused.get_data(as_text=True)
    assert _messages(org.id, closed.id) == []


def _templates_of(org, cloud):
    """An approved template with two parameters, a rejected one, and another number's."""
    offered = make_template(org, cloud, name="order_update", language="ar",
                            body="مرحبا {{1}}، طلبك {{2}} في الطريق")
    rejected = make_template(org, cloud, name="old_offer", status="REJECTED")
    elsewhere = make_template(org, make_profile(org, "cloud"), name="other_number")
    return offered, rejected, elsewhere


def test_the_closed_window_composer_picks_a_synced_template_previewed_for_the_customer(
        client, org):
    """The picker lists the number's approved templates only; picking one shows a field per
    parameter and the body filled in for the conversation's customer ({first_name} is
    theirs); sending it goes through the outbox with the filled body in the thread."""
    cloud = make_profile(org, "cloud")
    offered, _rejected, _elsewhere = _templates_of(org, cloud)
    customer = make_customer(org, name="Fatima Khan", phone="0501234567")
    closed = make_conversation(cloud, "+966501234567", customer_id=customer.id,
                               contact_name="WhatsApp name",
                               last_inbound_at=utcnow() - timedelta(days=2))
    login(client, org.admin)

    html = page_text(client, f"/inbox/conversations/{closed.id}")
    picker = html.split('name="template_id"')[1].split("</select>")[0]
    assert re.findall(r'<option value="(\d+)"', picker) == [str(offered.id)]
    assert html.count(f'id="composer-{closed.id}-parameter-') == 2
    assert "مرحبا {{1}}، طلبك {{2}} في الطريق" in html

    fields = page_text(client, f"/inbox/conversations/{closed.id}/template", headers=HTMX,
                       query_string={"template_id": offered.id,
                                     "parameters": ["{first_name}", "A-1234"]})
    assert "مرحبا Fatima، طلبك A-1234 في الطريق" in fields

    sent = client.post(f"/inbox/conversations/{closed.id}/template", headers=HTMX, data={
        "template_id": offered.id, "parameters": ["{first_name}", "A-1234"]})
    assert sent.status_code == 200
    [message] = _messages(org.id, closed.id)
    assert message.type == "template"
    assert message.content["template"] == {
        "name": "order_update", "language": "ar", "parameters": ["Fatima", "A-1234"]}
    assert message.body == "مرحبا Fatima، طلبك A-1234 في الطريق"
    assert "مرحبا Fatima، طلبك A-1234 في الطريق" in sent.get_data(as_text=True)


def test_without_javascript_the_picker_previews_another_template_and_sends_nothing(
        client, org):
    """The form's "Preview" button (shown only without JavaScript) posts the picker: the page
    comes back with the picked template's fields and its body filled in, the parameters as
    typed, and nothing is queued."""
    cloud = make_profile(org, "cloud")
    first = make_template(org, cloud, name="a_first", body="Hello {{1}}")
    offered, _rejected, _elsewhere = _templates_of(org, cloud)
    customer = make_customer(org, name="Fatima Khan", phone="0501234567")
    closed = make_conversation(cloud, "+966501234567", customer_id=customer.id,
                               last_inbound_at=utcnow() - timedelta(days=2))
    login(client, org.admin)
    page = page_text(client, f"/inbox/conversations/{closed.id}")
    assert '<noscript><button type="submit" name="preview" value="1"' in page
    assert "Hello {{1}}" in page  # the first template, until another is picked

    shown = client.post(f"/inbox/conversations/{closed.id}/template", data={
        "template_id": offered.id, "parameters": ["{first_name}", "A-1234"], "preview": "1"})
    assert shown.status_code == 200
    body = shown.get_data(as_text=True)
    picker = body.split('name="template_id"')[1].split("</select>")[0]
    assert f'<option value="{offered.id}" dir="ltr" selected>' in picker
    assert f'<option value="{first.id}" dir="ltr">' in picker
    assert "مرحبا Fatima، طلبك A-1234 في الطريق" in body
    assert 'value="A-1234"' in body
    assert _messages(org.id, closed.id) == []


def test_only_an_approved_template_with_every_parameter_is_sent(client, org):
    """Another number's template, a rejected one, a missing or empty parameter, or a NUL:
    422 with the reason beside the picker, and nothing is queued."""
    cloud = make_profile(org, "cloud")
    offered, rejected, elsewhere = _templates_of(org, cloud)
    closed = make_conversation(cloud, last_inbound_at=utcnow() - timedelta(days=2))
    login(client, org.admin)

    for data, reason in (
            ({"template_id": rejected.id, "parameters": ["a"]}, "approved templates"),
            ({"template_id": elsewhere.id}, "approved templates"),
            ({"template_id": "x"}, "approved templates"),
            ({"template_id": offered.id, "parameters": ["only one"]}, "every parameter"),
            ({"template_id": offered.id, "parameters": ["{company}", "1"]}, "every parameter"),
            ({"template_id": offered.id, "parameters": ["a\x00b", "1"]}, "one line")):
        refused = client.post(f"/inbox/conversations/{closed.id}/template", data=data,
                              headers=HTMX)
        assert refused.status_code == 422, data
        assert reason in refused.get_data(as_text=True), data
    assert _messages(org.id, closed.id) == []


def test_a_cloud_number_without_synced_templates_says_so(client, org):
    """No approved template yet: the composer says why there is nothing to send."""
    closed = make_conversation(make_profile(org, "cloud"),
                               last_inbound_at=utcnow() - timedelta(days=2))
    login(client, org.admin)
    html = page_text(client, f"/inbox/conversations/{closed.id}")
    assert f'id="composer-{closed.id}-no-templates"' in html
    assert 'name="template_id"' not in html


def test_a_failed_message_shows_the_reason_and_can_be_retried(client, app, org, conversation):
    """The provider's reason is shown with a Retry button; retrying queues it again and the
    job sends it."""
    failed = make_message(conversation, "out", status="failed", error_code="130429",
                          error_message="Rate limit hit", provider_message_id=None)
    login(client, org.admin)

    html = page_text(client, f"/inbox/conversations/{conversation.id}")
    assert "rate limit was reached" in html
    assert "(130429)" in html
    assert f'action="/inbox/messages/{failed.id}/retry"' in html

    response = client.post(f"/inbox/messages/{failed.id}/retry", headers=HTMX)
    assert response.status_code == 200
    assert "ticks pending" in response.get_data(as_text=True)
    assert _get(Message, org.id, failed.id).status == "queued"

    again = client.post(f"/inbox/messages/{failed.id}/retry", headers=HTMX)
    assert again.status_code == 409
    assert "Only a failed message can be sent again." in again.get_data(as_text=True)

    run_jobs(app, queues=("whatsapp",))
    assert _get(Message, org.id, failed.id).status == "delivered"


def test_forwarding_copies_a_message_into_the_chosen_conversation(client, org, sandbox,
                                                                  conversation):
    """The picker lists (and searches) conversations; choosing one forwards the message there,
    marked as forwarded. A conversation the agent may not see cannot be chosen."""
    message = make_message(conversation, body="Order #77 is ready")
    target = make_conversation(sandbox, contact_name="Warehouse")
    login(client, org.admin)

    picker = page_text(client, f"/inbox/messages/{message.id}/forward", headers=HTMX)
    assert "Warehouse" in picker
    assert "Fatima" in picker
    searched = page_text(client, f"/inbox/messages/{message.id}/forward?q=ware", headers=HTMX)
    assert "Warehouse" in searched
    assert "Fatima" not in searched

    response = client.post(f"/inbox/messages/{message.id}/forward",
                           data={"target_id": target.id}, headers=HTMX)
    assert response.status_code == 200
    assert "Message forwarded." in response.get_data(as_text=True)
    [copy] = _messages(org.id, target.id)
    assert (copy.body, copy.is_forwarded, copy.status) == ("Order #77 is ready", True, "queued")

    agent = make_user(org, "agent")
    with organization_context(org.id):
        db.session.get(Conversation, conversation.id).assigned_user_id = agent.id
        db.session.flush()
    close_queue(org)  # the unassigned target is then out of the agent's sight
    login(client, agent)
    for bad in (target.id, "9" * 30, ""):
        refused = client.post(f"/inbox/messages/{message.id}/forward",
                              data={"target_id": bad}, headers=HTMX)
        assert refused.status_code == 422
    assert "Choose a conversation to forward to." in refused.get_data(as_text=True)
    assert len(_messages(org.id, target.id)) == 1


def test_edit_and_delete_where_the_channel_allows_them(client, org, conversation):
    """On a channel that can (the sandbox, like linked devices): edit inline, delete for
    everyone. The bubble shows the new text or the deleted state."""
    sent = make_message(conversation, "out", body="Price is 100")
    login(client, org.admin)
    html = page_text(client, f"/inbox/conversations/{conversation.id}")
    assert f"/inbox/messages/{sent.id}/edit" in html
    assert f"/inbox/messages/{sent.id}/delete" in html

    form = page_text(client, f"/inbox/messages/{sent.id}/edit", headers=HTMX)
    assert "Price is 100</textarea>" in form
    empty = client.post(f"/inbox/messages/{sent.id}/edit", data={"text": " "}, headers=HTMX)
    assert empty.status_code == 422
    assert "Write a message first." in empty.get_data(as_text=True)
    edited = client.post(f"/inbox/messages/{sent.id}/edit", data={"text": "Price is 90"},
                         headers=HTMX)
    assert edited.status_code == 200
    assert "Price is 90" in edited.get_data(as_text=True)
    assert "Edited" in edited.get_data(as_text=True)

    deleted = client.post(f"/inbox/messages/{sent.id}/delete", headers=HTMX)
    assert deleted.status_code == 200
    assert "This message was deleted." in deleted.get_data(as_text=True)
    assert _get(Message, org.id, sent.id).deleted_at is not None


def test_a_cloud_number_offers_no_edit_or_delete(client, org):
    """The Cloud API has neither call: the actions are absent and a post is refused (422)."""
    conversation = make_conversation(make_profile(org, "cloud"))
    sent = make_message(conversation, "out", body="Hello")
    login(client, org.admin)

    html = page_text(client, f"/inbox/conversations/{conversation.id}")

    assert f"/inbox/messages/{sent.id}/edit" not in html
    assert f"/inbox/messages/{sent.id}/delete" not in html
    response = client.post(f"/inbox/messages/{sent.id}/delete", headers=HTMX)
    assert response.status_code == 422
    assert "cannot edit or delete" in response.get_data(as_text=True)
    form = client.get(f"/inbox/messages/{sent.id}/edit", headers=HTMX)
    assert form.status_code == 422
    assert "<textarea" not in form.get_data(as_text=True)
    assert _get(Message, org.id, sent.id).deleted_at is None


def test_a_row_asks_for_itself_when_its_conversation_changed(client, org, conversation):
    """A row listens for its conversation's change event and asks for itself again: the
    row alone, in a fixed number of queries."""
    login(client, org.admin)
    listed = page_text(client, "/inbox")
    assert (f'hx-trigger="conversationChanged-{conversation.id} from:body" hx-target="this"'
            in listed)

    with assert_max_queries(6):
        html = page_text(client, f"/inbox/conversations/{conversation.id}/row", headers=HTMX)

    assert html.lstrip().startswith(f'<li id="conversation-row-{conversation.id}"')
    assert "hx-swap-oob" not in html


# -- the contact panel -------------------------------------------------------------------------

def test_assigning_transferring_and_the_status(client, org, conversation, agent):
    """The panel assigns, transfers and unassigns, and changes the status; the answer is the
    new panel with the row updated out of band."""
    manager = make_user(org, "manager")
    other = make_user(org, "agent")
    login(client, manager)
    url = f"/inbox/conversations/{conversation.id}"

    html = page_text(client, url)
    assert f'<option value="{agent.id}" dir="auto">' in html
    assert f'<option value="{manager.id}" dir="auto">' in html

    response = client.post(f"{url}/assign", data={"assignee_id": agent.id}, headers=HTMX)
    assert response.status_code == 200
    panel = response.get_data(as_text=True)
    assert f'<option value="{agent.id}" dir="auto" selected>' in panel
    assert f'id="conversation-row-{conversation.id}"' not in panel  # the list may not show it
    assert response.headers["HX-Trigger"] == f"conversationChanged-{conversation.id}"
    assert agent.full_name in panel
    assert _get(Conversation, org.id, conversation.id).assigned_user_id == agent.id

    client.post(f"{url}/assign", data={"assignee_id": other.id}, headers=HTMX)
    assert _get(Conversation, org.id, conversation.id).assigned_user_id == other.id
    client.post(f"{url}/assign", data={"assignee_id": ""}, headers=HTMX)
    assert _get(Conversation, org.id, conversation.id).assigned_user_id is None

    response = client.post(f"{url}/status", data={"status": "resolved"}, headers=HTMX)
    assert response.status_code == 200
    assert re.search(r'value="resolved" class="secondary status-resolved"\s+aria-pressed="true"',
                     response.get_data(as_text=True))
    assert _get(Conversation, org.id, conversation.id).status == "resolved"


@pytest.mark.parametrize(("path", "data", "field"), [
    ("assign", {"assignee_id": "member"}, "Choose a member who answers WhatsApp."),
    ("assign", {"assignee_id": "nonsense"}, "Choose a member who answers WhatsApp."),
    ("assign", {"assignee_id": "9" * 25}, "Choose a member who answers WhatsApp."),
    ("status", {"status": "archived"}, "Choose one of the listed options."),
])
def test_a_bad_assignee_or_status_is_422_and_changes_nothing(client, org, conversation, path,
                                                             data, field):
    member = make_user(org, "member")
    if data.get("assignee_id") == "member":
        data = {"assignee_id": member.id}
    login(client, org.admin)

    response = client.post(f"/inbox/conversations/{conversation.id}/{path}", data=data,
                           headers=HTMX)

    assert response.status_code == 422
    assert field in response.get_data(as_text=True)
    stored = _get(Conversation, org.id, conversation.id)
    assert (stored.assigned_user_id, stored.status) == (None, "open")


# -- language, layout, cost ----------------------------------------------------------------------

def test_the_inbox_follows_the_language_and_direction(client, org, conversation):
    """Arabic pages are right-to-left, English ones left-to-right, with the same markup."""
    english = make_user(org, "manager", language="en")
    arabic = make_user(org, "manager", language="ar")
    login(client, arabic)
    url = f"/inbox/conversations/{conversation.id}"
    assert '<html lang="ar" dir="rtl">' in page_text(client, url)
    login(client, english)
    html = page_text(client, url)
    assert '<html lang="en" dir="ltr">' in html
    assert 'class="inbox"' in html


def test_a_history_restore_gets_the_whole_page(client, org, conversation):
    """Back/forward in the browser asks htmx to restore a URL: that needs the full page."""
    login(client, org.admin)

    html = page_text(client, f"/inbox/conversations/{conversation.id}",
                 headers={**HTMX, "HX-History-Restore-Request": "true"})

    assert "<html" in html
    assert 'id="inbox-list"' in html


def _count(client, url: str) -> int:
    with count_queries() as statements:
        page_text(client, url, headers=HTMX)
    return len(statements)


def test_the_list_and_a_thread_cost_the_same_queries_for_few_or_many(client, org, sandbox):
    """No query per row: 3 or 25 conversations, 3 or 40 messages (with senders, replies and
    assignees), the same number of queries, pinned. The search finds every conversation by
    its name: searching their made-up numbers found some or none, as the factories' counter
    had gone, and a list of none costs fewer queries."""
    agent = make_user(org, "agent")
    few = [make_conversation(sandbox, assigned_user_id=agent.id, contact_name="Noura")
           for _ in range(3)]
    thread = few[0]
    question = make_message(thread)
    for n in range(2):
        make_message(thread, "out", sender_user_id=org.admin.id, reply_to_id=question.id,
                     body=f"n{n}")
    login(client, org.admin)
    client.get("/inbox")  # the first request of an organization sets other modules up
    list_few = _count(client, "/inbox")
    search_few = _count(client, "/inbox?q=Noura")
    thread_few = _count(client, f"/inbox/conversations/{thread.id}")

    for _ in range(22):
        make_conversation(sandbox, assigned_user_id=make_user(org, "agent").id,
                          contact_name="Noura")
    for n in range(37):
        make_message(thread, "out", sender_user_id=make_user(org, "agent").id,
                     reply_to_id=question.id, body=f"m{n}")

    assert _count(client, "/inbox") == list_few
    assert _count(client, "/inbox?q=Noura") == search_few
    assert len(_row_ids(page_text(client, "/inbox?q=Noura", headers=HTMX))) == 25  # all found
    assert _count(client, f"/inbox/conversations/{thread.id}") == thread_few
    assert list_few <= 6
    assert search_few <= 7
    assert thread_few <= 10  # with the private notes and the member's composer keys


def test_the_page_has_no_inline_script_or_style(client, org, conversation):
    """CSP forbids them: every behaviour is an htmx attribute, every look a class."""
    make_media_message(conversation)
    login(client, org.admin)

    html = page_text(client, f"/inbox/conversations/{conversation.id}")

    assert "style=" not in html
    assert "<style" not in html
    assert not re.search(r"<script(?![^>]*\bsrc=)", html)
    assert not re.search(r"\son[a-z]+=", html)


def test_an_empty_inbox_says_where_conversations_come_from(client, org):
    login(client, org.admin)
    assert "Messages customers send to your WhatsApp numbers appear here." in page_text(
        client, "/inbox")
