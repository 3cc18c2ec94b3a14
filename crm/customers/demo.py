"""The CRM's part of `crm seed-demo`: 300 customers with Arabic and English names across the
pipeline's stages, each with an expected value, an owner, activities (notes, calls, tasks due
today and overdue) and the score those earn. Made through the services, as people would."""

from __future__ import annotations

import random
from datetime import timedelta

from crm.customers import services
from crm.foundation.demo import add_demo
from crm.foundation.models import User
from crm.models import utcnow

CUSTOMERS = 300
AR_FIRST = ("محمد", "أحمد", "عبدالله", "خالد", "فهد", "سعود", "عمر", "يوسف", "فيصل", "تركي",
            "نورة", "سارة", "ريم", "هيا", "لطيفة", "منى", "هند", "جواهر", "دانة", "لمى")
AR_LAST = ("العتيبي", "القحطاني", "الشمري", "الدوسري", "الحربي", "المطيري", "الغامدي",
           "الزهراني", "السبيعي", "العنزي", "الشهري", "المالكي")
EN_FIRST = ("James", "Sarah", "Omar", "Layla", "John", "Emily", "Ahmed", "Priya", "David",
            "Maria")
EN_LAST = ("Smith", "Khan", "Johnson", "Patel", "Haddad", "Nasser", "Taylor", "Hussain")
COMPANIES = ("مؤسسة النور التجارية", "شركة الأفق للتقنية", "مخبز السعادة", "Gulf Logistics",
             "Red Sea Trading", "", "", "")
TAGS = ("جملة", "تجزئة", "VIP", "متجر إلكتروني", "مطاعم")
# How many customers each stage holds, from the first (new leads) to the last (lost).
STAGE_WEIGHTS = (30, 22, 18, 12, 10, 8)
NOTES = ("طلب عرض سعر لمئة قطعة", "Asked for a catalogue in English", "يفضل التواصل مساءً",
         "Interested in the annual contract")
TASKS = ("اتصل لمتابعة العرض", "Send the revised quote", "جهّز عقد التوريد")


def name(rng: random.Random) -> str:
    """An Arabic name three times out of four, else an English one."""
    if rng.random() < 0.75:
        return f"{rng.choice(AR_FIRST)} {rng.choice(AR_LAST)}"
    return f"{rng.choice(EN_FIRST)} {rng.choice(EN_LAST)}"


def demo_phone(n: int) -> str:
    """The n-th demo customer's mobile number (Saudi, unique per n)."""
    return f"+96650{1_000_000 + n * 7919 % 9_000_000:07d}"


@add_demo
def seed_customers(admin: User, team: list[User], rng: random.Random) -> str:
    stages = services.list_stages()
    sellers = [user for user in team if user.role in ("manager", "agent")]
    for n in range(CUSTOMERS):
        stage = rng.choices(stages, STAGE_WEIGHTS[:len(stages)])[0]
        customer = services.create_customer(admin, {
            "name": name(rng), "phone": demo_phone(n), "company": rng.choice(COMPANIES),
            "stage_id": stage.id, "owner_id": rng.choice(sellers).id,
            "expected_value": str(rng.choice((0, 1, 2, 5, 10, 25, 60)) * 1000
                                  + rng.randrange(0, 1000, 50)),
            "tags": rng.sample(TAGS, rng.randrange(0, 3))})
        _activities(admin, customer, rng)
    return f"{CUSTOMERS} customers across the pipeline, with activities and scores."


def _activities(admin: User, customer, rng: random.Random) -> None:
    """Notes and calls for some, tasks (due today, overdue, later) for others; rescored."""
    if rng.random() < 0.4:
        services.add_activity(admin, customer, rng.choice(("note", "call")), rng.choice(NOTES))
    if rng.random() < 0.25:
        due = utcnow() + timedelta(hours=rng.choice((-50, -26, 1, 3, 30, 75)))
        services.add_activity(admin, customer, "task", rng.choice(TASKS), due.isoformat(),
                              customer.owner_id)
    services.scoring.recompute_score(customer)
