"""Media downloads of the `cloud` channel fetch only what Meta serves: a media id is digits, the
URL the Graph API answers is https on a host of WHATSAPP_MEDIA_HOSTS that resolves to a public
address, and no redirect is followed. A refused download leaves the message "could not be
downloaded", never retried, and sends the access token nowhere. A failure of a moment (the
CDN, the network, the linked-device supervisor) is tried again with backoff, and final only
once the retries are used up."""

from __future__ import annotations

import hashlib
import socket

import pytest
from rq.registry import ScheduledJobRegistry

from crm import jobs
from crm.extensions import db
from crm.foundation.models import User
from crm.jobs import enqueue, get_queue
from crm.tenancy import organization_context
from crm.whatsapp import jobs as whatsapp_jobs
from crm.whatsapp import services
from crm.whatsapp.models import Message
from tests.factories import login, run_jobs
from tests.whatsapp.factories import make_conversation, make_message, make_profile
from tests.whatsapp.fake_graph import FakeGraph
from tests.whatsapp.test_cloud import VERSION, Number, deliver, messages, payload
from tests.whatsapp.test_provider_keys import delivery, message

MEDIA_ID = "1003383421387255"
JPEG = b"\xff\xd8\xff\xe0fake-jpeg-bytes"
CDN = "media.fake-cdn.test"  # a name the `dns` fixture resolves; no real lookup is made


@pytest.fixture
def number():
    return Number()


@pytest.fixture
def dns(monkeypatch):
    """Resolve the names a test maps (name → address) and the loopback ones; any other name is
    unknown, so no test reaches a real network."""
    real = socket.getaddrinfo
    names: dict[str, str] = {}

    def getaddrinfo(host, port, *args, **kwargs):
        if host in ("127.0.0.1", "localhost"):
            return real(host, port, *args, **kwargs)
        if host in names:
            return real(names[host], port, *args, **kwargs)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return names


@pytest.fixture
def graph(app, monkeypatch, dns):
    fake = FakeGraph()
    monkeypatch.setitem(app.config, "WHATSAPP_GRAPH_URL", fake.url)
    fake.add_media(MEDIA_ID, JPEG, "image/jpeg")
    yield fake
    fake.stop()


def image_arrives(app, client, number: Number) -> Message:
    """The contact sends an image; the ingest and media jobs run. The stored message."""
    deliver(client, number.url, payload("image", media_id=MEDIA_ID,
                                        sha256=hashlib.sha256(JPEG).hexdigest()))
    run_jobs(app, queues=("whatsapp",))
    [image] = messages(number.org_id)
    return image


def downloads(graph) -> list[str]:
    return [r.path for r in graph.requests if not r.path.startswith("/v")]


def test_the_fakes_exactly_listed_host_downloads(app, client, graph, number):
    """The test settings list the fake's host (plain http, loopback) exactly: it downloads."""
    image = image_arrives(app, client, number)

    assert image.content["path"]
    assert "media_error" not in image.content
    assert downloads(graph) == [f"/download/{MEDIA_ID}"]


# -- the media id ------------------------------------------------------------------------------

@pytest.mark.parametrize("media_id", ["../../me", "me?fields=access_token", "1234/owner",
                                      "١٢٣"])
def test_a_delivered_media_id_that_is_not_digits_is_refused(client, number, media_id):
    """A media id becomes a Graph API path: one that is not ASCII digits makes the delivery
    malformed, and nothing is stored."""
    body = delivery(message(1, "image", {"id": media_id, "mime_type": "image/jpeg"}))

    answer = deliver(client, number.url, body)

    assert answer.status_code == 400
    assert messages(number.org_id) == []


