"""Pages of the WhatsApp module: the team inbox, the numbers, and the sandbox.

Thin like every view: each reads the request, calls one service (crm/whatsapp/services.py,
which also decides what an agent may see: 404 otherwise) and picks the answer. A page works as
plain links and posts; htmx asks for the changed fragment (STYLE.md "one template, two entry
points"), and the live module (live.py) pushes the same fragments to other browsers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from flask import (
    Blueprint,
    Response,
    flash,
    g,
    make_response,
    redirect,
    render_template,
    request,
    send_file,
    url_for,
)
from flask_babel import gettext as _
from flask_babel import lazy_gettext, lazy_pgettext
from flask_login import current_user
from markupsafe import Markup
from sqlalchemy import select

from crm.api.helpers import decode_keyset, encode_keyset
from crm.crypto import decrypt_json, masked
from crm.errors import NotFoundError, ServiceError, ValidationError, file_too_large
from crm.extensions import db
from crm.foundation.models import User
from crm.foundation.services import current_organization
from crm.i18n import bdi, format_ago, format_clock, format_recent, isolate
from crm.navigation import NavItem, add
from crm.permissions import can, require, sees_only_assigned
from crm.search import normalize_phone
from crm.versions import StaleVersionError, form_version
from crm.web import allow_uploads, is_htmx
from crm.whatsapp import live, media, profiles, sandbox, services
from crm.whatsapp.models import CONVERSATION_STATUSES, Conversation, Message, WhatsAppProfile

blueprint = Blueprint("whatsapp", __name__)

PAGE_SIZE = 30
SCOPES = ("mine", "unassigned", "all")
SCOPE_LABELS = {"mine": lazy_gettext("Mine"), "unassigned": lazy_gettext("Unassigned"),
                "all": lazy_gettext("All")}
STATUS_LABELS = {"open": lazy_gettext("Open"),
                 "pending": lazy_pgettext("conversation status", "Pending"),
                 "resolved": lazy_gettext("Resolved")}
PROVIDER_LABELS = {"cloud": lazy_gettext("WhatsApp Cloud API"),
                   "web": lazy_gettext("Linked device (QR code)"),
                   "sandbox": lazy_gettext("Sandbox")}
STATE_LABELS = {"disconnected": lazy_gettext("Disconnected"), "pairing": lazy_gettext("Pairing"),
                "pending": lazy_gettext("Awaiting verification"),
                "connected": lazy_gettext("Connected"), "failed": lazy_gettext("Failed")}
# What a cloud number still lacks to be connected (WhatsAppProfile.missing_checks).
CHECK_LABELS = {"token": lazy_gettext("Token not checked by WhatsApp"),
                "webhook": lazy_gettext("Webhook not verified by Meta")}
TYPE_LABELS = {"text": lazy_gettext("Text"), "image": lazy_gettext("Image"),
               "video": lazy_gettext("Video"), "audio": lazy_gettext("Audio"),
               "document": lazy_gettext("Document"), "sticker": lazy_gettext("Sticker"),
               "location": lazy_gettext("Location"), "contacts": lazy_gettext("Contact card"),
               "reaction": lazy_gettext("Reaction"), "interactive": lazy_gettext("Button reply"),
               "button": lazy_gettext("Button reply"), "template": lazy_gettext("Template"),
               "unsupported": lazy_gettext("Unsupported message")}
# The Cloud API's commonest refusals, said plainly; others show the provider's own words.
ERROR_REASONS = {
    "131047": lazy_gettext("More than 24 hours have passed since the customer last wrote: "
                           "only an approved template can be sent."),
    "130429": lazy_gettext("WhatsApp's rate limit was reached. Try again in a moment."),
    "131026": lazy_gettext("The message could not be delivered to this number; it may not "
                           "use WhatsApp."),
    "131051": lazy_gettext("WhatsApp does not support this type of message."),
    "132001": lazy_gettext("This template does not exist in this language or is not "
                           "approved yet."),
    "190": lazy_gettext("The number's access token has expired or is not valid."),
}
# Forms that carry a file: WhatsApp takes up to 16 MB, more than the app's default body limit.
UPLOAD_ENDPOINTS = {"whatsapp.send_message", "whatsapp.sandbox_send"}
allow_uploads(blueprint, UPLOAD_ENDPOINTS, media.MAX_UPLOAD_BYTES)

add(NavItem("whatsapp.inbox", lazy_gettext("Inbox"), "whatsapp", "read", "inbox"))
add(NavItem("whatsapp.numbers", lazy_gettext("WhatsApp numbers"), "settings", "write", "phone"))


@blueprint.errorhandler(413)
def _too_large(_exc):
    """A body over even the upload limit is refused before any view runs: say why, and leave
    the page (and what was typed) as it is."""
    message = file_too_large(media.MAX_UPLOAD_BYTES).fields["file"]
    if not _wants_fragment():
        return render_template("errors/error.html", status=413, message=message), 413
    flash(message, "error")
    return _with_flashes("", 413, {"HX-Reswap": "none"})


@blueprint.record
def _listen_to_pages(_state) -> None:
    live.listen()


def require_numbers_admin(view):
    """Numbers and the sandbox: the WhatsApp module must be on, and only admins manage them."""
    return require("settings", "write")(require("whatsapp", "write")(view))


@blueprint.app_context_processor
def _labels() -> dict:
    """Labels for the module's fragments, which live events also render outside its views."""
    return {"wa_scope_labels": SCOPE_LABELS, "wa_status_labels": STATUS_LABELS,
            "wa_provider_labels": PROVIDER_LABELS, "wa_state_labels": STATE_LABELS,
            "wa_type_labels": TYPE_LABELS, "wa_error_reasons": ERROR_REASONS,
            "wa_check_labels": CHECK_LABELS}


