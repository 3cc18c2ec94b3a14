"""Factories for the CRM's tests: objects made through the real services (usable after a
commit too: the organization's id is read without loading it)."""

from __future__ import annotations

import io
import itertools

from werkzeug.datastructures import FileStorage

from crm.customers import imports, services
from crm.customers.models import (
    Customer,
    CustomerActivity,
    CustomerImport,
    CustomFieldDefinition,
    SalesStage,
    Segment,
)
from crm.extensions import db
from crm.foundation.models import Organization
from crm.tenancy import organization_context
from tests.factories import unique_phone
from tests.foundation import ident

_sequence = itertools.count(1)


def _flushed(obj):
    """Write what the service left pending while the organization is still set (RLS would
    refuse it later, outside the organization)."""
    db.session.flush()
    return obj


def make_customer(org: Organization, **fields) -> Customer:
    """A customer of `org` added by its admin; `fields` override the name and phone."""
    fields.setdefault("name", f"Customer {next(_sequence)}")
    fields.setdefault("phone", unique_phone())
    with organization_context(ident(org)):
        return _flushed(services.create_customer(org.admin, fields))


def make_stage(org: Organization, **fields) -> SalesStage:
    n = next(_sequence)
    fields.setdefault("name_ar", f"مرحلة {n}")
    fields.setdefault("name_en", f"Stage {n}")
    with organization_context(ident(org)):
        return _flushed(services.create_stage(org.admin, fields))


def make_activity(org: Organization, customer: Customer | None = None, type_: str = "task",
                  body: str = "Call back") -> CustomerActivity:
    customer = customer or make_customer(org)
    with organization_context(ident(org)):
        return _flushed(services.add_activity(org.admin, customer, type_, body))


def make_message_activity(org: Organization, customer: Customer, conversation: object,
                          body: str = "Hello", direction: str = "in") -> CustomerActivity:
    """A WhatsApp message of `conversation` on `customer`'s timeline, logged as the CRM logs
    the messages it hears of (crm/customers/events.py)."""
    n = next(_sequence)
    with organization_context(ident(org)):
        return _flushed(services.log_automatic(
            customer, f"whatsapp_{direction}", body,
            {"message_id": n, "conversation_id": ident(conversation), "message_type": "text"},
            source_key=f"wa:test-{n}"))


def make_segment(org: Organization, name: str = "VIP", **filters) -> Segment:
    with organization_context(ident(org)):
        return _flushed(services.create_segment(org.admin, name, filters))


def make_field(org: Organization, key: str | None = None, type_: str = "text",
               **fields) -> CustomFieldDefinition:
    fields.update(key=key or f"field_{next(_sequence)}", type=type_)
    fields.setdefault("label", fields["key"].title())
    with organization_context(ident(org)):
        return _flushed(services.create_field_definition(org.admin, fields))


def csv_upload(text: str, filename: str = "customers.csv", bom: bool = False) -> FileStorage:
    """An uploaded CSV file, as Excel saves it when `bom` ("CSV UTF-8")."""
    data = ("\ufeff" if bom else "").encode() + text.encode()
    return FileStorage(io.BytesIO(data), filename=filename, content_type="text/csv")


def make_import(org: Organization, text: str = "name,phone\nأحمد,0501234567\n",
                **upload) -> CustomerImport:
    with organization_context(ident(org)):
        return _flushed(imports.start_import(org.admin, csv_upload(text, **upload)))
