"""Pages of an agent's day in the inbox: a new chat, taking from the queue, private notes,
labels, saved replies (the `/` menu and their settings page), the composer's keys and the
inbox's settings. On the WhatsApp blueprint of crm/whatsapp/views.py.
"""

from __future__ import annotations

from flask import flash, render_template, request
from flask_babel import gettext as _
from flask_babel import lazy_gettext

from crm.errors import ConflictError, ValidationError
from crm.i18n import isolate
from crm.navigation import NavItem, add
from crm.permissions import require, require_settings
from crm.validation import parse_id
from crm.web import fragment, is_htmx, me, page, see_other
from crm.whatsapp import inbox, profiles
from crm.whatsapp.models import CANNED_LANGUAGES
from crm.whatsapp.views import (
    InboxFilters,
    _composer_context,
    _conversation,
    _list_context,
    blueprint,
    panel_answer,
)

# Everyone who answers reads the team's saved replies and the queue's rule; only admins (who
# change the organization's settings) change them.
add(NavItem("whatsapp.inbox_settings", lazy_gettext("Inbox settings"), "whatsapp", "write",
            "sliders", 67))


# -- a new chat ------------------------------------------------------------------------------

def _new_chat(status: int = 200, errors: dict | None = None, values=None):
    numbers = profiles.list_profiles()
    context = {"numbers": numbers, "errors": errors or {},
               "number_choices": [(str(number.id), number.display_name) for number in numbers],
               "values": values if values is not None else request.args}
    if is_htmx():
        return fragment("whatsapp/_new_chat.html", status, **context)
    return page("whatsapp/inbox.html", status, profiles=numbers, conversation=None,
                new_chat=True, **_list_context(InboxFilters.from_request()), **context)


@blueprint.get("/inbox/new")
@require("whatsapp", "write")
def new_conversation():
    """Pick a number and type (or paste) a phone number, or pick a customer."""
    return _new_chat()


@blueprint.post("/inbox/conversations")
@require("whatsapp", "write")
def start_conversation():
    """Open the conversation with a phone number (started now when there is none)."""
    form = request.form
    try:
        conversation = inbox.start_conversation(me(), form.get("profile_id"), form.get("phone"),
                                                form.get("name", ""))
    except ValidationError as exc:
        return _new_chat(exc.status, exc.fields, form)
    except ConflictError as exc:
        return _new_chat(exc.status, {"phone": exc.message}, form)
    return see_other("whatsapp.conversation", conversation_id=conversation.id)


# -- the queue, notes and labels -------------------------------------------------------------

@blueprint.post("/inbox/conversations/<int:conversation_id>/take")
@require("whatsapp", "write")
def take_conversation(conversation_id: int):
    """Take an unassigned conversation: it is the caller's now."""
    conversation = _conversation(conversation_id)
    try:
        inbox.take_conversation(conversation, me())
    except ConflictError as exc:
        return panel_answer(conversation, exc.status, {"assignee_id": exc.message})
    flash(_("The conversation is yours."), "success")
    return panel_answer(conversation)


@blueprint.post("/inbox/conversations/<int:conversation_id>/notes")
@require("whatsapp", "write")
def add_note(conversation_id: int):
    """Leave a private note: the team sees it, the contact never does."""
    conversation = _conversation(conversation_id)
    try:
        inbox.add_note(conversation, me(), request.form.get("note"))
    except ValidationError as exc:
        return panel_answer(conversation, exc.status, exc.fields)
    return panel_answer(conversation)


@blueprint.post("/inbox/conversations/<int:conversation_id>/labels")
@require("whatsapp", "write")
def set_labels(conversation_id: int):
    conversation = _conversation(conversation_id)
    try:
        inbox.set_labels(conversation, me(), request.form.get("labels", ""))
    except ValidationError as exc:
        return panel_answer(conversation, exc.status, exc.fields)
    return panel_answer(conversation)


# -- the composer: saved replies and keys ----------------------------------------------------

@blueprint.get("/inbox/conversations/<int:conversation_id>/replies")
@require("whatsapp", "write")
def reply_menu(conversation_id: int):
    """The saved replies matching what follows the `/`, filled in for this conversation; the
    replies in the reader's language first."""
    conversation = _conversation(conversation_id)
    replies = inbox.list_canned_replies(request.args.get("q", "")[:40])
    language = me().preferred_language or me().organization.default_language
    replies.sort(key=lambda reply: reply.language != language)
    return render_template("whatsapp/_reply_menu.html", conversation=conversation,
                           options=[(reply, inbox.fill_reply(reply, conversation, me()))
                                    for reply in replies[:8]])


@blueprint.post("/inbox/preferences")
@require("whatsapp", "write")
def set_preferences():
    """Swap the composer's keys (Enter sends, or Shift+Enter does); the composer shown again
    with what was typed."""
    inbox.set_enter_sends(me(), request.form.get("enter_sends") == "1")
    conversation_id = parse_id(request.form.get("conversation_id"))
    if not is_htmx() or conversation_id is None:
        return see_other("whatsapp.inbox")
    conversation = _conversation(conversation_id)
    return render_template("whatsapp/_composer.html", conversation=conversation,
                           **_composer_context(conversation,
                                               values={"text": request.form.get("text", "")}))


# -- settings: the queue and saved replies ---------------------------------------------------

def _settings_page(status: int = 200, **context):
    context.setdefault("errors", {})
    context.setdefault("values", {})
    return page("whatsapp/inbox_settings.html", status, settings=inbox.inbox_settings(),
                replies=inbox.list_canned_replies(), languages=CANNED_LANGUAGES, **context)


@blueprint.get("/inbox/settings")
@require("whatsapp", "write")
def inbox_settings():
    return _settings_page()


@blueprint.post("/inbox/settings")
@require_settings("whatsapp")
def update_inbox_settings():
    """Let agents see the unassigned queue and take from it, or not (admins)."""
    inbox.update_inbox_settings(me(), request.form.get("agents_take_unassigned") == "on")
    flash(_("The inbox settings were saved."), "success")
    return see_other("whatsapp.inbox_settings")


@blueprint.post("/inbox/replies")
@require_settings("whatsapp")
def create_reply():
    form = request.form
    try:
        reply = inbox.save_canned_reply(me(), form.get("shortcut"), form.get("language"),
                                        form.get("body"))
    except ValidationError as exc:
        return _settings_page(exc.status, errors=exc.fields, values=form)
    flash(_("/%(shortcut)s was saved.", shortcut=isolate(reply.shortcut)), "success")
    return see_other("whatsapp.inbox_settings")


@blueprint.post("/inbox/replies/<int:reply_id>")
@require_settings("whatsapp")
def update_reply(reply_id: int):
    reply = inbox.access_canned_reply(reply_id)
    form = request.form
    try:
        inbox.save_canned_reply(me(), form.get("shortcut"), form.get("language"),
                                form.get("body"), reply)
    except ValidationError as exc:
        return _settings_page(exc.status, errors={f"{reply.id}-{key}": message for key, message
                                                  in exc.fields.items()})
    flash(_("/%(shortcut)s was saved.", shortcut=isolate(reply.shortcut)), "success")
    return see_other("whatsapp.inbox_settings")


@blueprint.post("/inbox/replies/<int:reply_id>/delete")
@require_settings("whatsapp")
def delete_reply(reply_id: int):
    reply = inbox.access_canned_reply(reply_id)
    shortcut = reply.shortcut
    inbox.delete_canned_reply(me(), reply)
    flash(_("/%(shortcut)s was deleted.", shortcut=isolate(shortcut)), "success")
    return see_other("whatsapp.inbox_settings")