@blueprint.app_template_filter("wa_failure")
def _failure(profile: WhatsAppProfile) -> str | None:
    """Why the number failed, for its page: a linked device's in plain words (whatsmeow's text
    is for the log), another's as recorded."""
    if profile.provider != "web":
        return profile.last_error
    from crm.whatsapp.channels.web import failure_sentence

    return str(failure_sentence(profile.last_error))


# -- formatting: times in the organization's time zone, for pages and live events alike ------

@blueprint.app_template_filter("wa_time")
def _time(value: datetime | None) -> str:
    return format_clock(value) if value else ""


@blueprint.app_template_filter("wa_when")
def _when(value: datetime | None) -> str:
    """A list's time: the hour for today, the date before."""
    return format_recent(value) if value else ""


@blueprint.app_template_filter("wa_size")
def _size(value: int | None) -> str:
    if not value:
        return ""
    if value < 1024 * 1024:
        return _("%(n)s KB", n=max(1, round(value / 1024)))
    return _("%(n)s MB", n=round(value / (1024 * 1024), 1))


# -- helpers ---------------------------------------------------------------------------------

def _me() -> User:
    return current_user._get_current_object()


def _wants_fragment() -> bool:
    """htmx asks for a fragment; a boosted page or a history restore wants the whole page."""
    return is_htmx() and request.headers.get("HX-History-Restore-Request") != "true"


def _with_flashes(html: str, status: int = 200, headers: dict | None = None) -> Response:
    """A fragment, plus the flash area swapped out of band."""
    body = html + render_template("_flashes.html", oob=True)
    return make_response(body, status, headers or {})


def _form_text(name: str) -> str:
    """A text field of the form; NUL characters (which PostgreSQL cannot store) are refused."""
    value = request.form.get(name, "")
    if "\x00" in value:
        raise ValidationError({name: _("Remove the control characters.")})
    return value


def _flash_error(exc: ServiceError) -> None:
    """Say what went wrong where no field shows it: the field errors, else the message."""
    flash(" ".join(exc.fields.values()) or exc.message, "error")


def _id_or_none(raw: str | None) -> int | None:
    """An id typed in a form or query: digits that fit the id columns, else None."""
    if raw and raw.isascii() and raw.isdigit() and len(raw) <= 18 and int(raw) > 0:
        return int(raw)
    return None


def _writable() -> bool:
    return can("whatsapp", "write")


def _conversation(conversation_id: int) -> Conversation:
    return services.access_conversation(conversation_id, _me())


