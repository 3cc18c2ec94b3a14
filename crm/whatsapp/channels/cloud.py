"""The official WhatsApp Business Cloud API: the Graph API out, signed webhooks in.

A number is proven before it is used: GET /{version}/{phone_number_id} with its token must
answer for it (`describe_number`). Outbound requests follow Meta's Cloud API reference:
POST /{version}/{phone_number_id}/messages with `messaging_product: "whatsapp"`, media uploaded
first to /{phone_number_id}/media and sent by id, our own message id in
`biz_opaque_callback_data` (Meta echoes it in every status webhook, so a send whose answer was
lost is still matched), and `recipient` (the business-scoped user id) for contacts WhatsApp
shows us without a phone number. Inbound webhooks are parsed in
crm/whatsapp/webhooks.py.

What a failure means for the outbox matters more than its wording: `ChannelError` says WhatsApp
did not take the message (it is marked failed and a person may retry it), while
`DeliveryUncertainError` says it may have been sent (it becomes `unknown` and is never resent).
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
from typing import Any, ClassVar

import requests
from flask import current_app
from requests.adapters import HTTPAdapter
from urllib3.exceptions import LocationParseError, NewConnectionError
from urllib3.util import parse_url

from crm.crypto import decrypt_json
from crm.whatsapp import media
from crm.whatsapp.channels.base import ChannelError, DeliveryUncertainError
from crm.whatsapp.models import Message, WhatsAppProfile

log = logging.getLogger("crm.whatsapp.cloud")

TIMEOUT = (5, 20)  # seconds: connect, then read
# Meta's largest media (documents) is 100 MB; a bigger answer is not a WhatsApp file.
MAX_DOWNLOAD_BYTES = 100 * 1024 * 1024
CAPTIONED = {"image", "video", "document"}  # audio and stickers take no caption
UPLOADED = {"image", "video", "audio", "document", "sticker"}
MEDIA_ID = re.compile(r"[0-9]+")  # Meta's media ids; anything else could name another object
GRAPH_ID = MEDIA_ID  # and its other ids (a business account's)
TEMPLATE_PAGE = 100  # templates asked for per page
MAX_TEMPLATE_PAGES = 50  # Meta allows a few hundred templates per account
POOL_SIZE = 32  # connections kept to the Graph API: a campaign's sends in flight at most


class CloudChannel:
    supports_edit: ClassVar[bool] = False
    supports_revoke: ClassVar[bool] = False

    def __init__(self, profile: WhatsAppProfile) -> None:
        self.profile = profile
        self._token = decrypt_json(profile.secrets).get("access_token") or ""
        # Requests of one channel share their connections (a campaign's batch sends many,
        # several at once: a pool as large as the sends it lets be in flight); a channel
        # serves one number, so no cookie crosses to another organization.
        self._http = requests.Session()
        self._http.mount("https://", HTTPAdapter(pool_maxsize=POOL_SIZE))
        self._http.mount("http://", HTTPAdapter(pool_maxsize=POOL_SIZE))

    # -- the channel interface ---------------------------------------------------------------

    def send(self, message: Message) -> str:
        """Send `message` and return WhatsApp's id for it (wamid...)."""
        payload = {"messaging_product": "whatsapp", "recipient_type": "individual",
                   **self._recipient(message), **self._content(message),
                   "biz_opaque_callback_data": str(message.id)}
        reply_to = message.reply_to
        if reply_to is not None and reply_to.provider_message_id:
            payload["context"] = {"message_id": reply_to.provider_message_id}
        answer = self._graph("POST", f"{self._number()}/messages", json=payload,
                             may_deliver=True)
        try:
            return str(answer["messages"][0]["id"])
        except (KeyError, IndexError, TypeError):
            # Accepted (2xx) without the id we expect: it may well be on its way, and the
            # status webhook will name it by biz_opaque_callback_data.
            raise DeliveryUncertainError(f"message {message.id}: 2xx answer without a message "
                                         "id") from None

    def mark_read(self, message: Message) -> None:
        """Send the read receipt (blue ticks) for an inbound message."""
        self._graph("POST", f"{self._number()}/messages",
                    json={"messaging_product": "whatsapp", "status": "read",
                          "message_id": message.provider_message_id},
                    may_deliver=False)  # a second read receipt changes nothing

    def edit(self, message: Message, text: str) -> None:
        raise ChannelError("unsupported", "The WhatsApp Cloud API cannot edit a sent message.")

    def revoke(self, message: Message) -> None:
        raise ChannelError("unsupported", "The WhatsApp Cloud API cannot delete a sent message.")

    def download_media(self, message: Message) -> tuple[bytes, str]:
        """Fetch an inbound message's media: its id gives a short-lived URL, read with the token."""
        media_id = message.content.get("media_id")
        if not media_id:
            raise ChannelError("no_media", f"message {message.id} carries no media id")
        if not isinstance(media_id, str) or not MEDIA_ID.fullmatch(media_id):
            # It becomes the Graph API path: /{media_id}.
            raise ChannelError("invalid_media_id", f"message {message.id}: media id "
                                                   f"{media_id!r} is not digits")
        info = self._graph("GET", str(media_id),
                           params={"phone_number_id": self.profile.phone_number_id},
                           may_deliver=False)
        url = info.get("url")
        if not isinstance(url, str) or not url:
            raise ChannelError("no_media", f"media {media_id}: the Graph API gave no URL")
        data, content_type = self._download(url)
        return data, str(info.get("mime_type") or content_type or "application/octet-stream")

    def describe_number(self) -> dict[str, str]:
        """What Meta says our number is (GET /{phone_number_id} with our token): only its
        `verified_name` and `display_phone_number`. Proves the token reaches that number;
        ChannelError with Graph's reason otherwise."""
        answer = self._graph("GET", self._number(), may_deliver=False)
        if str(answer.get("id")) != self._number():
            raise ChannelError("wrong_number", "The Graph API answered for another number.")
        return {key: str(answer[key])[:200] for key in ("verified_name", "display_phone_number")
                if answer.get(key)}

    def list_templates(self) -> list[dict[str, Any]]:
        """The message templates of the number's WhatsApp Business Account, every page of
        GET /{business_account_id}/message_templates: of each, only its id, name, language,
        category, status and components (their known keys)."""
        account = self.profile.business_account_id or ""
        if not GRAPH_ID.fullmatch(account):
            # It becomes the Graph API path: /{business_account_id}/message_templates.
            raise ChannelError("not_configured",
                               "The number has no WhatsApp Business Account id.")
        templates: list[dict[str, Any]] = []
        after = None
        for _page in range(MAX_TEMPLATE_PAGES):
            params = {"fields": "id,name,language,category,status,components",
                      "limit": TEMPLATE_PAGE, **({"after": after} if after else {})}
            answer = self._graph("GET", f"{account}/message_templates", params=params,
                                 may_deliver=False)
            data = answer.get("data")
            templates += [template for template in map(_known_template,
                                                        data if isinstance(data, list) else [])
                          if template is not None]
            after = _next_cursor(answer.get("paging"))
            if after is None:
                break
        return templates

    def _number(self) -> str:
        """Meta's id of our number, which every send and upload is addressed to."""
        if not self.profile.phone_number_id:
            raise ChannelError("not_configured", "The number has no Meta phone number id.")
        return self.profile.phone_number_id

    # -- payloads ----------------------------------------------------------------------------

    @staticmethod
    def _recipient(message: Message) -> dict[str, str]:
        conversation = message.conversation
        if conversation.contact_phone:
            return {"to": conversation.contact_phone.lstrip("+")}
        if conversation.contact_user_id:
            # Meta: `recipient` takes a business-scoped user id; `to` would win if both were set.
            return {"recipient": conversation.contact_user_id}
        raise ChannelError("no_recipient", "The conversation has no phone number or user id.")

    def _content(self, message: Message) -> dict[str, Any]:
        if message.type == "text":
            return {"type": "text", "text": {"body": message.body}}
        if message.type == "template":
            return {"type": "template", "template": _template(message.content)}
        if message.type in UPLOADED:
            media_object: dict[str, Any] = {"id": self._upload(message)}
            if message.type in CAPTIONED and message.body:
                media_object["caption"] = message.body
            if message.type == "document" and message.content.get("filename"):
                media_object["filename"] = message.content["filename"]
            return {"type": message.type, message.type: media_object}
        raise ChannelError("unsupported", f"Cannot send a {message.type} message through the "
                                          "WhatsApp Cloud API.")

    def _upload(self, message: Message) -> str:
        """Upload the message's stored file; the media id it is sent by."""
        path = media.path_of(message)
        if path is None or not path.is_file():
            raise ChannelError("no_media", f"message {message.id}: its file is not in storage")
        mime_type = message.content.get("mime_type") or "application/octet-stream"
        filename = message.content.get("filename") or path.name
        with path.open("rb") as file:
            # An upload sends nothing to the contact, so its failures are never "uncertain".
            answer = self._graph("POST", f"{self._number()}/media",
                                 data={"messaging_product": "whatsapp", "type": mime_type},
                                 files={"file": (filename, file, mime_type)}, may_deliver=False)
        media_id = answer.get("id")
        if not media_id:
            raise ChannelError("upload_failed", "The Graph API accepted the upload but gave no "
                                                "media id.")
        return str(media_id)

    # -- HTTP ----------------------------------------------------------------------------------

    def _graph(self, method: str, path: str, *, may_deliver: bool, **kwargs: Any) -> dict:
        """Call the Graph API and return its JSON answer, or raise what the failure means.

        `may_deliver` says whether this request can put a message in front of the contact:
        only then can a lost answer leave the outcome uncertain.
        """
        config = current_app.config
        base = config["WHATSAPP_GRAPH_URL"].rstrip("/")
        url = f"{base}/{config['WHATSAPP_GRAPH_VERSION']}/{path}"
        response = self._request(method, url, may_deliver=may_deliver, **kwargs)
        if response.ok:
            try:
                answer = response.json()
            except ValueError:
                answer = None
            if isinstance(answer, dict):
                return answer
            if may_deliver:
                raise DeliveryUncertainError(f"{method} {path}: 2xx answer that is not JSON")
            raise ChannelError(f"http_{response.status_code}", "The Graph API answered "
                                                               "something that is not JSON.")
        raise _failure(response, may_deliver)

    def _request(self, method: str, url: str, *, may_deliver: bool,
                 **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {self._token}"}
        try:
            return self._http.request(method, url, headers=headers, timeout=TIMEOUT,
                                      **kwargs)
        except requests.RequestException as exc:
            if may_deliver and not _never_sent(exc):
                raise DeliveryUncertainError(f"{method} {url}: {type(exc).__name__}") from exc
            raise ChannelError("network", f"WhatsApp could not be reached "
                                          f"({type(exc).__name__}).", transient=True) from exc

    def _download(self, url: str) -> tuple[bytes, str]:
        # The URL (on Meta's CDN, valid for minutes) only answers with the same bearer token,
        # so it is checked first and no redirect is followed.
        _check_media_url(url)
        response = self._request("GET", url, may_deliver=False, stream=True,
                                 allow_redirects=False)
        with response:
            if 300 <= response.status_code < 400:
                raise ChannelError("redirect", f"the media URL answered HTTP "
                                               f"{response.status_code}; redirects are not "
                                               "followed")
            if not response.ok:
                raise _failure(response, may_deliver=False)
            chunks, size = [], 0
            for chunk in response.iter_content(chunk_size=64 * 1024):
                size += len(chunk)
                if size > MAX_DOWNLOAD_BYTES:
                    raise ChannelError("too_large", f"media over {MAX_DOWNLOAD_BYTES} bytes")
                chunks.append(chunk)
        return b"".join(chunks), response.headers.get("Content-Type", "").split(";")[0]


def _check_media_url(url: str) -> None:
    """Refuse a media URL that is not https on a host of WHATSAPP_MEDIA_HOSTS (see crm/config.py)
    resolving to public addresses: the Graph API's answer must not make us, token in hand,
    fetch another server's or our own network's resources.

    The name is resolved again to connect; the check keeps a listed domain's names from
    leading inward, and an attacker does not answer for Meta's domains.
    """
    try:
        parsed = parse_url(url)  # as requests will read it
    except LocationParseError:
        raise ChannelError("refused_url", f"the media URL {url!r} is not a URL") from None
    host = (parsed.host or "").lower().rstrip(".")
    listed = [(name, plain_http) for name, plain_http in _media_hosts()
              if host == name or host.endswith(f".{name}")]
    if not host or not listed:
        raise ChannelError("refused_url", f"the media host {host!r} is not in "
                                          "WHATSAPP_MEDIA_HOSTS")
    if parsed.scheme != "https" and not (
            parsed.scheme == "http" and any(plain_http for _name, plain_http in listed)):
        raise ChannelError("refused_url", f"the media URL's scheme {parsed.scheme!r} is not "
                                          f"allowed for {host}")
    if not any(name == host for name, _plain_http in listed):  # listed itself: trusted
        _check_public(host, parsed.port or (443 if parsed.scheme == "https" else 80))


def _media_hosts() -> list[tuple[str, bool]]:
    """(host, plain http allowed) of each WHATSAPP_MEDIA_HOSTS entry."""
    hosts = []
    for entry in current_app.config["WHATSAPP_MEDIA_HOSTS"].split(","):
        entry = entry.strip().lower()
        name = entry.removeprefix("http://").removeprefix("https://").strip("/.")
        if name:
            hosts.append((name, entry.startswith("http://")))
    return hosts


def _check_public(host: str, port: int) -> None:
    """Refuse `host` if any address it resolves to is not a public unicast one."""
    try:
        answers = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise ChannelError("network", f"the media host {host} does not resolve "
                                      f"({type(exc).__name__})", transient=True) from exc
    for *_rest, sockaddr in answers:
        address = ipaddress.ip_address(sockaddr[0].split("%")[0])
        address = getattr(address, "ipv4_mapped", None) or address
        if not address.is_global or address.is_multicast:
            raise ChannelError("refused_url", f"the media host {host} resolves to {address}, "
                                              "not a public address")


def _template(content: dict) -> dict[str, Any]:
    """Meta's template object from what the outbox stored: the inbox's
    `{"template": {name, language, parameters}}` (each parameter a body text) or Meta's own
    name, language and components."""
    spec = content.get("template") if isinstance(content.get("template"), dict) else content
    name = spec.get("name")
    if not name:
        raise ChannelError("invalid_template", "The template has no name.")
    language = spec.get("language") or "en_US"
    template: dict[str, Any] = {
        "name": name,
        "language": language if isinstance(language, dict) else {"code": language},
    }
    components = spec.get("components") or ([{"type": "body", "parameters": [
        {"type": "text", "text": text} for text in spec["parameters"]]}]
        if spec.get("parameters") else None)
    if components:
        template["components"] = components
    return template


_TEMPLATE_TEXTS = {"name": 512, "language": 16, "category": 32, "status": 32, "id": 64}
_COMPONENT_TEXTS = {"type": 16, "format": 16, "text": 4096}
_BUTTON_TEXTS = {"type": 32, "text": 200, "url": 2000, "phone_number": 32}


def _texts(obj: object, lengths: dict[str, int]) -> dict[str, str]:
    """The keys of `lengths` that `obj` (a provider's JSON object) has as text or number, each
    cut to its length; nothing else."""
    if not isinstance(obj, dict):
        return {}
    return {key: str(obj[key])[:length] for key, length in lengths.items()
            if isinstance(obj.get(key), str | int) and not isinstance(obj.get(key), bool)}


def _known_template(template: object) -> dict[str, Any] | None:
    """A template as Wasl keeps it (Meta's keys it knows, cut to size); None without a name
    and language."""
    known: dict[str, Any] = _texts(template, _TEMPLATE_TEXTS)
    if not known.get("name") or not known.get("language"):
        return None
    components = template.get("components")
    known["components"] = [
        {**_texts(component, _COMPONENT_TEXTS),
         **({"buttons": [_texts(button, _BUTTON_TEXTS) for button in component["buttons"]]}
            if isinstance(component.get("buttons"), list) else {})}
        for component in (components if isinstance(components, list) else [])
        if isinstance(component, dict)]
    return known


def _next_cursor(paging: object) -> str | None:
    """The cursor of the next page of a Graph API list; None on the last page."""
    if not isinstance(paging, dict) or not paging.get("next"):
        return None
    cursors = paging.get("cursors")
    after = cursors.get("after") if isinstance(cursors, dict) else None
    return after if isinstance(after, str) and after else None


def _never_sent(exc: requests.RequestException) -> bool:
    """Did the request fail before any of it could reach WhatsApp?

    Only a failure to open the connection (refused, unresolvable, connect timeout) or to
    complete TLS proves that. A read timeout or a connection dropped later means the request
    was (or may have been) sent and processed without us hearing the answer.
    """
    if isinstance(exc, requests.ConnectTimeout | requests.exceptions.SSLError):
        return True
    cause = exc.args[0] if exc.args else None
    return isinstance(getattr(cause, "reason", None), NewConnectionError)


def _failure(response: requests.Response, may_deliver: bool) -> Exception:
    """The exception an error answer of the Graph API stands for.

    Graph reports its own errors as JSON {"error": {"code", "message", "error_data":
    {"details"}}}, whatever the HTTP status: that is WhatsApp saying it did not take the
    request (131047 window closed, 130429 rate limit, 131026 undeliverable, ...), so the message
    is failed and may be retried by a person. A 5xx without that body comes from whatever
    stands in front of or behind the API (a gateway timeout, a crashed backend) after the
    request arrived, so a message may have been accepted before the failure: uncertain.
    A 5xx or a 429 is a failure of a moment (`transient`): a download tries again later.
    """
    transient = response.status_code >= 500 or response.status_code == 429
    error = _graph_error(response)
    if error is not None:
        code, message = error
        return ChannelError(code, message, transient)
    if may_deliver and response.status_code >= 500:
        return DeliveryUncertainError(f"HTTP {response.status_code} without a Graph error")
    return ChannelError(f"http_{response.status_code}",
                        f"The Graph API answered HTTP {response.status_code}.", transient)


def _graph_error(response: requests.Response) -> tuple[str, str] | None:
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        return None
    if not isinstance(error, dict) or "code" not in error:
        return None
    message = str(error.get("message") or "")
    error_data = error.get("error_data")
    details = error_data.get("details") if isinstance(error_data, dict) else None
    if details and details != message:
        message = f"{message}: {details}" if message else str(details)
    return str(error["code"]), message[:500]
