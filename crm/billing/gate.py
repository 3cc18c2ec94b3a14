"""The one gate every page, API route and worker asks: may this organization use a module, and
has it room for n more of something its plan counts?

`allows(module)`, `within(limit, n)` (or `ensure_within`, which raises PlanLimitError) and
`read_only()` read the organization's entitlements: its plan's modules and limits (an
operator's own limits over them), its status and whether it is read-only. They are computed
from the database once, cached in Redis under entitlements_key() and kept for the rest of the
request or job, so the gate costs at most one Redis GET per request. Billing changes delete the
cached copy after they commit (`invalidate`); what changes with the clock alone (a trial ends,
the grace of an overdue payment runs out) is cached only until then.

Without STRIPE_SECRET_KEY Wasl is self-hosted: everything is unlocked and nothing is looked up.

Limits are counted only when asked, on writes (`within`), and only against a finite limit: a
bounded count that stops one past the limit, so counting costs what the plan allows at most,
never what an unlimited organization holds. A module that keeps its own total (a counter table
kept by triggers) registers it with `counts(limit, kept=True)` and costs a few rows instead.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta

from flask import current_app, g, has_app_context
from flask_babel import gettext as _
from flask_babel import lazy_gettext
from sqlalchemy import Select, func, literal, select

from crm.billing.models import Subscription, UsageRecord
from crm.billing.plans import FALLBACK_PLAN, LIMITS, MODULES, PLANS, TRIAL_PLAN
from crm.errors import ServiceError
from crm.extensions import db
from crm.foundation.models import MODULE_LABELS, Organization, User
from crm.jobs import REDIS_DOWN, redis
from crm.keys import key
from crm.models import utcnow
from crm.tenancy import current_organization_id
from crm.transaction import on_commit

log = logging.getLogger("crm.billing")

CACHE_SECONDS = 300
# Each counted limit's rows, registered with @counts by the module owning them.
_COUNTED: dict[str, Callable[[], Select]] = {}
_KEPT: set[str] = set()  # limits whose query answers the total itself
_MEMO = "billing_entitlements"
_CHANGED = "billing_changed"  # organizations whose billing this request or job changed
# Statuses whose subscription still grants its plan (past due: until the grace ends, then
# read-only; unpaid: read-only at once). Any other leaves the organization on Free.
_GRANTING = ("active", "trialing", "past_due", "unpaid")

LIMIT_LABELS = {
    "users": lazy_gettext("Users"),
    "whatsapp_numbers": lazy_gettext("WhatsApp numbers"),
    "customers": lazy_gettext("Customers"),
    "campaign_messages_per_month": lazy_gettext("Campaign messages this month"),
    "api_requests_per_minute": lazy_gettext("API requests per minute"),
}


def entitlements_key(org_id: int) -> str:
    return key("billing", "entitlements", org=org_id)


class PlanLimitError(ServiceError):
    """Over a limit of the plan: the API answers 402 with what the plan allows."""

    status = 402
    code = "plan_limit"

    def __init__(self, limit: str, used: int, allowed: int):
        super().__init__(
            _("%(limit)s: %(used)d of %(allowed)d used. Upgrade your plan to add more.",
              limit=LIMIT_LABELS[limit], used=used, allowed=allowed),
            {"limit": limit, "used": used, "allowed": allowed})


class ModuleNotInPlanError(ServiceError):
    """A module the plan does not include: 402 on the API; pages answer 403 (see require)."""

    status = 402
    code = "plan_module"

    def __init__(self, module: str):
        super().__init__(_("Your plan does not include %(module)s. Upgrade your plan to use it.",
                           module=MODULE_LABELS[module]), {"module": module})


class ReadOnlyError(ServiceError):
    """A payment is overdue past its grace: everything can be read, nothing new written."""

    status = 402
    code = "read_only"

    def __init__(self):
        super().__init__(_("Your organization is read-only until its overdue payment is made. "
                           "An admin can pay it on the billing page."))


@dataclass(frozen=True)
class Entitlements:
    """What an organization may use now, and why (its subscription as the pages show it)."""

    plan: str
    status: str
    modules: frozenset[str]
    limits: dict[str, int | None]
    read_only: bool = False
    self_hosted: bool = False
    interval: str | None = None
    trial_ends_at: datetime | None = None
    current_period_end: datetime | None = None
    cancel_at_period_end: bool = False
    past_due_since: datetime | None = None
    scheduled_plan: str | None = None
    # When these change by the clock alone (a trial's end, a grace's end): cached until then.
    changes_at: datetime | None = field(default=None, compare=False)

    def to_json(self) -> str:
        values = asdict(self)
        values["modules"] = sorted(self.modules)
        return json.dumps(values, default=lambda moment: moment.isoformat())

    @classmethod
    def from_json(cls, raw: bytes | str) -> Entitlements:
        values = json.loads(raw)
        values["modules"] = frozenset(values["modules"])
        for name in ("trial_ends_at", "current_period_end", "past_due_since", "changes_at"):
            if values[name] is not None:
                values[name] = datetime.fromisoformat(values[name])
        return cls(**values)


UNLOCKED = Entitlements(plan="enterprise", status="active", modules=frozenset(MODULES),
                        limits=dict.fromkeys(LIMITS), self_hosted=True)


# -- the questions ------------------------------------------------------------------------------

def billing_enabled() -> bool:
    """Is Stripe connected? Without it Wasl is self-hosted and the gate lets everything by."""
    return bool(current_app.config["STRIPE_SECRET_KEY"])


def allows(module: str) -> bool:
    """Does the organization's plan include `module`?"""
    return module in entitlements().modules