def _message(message_id: int) -> Message:
    return services.access_message(message_id, _me())


# -- the inbox: the conversation list ----------------------------------------------------------

@dataclass(frozen=True)
class InboxFilters:
    """What the conversation list shows; bad values fall back to the default view."""

    scope: str
    status: str
    profile_id: int | None
    search: str

    @classmethod
    def from_request(cls) -> InboxFilters:
        args = request.args
        scope = args.get("scope", "all")
        if sees_only_assigned():
            scope = "mine"  # agents see only their own, whatever they ask
        elif scope not in SCOPES:
            scope = "all"
        status = args.get("status", "")
        profile = args.get("profile", "")
        return cls(scope=scope, status=status if status in CONVERSATION_STATUSES else "",
                   profile_id=int(profile) if profile.isascii() and profile.isdigit()
                   and len(profile) < 19 else None,
                   search=args.get("q", "").replace("\x00", "").strip()[:100])

    def args(self) -> dict[str, str | int]:
        """The filters as query arguments (defaults left out)."""
        values = {"scope": "" if self.scope == "all" else self.scope, "status": self.status,
                  "profile": self.profile_id or "", "q": self.search}
        return {key: value for key, value in values.items() if value}


def _list_context(filters: InboxFilters) -> dict:
    after = decode_keyset(request.args.get("after")) if request.args.get("after") else None
    rows, next_key = services.list_conversations(
        _me(), scope=filters.scope, status=filters.status or None,
        profile_id=filters.profile_id, search=filters.search, after=after, limit=PAGE_SIZE)
    return {"filters": filters, "rows": rows, "next_cursor": encode_keyset(next_key),
            "agent_view": sees_only_assigned()}


def _profiles() -> list[WhatsAppProfile]:
    if "wa_profiles" not in g:
        g.wa_profiles = profiles.list_profiles()
    return g.wa_profiles


@blueprint.get("/inbox")
@require("whatsapp", "read")
def inbox():
    filters = InboxFilters.from_request()
    context = _list_context(filters)
    if _wants_fragment() and request.args.get("after"):
        return render_template("whatsapp/_rows.html", **context)  # "load more"
    if _wants_fragment():
        return render_template("whatsapp/_list.html", profiles=_profiles(), **context)
    return render_template("whatsapp/inbox.html", profiles=_profiles(), conversation=None,
                           **context)


# -- the inbox: one conversation ---------------------------------------------------------------

def _composer_context(conversation: Conversation, errors: dict | None = None,
                      values: object = None, reply_to: Message | None = None) -> dict:
    return {"window_open": services.window_open(conversation), "composer_errors": errors or {},
            "composer_values": values or {}, "reply_to": reply_to,
            "upload_types": sorted(t for types, _limit in media.ALLOWED_UPLOADS.values()
                                   for t in types)}


def _conversation_context(conversation: Conversation, **composer) -> dict:
    messages, older = services.list_messages(conversation)
    writable = _writable()
    return {**live.fragment_context(conversation, writable), "messages": messages,
            "older": older, "assignees": live.assignable_users() if writable else [],
            "errors": {}, **_composer_context(conversation, **composer)}


def _conversation_page(conversation: Conversation, status: int = 200, **composer):
    filters = InboxFilters.from_request()
    return render_template("whatsapp/inbox.html", profiles=_profiles(),
                           **_list_context(filters),
                           **_conversation_context(conversation, **composer)), status


@blueprint.get("/inbox/conversations/<int:conversation_id>")
@require("whatsapp", "read")
def conversation(conversation_id: int):
    """Open a conversation; opening it reads it (for those who answer it)."""
    conversation = _conversation(conversation_id)
    if _writable():
        services.mark_conversation_read(conversation, _me())
    if not _wants_fragment():
        return _conversation_page(conversation)
    return (render_template("whatsapp/_conversation.html", **_conversation_context(conversation))
            + render_template("whatsapp/_row.html", conversation=conversation, oob=True))


