"""Pages of the WhatsApp module: the team inbox. The numbers' pages (numbers_views.py) and the
sandbox's (sandbox_views.py) are on the same blueprint.

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
    render_template,
    request,
    send_file,
)
from flask_babel import gettext as _
from flask_babel import lazy_gettext, lazy_pgettext
from markupsafe import Markup

from crm.errors import (
    ConflictError,
    NotFoundError,
    ServiceError,
    ValidationError,
    file_too_large,
)
from crm.foundation.models import User
from crm.foundation.views import add_audit_labels
from crm.i18n import bdi, format_ago, format_clock, format_recent, isolate
from crm.navigation import NavItem, add
from crm.pagination import decode_cursor, encode_cursor
from crm.permissions import can, require, require_settings, sees_only_assigned
from crm.validation import parse_id
from crm.versions import StaleVersionError, form_version
from crm.web import allow_uploads, form_text, htmx_response, is_htmx, me, see_other
from crm.whatsapp import approved_templates, live, media, presence, profiles, services
from crm.whatsapp import inbox as inbox_services
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

add(NavItem("whatsapp.inbox", lazy_gettext("Inbox"), "whatsapp", "read", "inbox", 10,
            "whatsapp.unread_badge", ("newMessage", "conversationUpdated", "conversationAssigned")))
add(NavItem("whatsapp.numbers", lazy_gettext("WhatsApp numbers"), "settings", "write", "phone",
            65, module="whatsapp"))
add_audit_labels({
    "whatsapp.conversation_assigned": lazy_gettext("Conversation assigned"),
    "whatsapp.inbox_settings_changed": lazy_gettext("Inbox settings changed"),
    "whatsapp.profile_created": lazy_gettext("WhatsApp number added"),
    "whatsapp.profile_checked": lazy_gettext("WhatsApp number checked"),
    "whatsapp.profile_disconnected": lazy_gettext("WhatsApp number disconnected"),
    "whatsapp.profile_deleted": lazy_gettext("WhatsApp number deleted"),
}, {
    "conversations": lazy_gettext("Conversation"),
    "whatsapp_profiles": lazy_gettext("WhatsApp number"),
    "inbox_settings": lazy_gettext("Inbox settings"),
})


@blueprint.errorhandler(413)
def _too_large(_exc):
    """A body over even the upload limit is refused before any view runs: say why, and leave
    the page (and what was typed) as it is."""
    message = file_too_large(media.MAX_UPLOAD_BYTES).fields["file"]
    if not is_htmx():
        return render_template("errors/error.html", status=413, message=message), 413
    flash(message, "error")
    return htmx_response("", 413, reswap="none")


@blueprint.record
def _listen_to_pages(_state) -> None:
    live.listen()
    presence.listen()


# Numbers and the sandbox: the WhatsApp module must be on, and only admins manage them.
require_numbers_admin = require_settings("whatsapp")


@blueprint.app_context_processor
def _labels() -> dict:
    """Labels for the module's fragments, which live events also render outside its views."""
    return {"wa_scope_labels": SCOPE_LABELS, "wa_status_labels": STATUS_LABELS,
            "wa_provider_labels": PROVIDER_LABELS, "wa_state_labels": STATE_LABELS,
            "wa_type_labels": TYPE_LABELS, "wa_error_reasons": ERROR_REASONS,
            "wa_check_labels": CHECK_LABELS}


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

def _flash_error(exc: ServiceError) -> None:
    """Say what went wrong where no field shows it: the field errors, else the message."""
    flash(" ".join(exc.fields.values()) or exc.message, "error")


def _writable() -> bool:
    return can("whatsapp", "write")


def _conversation(conversation_id: int) -> Conversation:
    return services.access_conversation(conversation_id, me())


def _message(message_id: int) -> Message:
    return services.access_message(message_id, me())


# -- the inbox: the conversation list ----------------------------------------------------------

