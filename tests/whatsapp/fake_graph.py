"""A local stand-in for Meta's Graph API (WhatsApp Cloud API), served on a loopback port.

It answers like Meta's reference does — a phone number's details (GET /{phone_number_id}),
message sends, read receipts, media upload, media URL retrieval and download, a business
account's message templates page by page (GET /{business_account_id}/message_templates), Graph
error objects — records every request it gets, and has switches for the failures the outbox
must survive: a Graph error code (for every send, the next sends, or the sends to one
number), an answer slower than the client's timeout, a connection dropped after the request
arrived; and for the media URLs a download must refuse: a URL of the test's choosing, a
download that redirects; and downloads failing for a moment (503).
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import socket
import threading
import time
from dataclasses import dataclass, field

from flask import Flask, jsonify, request
from werkzeug.serving import make_server

TOKEN = "EAAG-fake-access-token"

# Graph error objects as Meta's error-code reference describes them.
ERRORS = {
    131047: (400, "(#131047) Re-engagement message", "Message failed to send because more "
             "than 24 hours have passed since the customer last replied to this number."),
    130429: (400, "(#130429) Rate limit hit", "Cloud API message throughput has been reached."),
    131026: (400, "(#131026) Message Undeliverable", "Unable to deliver message."),
    131000: (500, "(#131000) Something went wrong", "Message failed to send due to an "
             "unknown error."),
    131056: (400, "(#131056) (Business Account, Consumer Account) pair rate limit hit",
             "Too many messages sent from the sender phone number to the same recipient phone "
             "number in a short period of time."),
    131048: (400, "(#131048) Spam rate limit hit", "Message failed to send because there are "
             "restrictions on how many messages can be sent from this phone number."),
    131031: (400, "(#131031) Business Account locked", "Business Account is restricted from "
             "messaging users."),
    368: (400, "Temporarily blocked for policies violations", None),
    132001: (404, "(#132001) Template name does not exist in the translation",
             "template name (order_update) does not exist in ar"),
    190: (401, "Invalid OAuth access token - Cannot parse access token", None),
    100: (400, "(#100) Invalid parameter", None),
}
# What Meta answers a token that cannot see the object asked for (or when there is none).
NO_SUCH_OBJECT = ("Unsupported get request. Object with ID '%s' does not exist, cannot be "
                  "loaded due to missing permissions, or does not support this operation. "
                  "Please read the Graph API documentation at https://developers.facebook.com"
                  "/docs/graph-api")


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict
    json: dict | None
    form: dict
    files: dict[str, tuple[str, str, bytes]]  # name → (filename, content type, bytes)


@dataclass
class FakeGraph:
    token: str = TOKEN
    requests: list[Recorded] = field(default_factory=list)
    error_code: int | None = None  # answer sends with this Graph error
    next_errors: list[int] = field(default_factory=list)  # the next sends, one code each
    errors_for: dict[str, int] = field(default_factory=dict)  # `to` → code for its sends
    delay: float = 0.0  # seconds before answering a send
    drop_connection: bool = False  # close the connection of a send without answering
    raw_status: int | None = None  # answer sends with this status and a non-Graph body
    media: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    media_urls: dict[str, str] = field(default_factory=dict)  # media id → the URL answered
    redirect_downloads_to: str | None = None  # downloads answer 302 to this URL
    download_failures: int = 0  # answer this many downloads 503 (a CDN failing a moment)
    numbers: dict[str, tuple[str, dict]] = field(default_factory=dict)  # id → (token, details)
    templates: dict[str, list[dict]] = field(default_factory=dict)  # account id → templates
    url: str = ""

    def __post_init__(self) -> None:
        self._ids = itertools.count(1)
        self._server = make_server("127.0.0.1", 0, self._app(), threaded=True)
        self.url = f"http://127.0.0.1:{self._server.port}"
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def add_media(self, media_id: str, data: bytes, mime_type: str) -> None:
        """Make `media_id` retrievable, as media a contact sent would be."""
        self.media[media_id] = (data, mime_type)

    def add_number(self, phone_number_id: str, token: str = TOKEN,
                   verified_name: str = "Wasl Test Shop",
                   display_phone_number: str = "+966 50 123 4567") -> None:
        """Make `phone_number_id` a number of a WhatsApp Business Account that `token` sees."""
        self.numbers[phone_number_id] = (token, {
            "verified_name": verified_name, "display_phone_number": display_phone_number,
            "quality_rating": "GREEN", "id": phone_number_id})

    def add_template(self, account_id: str, name: str, language: str = "ar",
                     body: str = "مرحبا {{1}}", status: str = "APPROVED",
                     category: str = "MARKETING", **extra) -> dict:
        """Give business account `account_id` a message template, as Meta lists it."""
        template = {"name": name, "parameter_format": "POSITIONAL", "components": [
            {"type": "BODY", "text": body},
            {"type": "BUTTONS", "buttons": [{"type": "QUICK_REPLY", "text": "STOP"}]}],
            "language": language, "status": status, "category": category,
            "id": str(1_200_000 + sum(map(len, self.templates.values()))), **extra}
        self.templates.setdefault(account_id, []).append(template)
        return template

    def sends(self) -> list[dict]:
        """The JSON bodies of message sends (read receipts excluded)."""
        return [r.json for r in self.requests
                if r.path.endswith("/messages") and r.json and "status" not in r.json]

    # -- the app -------------------------------------------------------------------------------

    def _app(self) -> Flask:
        app = Flask("fake_graph")
        app.add_url_rule("/<version>/<phone_number_id>/messages", view_func=self._messages,
                         methods=["POST"])
        app.add_url_rule("/<version>/<phone_number_id>/media", view_func=self._upload,
                         methods=["POST"])
        app.add_url_rule("/<version>/<account_id>/message_templates",
                         view_func=self._message_templates)
        app.add_url_rule("/<version>/<object_id>", view_func=self._object)
        app.add_url_rule("/download/<media_id>", view_func=self._download)
        return app

    def _record(self) -> None:
        files = {name: (f.filename or "", f.mimetype, f.read())
                 for name, f in request.files.items()}
        self.requests.append(Recorded(request.method, request.path, dict(request.headers),
                                      request.get_json(silent=True), request.form.to_dict(),
                                      files))

    def _authorized(self) -> bool:
        return request.headers.get("Authorization") == f"Bearer {self.token}"

    def _object(self, version: str, object_id: str):
        """GET /{id}: a phone number's details, or a media file's URL."""
        if object_id in self.media:
            return self._media_url(version, object_id)
        self._record()
        tokens = {self.token} | {token for token, _details in self.numbers.values()}
        given = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if given not in tokens:
            return _error(190)
        token, details = self.numbers.get(object_id, (None, None))
        if token != given:
            return jsonify({"error": {"message": NO_SUCH_OBJECT % object_id,
                                      "type": "OAuthException", "code": 100,
                                      "error_subcode": 33, "fbtrace_id": "AbCdEfGhIjK"}}), 400
        return jsonify(details)

    def _messages(self, version: str, phone_number_id: str):
        self._record()
        if not self._authorized():
            return _error(190)
        if self.drop_connection:
            # Shut the socket: the client sent its request and never hears back.
            request.environ["werkzeug.socket"].shutdown(socket.SHUT_RDWR)
            return ""
        if self.delay:
            time.sleep(self.delay)
        body = request.get_json(silent=True) or {}
        code = self.error_code
        if body.get("status") != "read":  # a send
            code = (self.next_errors.pop(0) if self.next_errors
                    else self.errors_for.get(str(body.get("to"))) or code)
        if code:
            return _error(code)
        if self.raw_status:
            return "<html><body>upstream error</body></html>", self.raw_status
        if body.get("messaging_product") != "whatsapp":
            return _error(100)
        if body.get("status") == "read":
            return jsonify({"success": True})
        if not (body.get("to") or body.get("recipient")) or body.get("type") not in body:
            return _error(100)
        contact = ({"input": body["to"], "wa_id": body["to"]} if body.get("to")
                   else {"input": body["recipient"], "user_id": body["recipient"]})
        return jsonify({"messaging_product": "whatsapp", "contacts": [contact],
                        "messages": [{"id": f"wamid.FAKE{next(self._ids):06d}"}]})

    def _message_templates(self, version: str, account_id: str):
        """Meta's paged list: `data`, and `paging` with cursors, `next` only before the last
        page."""
        self._record()
        tokens = {self.token} | {token for token, _details in self.numbers.values()}
        if request.headers.get("Authorization", "").removeprefix("Bearer ") not in tokens:
            return _error(190)
        if account_id not in self.templates:
            return jsonify({"error": {"message": NO_SUCH_OBJECT % account_id,
                                      "type": "OAuthException", "code": 100,
                                      "error_subcode": 33, "fbtrace_id": "AbCdEfGhIjK"}}), 400
        templates = self.templates[account_id]
        limit = int(request.args.get("limit", 25))
        start = int(base64.b64decode(request.args["after"])) if "after" in request.args else 0
        page = templates[start:start + limit]
        paging = {"cursors": {"before": base64.b64encode(str(start).encode()).decode(),
                              "after": base64.b64encode(str(start + limit).encode()).decode()}}
        if start + limit < len(templates):
            paging["next"] = (f"https://graph.facebook.com/{version}/{account_id}/"
                              f"message_templates?limit={limit}&after="
                              f"{paging['cursors']['after']}")
        return jsonify({"data": page, "paging": paging})

    def _upload(self, version: str, phone_number_id: str):
        self._record()
        if not self._authorized():
            return _error(190)
        upload = request.files.get("file")
        if request.form.get("messaging_product") != "whatsapp" or upload is None:
            return _error(100)
        media_id = str(900000 + next(self._ids))
        upload.stream.seek(0)
        self.media[media_id] = (upload.read(), request.form.get("type") or upload.mimetype)
        return jsonify({"id": media_id})

    def _media_url(self, version: str, media_id: str):
        self._record()
        if not self._authorized():
            return _error(190)
        data, mime_type = self.media[media_id]
        url = self.media_urls.get(media_id, f"{self.url}/download/{media_id}")
        return jsonify({"messaging_product": "whatsapp", "url": url,
                        "mime_type": mime_type, "sha256": hashlib.sha256(data).hexdigest(),
                        "file_size": len(data), "id": media_id})

    def _download(self, media_id: str):
        self._record()
        if not self._authorized() or media_id not in self.media:
            return "", 404
        if self.redirect_downloads_to:
            return "", 302, {"Location": self.redirect_downloads_to}
        if self.download_failures:
            self.download_failures -= 1
            return "<html><body>Service Unavailable</body></html>", 503
        data, mime_type = self.media[media_id]
        return data, 200, {"Content-Type": mime_type}


def _error(code: int):
    status, message, details = ERRORS[code]
    error = {"message": message, "type": "OAuthException", "code": code,
             "fbtrace_id": "AbCdEfGhIjK"}
    if details:
        error["error_data"] = {"messaging_product": "whatsapp", "details": details}
    return jsonify({"error": error}), status