@blueprint.get("/inbox/conversations/<int:conversation_id>/messages")
@require("whatsapp", "read")
def thread_messages(conversation_id: int):
    """The newest messages, or the page before `before` ("load older")."""
    conversation = _conversation(conversation_id)
    messages, older = services.list_messages(
        conversation, before_id=_id_or_none(request.args.get("before")))
    return render_template("whatsapp/_messages.html", messages=messages, older=older,
                           **live.fragment_context(conversation, _writable()))


@blueprint.get("/inbox/conversations/<int:conversation_id>/panel")
@require("whatsapp", "read")
def contact_panel(conversation_id: int):
    conversation = _conversation(conversation_id)
    return live.render_panel(live.fragment_context(conversation, _writable()))


@blueprint.get("/inbox/conversations/<int:conversation_id>/composer")
@require("whatsapp", "write")
def composer(conversation_id: int):
    """The composer, replying to `reply_to` when given (a message of this conversation), with
    what was typed so far kept."""
    conversation = _conversation(conversation_id)
    values = {"text": request.args.get("text", "")}
    try:
        reply_to = _reply_target(conversation, request.args.get("reply_to"))
    except ValidationError as exc:
        return render_template("whatsapp/_composer.html", conversation=conversation,
                               **_composer_context(conversation, exc.fields, values)), 422
    return render_template("whatsapp/_composer.html", conversation=conversation,
                           **_composer_context(conversation, reply_to=reply_to, values=values))


def _reply_target(conversation: Conversation, raw: str | None) -> Message | None:
    """The message a reply quotes: one of this conversation's (anything else is a 422)."""
    if not raw:
        return None
    refused = ValidationError({"reply_to_id": _("This message cannot be replied to.")})
    message_id = _id_or_none(raw)
    if message_id is None:
        raise refused
    try:
        message = services.access_message(message_id, _me())
    except NotFoundError:
        raise refused from None
    if message.conversation_id != conversation.id:
        raise refused
    return message


def _sent(conversation: Conversation, message: Message) -> Response:
    """The new bubble for the thread, a fresh composer and the updated row."""
    if not _wants_fragment():
        return redirect(url_for("whatsapp.conversation", conversation_id=conversation.id), 303)
    context = live.fragment_context(conversation, True)
    return _with_flashes(
        live.render_bubble(message, context)
        + render_template("whatsapp/_composer.html", conversation=conversation, oob=True,
                          **_composer_context(conversation))
        + render_template("whatsapp/_row.html", conversation=conversation, oob=True))


def _composer_refused(conversation: Conversation, exc: ServiceError, reply_to=None):
    """Show the composer again with what went wrong (422), what was typed kept."""
    composer = {"errors": exc.fields or {"text": exc.message}, "values": request.form,
                "reply_to": reply_to}
    if not _wants_fragment():
        return _conversation_page(conversation, exc.status, **composer)
    html = render_template("whatsapp/_composer.html", conversation=conversation,
                           **_composer_context(conversation, **composer))
    return make_response(html, exc.status, {"HX-Retarget": f"#composer-{conversation.id}",
                                            "HX-Reswap": "outerHTML"})


@blueprint.post("/inbox/conversations/<int:conversation_id>/messages")
@require("whatsapp", "write")
def send_message(conversation_id: int):
    """Send text, or a file with its caption (queued: the outbox job sends it)."""
    conversation = _conversation(conversation_id)
    reply_to = None
    try:
        reply_to = _reply_target(conversation, request.form.get("reply_to_id"))
        text = _form_text("text")
        upload = request.files.get("file")
        if upload is not None and upload.filename:
            message = services.send_media(conversation, _me(), upload, text, reply_to)
        else:
            message = services.send_text(conversation, _me(), text, reply_to)
    except ValidationError as exc:
        return _composer_refused(conversation, exc, reply_to)
    return _sent(conversation, message)


@blueprint.post("/inbox/conversations/<int:conversation_id>/template")
@require("whatsapp", "write")
def send_template(conversation_id: int):
    """Send an approved template: the only message allowed once the 24-hour window closed."""
    conversation = _conversation(conversation_id)
    try:
        parameters = [line.strip() for line in _form_text("template_parameters").splitlines()
                      if line.strip()]
        message = services.send_template(conversation, _me(), _form_text("template_name").strip(),
                                         _form_text("template_language").strip(), parameters)
    except ValidationError as exc:
        return _composer_refused(conversation, exc)
    return _sent(conversation, message)