@dataclass(frozen=True)
class InboxFilters:
    """What the conversation list shows; bad values fall back to the default view."""

    scope: str
    status: str
    profile_id: int | None
    search: str
    unread: bool = False  # only conversations waiting to be read (the dashboard links here)

    @classmethod
    def from_request(cls) -> InboxFilters:
        args = request.args
        scope = args.get("scope", "all")
        if sees_only_assigned():
            # Agents see their own, and the unassigned queue when they may take from it.
            scope = scope if scope in agent_scopes() else "mine"
        elif scope not in SCOPES:
            scope = "all"
        status = args.get("status", "")
        profile = args.get("profile", "")
        return cls(scope=scope, status=status if status in CONVERSATION_STATUSES else "",
                   profile_id=parse_id(profile),
                   search=args.get("q", "").replace("\x00", "").strip()[:100],
                   unread=args.get("unread") == "1")

    def args(self) -> dict[str, str | int]:
        """The filters as query arguments (defaults left out)."""
        values = {"scope": "" if self.scope == "all" else self.scope, "status": self.status,
                  "profile": self.profile_id or "", "q": self.search,
                  "unread": "1" if self.unread else ""}
        return {key: value for key, value in values.items() if value}


def agent_scopes() -> tuple[str, ...]:
    """The lists an agent may choose between."""
    return ("mine", "unassigned") if services.agents_take_unassigned() else ("mine",)


def _list_context(filters: InboxFilters) -> dict:
    after = decode_cursor(request.args.get("cursor"), "keyset", (datetime, int))
    rows, next_key = services.list_conversations(
        me(), scope=filters.scope, status=filters.status or None,
        profile_id=filters.profile_id, search=filters.search, unread=filters.unread,
        after=after, limit=PAGE_SIZE)
    return {"filters": filters, "rows": rows, "next_cursor": encode_cursor("keyset", next_key),
            "scopes": agent_scopes() if sees_only_assigned() else SCOPES}


def _profiles() -> list[WhatsAppProfile]:
    if "wa_profiles" not in g:
        g.wa_profiles = profiles.list_profiles()
    return g.wa_profiles


@blueprint.get("/inbox")
@require("whatsapp", "read")
def inbox():
    filters = InboxFilters.from_request()
    context = _list_context(filters)
    if is_htmx() and request.args.get("cursor"):
        return render_template("whatsapp/_rows.html", **context)  # "load more"
    if is_htmx():
        return render_template("whatsapp/_list.html", profiles=_profiles(), **context)
    return render_template("whatsapp/inbox.html", profiles=_profiles(), conversation=None,
                           **context)


# -- the inbox: one conversation ---------------------------------------------------------------

def _composer_context(conversation: Conversation, errors: dict | None = None,
                      values: object = None, reply_to: Message | None = None,
                      replied: Message | None = None, seen_id: int | None = None) -> dict:
    """The composer's variables; `seen_id`, the newest message shown, when the page has it.
    Once the 24-hour window has closed: the number's approved templates instead."""
    window_open = services.window_open(conversation)
    return {"window_open": window_open, "composer_errors": errors or {},
            "composer_values": values or {}, "reply_to": reply_to, "replied": replied,
            "seen_id": seen_id if seen_id is not None
            else inbox_services.latest_message_id(conversation),
            "enter_sends": inbox_services.enter_sends(me()),
            "upload_types": sorted(t for types, _limit in media.ALLOWED_UPLOADS.values()
                                   for t in types),
            **({} if window_open else template_context(conversation, values or {}))}


def template_context(conversation: Conversation, values: object) -> dict:
    """The approved templates, the one picked (the first until one is), its parameters as
    typed and its body filled in for the contact."""
    choices = approved_templates.approved(conversation)
    picked = approved_templates.chosen(choices, values.get("template_id")) or (
        choices[0] if choices else None)
    parameters = values.getlist("parameters") if hasattr(values, "getlist") else []
    return {"templates": choices, "template": picked, "template_parameters": parameters,
            "template_preview": approved_templates.preview(
                picked, parameters, approved_templates.contact_variables(conversation))
            if picked else None}


def _conversation_context(conversation: Conversation, **composer) -> dict:
    messages, older = services.list_messages(conversation)
    writable = _writable()
    composer.setdefault("seen_id", messages[-1].id if messages else None)
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
        services.mark_conversation_read(conversation, me())
    if not is_htmx():
        return _conversation_page(conversation)
    # Opened from its row in the list (the only link that asks for the fragment): the row is
    # on screen, and shows the conversation read.
    return (render_template("whatsapp/_conversation.html", **_conversation_context(conversation))
            + render_template("whatsapp/_row.html", conversation=conversation, oob=True))


