"""Customers: adding, editing, deleting and merging them, and finding them by id or phone.

- A merged duplicate stays as a tombstone (`merged_into_id`) without phone or email: it answers
  404 everywhere, and an event that still names it (a WhatsApp message of a conversation not
  yet relinked) reaches the survivor.
- A manual or API create is owned by its creator unless `owner_id` is given.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from flask_babel import gettext as _
from sqlalchemy import Select, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError

from crm import events
from crm.billing import gate
from crm.customers.models import SOURCES, Customer, CustomerActivity, PipelineTotal
from crm.customers.services import scoring
from crm.customers.services.activities import log_automatic
from crm.customers.services.board import change_stage, top_of
from crm.customers.services.fields import (
    MAX_TAGS,
    check_amount,
    check_custom_fields,
    check_email,
    check_owner,
    check_phone,
    check_tags,
    check_text,
    not_found,
)
from crm.customers.services.stages import check_stage, list_stages
from crm.errors import ConflictError, ValidationError
from crm.extensions import db
from crm.foundation.models import User
from crm.foundation.services import audit
from crm.i18n import isolate
from crm.permissions import module_enabled
from crm.search import fold_text
from crm.tenancy import get_in_organization
from crm.validation import collect
from crm.versions import Expected, check_version, lock_for_edit, record_edit
from crm.whatsapp.models import Conversation

log = logging.getLogger("crm.customers")


class DuplicateCustomerError(ConflictError):
    """A phone number or email that another customer already has (409, naming that customer)."""

    def __init__(self, existing: Customer, fields: dict[str, str]):
        super().__init__(_("%(name)s (customer #%(id)d) already has this phone number or "
                           "email.", name=isolate(existing.name), id=existing.id), fields)
        self.existing_id = existing.id
        self.existing_name = existing.name


@gate.counts("customers", kept=True)
def _plan_counted() -> Select:
    """What the plan's customers limit counts: every customer not merged into another, which
    is what the pipeline's totals hold (kept by triggers): a few rows to read where a count
    would read up to the plan's 100,000 customers on every new one."""
    return select(func.coalesce(func.sum(PipelineTotal.customers), 0))


def access_customer(customer_id: int) -> Customer:
    """The organization's customer with this id, or 404 (merged duplicates too)."""
    customer = get_in_organization(Customer, customer_id)
    if customer is None:
        raise not_found()
    if customer.merged_into_id is not None:
        raise not_found()
    return customer


def _customer_values(data: Mapping, customer: Customer | None) -> dict[str, Any]:
    """Check the keys of `data` that a create (every key) or an update (those present) sets."""
    checks = {
        "name": lambda: check_text(data.get("name"), "name", 160, required=True),
        "phone": lambda: check_phone(data.get("phone")),
        "email": lambda: check_email(data.get("email")),
        "company": lambda: check_text(data.get("company"), "company", 160),
        "owner_id": lambda: check_owner(data.get("owner_id"),
                                        customer.owner_id if customer else None),
        "stage_id": lambda: check_stage(data.get("stage_id")),
        "tags": lambda: check_tags(data.get("tags")),
        "expected_value": lambda: check_amount(data.get("expected_value"), "expected_value"),
        "notes": lambda: check_text(data.get("notes"), "notes", 10_000, single_line=False),
        "custom_fields": lambda: check_custom_fields(
            data.get("custom_fields"), customer.custom_fields if customer else {}),
    }
    always = ("name", "custom_fields") if customer is None else ()
    chosen = {key: check for key, check in checks.items() if key in data or key in always}
    if customer is not None and ("add_tags" in data or "remove_tags" in data):
        chosen["tags"] = lambda: _edited_tags(data, customer.tags)
    return collect(chosen)


def _edited_tags(data: Mapping, current: list[str]) -> list[str]:
    """`current` with data's `remove_tags` taken out and its `add_tags` put in (a tag already
    there, however written, is not added twice). Applied to the tags as saved now, they keep
    what others added since the editor read them, as a whole list could not."""
    if "tags" in data:
        raise ValidationError({"tags": _("Send the whole list of tags, or tags to add and "
                                         "remove, not both.")})
    changes = collect({name: lambda name=name: check_tags(data.get(name), name)
                       for name in ("add_tags", "remove_tags")})
    removed = {fold_text(tag) for tag in changes["remove_tags"]}
    tags = [tag for tag in current if fold_text(tag) not in removed]
    present = {fold_text(tag) for tag in tags}
    tags += [tag for tag in changes["add_tags"] if fold_text(tag) not in present]
    if len(tags) > MAX_TAGS:
        raise ValidationError({"add_tags": _("Use at most %(n)d tags.", n=MAX_TAGS)})
    return tags