def _panel_answer(conversation: Conversation, status: int = 200, errors: dict | None = None,
                  stale: Stale | None = None):
    if not _wants_fragment():
        if errors:
            flash(" ".join(errors.values()), "error")
        if stale:
            flash(stale.notice, "error")
        return redirect(url_for("whatsapp.conversation", conversation_id=conversation.id), 303)
    context = live.fragment_context(conversation, True)
    html = render_template("whatsapp/_panel.html", assignees=live.assignable_users(),
                           errors=errors or {}, stale=stale, **context)
    return _with_flashes(html + render_template("whatsapp/_row.html", conversation=conversation,
                                                oob=True), status)


@dataclass(frozen=True)
class Stale:
    """A panel form sent from a version someone changed since: what they did (`notice`), and
    the choice it sent (`field`, `value`), to send again anyway."""

    notice: Markup
    field: str
    value: str


def _stale(conversation: Conversation, field: str, value: str) -> Stale:
    """Who assigned the conversation or set its status since the panel was opened, and to
    what; names are set apart in a <bdi>."""
    values = {"name": bdi(conversation.edited_by.full_name if conversation.edited_by
                          else _("someone")),
              "ago": format_ago(conversation.edited_at)}
    if field == "status":
        message = _("Changed to %(status)s by %(name)s %(ago)s.")
        values["status"] = STATUS_LABELS[conversation.status]
    elif conversation.assigned_user is not None:
        message = _("Already assigned to %(assignee)s by %(name)s %(ago)s.")
        values["assignee"] = bdi(conversation.assigned_user.full_name)
    else:
        message = _("Already unassigned by %(name)s %(ago)s.")
    return Stale(Markup(message) % values, field, value)


@blueprint.post("/inbox/conversations/<int:conversation_id>/assign")
@require("whatsapp", "write")
def assign(conversation_id: int):
    """Assign, transfer or unassign (an empty choice)."""
    conversation = _conversation(conversation_id)
    raw = request.form.get("assignee_id") or None
    try:
        if raw is not None and _id_or_none(raw) is None:
            raise ValidationError({"assignee_id": _("Choose a member who answers WhatsApp.")})
        services.assign_conversation(conversation, _id_or_none(raw), _me(),
                                     expected_version=form_version(request.form.get("version")))
    except StaleVersionError:
        return _panel_answer(conversation, 409,
                             stale=_stale(conversation, "assignee_id", raw or ""))
    except ValidationError as exc:
        return _panel_answer(conversation, exc.status, exc.fields)
    assignee = conversation.assigned_user
    flash(_("Assigned to %(name)s.", name=isolate(assignee.full_name)) if assignee
          else _("The conversation is unassigned."), "success")
    return _panel_answer(conversation)


@blueprint.post("/inbox/conversations/<int:conversation_id>/status")
@require("whatsapp", "write")
def set_status(conversation_id: int):
    conversation = _conversation(conversation_id)
    status = request.form.get("status")
    try:
        services.set_status(conversation, status, _me(),
                            expected_version=form_version(request.form.get("version")))
    except StaleVersionError:
        return _panel_answer(conversation, 409, stale=_stale(conversation, "status", status))
    except ValidationError as exc:
        return _panel_answer(conversation, exc.status, exc.fields)
    return _panel_answer(conversation)


# -- the inbox: one message --------------------------------------------------------------------

def _bubble(message: Message, status: int = 200, template: str = "whatsapp/_message.html",
            **extra) -> Response:
    if not _wants_fragment():
        return redirect(url_for("whatsapp.conversation",
                                conversation_id=message.conversation_id), 303)
    context = live.fragment_context(message.conversation, _writable())
    return _with_flashes(render_template(template, message=message, **context, **extra), status)


def _act_on_message(message_id: int, action: Callable[[Message, User], object]) -> Response:
    """Run one service action on a message and answer with its bubble; a refusal is flashed."""
    message = _message(message_id)
    try:
        action(message, _me())
    except ServiceError as exc:
        _flash_error(exc)
        return _bubble(message, exc.status)
    return _bubble(message)