def row_changed(conversation: Conversation) -> str:
    """The event an answer fires when `conversation`'s row shows something else now: the row
    asks for itself again where a list shows it, and nothing happens where none does (the
    list may be filtered, or on another page). An out-of-band row would be an error there."""
    return f"conversationChanged-{conversation.id}"


@blueprint.get("/inbox/conversations/<int:conversation_id>/row")
@require("whatsapp", "read")
def conversation_row(conversation_id: int):
    """A conversation's row in the list, asked for by the row itself (`row_changed`)."""
    return render_template("whatsapp/_row.html", conversation=_conversation(conversation_id))


@blueprint.get("/inbox/conversations/<int:conversation_id>/messages")
@require("whatsapp", "read")
def thread_messages(conversation_id: int):
    """The newest messages, or the page before the `cursor` id ("load older")."""
    conversation = _conversation(conversation_id)
    messages, older = services.list_messages(
        conversation, before_id=parse_id(request.args.get("cursor")))
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
    message_id = parse_id(raw)
    if message_id is None:
        raise refused
    try:
        message = services.access_message(message_id, me())
    except NotFoundError:
        raise refused from None
    if message.conversation_id != conversation.id:
        raise refused
    return message


def _sent(conversation: Conversation, message: Message) -> Response:
    """The new bubble for the thread, a fresh composer and the updated row."""
    if not is_htmx():
        return see_other("whatsapp.conversation", conversation_id=conversation.id)
    context = live.fragment_context(conversation, True)
    return htmx_response(
        live.render_bubble(message, context)
        + render_template("whatsapp/_composer.html", conversation=conversation, oob=True,
                          **_composer_context(conversation)),
        trigger=row_changed(conversation))


def _composer_refused(conversation: Conversation, exc: ServiceError, reply_to=None,
                      replied: Message | None = None):
    """Show the composer again with what went wrong (422), what was typed kept."""
    composer = {"errors": exc.fields, "values": request.form, "reply_to": reply_to,
                "replied": replied}
    if not exc.fields and replied is None:
        composer["errors"] = {"text": exc.message}
    if not is_htmx():
        return _conversation_page(conversation, exc.status, **composer)
    html = render_template("whatsapp/_composer.html", conversation=conversation,
                           **_composer_context(conversation, **composer))
    return htmx_response(html, exc.status, retarget=f"#composer-{conversation.id}",
                         reswap="outerHTML", with_flashes=False)


@blueprint.post("/inbox/conversations/<int:conversation_id>/messages")
@require("whatsapp", "write")
def send_message(conversation_id: int):
    """Send text, or a file with its caption (queued: the outbox job sends it)."""
    conversation = _conversation(conversation_id)
    reply_to = None
    try:
        reply_to = _reply_target(conversation, request.form.get("reply_to_id"))
        replied = (None if request.form.get("confirm_send")
                   else inbox_services.replied_since(conversation, request.form.get("seen_id"),
                                                     me()))
        if replied is not None:
            # A teammate answered while this one typed: ask before sending on top of it.
            return _composer_refused(conversation, ConflictError(
                _("Someone replied while you were typing.")), reply_to, replied)
        text = form_text("text")
        upload = request.files.get("file")
        if upload is not None and upload.filename:
            message = services.send_media(conversation, me(), upload, text, reply_to)
        else:
            message = services.send_text(conversation, me(), text, reply_to)
    except ValidationError as exc:
        return _composer_refused(conversation, exc, reply_to)
    return _sent(conversation, message)


@blueprint.post("/inbox/conversations/<int:conversation_id>/template")
@require("whatsapp", "write")
def send_template(conversation_id: int):
    """Send one of the number's approved templates, its parameters filled in for the contact:
    the only message allowed once the 24-hour window closed. Without JavaScript the form's
    "Preview" button comes here too: it shows the picked template filled in, and sends nothing."""
    conversation = _conversation(conversation_id)
    if request.form.get("preview"):
        return _conversation_page(conversation, values=request.form)
    try:
        message = approved_templates.send_approved_template(
            conversation, me(), request.form.get("template_id"),
            request.form.getlist("parameters"))
    except ValidationError as exc:
        return _composer_refused(conversation, exc)
    return _sent(conversation, message)


