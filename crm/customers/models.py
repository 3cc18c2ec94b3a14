"""Customers, the stages they move through, what happened with them, and how they score."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    Boolean,
    Computed,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column, relationship

from crm.extensions import db
from crm.foundation.models import User
from crm.models import created_at_column, id_column, utcnow
from crm.search import CONTACTED_ORDER
from crm.tenancy import TenantMixin
from crm.versions import VersionedMixin

SOURCES = ("manual", "whatsapp", "import", "api")
FIELD_TYPES = ("text", "number", "date", "choice")
ACTIVITY_TYPES = ("note", "call", "meeting", "task")  # what people log by hand
AUTOMATIC_ACTIVITY_TYPES = ("created", "stage_changed", "whatsapp_in", "whatsapp_out",
                            "ticket_opened", "ticket_closed", "campaign_sent", "campaign_replied",
                            "imported", "merged", "score_changed")
MESSAGE_ACTIVITY_TYPES = ("whatsapp_in", "whatsapp_out")  # a message's text, `conversation_id`


class SalesStage(TenantMixin, db.Model):
    __tablename__ = "sales_stages"
    __table_args__ = (Index("ix_sales_stages_organization_id_position", "organization_id",
                            "position"),)

    id: Mapped[int] = id_column()
    name_ar: Mapped[str] = mapped_column(String(80), nullable=False)
    name_en: Mapped[str] = mapped_column(String(80), nullable=False)
    position: Mapped[int] = mapped_column(Integer, nullable=False)
    color: Mapped[str] = mapped_column(String(7), nullable=False, default="#64748b",
                                       server_default="#64748b")
    is_won: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False,
                                         server_default=text("false"))
    is_lost: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False,
                                          server_default=text("false"))
    created_at: Mapped[datetime] = created_at_column()

    def name_in(self, language: str) -> str:
        return self.name_ar if language == "ar" else self.name_en

    def __repr__(self) -> str:
        return f"<SalesStage {self.id} {self.name_en}>"


class Customer(VersionedMixin, TenantMixin, db.Model):
    """A person or business the organization sells to; people's edits are versioned
    (crm/versions.py)."""

    __tablename__ = "customers"
    __table_args__ = (
        Index("uq_customers_phone", "organization_id", "phone", unique=True,
              postgresql_where=text("phone IS NOT NULL")),
        Index("uq_customers_email", "organization_id", "email", unique=True,
              postgresql_where=text("email IS NOT NULL")),
        Index("ix_customers_recent", "organization_id", text("id DESC")),
        Index("ix_customers_board", "organization_id", "stage_id", "board_position", "id"),
        Index("ix_customers_owner", "organization_id", "owner_id", text("id DESC")),
        Index("ix_customers_stage_recent", "organization_id", "stage_id", text("id DESC")),
        Index("ix_customers_stage_counts", "organization_id", "stage_id",
              postgresql_where=text("merged_into_id IS NULL")),
        Index("ix_customers_score", "organization_id", text("score DESC"), text("id DESC")),
        Index("ix_customers_name", "organization_id", "name", "id",
              postgresql_include=["search_name", "search_email", "search_phone"],
              postgresql_where=text("merged_into_id IS NULL")),
        Index("ix_customers_contacted", "organization_id", text(f"{CONTACTED_ORDER} DESC"),
              text("id DESC")),
        Index("ix_customers_tags", "organization_id", "tags", postgresql_using="gin"),
        Index("ix_customers_search_name", "organization_id", "search_name",
              postgresql_using="gin", postgresql_ops={"search_name": "gin_trgm_ops"}),
        Index("ix_customers_search_phone", "organization_id", "search_phone",
              postgresql_using="gin", postgresql_ops={"search_phone": "gin_trgm_ops"}),
        Index("ix_customers_search_email", "organization_id", "search_email",
              postgresql_using="gin", postgresql_ops={"search_email": "gin_trgm_ops"}),
    )

    id: Mapped[int] = id_column()
    name: Mapped[str] = mapped_column(String(160), nullable=False)
    phone: Mapped[str | None] = mapped_column(String(20))  # E.164
    email: Mapped[str | None] = mapped_column(String(254))  # lower-case
    company: Mapped[str] = mapped_column(String(160), nullable=False, default="",
                                         server_default="")
    owner_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="SET NULL"))
    stage_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("sales_stages.id", ondelete="SET NULL"))
    board_position: Mapped[float] = mapped_column(Float, nullable=False, default=0.0,
                                                  server_default="0")
    tags: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False, default=list,
                                            server_default=text("'{}'::text[]"))
    source: Mapped[str] = mapped_column(String(16), nullable=False, default="manual",
                                        server_default="manual")
    custom_fields: Mapped[dict] = mapped_column(JSONB, nullable=False, default=dict,
                                                server_default=text("'{}'::jsonb"))
    notes: Mapped[str] = mapped_column(Text, nullable=False, default="", server_default="")
    score: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    # What the customer is expected to bring, in the organization's currency.
    expected_value: Mapped[Decimal] = mapped_column(Numeric(14, 2), nullable=False,
                                                    default=Decimal(0), server_default="0")
    # Why the score is what it is: [{"points": 20, "reason": "replied_recently", ...}]
    score_breakdown: Mapped[list] = mapped_column(JSONB, nullable=False, default=list,
                                                  server_default=text("'[]'::jsonb"))
    last_contacted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    merged_into_id: Mapped[int | None] = mapped_column(BigInteger)
    search_name: Mapped[str] = mapped_column(
        Text, Computed("wasl_fold(name || ' ' || company)", persisted=True))
    search_phone: Mapped[str] = mapped_column(
        Text, Computed("wasl_digits(coalesce(phone, ''))", persisted=True))
    search_email: Mapped[str] = mapped_column(
        Text, Computed("coalesce(email, '')", persisted=True))
    created_at: Mapped[datetime] = created_at_column()
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False,
                                                 default=utcnow, onupdate=utcnow,
                                                 server_default=text("now()"))

    owner: Mapped[User | None] = relationship(foreign_keys=[owner_id])
    stage: Mapped[SalesStage | None] = relationship()

    def __repr__(self) -> str:
        return f"<Customer {self.id} {self.phone or self.email}>"


class PipelineTotal(TenantMixin, db.Model):
    """Customers and their expected value per stage and owner (0: none), kept by triggers on
    `customers` (migration f1ea96597448): the board and the dashboard read a few rows instead
    of counting the organization. Never written by the application."""

    __tablename__ = "pipeline_totals"

    stage_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    owner_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    customers: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    value: Mapped[Decimal] = mapped_column(Numeric(18, 2), nullable=False, default=Decimal(0))

    def __repr__(self) -> str:
        return f"<PipelineTotal stage={self.stage_id} owner={self.owner_id} {self.customers}>"


class TaskCount(TenantMixin, db.Model):
    """Open tasks with a due moment per assignee (0: nobody) and UTC day of that moment, kept
    by triggers on `customer_activities` (migration eb7087627e79): the dashboard sums the
    days before today instead of counting every overdue task. Never written by the
    application."""

    __tablename__ = "task_counts"

    assignee_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    due_day: Mapped[date] = mapped_column(Date, primary_key=True)
    n: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)


class CustomFieldDefinition(TenantMixin, db.Model):
    __tablename__ = "custom_field_definitions"
    __table_args__ = (Index("uq_custom_field_definitions_key", "organization_id", "key",
                            unique=True),)

    id: Mapped[int] = id_column()
    key: Mapped[str] = mapped_column(String(40), nullable=False)
    label: Mapped[str] = mapped_column(String(80), nullable=False)
    type: Mapped[str] = mapped_column(String(16), nullable=False)
    choices: Mapped[list] = mapped_column(JSONB, nullable=False, default=list,
                                          server_default=text("'[]'::jsonb"))
    is_required: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False,
                                              server_default=text("false"))
    position: Mapped[int] = mapped_column(Integer, nullable=False, default=0,
                                          server_default="0")
    created_at: Mapped[datetime] = created_at_column()


class CustomerActivity(TenantMixin, db.Model):
    __tablename__ = "customer_activities"
    __table_args__ = (
        Index("ix_customer_activities_timeline", "organization_id", "customer_id",
              text("id DESC")),
        Index("ix_customer_activities_tasks_due", "organization_id", "assignee_id", "due_at",
              postgresql_where=text("type = 'task' AND done_at IS NULL")),
    )

    id: Mapped[int] = id_column()
    customer_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("customers.id", ondelete="CASCADE"), nullable=False)
    type: Mapped[str] = mapped_column(String(24), nullable=False)
    body: Mapped[str] = mapped_column(Text, nullable=False, default="", server_default="")
    data: Mapped[dict] = mapped_column(JSONB, nullable=False, default=dict,
                                       server_default=text("'{}'::jsonb"))
    due_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    assignee_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="SET NULL"))
    done_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    actor_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="SET NULL"))
    # Automatic entries name what they came from (a WhatsApp message id...), so a redelivered
    # event logs nothing twice.
    source_key: Mapped[str | None] = mapped_column(String(80))
    created_at: Mapped[datetime] = created_at_column()

    actor: Mapped[User | None] = relationship(foreign_keys=[actor_id])
    assignee: Mapped[User | None] = relationship(foreign_keys=[assignee_id])
    customer: Mapped[Customer] = relationship()


Index("uq_customer_activities_source_key", CustomerActivity.organization_id,
      CustomerActivity.source_key, unique=True,
      postgresql_where=CustomerActivity.source_key.is_not(None))


class Segment(TenantMixin, db.Model):
    """A saved filter of customers (campaigns send to segments)."""

    __tablename__ = "segments"
    __table_args__ = (Index("ix_segments_organization_id_id", "organization_id", "id"),)

    id: Mapped[int] = id_column()
    name: Mapped[str] = mapped_column(String(120), nullable=False)
    filters: Mapped[dict] = mapped_column(JSONB, nullable=False, default=dict,
                                          server_default=text("'{}'::jsonb"))
    created_by_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = created_at_column()


class ScoringRule(TenantMixin, db.Model):
    """Points for what a customer did; `kind` names the signal, `params` tunes it."""

    __tablename__ = "scoring_rules"
    __table_args__ = (Index("ix_scoring_rules_organization_id_id", "organization_id", "id"),)

    id: Mapped[int] = id_column()
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    params: Mapped[dict] = mapped_column(JSONB, nullable=False, default=dict,
                                         server_default=text("'{}'::jsonb"))
    points: Mapped[int] = mapped_column(Integer, nullable=False)
    is_active: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True,
                                            server_default=text("true"))
    created_at: Mapped[datetime] = created_at_column()


class CustomerImport(TenantMixin, db.Model):
    """A CSV import: uploaded, previewed and mapped, then run by a job with progress."""

    __tablename__ = "customer_imports"
    __table_args__ = (Index("ix_customer_imports_organization_id_id", "organization_id",
                            "id"),)

    id: Mapped[int] = id_column()
    filename: Mapped[str] = mapped_column(String(255), nullable=False)
    path: Mapped[str] = mapped_column(String(500), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="uploaded",
                                        server_default="uploaded")
    mapping: Mapped[dict] = mapped_column(JSONB, nullable=False, default=dict,
                                          server_default=text("'{}'::jsonb"))
    on_duplicate: Mapped[str] = mapped_column(String(8), nullable=False, default="skip",
                                              server_default="skip")
    # How the file is read (detected on upload, chosen on the preview): see imports.ENCODINGS
    # and imports.DELIMITERS.
    encoding: Mapped[str] = mapped_column(String(16), nullable=False, default="utf-8",
                                          server_default="utf-8")
    delimiter: Mapped[str] = mapped_column(String(16), nullable=False, default="comma",
                                           server_default="comma")
    total_rows: Mapped[int] = mapped_column(Integer, nullable=False, default=0,
                                            server_default="0")
    processed_rows: Mapped[int] = mapped_column(Integer, nullable=False, default=0,
                                                server_default="0")
    created_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0,
                                               server_default="0")
    updated_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0,
                                               server_default="0")
    skipped_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0,
                                               server_default="0")
    rejected_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0,
                                                server_default="0")
    report_path: Mapped[str | None] = mapped_column(String(500))
    error: Mapped[str | None] = mapped_column(String(500))
    created_by_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = created_at_column()
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