@blueprint.get("/inbox/messages/<int:message_id>")
@require("whatsapp", "read")
def show_message(message_id: int):
    return _bubble(_message(message_id))


# Shown in the page itself; anything else (a customer's file may claim to be HTML) is a
# download, so it can never run as a page of ours.
INLINE_TYPES = {"image/jpeg", "image/png", "image/webp", "image/gif", "video/mp4", "video/3gpp",
                "audio/aac", "audio/mp4", "audio/mpeg", "audio/amr", "audio/ogg"}


@blueprint.get("/inbox/messages/<int:message_id>/media")
@require("whatsapp", "read")
def message_media(message_id: int):
    """A message's file, to those who may see the message."""
    message = _message(message_id)
    path = media.path_of(message)
    if path is None or not path.is_file():
        raise NotFoundError(_("This file is not available yet."))
    mime_type = str(message.content.get("mime_type") or "").split(";")[0].strip().lower()
    inline = mime_type in INLINE_TYPES
    response = send_file(path, mimetype=mime_type if inline else "application/octet-stream",
                         as_attachment=not inline, max_age=0,
                         download_name=str(message.content.get("filename") or path.name))
    response.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.cache_control.private = True
    return response


@blueprint.post("/inbox/messages/<int:message_id>/retry")
@require("whatsapp", "write")
def retry_message(message_id: int):
    return _act_on_message(message_id, services.retry_message)


@blueprint.route("/inbox/messages/<int:message_id>/edit", methods=["GET", "POST"])
@require("whatsapp", "write")
def edit_message(message_id: int):
    """Edit a sent text inline (channels that allow it, within WhatsApp's time window)."""
    message = _message(message_id)
    if request.method == "GET":
        context = live.fragment_context(message.conversation, True)
        if "edit" not in context["actions_for"](message):
            flash(_("This message cannot be edited."), "error")
            return _bubble(message, 422)
        return _bubble(message, template="whatsapp/_edit_message.html", errors={},
                       value=message.body)
    try:
        services.edit_message(message, _form_text("text"), _me())
    except ValidationError as exc:
        return _bubble(message, exc.status, template="whatsapp/_edit_message.html",
                       errors=exc.fields, value=request.form.get("text", ""))
    except ServiceError as exc:
        _flash_error(exc)
        return _bubble(message, exc.status)
    return _bubble(message)


@blueprint.post("/inbox/messages/<int:message_id>/delete")
@require("whatsapp", "write")
def delete_message(message_id: int):
    return _act_on_message(message_id, services.delete_message)


@blueprint.route("/inbox/messages/<int:message_id>/forward", methods=["GET", "POST"])
@require("whatsapp", "write")
def forward_message(message_id: int):
    """Pick a conversation (searchable) and forward the message there."""
    message = _message(message_id)
    if request.method == "GET":
        return _forward_picker(message)
    try:
        target = _forward_target(request.form.get("target_id"))
        services.forward_message(message, target, _me())
    except ValidationError as exc:
        return _forward_picker(message, exc.status, exc.fields)
    if not _wants_fragment():
        return redirect(url_for("whatsapp.conversation", conversation_id=target.id), 303)
    flash(_("Forwarded to %(name)s.",
            name=isolate(target.contact_name or target.contact_phone or "")),
          "success")
    return _with_flashes(render_template("whatsapp/_forward_done.html", message=message)
                         + render_template("whatsapp/_row.html", conversation=target, oob=True))


def _forward_target(raw: str | None) -> Conversation:
    refused = ValidationError({"target_id": _("Choose a conversation to forward to.")})
    target_id = _id_or_none(raw)
    if target_id is None:
        raise refused
    try:
        return services.access_conversation(target_id, _me())
    except NotFoundError:
        raise refused from None