def tag_changes(shown: object, typed: object) -> dict[str, list[str]]:
    """The tags to add and remove that turn the tags a form showed into those typed in it, so
    that saving the form keeps the tags someone else added meanwhile."""
    values = collect({"shown": lambda: check_tags(shown), "typed": lambda: check_tags(typed)})
    before = {fold_text(tag) for tag in values["shown"]}
    after = {fold_text(tag) for tag in values["typed"]}
    return {"add_tags": [tag for tag in values["typed"] if fold_text(tag) not in before],
            "remove_tags": [tag for tag in values["shown"] if fold_text(tag) not in after]}


def _ensure_unique(phone: str | None, email: str | None, customer_id: int | None = None) -> None:
    """Raise a 409 naming the customer who already has this phone number or email."""
    clauses = []
    if phone:
        clauses.append(Customer.phone == phone)
    if email:
        clauses.append(Customer.email == email)
    if not clauses:
        return
    query = select(Customer).where(or_(*clauses))
    if customer_id is not None:
        query = query.where(Customer.id != customer_id)
    existing = db.session.scalars(query.limit(2)).all()
    if not existing:
        return
    fields = {}
    for other in existing:
        message = _("%(name)s (customer #%(id)d) already has it.", name=isolate(other.name),
                    id=other.id)
        if phone and other.phone == phone:
            fields["phone"] = message
        if email and other.email == email:
            fields["email"] = message
    raise DuplicateCustomerError(existing[0], fields)


def _save(customer: Customer, values: Mapping[str, Any]) -> None:
    """Write `values` to the customer (added when new), turning a phone or email that someone
    else wrote meanwhile into the same 409.

    The changes are made inside the savepoint: begin_nested() first flushes what is pending,
    outside it.
    """
    try:
        with db.session.begin_nested():
            db.session.add(customer)
            for key, value in values.items():
                setattr(customer, key, value)
            db.session.flush()
    except IntegrityError:
        _ensure_unique(values.get("phone"), values.get("email"), customer.id)
        raise


def create_customer(actor: User | None, data: Mapping, source: str = "manual") -> Customer:
    """Add a customer. `data`: name, phone (any written form), email, company, owner_id,
    stage_id (default: the first stage), expected_value, tags, notes, custom_fields."""
    if source not in SOURCES:
        raise ValueError(f"unknown source {source}")
    values = _customer_values(data, None)
    _ensure_unique(values.get("phone"), values.get("email"))
    gate.ensure_within("customers")
    stage = values.pop("stage_id", None)
    if "stage_id" not in data:
        stage = list_stages()[0]
    if "owner_id" not in data and actor is not None:
        values["owner_id"] = actor.id
    customer = Customer(source=source, stage_id=stage.id if stage else None,
                        board_position=top_of(stage.id if stage else None))
    _save(customer, values)
    log_automatic(customer, "created", data={"source": source}, actor=actor)
    scoring.recompute_score(customer)
    log.info("customer %s created by %s (%s)", customer.id, actor, source)
    events.publish("customer.created", {"customer_id": customer.id, "source": source})
    return customer


def update_customer(actor: User | None, customer: Customer, data: Mapping,
                    expected_version: Expected = None) -> Customer:
    """Change the keys present in `data`; a new stage_id moves the customer on the board.
    `add_tags` and `remove_tags` change the tags as saved now.

    With `expected_version`, a customer someone edited since is refused (StaleVersionError);
    the edit is checked and made on the customer as saved now, never on a copy read earlier.
    """
    lock_for_edit(customer)
    values = _customer_values(data, customer)
    check_version(customer, expected_version)
    phone = values.get("phone", customer.phone)
    email = values.get("email", customer.email)
    if phone != customer.phone or email != customer.email:
        _ensure_unique(phone, email, customer.id)
    stage = values.pop("stage_id", customer.stage)
    changed = sorted(key for key, value in values.items() if getattr(customer, key) != value)
    _save(customer, {key: values[key] for key in changed})
    if "stage_id" in data and (stage.id if stage else None) != customer.stage_id:
        change_stage(actor, customer, stage, top_of(stage.id if stage else None))
        changed.append("stage_id")
    elif "custom_fields" in changed:
        scoring.recompute_score(customer)
    if changed:
        record_edit(customer, actor)
        log.info("customer %s updated by %s: %s", customer.id, actor, ", ".join(changed))
        events.publish("customer.updated", {"customer_id": customer.id, "fields": changed})
    return customer