def test_a_stored_media_id_that_is_not_digits_is_never_sent_to_the_graph_api(
        app, client, graph, number):
    """A row stored before media ids were checked is refused by the download itself: the
    Graph API never sees it, and the message says its file could not be downloaded."""
    deliver(client, number.url, payload("image", media_id=MEDIA_ID, sha256="ab"))
    [image] = messages(number.org_id)
    with organization_context(number.org_id):
        db.session.get(Message, image.id).content = {"media_id": "../../me", "mime_type": "x"}
        enqueue(whatsapp_jobs.download_media, image.id, queue="whatsapp")
    graph.requests.clear()
    run_jobs(app, queues=("whatsapp",))

    assert graph.requests == []
    assert messages(number.org_id)[0].content["media_error"] == "invalid_media_id"


# -- the URL the Graph API answers -------------------------------------------------------------

@pytest.mark.parametrize("url", [
    "https://evil.example/steal",  # not a listed host
    "http://lookaside.fbsbx.com/v/t1/x.jpg",  # a Meta host, but not https
    "https://lookaside.fbsbx.com.evil.example/x.jpg",  # a listed name as a prefix
    "https://evilfbcdn.net/x.jpg",  # a listed name as a suffix, not a subdomain
    "https://lookaside.fbsbx.com@evil.example/x.jpg",  # a listed name as the user
    "file:///etc/passwd",
    "gopher://127.0.0.1:6379/_FLUSHALL",
    "http://169.254.169.254/latest/meta-data/",
    "http://localhost:{port}/download/" + MEDIA_ID,  # the fake itself, by an unlisted name
])
def test_a_media_url_outside_the_listed_hosts_is_never_fetched(app, client, graph, number,
                                                               url):
    """Whatever URL the Graph API answers, only an https URL on a listed host is fetched (the
    download carries the access token); anything else leaves the message failed."""
    graph.media_urls[MEDIA_ID] = url.format(port=graph.url.rsplit(":", 1)[1])

    image = image_arrives(app, client, number)

    assert downloads(graph) == []
    assert image.content["media_error"] == "refused_url"
    assert "path" not in image.content


@pytest.mark.parametrize("address", ["127.0.0.1", "10.1.2.3", "192.168.0.5", "169.254.169.254",
                                     "100.64.0.1", "0.0.0.0", "::1", "::ffff:127.0.0.1",
                                     "fe80::1", "fd00::1"])
def test_a_subdomain_of_a_listed_host_resolving_to_a_private_address_is_refused(
        app, client, graph, number, dns, monkeypatch, address):
    """A host listed only through its parent domain must resolve to a public address: private,
    loopback, link-local, shared and reserved ranges are refused before any connection."""
    dns[CDN] = address
    monkeypatch.setitem(app.config, "WHATSAPP_MEDIA_HOSTS", "http://fake-cdn.test")
    graph.media_urls[MEDIA_ID] = graph.url.replace("127.0.0.1", CDN) + f"/download/{MEDIA_ID}"

    image = image_arrives(app, client, number)

    assert downloads(graph) == []
    assert image.content["media_error"] == "refused_url"


def test_a_host_listed_exactly_may_resolve_to_a_private_address(app, client, graph, number, dns,
                                                                monkeypatch):
    """An operator listing a host itself (a local fake, an internal mirror) trusts where it
    resolves."""
    dns[CDN] = "127.0.0.1"
    monkeypatch.setitem(app.config, "WHATSAPP_MEDIA_HOSTS", f"http://{CDN}")
    graph.media_urls[MEDIA_ID] = graph.url.replace("127.0.0.1", CDN) + f"/download/{MEDIA_ID}"

    image = image_arrives(app, client, number)

    assert downloads(graph) == [f"/download/{MEDIA_ID}"]
    assert "media_error" not in image.content


def test_a_redirect_is_not_followed_and_the_download_is_not_retried(app, client, graph,
                                                                    number):
    """A media URL answering 3xx is a failed download: the redirect is not followed, the
    message says so, and running the job again asks nothing more of the Graph API."""
    graph.add_media("1003383421387299", b"another file", "image/jpeg")
    graph.redirect_downloads_to = f"{graph.url}/download/1003383421387299"

    image = image_arrives(app, client, number)
    with organization_context(number.org_id):
        enqueue(whatsapp_jobs.download_media, image.id, queue="whatsapp")
    run_jobs(app, queues=("whatsapp",))

    assert downloads(graph) == [f"/download/{MEDIA_ID}"]
    assert image.content["media_error"] == "redirect"
    assert messages(number.org_id)[0].content == image.content


