"""A stand-in for crm/whatsapp/neonize_client.NeonizeClient that never leaves the process.

It speaks the boundary's interface: `connect()` blocks until `stop()`, QR codes arrive through
`on_qr`, and everything else through `on_event(kind, event)` with neonize's own event objects
(PairStatusEv, ConnectedEv, MessageEv, ReceiptEv...), built here as neonize builds them. The test
drives it (show a QR, pair, receive a message, drop the link) and reads what it was asked to do.
"""

from __future__ import annotations

import itertools
import secrets
import sqlite3
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from neonize.events import (
    ConnectedEv,
    DisconnectedEv,
    LoggedOutEv,
    MessageEv,
    PairStatusEv,
    ReceiptEv,
    StreamReplacedEv,
)
from neonize.exc import NeonizeError
from neonize.proto.Neonize_pb2 import JID, MessageInfo, MessageSource
from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import Message

from crm.whatsapp.supervisor import Supervisor, Timings
from tests.live import wait_until

OUR_NUMBER = "966500000001"
_ids = itertools.count(1)


def jid(address: str) -> JID:
    user, _, server = address.partition("@")
    return JID(User=user, Server=server)


def message_event(message: Message, message_id: str | None = None,
                  sender: str = "966501234567@s.whatsapp.net", push_name: str = "Sara",
                  chat: str | None = None, sender_alt: str = "", from_me: bool = False,
                  group: bool = False, timestamp_ms: int = 1_764_000_000_000) -> MessageEv:
    """A MessageEv as neonize delivers it (timestamps in milliseconds, as its newer builds)."""
    source = MessageSource(Chat=jid(chat or sender), Sender=jid(sender), IsFromMe=from_me,
                           IsGroup=group)
    if sender_alt:
        source.SenderAlt.CopyFrom(jid(sender_alt))
    info = MessageInfo(ID=message_id or f"3A{next(_ids):014d}", MessageSource=source,
                       Pushname=push_name, Timestamp=timestamp_ms)
    return MessageEv(Info=info, Message=message)


def receipt_event(kind: int, *message_ids: str,
                  chat: str = "966501234567@s.whatsapp.net") -> ReceiptEv:
    source = MessageSource(Chat=jid(chat), Sender=jid(chat))
    return ReceiptEv(MessageSource=source, MessageIDs=list(message_ids), Type=kind,
                     Timestamp=1_764_000_100)


def device_session() -> tuple[bytes, bytes]:
    """A session database holding a paired device, and the secret inside it."""
    secret = b"noise-key-" + secrets.token_hex(16).encode()
    connection = sqlite3.connect(":memory:")
    connection.execute("CREATE TABLE whatsmeow_device (jid TEXT PRIMARY KEY, noise_key BLOB)")
    connection.execute("INSERT INTO whatsmeow_device VALUES (?, ?)",
                       (f"{OUR_NUMBER}:7@s.whatsapp.net", secret))
    connection.commit()
    data = connection.serialize()
    connection.close()
    return data, secret


def holds_device(path: Path) -> bool:
    if not path.exists() or path.stat().st_size == 0:
        return False
    connection = sqlite3.connect(path)
    try:
        return bool(connection.execute("SELECT count(*) FROM whatsmeow_device").fetchone()[0])
    except sqlite3.OperationalError:
        return False
    finally:
        connection.close()


class FakeNetwork:
    """Every fake client the supervisors made, by supervisor, and the failures to play."""

    def __init__(self) -> None:
        self.clients: list[FakeClient] = []
        self.attempt_times: dict[str, list[float]] = defaultdict(list)
        self.failures_left: dict[str, int] = defaultdict(int)
        self.failure_text: dict[str, str] = {}
        self.lock = threading.Lock()

    def factory(self, owner: str = "A"):
        def make(session_path: Path, client_id: str, on_qr, on_event) -> FakeClient:
            client = FakeClient(self, owner, session_path, client_id, on_qr, on_event)
            with self.lock:
                self.clients.append(client)
            return client

        return make

    def fail_next(self, profile_id: int, times: int,
                  error: str = "dial tcp: connection refused") -> None:
        """The profile's next `times` connections fail, as neonize raises whatsmeow's error."""
        self.failures_left[f"wasl-profile-{profile_id}"] = times
        self.failure_text[f"wasl-profile-{profile_id}"] = error

    def running(self, profile_id: int) -> list[FakeClient]:
        with self.lock:
            return [client for client in self.clients
                    if client.client_id == f"wasl-profile-{profile_id}" and client.is_running]

    def client(self, profile_id: int) -> FakeClient:
        """The client running the profile's session right now (waits for it)."""
        return wait_until(lambda: next(iter(self.running(profile_id)), None),
                          f"a client for profile {profile_id} running")