def read_only() -> bool:
    """Is the organization read-only (a payment overdue past its grace)?"""
    return entitlements().read_only


def limit_of(limit: str) -> int | None:
    """What the plan allows of `limit` (None: unlimited)."""
    return entitlements().limits[limit]


def within(limit: str, n: int = 1) -> bool:
    """Is there room for `n` more of `limit`? (Counts only against a finite limit.)"""
    allowed = limit_of(limit)
    return allowed is None or _bounded_usage(limit, allowed) + n <= allowed


def room(limit: str) -> int | None:
    """How many more of `limit` fit (None: unlimited): a bulk write (an import) takes what
    fits and refuses the rest."""
    allowed = limit_of(limit)
    return None if allowed is None else max(0, allowed - _bounded_usage(limit, allowed))


def ensure_within(limit: str, n: int = 1) -> None:
    """Raise PlanLimitError unless there is room for `n` more of `limit`."""
    allowed = limit_of(limit)
    if allowed is None:
        return
    used = _bounded_usage(limit, allowed)
    if used + n > allowed:
        if used > allowed:  # the bounded count stopped short: say how many there really are
            used = usage(limit)
        raise PlanLimitError(limit, used, allowed)


def api_rate_limit() -> str | None:
    """The organization's API rate limit in Flask-Limiter's words, None when the plan sets none
    (self-hosted, or unlimited)."""
    per_minute = limit_of("api_requests_per_minute")
    return None if per_minute is None else f"{per_minute} per minute"


# -- counting -----------------------------------------------------------------------------------

def usage(limit: str) -> int:
    """How much of `limit` the organization uses now, counted in full (the billing page)."""
    if limit == "campaign_messages_per_month":  # a sum of bigints is numeric: a Decimal
        return int(db.session.scalar(
            select(func.coalesce(func.sum(UsageRecord.campaign_messages), 0))
            .where(UsageRecord.hour >= month_start(utcnow()))))
    if limit in _KEPT:  # a sum of bigints is numeric too
        return int(db.session.scalar(_counted(limit)))
    return db.session.scalar(select(func.count()).select_from(_counted(limit).subquery()))


def _bounded_usage(limit: str, allowed: int) -> int:
    """The usage of `limit`, counted up to one past `allowed` at most."""
    if limit == "campaign_messages_per_month" or limit in _KEPT:  # a few rows already
        return usage(limit)
    rows = _counted(limit).limit(allowed + 1).subquery()
    return db.session.scalar(select(func.count()).select_from(rows))


def counts(limit: str, kept: bool = False
           ) -> Callable[[Callable[[], Select]], Callable[[], Select]]:
    """Register the query giving a row for each thing `limit` counts (a decorator): the module
    owning the things says what counts, so the gate names no module. `kept`: the query
    answers the total itself, read from a total the database keeps."""
    def register(rows: Callable[[], Select]) -> Callable[[], Select]:
        _COUNTED[limit] = rows
        if kept:
            _KEPT.add(limit)
        return rows

    return register


@counts("users")
def _active_users() -> Select:
    return select(literal(1)).select_from(User).where(User.is_active)


def _counted(limit: str) -> Select:
    """A row for each thing `limit` counts (through the tenant walls, so the organization's)."""
    if limit not in _COUNTED:
        raise ValueError(f"{limit} is not counted by the gate")
    return _COUNTED[limit]()


def month_start(moment: datetime) -> datetime:
    """The start of `moment`'s calendar month (UTC): campaign messages count per month."""
    return moment.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


# -- the entitlements and their cache -----------------------------------------------------------

