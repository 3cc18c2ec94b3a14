"""Suggestions: a customer's message with a support keyword makes its conversation show
"create a ticket?" with the fields filled in — never a ticket made automatically.

Keywords are matched folded as search folds (crm/search.fold_text): «مشكله» finds «مشكلة».
Arabic keywords match inside words (a prefix such as ال or ب is part of the word: «بمشكلة»);
Latin ones as whole words ("issue", not "tissue").
"""

from __future__ import annotations

import re

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert

from crm import events
from crm.extensions import db
from crm.foundation.models import User
from crm.foundation.services import audit
from crm.models import utcnow
from crm.search import fold_text
from crm.tenancy import current_organization_id, get_in_organization
from crm.tickets.models import TicketSuggestion
from crm.tickets.services.common import not_found, subject_from
from crm.tickets.services.settings import default_type, list_keywords


def match_keyword(text: str) -> str | None:
    """The first support keyword `text` contains (as the organization wrote it), if any."""
    folded = fold_text(text)
    for keyword in list_keywords():
        if _contains(folded, keyword.folded):
            return keyword.keyword
    return None


def _contains(text: str, word: str) -> bool:
    if word.isascii():
        return re.search(rf"(?<!\w){re.escape(word)}(?!\w)", text) is not None
    return word in text


def suggest(conversation_id: int, message_id: int, body: str, customer_id: int | None
            ) -> TicketSuggestion | None:
    """Suggest a ticket for the conversation if the message holds a keyword; the latest
    such message replaces an earlier suggestion (a dismissed one comes back)."""
    keyword = match_keyword(body)
    if keyword is None:
        return None
    subject, description = subject_from(body)
    ticket_type = default_type()
    values = {"message_id": message_id, "customer_id": customer_id, "keyword": keyword,
              "subject": subject, "description": description,
              "type_id": ticket_type.id if ticket_type else None, "dismissed_at": None,
              "updated_at": utcnow()}
    suggestion = db.session.scalars(
        insert(TicketSuggestion)
        .values(organization_id=current_organization_id(), conversation_id=conversation_id,
                **values)
        .on_conflict_do_update(index_elements=["organization_id", "conversation_id"],
                               set_=values)
        .returning(TicketSuggestion), execution_options={"populate_existing": True}).one()
    events.publish("ticket.suggested", {"conversation_id": conversation_id,
                                        "suggestion_id": suggestion.id})
    return suggestion


def suggestion_for(conversation_id: int) -> TicketSuggestion | None:
    """What the conversation's panel offers, unless someone dismissed it."""
    return db.session.scalar(select(TicketSuggestion).where(
        TicketSuggestion.conversation_id == conversation_id,
        TicketSuggestion.dismissed_at.is_(None)))


def access_suggestion(suggestion_id: int) -> TicketSuggestion:
    suggestion = get_in_organization(TicketSuggestion, suggestion_id)
    if suggestion is None:
        raise not_found()
    return suggestion


def dismiss_suggestion(actor: User, suggestion: TicketSuggestion) -> None:
    suggestion.dismissed_at = utcnow()
    audit("tickets.suggestion_dismissed", actor, suggestion,
          conversation_id=suggestion.conversation_id)


def clear_suggestion(conversation_id: int) -> None:
    """A ticket was opened for the conversation: nothing left to suggest."""
    db.session.execute(delete(TicketSuggestion).where(
        TicketSuggestion.conversation_id == conversation_id))