class FakeClient:
    def __init__(self, network: FakeNetwork, owner: str, session_path: Path, client_id: str,
                 on_qr, on_event) -> None:
        self.network = network
        self.owner = owner
        self.session_path = session_path
        self.client_id = client_id
        self.on_qr = on_qr
        self.on_event = on_event
        self.calls: list[tuple[str, tuple]] = []
        self.send_delay = 0.0
        self.is_running = False
        self.was_stopped = threading.Event()

    # -- the boundary's interface --------------------------------------------------------------

    def connect(self) -> None:
        self.network.attempt_times[self.client_id].append(time.monotonic())
        if self.network.failures_left[self.client_id] > 0:
            self.network.failures_left[self.client_id] -= 1
            raise NeonizeError(self.network.failure_text[self.client_id])
        self.is_running = True
        try:
            if holds_device(self.session_path):
                self.on_event("connected", ConnectedEv(status=True))
            self.was_stopped.wait()
        finally:
            self.is_running = False

    def stop(self) -> None:
        self.was_stopped.set()

    def send(self, to: str, kind: str, text: str, media: bytes | None = None,
             mime_type: str = "", filename: str = "", reply: dict | None = None) -> str:
        self.calls.append(("send", (to, kind, text, media, mime_type, filename, reply)))
        time.sleep(self.send_delay)
        return f"3EB0{next(_ids):016X}"

    def edit(self, to: str, message_id: str, text: str) -> None:
        self.calls.append(("edit", (to, message_id, text)))

    def revoke(self, to: str, message_id: str) -> None:
        self.calls.append(("revoke", (to, message_id)))

    def mark_read(self, to: str, message_ids: list[str]) -> None:
        self.calls.append(("mark_read", (to, message_ids)))

    def download(self, media: bytes) -> bytes:
        self.calls.append(("download", (media,)))
        return b"\x89PNG fake image bytes"

    def log_out(self) -> None:
        self.calls.append(("log_out", ()))

    # -- what WhatsApp does, on the test's word -------------------------------------------------

    def show_qr(self, code: str) -> None:
        self.on_qr(code)

    def pair(self, phone: str = OUR_NUMBER) -> bytes:
        """The phone scanned the code: the device is stored, paired and connected."""
        data, secret = device_session()
        source, target = sqlite3.connect(":memory:"), sqlite3.connect(self.session_path)
        source.deserialize(data)
        source.backup(target)
        source.close()
        target.close()
        self.on_event("pair_status", PairStatusEv(ID=JID(User=phone, Device=7,
                                                         Server="s.whatsapp.net"),
                                                  Status=PairStatusEv.SUCCESS))
        self.on_event("connected", ConnectedEv(status=True))
        return secret

    def fail_pairing(self, error: str) -> None:
        self.on_event("pair_status", PairStatusEv(Status=PairStatusEv.ERROR, Error=error))

    def receive(self, event: MessageEv) -> None:
        self.on_event("message", event)

    def receipt(self, event: ReceiptEv) -> None:
        self.on_event("receipt", event)

    def drop(self) -> None:
        self.on_event("disconnected", DisconnectedEv(status=True))

    def reconnect(self) -> None:
        self.on_event("connected", ConnectedEv(status=True))

    def log_out_remotely(self) -> None:
        """The phone unlinked this device."""
        self.on_event("logged_out", LoggedOutEv(OnConnect=False))

    def replaced(self) -> None:
        self.on_event("failure", StreamReplacedEv())

    def called(self, name: str) -> list[tuple]:
        return [arguments for call, arguments in self.calls if call == name]

    def __repr__(self) -> str:
        return f"<FakeClient {self.client_id} of {self.owner}>"


def text(body: str, **context: Any) -> Message:
    """A text message; with `context`, an extended text carrying a reply or forward."""
    if not context:
        return Message(conversation=body)
    message = Message()
    message.extendedTextMessage.text = body
    for key, value in context.items():
        setattr(message.extendedTextMessage.contextInfo, key, value)
    return message


# -- a supervisor working with the fakes ---------------------------------------------------

FAST = Timings(scan=0.1, heartbeat=0.1, lock_ttl=2.0, backoff_base=0.05, backoff_max=0.2,
               save=0.1, pairing=60.0, command_wait=0.1)


class RunningSupervisor:
    """A Supervisor in a thread of its own, as `crm whatsapp supervise` runs one."""

    def __init__(self, live_server, network: FakeNetwork, owner: str = "A",
                 timings: Timings = FAST) -> None:
        self.supervisor = Supervisor(live_server.app, network.factory(owner), timings)
        self.thread = threading.Thread(target=self.supervisor.run, name=f"supervisor-{owner}",
                                       daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.supervisor.stop()
        self.thread.join(10)
        assert not self.thread.is_alive(), "the supervisor did not stop"


@contextmanager
def supervising(live_server, network: FakeNetwork, timings: Timings = FAST
                ) -> Iterator[RunningSupervisor]:
    running = RunningSupervisor(live_server, network, timings=timings)
    try:
        yield running
    finally:
        running.stop()