@blueprint.get("/inbox/conversations/<int:conversation_id>/template")
@require("whatsapp", "write")
def template_fields(conversation_id: int):
    """The picked template's parameter fields and its body filled in for the contact (the
    composer asks again as the agent picks and types)."""
    conversation = _conversation(conversation_id)
    return render_template("whatsapp/_template_fields.html", conversation=conversation,
                           composer_errors={}, **template_context(conversation, request.args))


def panel_answer(conversation: Conversation, status: int = 200, errors: dict | None = None,
                  stale: Stale | None = None):
    if not is_htmx():
        if errors:
            flash(" ".join(errors.values()), "error")
        if stale:
            flash(stale.notice, "error")
        return see_other("whatsapp.conversation", conversation_id=conversation.id)
    context = live.fragment_context(conversation, True)
    html = render_template("whatsapp/_panel.html", assignees=live.assignable_users(),
                           errors=errors or {}, stale=stale, **context)
    # The live update of the same change may have replaced the panel while this answer was on
    # its way: swapped into the panel htmx found at the click, which is no longer on the page,
    # it would take the preserved customer card away with it. Found again by id, at the swap.
    return htmx_response(html + render_template("whatsapp/_resolve.html", oob=True, **context),
                         status, trigger=row_changed(conversation),
                         retarget=f"#conversation-{conversation.id}-panel", reswap="outerHTML")


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
        if raw is not None and parse_id(raw) is None:
            raise ValidationError({"assignee_id": _("Choose a member who answers WhatsApp.")})
        services.assign_conversation(conversation, parse_id(raw), me(),
                                     expected_version=form_version(request.form.get("version")))
    except StaleVersionError:
        return panel_answer(conversation, 409,
                             stale=_stale(conversation, "assignee_id", raw or ""))
    except ValidationError as exc:
        return panel_answer(conversation, exc.status, exc.fields)
    assignee = conversation.assigned_user
    flash(_("Assigned to %(name)s.", name=isolate(assignee.full_name)) if assignee
          else _("The conversation is unassigned."), "success")
    return panel_answer(conversation)


@blueprint.post("/inbox/conversations/<int:conversation_id>/status")
@require("whatsapp", "write")
def set_status(conversation_id: int):
    conversation = _conversation(conversation_id)
    status = request.form.get("status")
    try:
        services.set_status(conversation, status, me(),
                            expected_version=form_version(request.form.get("version")))
    except StaleVersionError:
        return panel_answer(conversation, 409, stale=_stale(conversation, "status", status))
    except ValidationError as exc:
        return panel_answer(conversation, exc.status, exc.fields)
    return panel_answer(conversation)


# -- the inbox: one message --------------------------------------------------------------------

def _bubble(message: Message, status: int = 200, template: str = "whatsapp/_message.html",
            **extra) -> Response:
    if not is_htmx():
        return see_other("whatsapp.conversation", conversation_id=message.conversation_id)
    context = live.fragment_context(message.conversation, _writable())
    return htmx_response(render_template(template, message=message, **context, **extra), status)


def _act_on_message(message_id: int, action: Callable[[Message, User], object]) -> Response:
    """Run one service action on a message and answer with its bubble; a refusal is flashed."""
    message = _message(message_id)
    try:
        action(message, me())
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
        services.edit_message(message, form_text("text"), me())
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
        services.forward_message(message, target, me())
    except ValidationError as exc:
        return _forward_picker(message, exc.status, exc.fields)
    if not is_htmx():
        return see_other("whatsapp.conversation", conversation_id=target.id)
    flash(_("Forwarded to %(name)s.",
            name=isolate(target.contact_name or target.contact_phone or "")),
          "success")
    return htmx_response(render_template("whatsapp/_forward_done.html", message=message),
                         trigger=row_changed(target))


def _forward_target(raw: str | None) -> Conversation:
    refused = ValidationError({"target_id": _("Choose a conversation to forward to.")})
    target_id = parse_id(raw)
    if target_id is None:
        raise refused
    try:
        return services.access_conversation(target_id, me())
    except NotFoundError:
        raise refused from None


def _forward_picker(message: Message, status: int = 200, errors: dict | None = None):
    search = request.values.get("q", "").replace("\x00", "").strip()[:100]
    rows, _next = services.list_conversations(me(), search=search, limit=10)
    context = {"message": message, "rows": rows, "search": search, "errors": errors or {}}
    if not is_htmx():
        return render_template("whatsapp/forward_page.html", **context), status
    return htmx_response(render_template("whatsapp/_forward.html", **context), status)