def test_a_refused_download_shows_on_the_message(app, client, graph, number):
    """The bubble says the file could not be downloaded, not that it is loading."""
    graph.media_urls[MEDIA_ID] = "https://evil.example/steal"
    image = image_arrives(app, client, number)
    with organization_context(number.org_id):
        admin = db.session.get(User, number.admin_id)
        admin.preferred_language = "en"
        login(client, admin)

    page = client.get(f"/inbox/conversations/{image.conversation_id}")

    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "could not be downloaded" in html
    assert "loading…" not in html


# -- failures of a moment ----------------------------------------------------------------------

def test_a_download_failing_for_a_moment_is_tried_again_after_a_wait(app, client, graph, number):
    """Meta's CDN answering 503 is not the end of it: the message still waits for its file
    (no error shown) and the job runs again after the first backoff interval."""
    graph.download_failures = 1

    image = image_arrives(app, client, number)

    assert "media_error" not in image.content
    assert "path" not in image.content
    [job_id] = ScheduledJobRegistry(queue=get_queue(services.QUEUE)).get_job_ids()
    assert get_queue(services.QUEUE).fetch_job(job_id).args[2] == (image.id,)


def test_a_download_that_recovers_within_its_retries_is_stored(app, client, graph, number,
                                                               monkeypatch):
    """Two failed attempts, then the file: it is stored, with no error left on the message."""
    monkeypatch.setattr(jobs, "RETRY_INTERVALS", (0, 0, 0))  # no wait: the burst runs them
    graph.download_failures = 2

    image = image_arrives(app, client, number)

    assert image.content["path"]
    assert "media_error" not in image.content
    assert downloads(graph) == [f"/download/{MEDIA_ID}"] * 3


def test_a_download_still_failing_after_its_retries_is_final(app, client, graph, number,
                                                             monkeypatch):
    """Once the retries are used up the failure is recorded, and the bubble says so."""
    monkeypatch.setattr(jobs, "RETRY_INTERVALS", (0, 0))
    graph.download_failures = 10

    image = image_arrives(app, client, number)

    assert image.content["media_error"] == "http_503"
    assert downloads(graph) == [f"/download/{MEDIA_ID}"] * 3


def test_a_refused_url_is_final_at_once(app, client, graph, number, monkeypatch):
    """A refusal of the download checks is no failure of a moment: recorded on the first
    attempt, never tried again."""
    monkeypatch.setattr(jobs, "RETRY_INTERVALS", (0, 0))
    graph.media_urls[MEDIA_ID] = "https://evil.example/steal"

    image = image_arrives(app, client, number)

    assert image.content["media_error"] == "refused_url"
    assert [r.path for r in graph.requests].count(f"/{VERSION}/{MEDIA_ID}") == 1


def test_a_linked_device_download_waits_for_the_supervisor(app, org, monkeypatch):
    """The linked-device supervisor is not running (restarting, say): the download is tried
    again later, not recorded as failed."""
    monkeypatch.setitem(app.config, "WHATSAPP_WEB_COMMAND_TIMEOUT", 0.1)
    org_id = org.id  # commits expire loaded objects
    conversation = make_conversation(make_profile(org, "web"))
    with organization_context(org_id):
        voice_id = make_message(conversation, type="audio", body="", content={
            "web_media": "eyJ1cmwiOiAieCJ9", "mime_type": "audio/ogg"}).id
        enqueue(whatsapp_jobs.download_media, voice_id, queue=services.QUEUE)

    run_jobs(app, queues=(services.QUEUE,))

    with organization_context(org_id):
        assert "media_error" not in db.session.get(Message, voice_id).content
    assert ScheduledJobRegistry(queue=get_queue(services.QUEUE)).get_job_ids()
