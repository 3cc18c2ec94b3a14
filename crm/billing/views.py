"""The billing page, the banners every page shows about the organization's plan, and the pages
that explain a refusal of the plan.

Thin: the page reads services and the gate; its forms call one service each. Checkout and the
Customer Portal are Stripe's pages: a form posting here is answered with a redirect there
(HX-Redirect to htmx, whose request could not follow a redirect to another site; 303 to a
plain post). The plan is granted by Stripe's webhooks, never by the way back: back from
Checkout, the page polls until the webhook's job has applied the subscription.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from babel.numbers import get_currency_precision
from flask import (
    Blueprint,
    Response,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_babel import format_currency, lazy_gettext, ngettext
from flask_babel import gettext as _
from flask_login import current_user

from crm import navigation
from crm.billing import gate, services, webhooks
from crm.billing.plans import LIMITS, PLANS
from crm.errors import ServiceError
from crm.foundation.models import MODULE_LABELS
from crm.foundation.views import add_audit_labels
from crm.i18n import format_day
from crm.models import utcnow
from crm.permissions import can, require
from crm.web import (
    came_from,
    error_body,
    htmx_response,
    is_htmx,
    me,
    page,
    see_other,
    wants_json,
)

blueprint = Blueprint("billing", __name__)

navigation.add(navigation.NavItem("billing.billing_page", lazy_gettext("Billing"), "billing",
                                  "read", "card", 90))
add_audit_labels({
    "billing.checkout_started": lazy_gettext("Checkout started"),
    "billing.plan_changed": lazy_gettext("Plan changed"),
    "billing.canceled": lazy_gettext("Subscription cancelled"),
    "billing.plan_kept": lazy_gettext("Cancellation withdrawn"),
    "billing.portal_opened": lazy_gettext("Billing portal opened"),
    "billing.limits_set": lazy_gettext("Plan limits set"),
}, {
    "subscriptions": lazy_gettext("Subscription"),
})

STATUS_LABELS = {
    "trialing": lazy_gettext("Trial"), "active": lazy_gettext("Active"),
    "past_due": lazy_gettext("Payment overdue"), "unpaid": lazy_gettext("Unpaid"),
    "canceled": lazy_gettext("Canceled"), "incomplete": lazy_gettext("Awaiting payment"),
    "incomplete_expired": lazy_gettext("Payment not completed"),
    "paused": lazy_gettext("Paused"),
}
INVOICE_STATUS_LABELS = {
    "draft": lazy_gettext("Draft"), "open": lazy_gettext("Due"), "paid": lazy_gettext("Paid"),
    "uncollectible": lazy_gettext("Uncollectible"), "void": lazy_gettext("Void"),
}
INTERVAL_LABELS = {"month": lazy_gettext("Monthly"), "year": lazy_gettext("Yearly")}
# What a read-only organization cannot do, as its banner says it.
READ_ONLY_DISABLED = lazy_gettext(
    "Sending messages, adding or changing customers, numbers and team members are disabled; "
    "reading and exporting still work.")
INVOICES_SHOWN = 12


def money(amount: int, currency: str) -> str:
    """`amount` in `currency`'s minor units (Stripe's), formatted by Babel for the locale."""
    code = currency.upper()
    return format_currency(Decimal(amount).scaleb(-get_currency_precision(code)), code)


def days_until(moment: datetime | None) -> int | None:
    """Whole days left until `moment`, a part of a day counting as one (never below 0)."""
    if moment is None:
        return None
    return max(0, math.ceil((moment - utcnow()).total_seconds() / 86400))


@blueprint.app_template_global()
def billing_banner() -> Banner | None:
    """What the page's banner says about the plan (None: nothing to say, or self-hosted).
    Costs the gate's one cached lookup, shared with the page's own guards."""
    if not current_user.is_authenticated or not gate.billing_enabled():
        return None
    found = gate.entitlements()
    admin = can("billing", "write")
    if found.read_only:
        return Banner("read-only", _("Your organization is read-only: a payment is overdue."),
                      str(READ_ONLY_DISABLED), _pay_link(admin))
    if found.status == "past_due" and admin:
        grace_end = found.past_due_since + gate.grace_period()
        return Banner("past-due", _("A payment failed."), _(
            "Pay the invoice by %(date)s to keep writing; after that the organization becomes "
            "read-only until it is paid.", date=format_day(grace_end)), _pay_link(admin))
    if found.status == "trialing" and found.trial_ends_at and can("billing", "read"):
        days = days_until(found.trial_ends_at)
        return Banner("trial", _("%(plan)s trial", plan=PLANS[found.plan].name), ngettext(
            "%(num)d day left in your trial. Choose a plan to keep its modules and limits.",
            "%(num)d days left in your trial. Choose a plan to keep its modules and limits.",
            days), (url_for("billing.billing_page"), _("Choose a plan")))
    return None


@dataclass(frozen=True)
class Banner:
    kind: str  # trial | past-due | read-only
    title: str
    text: str
    link: tuple[str, str] | None  # (href, label)


def _pay_link(admin: bool) -> tuple[str, str] | None:
    if not admin:
        return None
    invoice = services.open_invoice()
    if invoice is not None and invoice.hosted_invoice_url:
        return invoice.hosted_invoice_url, _("Pay the invoice")
    return url_for("billing.billing_page"), _("Go to billing")


# -- the page ---------------------------------------------------------------------------------

@blueprint.get("/billing")
@require("billing", "read")
def billing_page():
    """The plan, its usage against the limits, the plans to move to, the invoices. Back from
    Checkout (`?checkout=done`) it polls its summary until Stripe's webhook has come, then
    reloads itself whole (the plans, the card and the invoices changed too)."""
    waiting = request.args.get("checkout") == "done" and not services.has_running_subscription()
    if is_htmx() and not waiting:
        return htmx_response(refresh=True)
    summary = services.subscription_summary()
    context = {"summary": summary, "waiting": waiting, "status_labels": STATUS_LABELS,
               "interval_labels": INTERVAL_LABELS, "limit_labels": gate.LIMIT_LABELS,
               "trial_days": days_until(summary["trial_ends_at"]), "day": format_day,
               # Cancelled at the period's end, still running: it can be kept.
               "keepable": (summary["cancel_at_period_end"]
                            and summary["status"] in services.RUNNING),
               "plan_names": {code: plan.name for code, plan in PLANS.items()}}
    if is_htmx():
        return render_template("billing/_summary.html", **context)
    invoices, _after = services.list_invoices(limit=INVOICES_SHOWN)
    return page("billing/billing.html", plans=_plans(summary), invoices=invoices,
                card=services.default_payment_method(), running=services.has_running_subscription(),
                customer=services.has_stripe_customer(),
                invoice_status_labels=INVOICE_STATUS_LABELS, module_labels=MODULE_LABELS,
                limits=LIMITS, money=money, webhook_url=_webhook_url(), **context)


def _webhook_url() -> str:
    """Where Stripe sends its events, on PUBLIC_URL (what the operator enters in Stripe)."""
    return current_app.config["PUBLIC_URL"].rstrip("/") + webhooks.PATH


def _plans(summary: dict) -> list[dict]:
    """The plans to compare, each with its prices formatted and what choosing it would be."""
    current = PLANS[summary["plan"]]
    plans = []
    for plan in services.plan_catalog():
        rank = PLANS[plan["code"]].rank
        plan["shown_prices"] = {interval: money(amount, plan["currency"])
                                for interval, amount in plan["prices"].items()
                                if amount}  # Free's nothing is said in words
        plan["is_current"] = plan["code"] == current.code
        plan["move"] = "upgrade" if rank > current.rank else "downgrade"
        plan["is_paid"] = PLANS[plan["code"]].is_paid
        plans.append(plan)
    return plans


def _to_stripe(url: str) -> Response:
    """Send the browser to Stripe's page: a navigation, which htmx makes on HX-Redirect."""
    if request.headers.get("HX-Request") == "true":
        return Response(status=204, headers={"HX-Redirect": url})
    return redirect(url, 303)


