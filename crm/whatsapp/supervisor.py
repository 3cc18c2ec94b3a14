"""`crm whatsapp supervise`: holds the linked-device session of every `web` profile.

The supervisor says it runs with a heartbeat in Redis (renewed at each scan, withdrawn when it
stops), so pages can tell "waiting for the QR code" from "nothing will show one".

One runner per profile that wants a session (pairing, connected, or disconnected with a stored
session), in three threads of its own:
- the runner: a heartbeat that renews the profile's Redis lock, saves the session when it changed
  and gives up a pairing nobody finishes;
- its connection: `client.connect()` (blocking), tried again with capped exponential backoff;
- its commands: send/edit/revoke/mark_read/download/logout from the profile's Redis list (BLPOP),
  answered on the reply key the caller (crm/whatsapp/channels/web.py) waits on.
Client events (QR, pairing, connection, messages, receipts) are handled on the thread the client
calls back on, each a unit of work in the profile's organization, committed here; emits and
events go out after the commit.

The session is neonize's SQLite file. It is stored encrypted in the profile's secrets (key
"session"), written to a private file (0600, in a 0700 folder under the instance folder, named by
the profile id) before the client starts, saved back when it changes, and removed when the runner
ends. Two supervisors never hold one session: a runner exists only while its supervisor holds the
profile's lock (SET NX PX with a token, renewed by the heartbeat); the other one tries again at
its next scan.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import os
import signal
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import qrcode
from flask import Flask
from redis.exceptions import LockError, RedisError
from redis.lock import Lock
from sqlalchemy import text

from crm.crypto import decrypt_json, encrypt
from crm.extensions import db
from crm.models import utcnow
from crm.realtime import emit_to_admins, emit_to_org
from crm.tenancy import get_in_organization, organization_context
from crm.transaction import commit, rollback
from crm.whatsapp import services
from crm.whatsapp.channels.base import StatusUpdate
from crm.whatsapp.channels.web import (
    QR_TTL,
    REPLY_TTL,
    commands_key,
    inbound_from_event,
    lock_key,
    mark_supervisor_alive,
    mark_supervisor_gone,
    phone_of,
    qr_key,
    statuses_from_receipt,
)
from crm.whatsapp.models import WhatsAppProfile

log = logging.getLogger("crm.whatsapp.supervisor")
PAIR_SUCCESS = 2  # neonize PairStatus.PStatus.SUCCESS
FAILURES = {"StreamReplaced": "stream_replaced", "TemporaryBan": "temporary_ban",
            "ClientOutdated": "client_outdated"}
ClientFactory = Callable[[Path, str, Callable[[str], None], Callable[[str, Any], None]], Any]


@dataclass(frozen=True)
class Timings:
    """How often and how long the supervisor does things, in seconds (tests shorten them)."""

    scan: float = 5.0  # re-read the list of web profiles
    alive: float = 30.0  # the supervisor counts as running this long after a scan
    heartbeat: float = 2.0
    lock_ttl: float = 30.0
    backoff_base: float = 1.0
    backoff_max: float = 60.0
    save: float = 30.0  # check the session file for changes to store
    # Give a pairing up when no new QR code came for this long: codes rotate every 20-60 s
    # until WhatsApp stops offering them.
    pairing: float = 90.0
    command_wait: float = 1.0  # BLPOP timeout: how soon a stopping runner notices


def neonize_client(session_path: Path, client_id: str, on_qr: Callable[[str], None],
                   on_event: Callable[[str, Any], None]) -> Any:
    # Not a cycle: neonize loads its Go library (over a second) into whatever imports it;
    # only the supervisor's process needs it, and the tests replace it with a fake.
    from crm.whatsapp.neonize_client import NeonizeClient

    return NeonizeClient(session_path, client_id, on_qr, on_event)


class Supervisor:
    """Start a runner for each web profile that wants a session; stop those that no longer do."""

    def __init__(self, app: Flask, client_factory: ClientFactory = neonize_client,
                 timings: Timings = Timings()) -> None:
        self.app = app
        self.client_factory = client_factory
        self.timings = timings
        self.runners: dict[int, ProfileRunner] = {}
        self.name = uuid.uuid4().hex
        self._stopping = threading.Event()

    def run(self) -> None:
        """Scan every few seconds until stop(); then stop every runner."""
        log.info("supervising WhatsApp linked devices")
        connection = self.app.extensions["crm.redis"]
        while not self._stopping.is_set():
            try:
                mark_supervisor_alive(connection, self.name, self.timings.alive)
                self.scan()
            except Exception:
                log.exception("scanning web profiles failed; trying again")
            self._stopping.wait(self.timings.scan)
        try:
            mark_supervisor_gone(connection, self.name)
        except RedisError:
            log.warning("could not withdraw the heartbeat; it lapses by itself")
        for runner in self.runners.values():
            runner.stop()
        for runner in self.runners.values():
            runner.join(self.timings.lock_ttl)
        log.info("stopped supervising WhatsApp linked devices")

    def run_until_signalled(self) -> None:
        """Run until SIGTERM or SIGINT (Ctrl-C)."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_args: self.stop())
        self.run()

    def stop(self) -> None:
        self._stopping.set()

    def scan(self) -> None:
        wanted = self._profiles_wanting_a_session()
        self.runners = {pid: runner for pid, runner in self.runners.items() if runner.is_alive()}
        for profile_id, runner in self.runners.items():
            if profile_id not in wanted:
                runner.stop()
        for profile_id, org_id in wanted.items():
            if profile_id not in self.runners:
                self._start(org_id, profile_id)

    def _profiles_wanting_a_session(self) -> dict[int, int]:
        """Profile id → organization id of each web profile that should be connected."""
        wanted = {}
        with self.app.app_context():
            listed = db.session.execute(
                text("SELECT organization_id, profile_id FROM wasl_whatsapp_web_profiles()")).all()
            for org_id, profile_id in listed:
                with organization_context(org_id):
                    profile = get_in_organization(WhatsAppProfile, profile_id)
                    if profile is not None and wants_session(profile):
                        wanted[profile_id] = org_id
            rollback()
        return wanted

    def _start(self, org_id: int, profile_id: int) -> None:
        lock = Lock(self.app.extensions["crm.redis"], lock_key(profile_id),
                    timeout=self.timings.lock_ttl, blocking=False, thread_local=False)
        if not lock.acquire():
            log.debug("profile %s is held by another supervisor", profile_id)
            return
        runner = ProfileRunner(self, org_id, profile_id, lock)
        self.runners[profile_id] = runner
        runner.start()


