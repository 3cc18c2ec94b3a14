"""Consent: who may receive campaigns, and the ledger of every change.

A person opts out by writing one of the organization's opt-out words as their whole message
(letter variants, case, diacritics and punctuation folded as search folds them) or by tapping
a template's quick-reply button whose payload is one; an opt-in word brings them back. Admins
may record either by hand (a phone call, a form). Each change is a ledger row (`consent_events`:
when, how, the words) and moves the current state (`campaign_opt_outs`), which the runner
checks at send time. The person is told, in the language they wrote in, through the outbox.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass

from flask_babel import force_locale
from flask_babel import gettext as _
from sqlalchemy import delete, exists, or_, select
from sqlalchemy.dialects.postgresql import insert

from crm.campaigns.models import CONSENT_METHODS, CampaignSettings, ConsentEvent, OptOut
from crm.customers.models import Customer
from crm.customers.services import check_phone
from crm.errors import ValidationError
from crm.extensions import db
from crm.foundation.models import User
from crm.foundation.services import audit
from crm.search import fold_text
from crm.tenancy import current_organization_id
from crm.text import has_control_characters
from crm.validation import collect

log = logging.getLogger("crm.campaigns")

DEFAULT_OPT_OUT = ("إلغاء", "الغاء", "إيقاف", "ايقاف", "توقف", "إلغاء الاشتراك", "STOP",
                   "UNSUBSCRIBE")
DEFAULT_OPT_IN = ("اشتراك", "START")
MAX_KEYWORDS = 50
EXPORT_BATCH = 1000
_PUNCTUATION = re.compile(r"[^\w\s]")
_ARABIC = re.compile("[\u0600-\u06ff]")


@dataclass(frozen=True)
class Keywords:
    opt_out: list[str]
    opt_in: list[str]


def fold_keyword(text: str) -> str:
    """What a message is compared as: folded like search, without punctuation or extra
    spaces ("STOP!" and «إلغاءُ» match STOP and «الغاء»)."""
    return " ".join(_PUNCTUATION.sub(" ", fold_text(text)).split())


def keywords() -> Keywords:
    """The organization's opt-out and opt-in words (the defaults until an admin edits them)."""
    settings = db.session.scalar(select(CampaignSettings))
    opt_out = settings.opt_out_keywords if settings and settings.opt_out_keywords is not None \
        else list(DEFAULT_OPT_OUT)
    opt_in = settings.opt_in_keywords if settings and settings.opt_in_keywords is not None \
        else list(DEFAULT_OPT_IN)
    return Keywords(opt_out, opt_in)


def set_keywords(actor: User, opt_out: object, opt_in: object) -> Keywords:
    """Replace the organization's opt-out and opt-in words; a word may not be in both."""
    lists, errors = {}, {}
    for name, raw in (("opt_out", opt_out), ("opt_in", opt_in)):
        try:
            lists[name] = _check_keywords(raw, name)
        except ValidationError as exc:
            errors.update(exc.fields)
    if not errors and {fold_keyword(w) for w in lists["opt_out"]} & {
            fold_keyword(w) for w in lists["opt_in"]}:
        errors["opt_in"] = _("A word cannot both stop and restart messages.")
    if errors:
        raise ValidationError(errors)
    if not lists["opt_out"]:
        raise ValidationError({"opt_out": _("Keep at least one word that stops messages.")})
    db.session.execute(insert(CampaignSettings).values(
        organization_id=current_organization_id(), opt_out_keywords=lists["opt_out"],
        opt_in_keywords=lists["opt_in"])
        .on_conflict_do_update(constraint="uq_campaign_settings_organization", set_={
            "opt_out_keywords": lists["opt_out"], "opt_in_keywords": lists["opt_in"]}))
    audit("campaigns.keywords_changed", actor, None, **lists)
    return Keywords(lists["opt_out"], lists["opt_in"])


def _check_keywords(raw: object, field_name: str) -> list[str]:
    if isinstance(raw, str):
        raw = raw.replace("،", ",").replace("\n", ",").split(",")
    if not isinstance(raw, list | tuple) or not all(isinstance(word, str) for word in raw):
        raise ValidationError({field_name: _("Enter the words as a list.")})
    words, seen = [], set()
    for word in raw:
        word = " ".join(word.split())
        if not word:
            continue
        if len(word) > 40 or has_control_characters(word) or not fold_keyword(word):
            raise ValidationError({field_name: _("Each word has at most %(n)d letters.", n=40)})
        if fold_keyword(word) not in seen:
            seen.add(fold_keyword(word))
            words.append(word)
    if len(words) > MAX_KEYWORDS:
        raise ValidationError({field_name: _("Use at most %(n)d words.", n=MAX_KEYWORDS)})
    return words