def _forward_picker(message: Message, status: int = 200, errors: dict | None = None):
    search = request.values.get("q", "").replace("\x00", "").strip()[:100]
    rows, _next = services.list_conversations(_me(), search=search, limit=10)
    context = {"message": message, "rows": rows, "search": search, "errors": errors or {}}
    if not _wants_fragment():
        return render_template("whatsapp/forward_page.html", **context), status
    return _with_flashes(render_template("whatsapp/_forward.html", **context), status)


# -- numbers (admins) --------------------------------------------------------------------------

def _numbers_page(status: int = 200, **context):
    context.setdefault("errors", {})
    context.setdefault("values", {})
    context.setdefault("form_provider", None)
    return render_template("whatsapp/numbers.html", profiles=profiles.list_profiles(),
                           **context), status


@blueprint.get("/whatsapp/numbers")
@require_numbers_admin
def numbers():
    return _numbers_page()


@blueprint.post("/whatsapp/numbers")
@require_numbers_admin
def create_number():
    """Connect a number: cloud with Meta's ids and secrets, web to pair, or a sandbox."""
    form = request.form
    provider = form.get("provider")
    try:
        profile = profiles.create_profile(
            _me(), provider, _form_text("display_name") or _default_name(provider),
            phone_number=form.get("phone_number") or None,
            phone_number_id=form.get("phone_number_id"),
            business_account_id=form.get("business_account_id"),
            access_token=form.get("access_token"), app_secret=form.get("app_secret"),
            auto_assign=form.get("auto_assign") == "on")
    except ServiceError as exc:
        values = {key: value for key, value in form.items()
                  if key not in ("access_token", "app_secret")}  # secrets are typed again
        return _numbers_page(exc.status, errors=exc.fields, values=values, error=exc.message,
                             form_provider=provider)
    flash(_("%(name)s was added.", name=isolate(profile.display_name)), "success")
    return redirect(url_for("whatsapp.number", profile_id=profile.id), 303)


def _default_name(provider: object) -> str:
    return _("Sandbox") if provider == "sandbox" else ""


def _number_context(profile: WhatsAppProfile) -> dict:
    context: dict = {"profile": profile, "qr": None, "webhook_url": None, "secrets": {},
                     "supervisor_running": True}
    if profile.provider == "cloud":
        from crm.whatsapp.webhooks import webhook_url

        context["webhook_url"] = webhook_url(profile)
        context["secrets"] = {key: masked(value)
                              for key, value in decrypt_json(profile.secrets).items()}
    if profile.provider == "web":
        from crm.whatsapp.channels.web import current_qr, supervisor_running

        context["supervisor_running"] = supervisor_running()
        if profile.state == "pairing":
            context["qr"] = current_qr(profile.id)
    return context


@blueprint.get("/whatsapp/numbers/<int:profile_id>")
@require_numbers_admin
def number(profile_id: int):
    return render_template("whatsapp/number.html",
                           **_number_context(profiles.access_profile(profile_id)))


@blueprint.get("/whatsapp/numbers/<int:profile_id>/state")
@require_numbers_admin
def number_state(profile_id: int):
    """The connection state (and QR code while pairing); refreshed on the supervisor's events."""
    return render_template("whatsapp/_number_state.html",
                           **_number_context(profiles.access_profile(profile_id)))


def _state_answer(profile: WhatsAppProfile):
    if not _wants_fragment():
        return redirect(url_for("whatsapp.number", profile_id=profile.id), 303)
    return _with_flashes(render_template("whatsapp/_number_state.html",
                                         **_number_context(profile)))


@blueprint.post("/whatsapp/numbers/<int:profile_id>/connect")
@require_numbers_admin
def connect_number(profile_id: int):
    profile = profiles.connect_profile(_me(), profiles.access_profile(profile_id))
    return _state_answer(profile)


@blueprint.post("/whatsapp/numbers/<int:profile_id>/disconnect")
@require_numbers_admin
def disconnect_number(profile_id: int):
    profile = profiles.disconnect_profile(_me(), profiles.access_profile(profile_id))
    flash(_("%(name)s was disconnected.", name=isolate(profile.display_name)), "success")
    return _state_answer(profile)