def wants_session(profile: WhatsAppProfile) -> bool:
    """Pairing, connected, or dropped with a session to resume (not failed, not logged out)."""
    if profile.state in ("pairing", "connected"):
        return True
    return profile.state == "disconnected" and profile.secrets is not None


class ProfileRunner(threading.Thread):
    """One profile's session: its client, its commands, its lock."""

    def __init__(self, supervisor: Supervisor, org_id: int, profile_id: int, lock: Lock) -> None:
        super().__init__(name=f"whatsapp-profile-{profile_id}", daemon=True)
        self.app = supervisor.app
        self.timings = supervisor.timings
        self.client_factory = supervisor.client_factory
        self.org_id = org_id
        self.profile_id = profile_id
        self.lock = lock
        self.client: Any = None
        self.session_path = session_folder(self.app) / f"profile-{profile_id}.db"
        self._stopping = threading.Event()
        self._session_lock = threading.Lock()
        self._connected = False
        self._has_device = False  # a paired device is in the session file
        self._forget_session = False  # logged out: never store the file again
        self._lock_lost = False  # another supervisor may hold the profile: touch nothing
        self._saved_digest: bytes | None = None
        self._last_save = time.monotonic()
        self._last_qr: float | None = None
        self._failures = 0

    def stop(self) -> None:
        self._stopping.set()

    def run(self) -> None:
        threads = [threading.Thread(target=self._connect_loop, name=f"{self.name}-connection",
                                    daemon=True),
                   threading.Thread(target=self._command_loop, name=f"{self.name}-commands",
                                    daemon=True)]
        try:
            self._write_session_file()
            for thread in threads:
                thread.start()
            while not self._stopping.wait(self.timings.heartbeat):
                self._heartbeat()
        except Exception:
            log.exception("profile %s: runner failed", self.profile_id)
        finally:
            self._stopping.set()
            self._wind_down(threads)

    # -- the heartbeat and the end ------------------------------------------------------------

    def _heartbeat(self) -> None:
        try:
            self.lock.reacquire()
        except LockError:
            log.warning("profile %s: lock lost; stopping its session", self.profile_id)
            self._lock_lost = True
            self._stopping.set()
            return
        if time.monotonic() - self._last_save >= self.timings.save:
            try:
                self._save_session()
            except Exception:  # the database may be back by the next beat; the session lives on
                log.exception("profile %s: could not store the session", self.profile_id)
        if self._last_qr is not None and time.monotonic() - self._last_qr > self.timings.pairing:
            self._end("disconnected", "pairing_timeout")

    def _wind_down(self, threads: list[threading.Thread]) -> None:
        """Stop the client, store the session a last time, and let go of the profile."""
        if self._connected and not self._lock_lost and self._disconnected_by_user():
            try:
                self.client.log_out()  # unlink the device from the phone, too
            except Exception:
                log.exception("profile %s: could not log out", self.profile_id)
        deadline = time.monotonic() + self.timings.lock_ttl
        for thread in threads:
            while thread.is_alive() and time.monotonic() < deadline:
                if self.client is not None:
                    self.client.stop()  # again, should connect() have started after a stop
                thread.join(0.2)
        try:
            if not self._lock_lost:
                self._save_session()
                self._unit(self._leave)
        except Exception:
            log.exception("profile %s: could not record the end of its session", self.profile_id)
        remove_session_files(self.session_path)
        try:
            self.lock.release()
        except (LockError, RedisError):
            log.info("profile %s: lock already gone", self.profile_id)
        log.info("profile %s: session stopped", self.profile_id)

    def _disconnected_by_user(self) -> bool:
        """Was the number disconnected or deleted (which forgets its session)?"""
        gone: list[bool] = []
        self._unit(lambda profile: gone.append(
            profile.is_deleted or (profile.state == "disconnected" and profile.secrets is None)))
        return gone == [True]

    def _leave(self, profile: WhatsAppProfile) -> None:
        if profile.state in ("pairing", "connected"):
            self._disconnect(profile, "disconnected", "stopped")

    def _end(self, state: str, reason: str, detail: str | None = None,
             forget: bool = False) -> None:
        """End this session for good (logged out, failed, pairing abandoned)."""
        def record(profile: WhatsAppProfile) -> None:
            if forget:
                store_session(profile, None)
            self._disconnect(profile, state, reason, detail)

        if detail:
            log.warning("profile %s: %s: %s", self.profile_id, reason, detail)
        self._forget_session = self._forget_session or forget
        self._unit(record)
        self._stopping.set()

    def _disconnect(self, profile: WhatsAppProfile, state: str, reason: str,
                    detail: str | None = None) -> None:
        self.app.extensions["crm.redis"].delete(qr_key(self.profile_id))
        profile.last_error = (detail or reason)[:500]
        if profile.state != state:
            profile.state = state
            emit_to_org("clientDisconnected", {"profile_id": profile.id, "reason": reason},
                        org_id=self.org_id)

    # -- the connection -----------------------------------------------------------------------

    def _connect_loop(self) -> None:
        client_id = f"wasl-profile-{self.profile_id}"
        while not self._stopping.is_set():
            self.client = self.client_factory(self.session_path, client_id, self._on_qr,
                                              self._on_event)
            if self._stopping.is_set():
                break
            try:
                self.client.connect()
                detail = "the connection ended"
            except Exception as exc:  # noqa: BLE001 - whatever stopped it, try again later
                detail = str(exc) or type(exc).__name__
            self._connected = False
            if self._stopping.is_set():
                break
            self._failures += 1
            delay = min(self.timings.backoff_base * 2 ** (self._failures - 1),
                        self.timings.backoff_max)
            log.warning("profile %s: connection failed (%s); retrying in %.1fs",
                        self.profile_id, detail, delay)
            try:
                self._unit(lambda profile, detail=detail: self._connect_failed(profile, detail))
            except Exception:
                log.exception("profile %s: could not record the failure", self.profile_id)
            self._stopping.wait(delay)

    def _connect_failed(self, profile: WhatsAppProfile, detail: str) -> None:
        """Record why the connection failed; a pairing goes on (the next try may show a QR
        code), a paired number shows as disconnected until it is back."""
        if profile.state != "pairing" or self._has_device:
            self._disconnect(profile, "disconnected", "connect_failed", detail)
            return
        profile.last_error = detail[:500]
        emit_to_org("clientDisconnected", {"profile_id": profile.id, "reason": "connect_failed"},
                    org_id=self.org_id)

    def _on_qr(self, code: str) -> None:
        """Show a new pairing code in the browser (never logged: it is a key to the number)."""
        try:
            self._last_qr = time.monotonic()
            data_url = qr_data_url(code)
            self.app.extensions["crm.redis"].setex(qr_key(self.profile_id), QR_TTL, data_url)

            def show(profile: WhatsAppProfile) -> None:
                profile.state = "pairing"
                profile.last_error = None
                # A pairing code links a phone to the organization's number: admins only.
                emit_to_admins("qrCode", {"profile_id": profile.id,
                                          "qr_png_data_url": data_url}, org_id=self.org_id)

            self._unit(show)
        except Exception:
            log.exception("profile %s: could not show a QR code", self.profile_id)

    def _on_event(self, kind: str, event: Any) -> None:
        handlers = {"pair_status": self._on_pair_status, "connected": self._on_connected,
                    "disconnected": self._on_disconnected, "logged_out": self._on_logged_out,
                    "failure": self._on_failure, "message": self._on_message,
                    "receipt": self._on_receipt}
        try:
            handlers[kind](event)
        except Exception:  # never raise into the client's thread
            log.exception("profile %s: handling %s failed", self.profile_id, kind)

    def _on_pair_status(self, event: Any) -> None:
        if event.Status != PAIR_SUCCESS:
            self._end("failed", "pair_error", event.Error or None)
            return
        self._has_device = True
        self._last_qr = None
        phone = phone_of(event.ID)

        def paired(profile: WhatsAppProfile) -> None:
            profile.phone_number = phone
            profile.last_error = None

        self._unit(paired)
        log.info("profile %s: paired", self.profile_id)
        self._save_session()

    def _on_connected(self, _event: Any) -> None:
        self._connected = True
        self._failures = 0
        self._last_qr = None

        def ready(profile: WhatsAppProfile) -> None:
            self.app.extensions["crm.redis"].delete(qr_key(self.profile_id))
            profile.state = "connected"
            profile.connected_at = utcnow()
            profile.last_error = None
            emit_to_org("clientReady", {"profile_id": profile.id,
                                        "phone_number": profile.phone_number},
                        org_id=self.org_id)

        self._unit(ready)
        self._save_session()

    def _on_disconnected(self, _event: Any) -> None:
        """The link dropped; the client reconnects by itself."""
        self._connected = False
        self._unit(lambda profile: self._disconnect(profile, "disconnected", "connection_lost"))

    def _on_logged_out(self, _event: Any) -> None:
        self._connected = False
        self._end("disconnected", "logged_out", forget=True)

    def _on_failure(self, event: Any) -> None:
        self._connected = False
        self._end("failed", FAILURES.get(event.DESCRIPTOR.name, "failed"))

    def _on_message(self, event: Any) -> None:
        inbound = inbound_from_event(event)
        if inbound is not None:
            self._unit(lambda profile: services.receive_inbound(profile, inbound))

    def _on_receipt(self, event: Any) -> None:
        for update in statuses_from_receipt(event):
            self._unit(lambda profile, update=update: services.apply_status(profile, update))

    # -- commands -----------------------------------------------------------------------------

    def _command_loop(self) -> None:
        connection = self.app.extensions["crm.redis"]
        while not self._stopping.is_set():
            try:
                item = connection.blpop([commands_key(self.profile_id)],
                                        timeout=self.timings.command_wait)
                if item is not None:
                    self._execute(json.loads(item[1]), connection)
            except Exception:
                log.exception("profile %s: handling commands failed", self.profile_id)
                self._stopping.wait(self.timings.command_wait)

    def _execute(self, command: dict, connection: Any) -> None:
        if command["deadline"] < time.time():
            log.info("profile %s: %s dropped, its caller gave up", self.profile_id,
                     command["action"])
            return
        try:
            reply = {"ok": True, "result": self._perform(command["action"], command["arguments"])}
        except Exception as exc:  # noqa: BLE001 - the caller gets the reason as its error
            log.warning("profile %s: %s failed: %s", self.profile_id, command["action"], exc)
            reply = {"ok": False, "code": str(getattr(exc, "code", type(exc).__name__)),
                     "message": str(exc)[:500]}
        connection.pipeline().rpush(command["reply_to"], json.dumps(reply)).expire(
            command["reply_to"], REPLY_TTL).execute()
        if command["action"] == "send" and reply["ok"]:
            self._settle_sent(command["arguments"]["message_id"], reply["result"]["id"])

    def _perform(self, action: str, arguments: dict) -> Any:
        client = self.client
        if client is None or not self._connected:
            raise NotConnectedError("the WhatsApp session is not connected")
        if action == "send":
            media = arguments.get("media") or {}
            data = Path(media["path"]).read_bytes() if media else None
            provider_id = client.send(arguments["to"], arguments["type"], arguments["text"],
                                      media=data, mime_type=media.get("mime_type", ""),
                                      filename=media.get("filename", ""),
                                      reply=arguments["reply"])
            return {"id": provider_id}
        if action == "edit":
            return client.edit(arguments["to"], arguments["id"], arguments["text"])
        if action == "revoke":
            return client.revoke(arguments["to"], arguments["id"])
        if action == "mark_read":
            return client.mark_read(arguments["to"], arguments["ids"])
        if action == "download":
            data = client.download(base64.b64decode(arguments["media"]))
            return {"data": base64.b64encode(data).decode()}
        if action == "logout":
            client.log_out()
            self._connected = False
            self._end("disconnected", "logged_out", forget=True)
            return None
        raise ValueError(f"unknown command {action!r}")

    def _settle_sent(self, message_id: int, provider_id: str) -> None:
        """Name the sent message, so a send whose caller gave up is settled, not left unknown."""
        update = StatusUpdate(provider_message_id=provider_id, status="sent",
                              timestamp=utcnow(), our_message_id=message_id)
        try:
            self._unit(lambda profile: services.apply_status(profile, update))
        except Exception:
            log.exception("profile %s: could not record message %s as sent", self.profile_id,
                          message_id)

    # -- the stored session ---------------------------------------------------------------------

    def _write_session_file(self) -> None:
        """Put the stored session (if any) where the client opens it, readable by us only."""
        data: list[bytes] = []
        self._unit(lambda profile: data.append(session_of(profile) or b""))
        remove_session_files(self.session_path)
        descriptor = os.open(self.session_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as file:
            file.write(data[0] if data else b"")
        self._has_device = bool(data and data[0])
        if self._has_device:
            self._saved_digest = hashlib.sha256(data[0]).digest()

    def _save_session(self) -> None:
        """Store the session file, encrypted, when it holds a device and changed."""
        with self._session_lock:
            self._last_save = time.monotonic()
            if not self._has_device or self._forget_session:
                return
            data = snapshot(self.session_path)
            digest = hashlib.sha256(data).digest() if data else None
            if data is None or digest == self._saved_digest:
                return

            def keep(profile: WhatsAppProfile) -> None:
                if not profile.is_deleted and wants_session(profile):  # not disconnected since
                    store_session(profile, data)

            self._unit(keep)
            self._saved_digest = digest

    def _unit(self, work: Callable[[WhatsAppProfile], Any]) -> None:
        """Run `work(profile)` in the profile's organization and commit (skipped if it is gone)."""
        if self._lock_lost:
            return
        with self.app.app_context(), organization_context(self.org_id):
            try:
                profile = get_in_organization(WhatsAppProfile, self.profile_id)
                if profile is not None:
                    work(profile)
                commit()
            except Exception:
                rollback()
                raise


class NotConnectedError(Exception):
    code = "not_connected"


def session_folder(app: Flask) -> Path:
    folder = Path(app.config["INSTANCE_PATH"]) / "whatsapp-sessions"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder.chmod(0o700)
    return folder


def remove_session_files(path: Path) -> None:
    for suffix in ("", "-journal", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def session_of(profile: WhatsAppProfile) -> bytes | None:
    encoded = decrypt_json(profile.secrets).get("session")
    return base64.b64decode(encoded) if encoded else None


def store_session(profile: WhatsAppProfile, data: bytes | None) -> None:
    """Keep `data` as the profile's session, encrypted; None forgets it."""
    secrets = decrypt_json(profile.secrets)
    if data is None:
        secrets.pop("session", None)
    else:
        secrets["session"] = base64.b64encode(data).decode()
    profile.secrets = encrypt(secrets) if secrets else None


def snapshot(path: Path) -> bytes | None:
    """A consistent copy of the SQLite session while the client may be writing to it."""
    if not path.exists() or path.stat().st_size == 0:
        return None
    source = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=10)
    target = sqlite3.connect(":memory:")
    try:
        source.backup(target)
        return target.serialize()
    finally:
        source.close()
        target.close()


def qr_data_url(code: str) -> str:
    """The pairing code as a PNG image in a data URL, for an <img> on the page."""
    image = qrcode.QRCode(border=2, box_size=8)
    image.add_data(code)
    buffer = io.BytesIO()
    image.make_image().save(buffer)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
