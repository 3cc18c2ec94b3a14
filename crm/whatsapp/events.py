"""What the WhatsApp module listens to: the CRM merging or deleting customers, so that
conversations follow the surviving customer (or are detached from a deleted one)."""

from __future__ import annotations

from crm.events import subscribe
from crm.whatsapp import services


@subscribe("customer.merged")
def follow_merged_customer(payload: dict) -> None:
    services.relink_customer(payload["merged_id"], payload["survivor_id"])


@subscribe("customer.deleted")
def detach_deleted_customer(payload: dict) -> None:
    services.relink_customer(payload["customer_id"], None)