def delete_customer(actor: User, customer: Customer) -> None:
    """Delete a customer and their timeline; other modules unlink what pointed at them
    (`customer.deleted`: WhatsApp conversations, tickets)."""
    db.session.execute(delete(Customer).where(Customer.merged_into_id == customer.id)
                       .execution_options(synchronize_session=False))
    audit("customer.deleted", actor, customer, name=customer.name, phone=customer.phone)
    events.publish("customer.deleted", {"customer_id": customer.id})
    db.session.delete(customer)
    db.session.flush()


def merge_customers(actor: User, survivor: Customer, duplicate: Customer) -> Customer:
    """Fold `duplicate` into `survivor`: its activities move, blanks are filled from it, and
    `customer.merged` tells the other modules to relink conversations and tickets."""
    if survivor.id == duplicate.id:
        raise ValidationError({"duplicate_id": _("Choose another customer to merge.")})
    # Locked and read afresh: what is merged is what both hold now.
    db.session.scalars(select(Customer).where(Customer.id.in_((survivor.id, duplicate.id)))
                       .order_by(Customer.id).with_for_update()
                       .execution_options(populate_existing=True)).all()
    phone, email = duplicate.phone, duplicate.email
    duplicate.phone = duplicate.email = None
    duplicate.merged_into_id = survivor.id
    db.session.flush()  # free the phone and email before the survivor takes them
    survivor.phone = survivor.phone or phone
    survivor.email = survivor.email or email
    survivor.company = survivor.company or duplicate.company
    survivor.owner_id = survivor.owner_id or duplicate.owner_id
    survivor.expected_value = survivor.expected_value or duplicate.expected_value
    survivor.tags = check_tags([*survivor.tags, *duplicate.tags][:MAX_TAGS])
    survivor.custom_fields = {**duplicate.custom_fields, **survivor.custom_fields}
    survivor.notes = "\n\n".join(n for n in (survivor.notes, duplicate.notes) if n)
    contacts = [m for m in (survivor.last_contacted_at, duplicate.last_contacted_at) if m]
    survivor.last_contacted_at = max(contacts) if contacts else None
    db.session.execute(update(CustomerActivity)
                       .where(CustomerActivity.customer_id == duplicate.id)
                       .values(customer_id=survivor.id)
                       .execution_options(synchronize_session=False))
    db.session.execute(update(Customer).where(Customer.merged_into_id == duplicate.id)
                       .values(merged_into_id=survivor.id)
                       .execution_options(synchronize_session=False))
    record_edit(survivor, actor)
    log_automatic(survivor, "merged", duplicate.name,
                  {"merged_id": duplicate.id, "name": duplicate.name}, actor=actor)
    scoring.recompute_score(survivor)
    audit("customer.merged", actor, survivor, merged_id=duplicate.id, name=duplicate.name)
    events.publish("customer.merged", {"survivor_id": survivor.id, "merged_id": duplicate.id})
    return survivor


def resolve_customer(customer_id: int | None) -> Customer | None:
    """The live customer an id names, following merges (None when deleted)."""
    for _hop in range(5):
        customer = get_in_organization(Customer, customer_id) if customer_id else None
        if customer is None or customer.merged_into_id is None:
            return customer
        customer_id = customer.merged_into_id
    return None


def customer_by_phone(phone: str | None) -> Customer | None:
    if not phone:
        return None
    return db.session.scalar(select(Customer).where(Customer.phone == phone))


def whatsapp_conversation_id(customer: Customer) -> int | None:
    """The customer's latest WhatsApp conversation (to open it in the inbox); None when the
    WhatsApp module is off or there is none. Reads, never writes, the WhatsApp tables."""
    if not module_enabled("whatsapp"):
        return None
    return db.session.scalar(
        select(Conversation.id).where(Conversation.customer_id == customer.id)
        .order_by(Conversation.last_message_at.desc().nulls_last(), Conversation.id.desc())
        .limit(1))