def match_keyword(text: str | None) -> str | None:
    """"opt_out" or "opt_in" when `text`, as a whole, is one of the organization's words."""
    folded = fold_keyword(text or "")
    if not folded:
        return None
    words = keywords()
    if folded in {fold_keyword(word) for word in words.opt_out}:
        return "opt_out"
    if folded in {fold_keyword(word) for word in words.opt_in}:
        return "opt_in"
    return None


def record(action: str, phone: str, *, method: str, customer_id: int | None = None,
           message_id: int | None = None, text: str = "", actor: User | None = None
           ) -> ConsentEvent | None:
    """Write an opt-out or opt-in to the ledger and make it the person's current state; None
    when this message was recorded before (a redelivered event)."""
    if method not in CONSENT_METHODS:
        raise ValueError(f"unknown consent method {method!r}")
    event_id = db.session.execute(
        insert(ConsentEvent).values(organization_id=current_organization_id(), phone=phone,
                                    customer_id=customer_id, action=action, method=method,
                                    message_id=message_id, text=text[:200],
                                    actor_id=actor.id if actor else None)
        .on_conflict_do_nothing(index_elements=["organization_id", "message_id"],
                                index_where=ConsentEvent.message_id.is_not(None))
        .returning(ConsentEvent.id)).scalar_one_or_none()
    if event_id is None:
        return None
    if action == "opt_out":
        db.session.execute(insert(OptOut).values(organization_id=current_organization_id(),
                                                 phone=phone, customer_id=customer_id,
                                                 event_id=event_id)
                           .on_conflict_do_update(constraint="uq_campaign_opt_outs_phone",
                                                  set_={"event_id": event_id}))
    else:
        db.session.execute(delete(OptOut).where(OptOut.phone == phone)
                           .execution_options(synchronize_session=False))
    log.info("%s of %s (%s) by %s", action, phone, method, actor)
    return db.session.get(ConsentEvent, event_id)


def record_by_hand(actor: User, action: object, phone: object,
                   customer_id: int | None = None) -> ConsentEvent:
    """An admin records a person's word given elsewhere (a call, a signed form)."""
    def check_action() -> str:
        if action not in ("opt_out", "opt_in"):
            raise ValidationError({"action": _("Choose one of the listed options.")})
        return action

    values = collect({"action": check_action, "phone": lambda: check_phone(phone)})
    if values["phone"] is None:
        raise ValidationError({"phone": _("This field is required.")})
    event = record(values["action"], values["phone"], method="manual", customer_id=customer_id,
                   actor=actor)
    audit(f"consent.{values['action']}", actor, event, phone=values["phone"])
    return event


def is_opted_out(phone: str) -> bool:
    return bool(db.session.scalar(select(exists().where(OptOut.phone == phone))))


def opted_out_among(phones: set[str]) -> set[str]:
    """Which of `phones` are opted out now (one query for a runner's batch)."""
    if not phones:
        return set()
    return set(db.session.scalars(select(OptOut.phone).where(OptOut.phone.in_(phones))))


def consent_history(phones: list[str], customer_id: int | None = None, limit: int = 50
                    ) -> list[ConsentEvent]:
    """A person's ledger, newest first: their phones' events and those naming them."""
    conditions = [ConsentEvent.phone.in_(phones)] if phones else []
    if customer_id is not None:
        conditions.append(ConsentEvent.customer_id == customer_id)
    if not conditions:
        return []
    return list(db.session.scalars(select(ConsentEvent).where(or_(*conditions))
                                   .order_by(ConsentEvent.id.desc()).limit(limit)))


def export_ledger() -> Iterator[dict]:
    """Every consent event of the organization, oldest first, as rows for a CSV export, with
    the names of the customer and of whoever recorded it (a spreadsheet is read by people)."""
    after = 0
    query = (select(ConsentEvent, Customer.name, User.full_name)
             .outerjoin(Customer, Customer.id == ConsentEvent.customer_id)
             .outerjoin(User, User.id == ConsentEvent.actor_id).order_by(ConsentEvent.id))
    while rows := db.session.execute(query.where(ConsentEvent.id > after)
                                     .limit(EXPORT_BATCH)).all():
        for event, customer_name, actor_name in rows:
            yield {"id": event.id, "at": event.created_at.isoformat(), "phone": event.phone,
                   "customer_id": event.customer_id, "customer_name": customer_name,
                   "action": event.action, "method": event.method, "text": event.text,
                   "message_id": event.message_id, "actor_id": event.actor_id,
                   "actor_name": actor_name}
        after = rows[-1][0].id


def confirmation(action: str, written: str) -> str:
    """What the person is told, in the language they wrote in (Arabic, else English)."""
    with force_locale("ar" if _ARABIC.search(written) else "en"):
        if action == "opt_out":
            return _("You will no longer receive our campaign messages. Reply START to "
                     "receive them again.")
        return _("You will receive our campaign messages again. Reply STOP to stop them.")