def _refused(exc: ServiceError) -> Response:
    flash(exc.message if not exc.fields else " ".join(map(str, exc.fields.values())), "error")
    return see_other("billing.billing_page")


@blueprint.post("/billing/subscribe")
@require("billing", "write")
def subscribe():
    try:
        url = services.start_checkout(me(), request.form.get("plan"),
                                      request.form.get("interval"))
    except ServiceError as exc:
        return _refused(exc)
    return _to_stripe(url)


@blueprint.post("/billing/change-plan")
@require("billing", "write")
def change_plan():
    try:
        subscription = services.change_plan(me(), request.form.get("plan"),
                                            request.form.get("interval"))
    except ServiceError as exc:
        return _refused(exc)
    chosen = request.form.get("plan")
    asked = (chosen, request.form.get("interval"))
    if subscription.scheduled_plan:
        flash(_("Your plan changes to %(plan)s at the end of the period paid for.",
                plan=PLANS[subscription.scheduled_plan].name), "success")
    elif subscription.pending_requires_action:  # 3-D Secure: nothing was refused yet
        flash(_("Your bank asks you to confirm the payment for %(plan)s: confirm it on the "
                "invoice's page, and your plan changes once it is paid.",
                plan=PLANS[chosen].name), "info")
    elif (subscription.plan, subscription.interval) != asked:  # held until its invoice is paid
        flash(_("The payment for %(plan)s did not go through: your plan stays %(current)s "
                "until its invoice is paid (below, or with another card in the portal).",
                plan=PLANS[chosen].name, current=PLANS[subscription.plan].name), "error")
    else:
        flash(_("Your plan is now %(plan)s.", plan=PLANS[subscription.plan].name), "success")
    return see_other("billing.billing_page")