def entitlements() -> Entitlements:
    """The current organization's entitlements: from this request's memo, else Redis, else
    computed (and cached)."""
    if not billing_enabled():
        return UNLOCKED
    org_id = current_organization_id()
    if org_id is None:
        raise RuntimeError("the billing gate needs an organization")
    memo = g.get(_MEMO)
    if memo is not None and memo[0] == org_id:
        return memo[1]
    if org_id in g.get(_CHANGED, ()):  # Redis holds what was true before this transaction
        found = compute(org_id)
    else:
        found = _cached(org_id) or _cache(org_id, compute(org_id))
    setattr(g, _MEMO, (org_id, found))
    return found


def invalidate(org_id: int) -> None:
    """Forget the organization's entitlements once this transaction commits (a billing change
    was written), and at once in this request or job, which reads them from the database
    from now on (what it wrote is not committed, so not cached)."""
    _forget_memo()
    if has_app_context():
        setattr(g, _CHANGED, g.get(_CHANGED, frozenset()) | {org_id})
    on_commit(lambda: _delete(org_id))


def _forget_memo() -> None:
    if has_app_context():
        g.pop(_MEMO, None)


def _delete(org_id: int) -> None:
    _forget_memo()
    if has_app_context():
        setattr(g, _CHANGED, g.get(_CHANGED, frozenset()) - {org_id})
    try:
        redis().delete(entitlements_key(org_id))
    except REDIS_DOWN as exc:  # what it held expires within CACHE_SECONDS anyway
        log.warning("could not forget organization %s's entitlements: %s", org_id, exc)


def _cached(org_id: int) -> Entitlements | None:
    try:
        raw = redis().get(entitlements_key(org_id))
    except REDIS_DOWN as exc:  # the database still knows: slower, not wrong
        log.warning("entitlements of organization %s read without Redis: %s", org_id, exc)
        return None
    return Entitlements.from_json(raw) if raw is not None else None


def _cache(org_id: int, found: Entitlements) -> Entitlements:
    seconds = CACHE_SECONDS
    if found.changes_at is not None:
        seconds = max(1, min(seconds, int((found.changes_at - utcnow()).total_seconds()) + 1))
    try:
        redis().set(entitlements_key(org_id), found.to_json(), ex=seconds)
    except REDIS_DOWN as exc:
        log.warning("entitlements of organization %s not cached: %s", org_id, exc)
    return found


def compute(org_id: int) -> Entitlements:
    """The organization's entitlements from the database, as of now."""
    subscription = db.session.scalar(select(Subscription))
    if subscription is None:
        subscription = _builtin_trial(org_id)
    return evaluate(subscription, utcnow(), grace_period())


def _builtin_trial(org_id: int) -> Subscription:
    """The subscription of an organization that has none yet: the trial from its creation."""
    created_at = db.session.scalar(select(Organization.created_at)
                                   .where(Organization.id == org_id))
    return Subscription(plan=TRIAL_PLAN, status="trialing", custom_limits={},
                        cancel_at_period_end=False,
                        trial_ends_at=created_at + trial_length())


def grace_period() -> timedelta:
    """How long a payment may stay overdue before the organization becomes read-only."""
    return timedelta(days=current_app.config["BILLING_GRACE_DAYS"])


def trial_length() -> timedelta:
    return timedelta(days=current_app.config["BILLING_TRIAL_DAYS"])


def evaluate(subscription: Subscription, now: datetime, grace: timedelta) -> Entitlements:
    """What `subscription` grants at `now`: its plan while it grants one, else Free; read-only
    once a payment is overdue past `grace`, or unpaid."""
    status, plan, changes_at = subscription.status, subscription.plan, None
    builtin_trial = status == "trialing" and subscription.stripe_subscription_id is None
    if builtin_trial:
        ends = subscription.trial_ends_at
        if ends is not None and ends > now:
            changes_at = ends
        else:  # the trial is over and nothing was bought: Free, which is always active
            plan, status = FALLBACK_PLAN, "active"
    elif status not in _GRANTING:
        plan = FALLBACK_PLAN
    read_only = status == "unpaid"
    if status == "past_due" and subscription.past_due_since is not None:
        read_only_from = subscription.past_due_since + grace
        read_only = read_only_from <= now
        changes_at = None if read_only else read_only_from
    granted = PLANS[plan]
    limits = {**granted.limits, **(subscription.custom_limits or {})}
    return Entitlements(
        plan=plan, status=status, modules=granted.modules, limits=limits, read_only=read_only,
        interval=subscription.interval, trial_ends_at=subscription.trial_ends_at,
        current_period_end=subscription.current_period_end,
        cancel_at_period_end=bool(subscription.cancel_at_period_end),
        past_due_since=subscription.past_due_since,
        scheduled_plan=subscription.scheduled_plan, changes_at=changes_at)