@blueprint.post("/whatsapp/numbers/<int:profile_id>/delete")
@require_numbers_admin
def delete_number(profile_id: int):
    profile = profiles.access_profile(profile_id)
    profiles.delete_profile(_me(), profile)
    flash(_("%(name)s was removed. Its conversations stay in the inbox.",
            name=isolate(profile.display_name)), "success")
    return redirect(url_for("whatsapp.numbers"), 303)


# -- the sandbox (admins): play the customer -----------------------------------------------------

def _sandbox_profile(profile_id: int) -> WhatsAppProfile:
    profile = profiles.access_profile(profile_id)
    if profile.provider != "sandbox":
        raise NotFoundError(_("Not found."))
    return profile


@dataclass(frozen=True)
class Customer:
    """Who the admin plays: a sandbox number and a customer's phone (E.164 once valid)."""

    profile: WhatsAppProfile
    raw_phone: str
    phone: str | None
    name: str

    @classmethod
    def from_values(cls, profile: WhatsAppProfile) -> Customer:
        raw = request.values.get("phone", "").replace("\x00", "").strip()[:40]
        phone = normalize_phone(raw, current_organization().country) if raw else None
        return cls(profile, raw, phone, request.values.get("name", "").replace("\x00", "")[:120])

    def conversation(self) -> Conversation | None:
        """The customer's conversation, if they wrote already (never created here)."""
        if self.phone is None:
            return None
        return db.session.scalar(select(Conversation).where(
            Conversation.profile_id == self.profile.id, Conversation.contact_phone == self.phone))


def _chat_context(customer: Customer) -> dict:
    """The customer's side of the chat; looking at it reads what the team sent (blue ticks)."""
    conversation = customer.conversation()
    messages: list[Message] = []
    if conversation is not None:
        sandbox.customer_reads(conversation)
        messages, _older = services.list_messages(conversation)
    return {"customer": customer, "chat": conversation, "messages": messages,
            "form_errors": {}, "form_text": ""}


def _sandbox_page(customer: Customer | None, profiles: list[WhatsAppProfile],
                  status: int = 200, **extra):
    context = _chat_context(customer) if customer is not None else {"customer": None}
    return render_template("whatsapp/sandbox.html", profiles=profiles, **{**context, **extra}
                           ), status


@blueprint.get("/whatsapp/sandbox")
@require_numbers_admin
def sandbox_page():
    sandboxes = [p for p in profiles.list_profiles() if p.provider == "sandbox"]
    chosen = next((p for p in sandboxes if str(p.id) == request.args.get("profile")),
                  sandboxes[0] if sandboxes else None)
    return _sandbox_page(Customer.from_values(chosen) if chosen else None, sandboxes)


@blueprint.get("/whatsapp/sandbox/<int:profile_id>/chat")
@require_numbers_admin
def sandbox_chat(profile_id: int):
    """The customer's side of the chat (refreshed when the team answers or ticks move)."""
    customer = Customer.from_values(_sandbox_profile(profile_id))
    return render_template("whatsapp/_sandbox_chat.html", **_chat_context(customer))


@blueprint.post("/whatsapp/sandbox/<int:profile_id>/messages")
@require_numbers_admin
def sandbox_send(profile_id: int):
    """The customer sends text or an image to the sandbox number."""
    customer = Customer.from_values(_sandbox_profile(profile_id))
    try:
        sandbox.customer_sends(customer.profile, customer.raw_phone, customer.name,
                               _form_text("text"), request.files.get("file"))
    except ValidationError as exc:
        refused = {"form_errors": exc.fields, "form_text": request.form.get("text", "")}
        if not _wants_fragment():
            return _sandbox_page(customer, [customer.profile], exc.status, **refused)
        return make_response(
            render_template("whatsapp/_sandbox_form.html", customer=customer, **refused),
            exc.status, {"HX-Retarget": "#sandbox-form", "HX-Reswap": "outerHTML"})
    if not _wants_fragment():
        return redirect(url_for("whatsapp.sandbox_page", profile=customer.profile.id,
                                phone=customer.phone, name=customer.name), 303)
    return (render_template("whatsapp/_sandbox_chat.html", **_chat_context(customer))
            + render_template("whatsapp/_sandbox_form.html", customer=customer, oob=True,
                              form_errors={}, form_text=""))