@blueprint.post("/billing/cancel")
@require("billing", "write")
def cancel():
    try:
        services.cancel(me(), now=False)
    except ServiceError as exc:
        return _refused(exc)
    flash(_("Your subscription ends at the end of the period paid for; nothing you stored "
            "is deleted."), "success")
    return see_other("billing.billing_page")


@blueprint.post("/billing/keep-plan")
@require("billing", "write")
def keep_plan():
    try:
        subscription = services.keep_plan(me())
    except ServiceError as exc:
        return _refused(exc)
    flash(_("Your plan continues: it renews on %(date)s.",
            date=format_day(subscription.current_period_end)), "success")
    return see_other("billing.billing_page")


@blueprint.post("/billing/portal")
@require("billing", "write")
def open_portal():
    try:
        url = services.portal_url(me())
    except ServiceError as exc:
        return _refused(exc)
    return _to_stripe(url)


# -- refusals of the plan, on pages -------------------------------------------------------------

@blueprint.app_errorhandler(gate.PlanLimitError)
@blueprint.app_errorhandler(gate.ModuleNotInPlanError)
@blueprint.app_errorhandler(gate.ReadOnlyError)
def plan_refused(exc: ServiceError):
    """A page refused by the plan says what the plan allows and offers the upgrade (the API
    answers its usual error body)."""
    if wants_json():
        return error_body(exc.status, exc.code, exc.message, exc.fields), exc.status
    template = "billing/_refused.html" if is_htmx() else "billing/refused.html"
    found = gate.entitlements()
    # A refused action (a start, a resume) is answered at its POST address, which a reload
    # cannot show again: lead back to the page its button was on.
    back = came_from() if request.method == "POST" else None
    return render_template(template, status=exc.status, error=exc, plan=PLANS[found.plan],
                           limits=found.limits, limit_labels=gate.LIMIT_LABELS,
                           read_only_disabled=READ_ONLY_DISABLED, back=back), exc.status
