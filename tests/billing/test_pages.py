"""The billing page, the plan's banners on every page, and the pages that explain a refusal of
the plan."""

from __future__ import annotations

from decimal import Decimal
from html import unescape

import pytest
from babel.numbers import format_currency
from flask_babel import force_locale, gettext, pgettext
from sqlalchemy import func, select

from crm.billing import gate, services
from crm.billing.models import Invoice
from crm.extensions import db
from crm.foundation.models import Invitation
from crm.tenancy import organization_context
from crm.transaction import commit
from tests.billing.factories import age, invitation_token, oid, overdue, put_on_plan
from tests.billing.test_stripe import deliver, state
from tests.customers.factories import make_customer
from tests.factories import bearer, login, make_org, make_user
from tests.whatsapp.factories import make_profile


@pytest.fixture
def synced(stripe_api):
    services.sync_catalog()
    return stripe_api


def _page(client, user, path: str = "/billing") -> str:
    login(client, user)
    response = client.get(path)
    assert response.status_code == 200, response.status_code
    return response.get_data(as_text=True)


def test_the_trial_shows_its_plan_days_left_usage_and_the_plans_in_arabic(
        app, client, billing_on):
    """An admin on the trial reads Pro, the days left, a bar per counted limit, and the four
    plans with their prices formatted in riyals for Arabic."""
    org = make_org(language="ar")
    make_customer(org)

    html = _page(client, org.admin)

    assert "الاحترافية" in html
    assert "14 يومًا متبقية" in html
    for limit in ("users", "whatsapp_numbers", "customers", "campaign_messages_per_month"):
        assert f'data-limit="{limit}"' in html
    assert '<progress id="usage-customers" value="1" max="100000"' in html
    assert html.count('class="plan') >= 4
    assert format_currency(Decimal("299.00"), "SAR", locale="ar") in html
    assert format_currency(Decimal("2990.00"), "SAR", locale="ar") in html
    assert 'action="/billing/subscribe"' in html


def test_the_free_plans_price_says_free_of_charge_not_its_name_again(app, client, billing_on):
    """In Arabic the plan is «المجانية» (the free one) and its price «مجانًا» (at no cost);
    the price had taken the plan's name."""
    org = make_org(language="ar")
    html = _page(client, org.admin)
    card = html.split('data-plan="free"')[1].split("</article>")[0]
    price = card.split('class="plan-price">')[1].split("</p>")[0]
    with force_locale("ar"):
        assert price == pgettext("price", "Free")
        assert price != gettext("Free")


def test_prices_are_formatted_by_babel_in_english(app, client, billing_on):
    """In English the same prices read as Babel writes riyals in English (SAR299.00)."""
    org = make_org(language="en")

    html = _page(client, org.admin)

    assert format_currency(Decimal("299.00"), "SAR", locale="en") == "SAR299.00"
    assert "SAR299.00" in html
    assert "SAR2,990.00" in html
    assert "14 days left" in html


def test_self_hosted_the_page_says_everything_is_unlocked_and_how_to_connect_stripe(
        app, client):
    """Without a key: no plans to buy, the settings and the command to connect Stripe."""
    org = make_org(language="en")

    html = _page(client, org.admin)

    assert "everything is unlocked" in html
    assert "STRIPE_SECRET_KEY" in html
    assert "crm billing sync" in html
    assert "/api/billing/webhooks/stripe" in html
    assert "billing/subscribe" not in html
    assert "billing-banner" not in html


def test_managers_read_the_page_without_its_forms_agents_do_not_see_it(app, client, billing_on):
    """The seed's matrix: a manager reads the plan and usage and cannot buy; an agent has no
    billing page and no Billing entry in the navigation."""
    org = make_org(language="en")
    manager, agent = make_user(org, "manager"), make_user(org, "agent")

    html = _page(client, manager)
    assert "Your plan" in html
    assert 'href="/billing"' in html
    assert "billing/subscribe" not in html
    login(client, agent)
    assert client.get("/billing").status_code == 403
    assert 'href="/billing"' not in client.get("/").get_data(as_text=True)


def test_choosing_a_plan_sends_the_browser_to_checkout(app, client, synced):
    """A plain post is answered 303 to Stripe's Checkout; htmx's (boosted) post HX-Redirect,
    because its request could not follow a redirect to another site."""
    org = make_org()
    login(client, org.admin)

    plain = client.post("/billing/subscribe", data={"plan": "pro", "interval": "month"})
    boosted = client.post("/billing/subscribe", data={"plan": "pro", "interval": "year"},
                          headers={"HX-Request": "true", "HX-Boosted": "true"})

    sessions = synced.of_kind("checkout.session")
    assert (plain.status_code, plain.location) == (303, sessions[0]["url"])
    assert (boosted.status_code, boosted.headers["HX-Redirect"]) == (204, sessions[1]["url"])


def test_a_refused_choice_is_flashed_on_the_page(app, client, synced):
    """A plan that is not sold comes back to the page saying why; Stripe is not asked."""
    org = make_org(language="en")
    login(client, org.admin)

    response = client.post("/billing/subscribe", data={"plan": "enterprise",
                                                       "interval": "month"})

    assert (response.status_code, response.location) == (303, "/billing")
    assert "Choose one of the plans that can be bought." in client.get("/billing").get_data(
        as_text=True)
    assert synced.calls("POST", "/v1/checkout/sessions") == []


def test_back_from_checkout_the_page_waits_for_the_webhook_then_shows_the_plan(
        app, client, synced):
    """Back from Checkout before the webhook: the summary polls itself; once the webhook's
    job applied the subscription, the poll reloads the page, which shows Starter, active,
    the card and the invoice."""
    org = make_org(language="en")
    age(org, 20)
    login(client, org.admin)
    client.post("/billing/subscribe", data={"plan": "starter", "interval": "month"})

    waiting = client.get("/billing?checkout=done").get_data(as_text=True)
    assert 'hx-trigger="every 2s"' in waiting
    poll = client.get("/billing?checkout=done", headers={"HX-Request": "true"})
    assert poll.get_data(as_text=True).startswith('<section id="billing-summary"')
    deliver(app, client, synced,
            synced.complete_checkout(synced.of_kind("checkout.session")[-1]["id"]))
    login(client, org.admin)
    done = client.get("/billing?checkout=done", headers={"HX-Request": "true"})

    assert done.headers["HX-Refresh"] == "true"
    html = client.get("/billing?checkout=done").get_data(as_text=True)
    assert "every 2s" not in html
    assert 'class="billing-plan">Starter' in html
    assert "Active" in html
    assert "VISA •••• 4242" in html
    assert "WASL-" in html
    assert "Card, invoices and cancellation" in html


def test_the_portal_button_sends_the_admin_to_stripe(app, client, synced):
    """The portal (card, invoices, cancellation) is a session of the organization's customer."""
    org = make_org()
    login(client, org.admin)
    client.post("/billing/subscribe", data={"plan": "starter", "interval": "month"})
    deliver(app, client, synced,
            synced.complete_checkout(synced.of_kind("checkout.session")[-1]["id"]))
    login(client, org.admin)

    response = client.post("/billing/portal")

    assert (response.status_code, response.location) == (
        303, synced.of_kind("billing_portal.session")[-1]["url"])


def test_a_canceled_organization_keeps_the_portal_for_its_invoices_and_card(app, client,
                                                                           synced):
    """Once its subscription has ended, the organization's invoices and card are still in
    Stripe's portal: the billing page keeps the way there."""
    org = make_org(language="en")
    login(client, org.admin)
    client.post("/billing/subscribe", data={"plan": "starter", "interval": "month"})
    deliver(app, client, synced,
            synced.complete_checkout(synced.of_kind("checkout.session")[-1]["id"]))
    with organization_context(oid(org)):
        services.cancel(org.admin, now=True)
        commit()
    deliver(app, client, synced, [synced.event(
        "customer.subscription.deleted", synced.objects[synced.of_kind("subscription")[-1]["id"]])])
    login(client, org.admin)

    html = client.get("/billing").get_data(as_text=True)

    assert "Canceled" in html
    assert "Card, invoices and cancellation" in html
    assert client.post("/billing/portal").status_code == 303


def test_the_trial_banner_shows_on_every_page_to_those_who_read_billing(app, client, billing_on):
    """The dashboard says how many days of the trial are left, with the way to the plans; an
    agent, who has nothing to do with billing, sees no banner."""
    org = make_org(language="en")
    age(org, 10)

    html = _page(client, org.admin, "/")
    assert "4 days left in your trial" in html
    assert 'href="/billing">Choose a plan' in html
    assert "billing-banner" not in _page(client, make_user(org, "agent"), "/")


def test_a_failed_payment_shows_admins_the_invoice_to_pay(app, client, billing_on):
    """Past due, within the grace: admins read the banner with the hosted invoice's link and
    the day the organization becomes read-only; agents keep working undisturbed."""
    org = make_org(language="en")
    overdue(org, 2)
    with organization_context(oid(org)):
        db.session.add(Invoice(stripe_invoice_id="in_open", number="WASL-0009",
                               issued_at=services.utcnow(), amount=29_900, currency="sar",
                               status="open", hosted_invoice_url="https://invoice.stripe.test/i/x"))
        db.session.flush()

    html = _page(client, org.admin, "/")
    assert "A payment failed." in html
    assert 'href="https://invoice.stripe.test/i/x"' in html
    assert "becomes read-only" in html
    assert "billing-banner" not in _page(client, make_user(org, "agent"), "/")


def test_read_only_is_shown_to_everyone_with_what_is_disabled(app, client, billing_on):
    """Past the grace, every page says the organization is read-only and what that disables;
    a write on a page is refused with the same explanation and the way to pay."""
    org = make_org(language="en")
    overdue(org, 8)
    agent = make_user(org, "manager")

    html = _page(client, agent, "/")
    assert "read-only" in html
    assert "reading and exporting still work" in html
    response = client.post("/customers/new", data={"name": "Huda"})
    assert response.status_code == 403
    refused = response.get_data(as_text=True)
    assert "Read-only" in refused
    assert "Ask an admin" in refused


def test_over_a_limit_the_page_says_what_the_plan_allows_and_offers_the_upgrade(
        app, client, billing_on):
    """Adding a customer past Free's limit: the page says the limit, what is used, everything
    Free allows, and links the admin to the upgrade; nothing is added."""
    org = make_org(language="en")
    put_on_plan(org, "free", customers=1)
    make_customer(org)
    login(client, org.admin)

    response = client.post("/customers/new", data={"name": "Huda"})

    assert response.status_code == 402
    html = response.get_data(as_text=True)
    assert "Your plan&#39;s limit is reached" in html or "Your plan's limit is reached" in html
    assert "Customers: 1 of 1 used" in html
    assert "What the Free plan allows" in html
    assert 'href="/billing">Upgrade your plan' in html
    with organization_context(oid(org)):
        assert gate.usage("customers") == 1


# The way to the upgrade, as the admin reads it in Arabic (_refused.html's link).
UPGRADE_LINK_AR = '<a class="button" href="/billing">رقِّ باقتك</a>'


def test_a_number_refused_by_the_limit_offers_the_upgrade_in_the_form(app, client, billing_on):
    """Adding a second number on Free: the numbers page answers 402 with the limit's message
    above its forms and the admin's link to the upgrade, in Arabic; nothing is added."""
    org = make_org(language="ar")
    put_on_plan(org, "free")
    make_profile(org, "sandbox")
    login(client, org.admin)

    response = client.post("/whatsapp/numbers", data={"provider": "sandbox"})

    assert response.status_code == 402
    html = response.get_data(as_text=True)
    assert "أرقام واتساب: استُخدم 1 من 1" in html
    assert UPGRADE_LINK_AR in html
    assert 'name="provider" value="sandbox"' in html  # the page, its forms still there
    with organization_context(oid(org)):
        assert gate.usage("whatsapp_numbers") == 1


@pytest.mark.parametrize("htmx", [True, False], ids=["htmx", "plain"])
def test_an_invitation_refused_by_the_limit_offers_the_upgrade_in_the_form(
        app, client, billing_on, htmx):
    """Inviting a third member on Free (two seats): the invitation form answers 402 with the
    limit's message and the admin's link to the upgrade, in Arabic, as the fragment htmx swaps
    in and as the whole team page; nobody is invited."""
    org = make_org(language="ar")
    put_on_plan(org, "free")
    make_user(org, "agent")
    login(client, org.admin)

    response = client.post("/team/invitations", data={"email": "third@example.com",
                                                      "role": "agent", "language": "ar"},
                           headers={"HX-Request": "true"} if htmx else {})

    assert response.status_code == 402
    html = response.get_data(as_text=True)
    assert html.lstrip().startswith('<section id="invitations"') == htmx
    assert "المستخدمون: استُخدم 2 من 2" in html
    assert UPGRADE_LINK_AR in html
    assert "third@example.com" in html  # typed once, kept in the form
    with organization_context(oid(org)):
        assert db.session.scalar(select(func.count()).select_from(Invitation)) == 0


def test_the_csp_lets_a_plain_post_be_redirected_to_checkout_and_the_portal_only(app, client):
    """A form posted without JavaScript is answered 303 to Stripe's Checkout or portal, and
    Chromium applies form-action to that redirect: the CSP names Stripe's two page origins
    there, and no other."""
    policy = client.get("/login").headers["Content-Security-Policy"]

    assert ("form-action 'self' https://checkout.stripe.com https://billing.stripe.com;"
            in policy)


def test_the_module_switches_say_which_modules_the_plan_leaves_out(app, client, billing_on):
    """On Free, the settings page's switches mark tickets and campaigns as not in the plan
    (switching them on would not open them) and offer the admin the upgrade, in Arabic;
    WhatsApp and the CRM, which Free includes, are not marked."""
    org = make_org(language="ar")
    put_on_plan(org, "free")

    html = _page(client, org.admin, "/settings")

    for module in ("ticketing", "campaigns"):
        assert f'<small class="muted" id="module-{module}-plan">ليست ضمن باقتك</small>' in html
    for module in ("whatsapp", "crm"):
        assert f'id="module-{module}-plan"' not in html
    assert UPGRADE_LINK_AR in html


def test_an_invitation_accepted_when_the_seats_are_taken_says_so_on_its_page(
        app, client, billing_on):
    """An invitation sent while Free had a seat, accepted once the team is full: the invitee
    stays on the invitation's page (402), which says the limit and to ask an admin, in
    Arabic; nobody joins."""
    from crm.foundation import services as foundation

    org = make_org(language="ar")
    put_on_plan(org, "free")
    with organization_context(oid(org)):
        token = invitation_token(foundation.invite_user(org.admin, "late@example.com", "agent"))
    make_user(org, "agent")

    response = client.post(f"/invitations/accept/{token}",
                           data={"full_name": "متأخر", "password": "long enough password"})

    assert response.status_code == 402
    html = response.get_data(as_text=True)
    assert 'action="/invitations/accept/' in html
    assert "المستخدمون: استُخدم 2 من 2" in html
    assert "اطلب من أحد مسؤولي منشأتك ترقية الباقة." in html
    with organization_context(oid(org)):
        assert gate.usage("users") == 2


def _cancelled(app, client, synced, org) -> None:
    """`org` subscribed to Pro, then cancelled at the period's end (the webhook applied)."""
    login(client, org.admin)
    client.post("/billing/subscribe", data={"plan": "pro", "interval": "month"})
    deliver(app, client, synced,
            synced.complete_checkout(synced.of_kind("checkout.session")[-1]["id"]))
    with organization_context(oid(org)):
        services.cancel(org.admin)
        commit()
    deliver(app, client, synced, synced.take_events())


KEEP_AR = "الإبقاء على الاشتراك"


def test_a_cancelled_plan_can_be_kept_from_the_billing_page_in_arabic(app, client, synced):
    """Cancelled at the period's end: the admin reads the day it ends and a «Keep my plan»
    button (a CSRF-protected post); pressing it withdraws the cancellation in Stripe, says so,
    and the page shows the plan renewing; a manager reads the day but has no button, and a
    post of theirs is refused."""
    org = make_org(language="ar")
    _cancelled(app, client, synced, org)

    html = _page(client, org.admin)
    form = html.split('action="/billing/keep-plan"')[1].split("</form>")[0]
    assert 'name="csrf_token"' in form
    assert KEEP_AR in form
    with force_locale("ar"):
        assert gettext("Ends on") in html
    manager = make_user(org, "manager")
    assert "/billing/keep-plan" not in _page(client, manager)
    assert client.post("/billing/keep-plan").status_code == 403
    assert synced.objects[state(org).stripe_subscription_id]["cancel_at_period_end"] is True

    login(client, org.admin)
    response = client.post("/billing/keep-plan")

    assert (response.status_code, response.location) == (303, "/billing")
    html = client.get("/billing").get_data(as_text=True)
    with force_locale("ar"):
        said = gettext("Your plan continues: it renews on %(date)s.", date="§").split("§")[0]
        assert said in html
        assert gettext("Renews on") in html
    assert "/billing/keep-plan" not in html
    assert state(org).cancel_at_period_end is False
    assert synced.objects[state(org).stripe_subscription_id]["cancel_at_period_end"] is False


def test_a_cancelled_plan_offers_keeping_it_instead_of_changing_it_in_arabic(
        app, client, synced):
    """Cancelled at the period's end: the plans offer no upgrade or downgrade but say to keep
    the plan first (the «Keep my plan» button above); a change posted anyway (an old tab) is
    refused with the same words and Stripe is left as it was."""
    org = make_org(language="ar")
    _cancelled(app, client, synced, org)

    html = _page(client, org.admin)

    assert 'action="/billing/change-plan"' not in html
    with force_locale("ar"):
        line = gettext("Your plan ends with this period. To change it, keep your plan "
                       "first (“%(keep)s”, above), then choose the new one.", keep=KEEP_AR)
        refusal = gettext("Your plan ends with this period: keep it first, then change it.")
    assert line in html
    assert html.count(line) == 1
    response = client.post("/billing/change-plan", data={"plan": "starter", "interval": "month"})
    assert (response.status_code, response.location) == (303, "/billing")
    assert refusal in client.get("/billing").get_data(as_text=True)
    assert synced.of_kind("subscription_schedule") == []
    assert (state(org).plan, state(org).cancel_at_period_end) == ("pro", True)

    client.post("/billing/keep-plan")

    html = client.get("/billing").get_data(as_text=True)
    assert 'action="/billing/change-plan"' in html
    assert line not in html


def test_stripe_down_when_keeping_the_plan_says_so_in_arabic_and_changes_nothing(
        app, client, synced):
    """Stripe not answering: the page says so in Arabic, the plan still ends, the button is
    still there to try again."""
    org = make_org(language="ar")
    _cancelled(app, client, synced, org)
    synced.fail_with = 503

    response = client.post("/billing/keep-plan")

    synced.fail_with = None
    assert (response.status_code, response.location) == (303, "/billing")
    html = client.get("/billing").get_data(as_text=True)
    with force_locale("ar"):
        assert gettext("The payment service did not answer. Please try again in a moment."
                       ) in html
    assert 'action="/billing/keep-plan"' in html
    assert state(org).cancel_at_period_end is True


def test_an_upgrade_mid_period_lists_its_prorated_invoice_once_stripe_says_so(
        app, client, synced):
    """Starter to Pro halfway through the month: Stripe invoices the difference at once
    (half of Pro less half of Starter, SAR 100.00) and says so by webhook; the admin then
    finds that invoice, paid, in the page's list and the API's."""
    org = make_org(language="en")
    start = int(services.utcnow().timestamp()) - 15 * 24 * 3600
    synced.clock = start
    login(client, org.admin)
    client.post("/billing/subscribe", data={"plan": "starter", "interval": "month"})
    deliver(app, client, synced,
            synced.complete_checkout(synced.of_kind("checkout.session")[-1]["id"]))
    synced.clock = start + 15 * 24 * 3600
    login(client, org.admin)

    changed = client.post("/billing/change-plan", data={"plan": "pro", "interval": "month"})
    assert (changed.status_code, changed.location) == (303, "/billing")
    deliver(app, client, synced, synced.take_events())

    login(client, org.admin)
    html = client.get("/billing").get_data(as_text=True)
    rows = html.split("<tbody>")[1].split("</tbody>")[0].split("</tr>")
    assert "SAR100.00" in rows[0]
    assert "Paid" in rows[0]
    assert "SAR99.00" in rows[1]
    listed = client.get("/api/billing/invoices", headers=bearer(org.admin)).json["items"]
    assert [(invoice["amount"], invoice["status"]) for invoice in listed] == [
        (10_000, "paid"), (9_900, "paid")]


def test_an_upgrade_whose_payment_fails_says_the_plan_stays(app, client, synced):
    """The card declines the upgrade's difference: the page says the plan stays Starter until
    the invoice is paid, not that it is now Starter."""
    org = make_org(language="en")
    login(client, org.admin)
    client.post("/billing/subscribe", data={"plan": "starter", "interval": "month"})
    deliver(app, client, synced,
            synced.complete_checkout(synced.of_kind("checkout.session")[-1]["id"]))
    synced.declines = True
    login(client, org.admin)

    client.post("/billing/change-plan", data={"plan": "pro", "interval": "month"})

    html = client.get("/billing").get_data(as_text=True)
    assert "Your plan is now" not in html
    assert ("The payment for Pro did not go through: your plan stays Starter until its "
            "invoice is paid") in html


def test_an_upgrade_the_bank_must_confirm_says_so_with_the_invoice(app, client, synced):
    """The bank asks for 3-D Secure on the upgrade's payment (its payment intent
    `requires_action`): the page tells the admin to confirm it with their bank on the
    invoice's page, links that page, and shows the upgrade waiting."""
    org = make_org(language="en")
    login(client, org.admin)
    client.post("/billing/subscribe", data={"plan": "starter", "interval": "month"})
    deliver(app, client, synced,
            synced.complete_checkout(synced.of_kind("checkout.session")[-1]["id"]))
    synced.requires_action = True
    login(client, org.admin)

    client.post("/billing/change-plan", data={"plan": "pro", "interval": "month"})

    html = unescape(client.get("/billing").get_data(as_text=True))
    invoice = synced.of_kind("invoice")[-1]
    assert "did not go through" not in html
    assert ("Your bank asks you to confirm the payment for Pro: confirm it on the invoice's "
            "page, and your plan changes once it is paid.") in html
    waiting = html.split('id="billing-pending"')[1].split("</p>")[0]
    assert "Pro is waiting for its payment" in waiting
    assert f'href="{invoice["hosted_invoice_url"]}"' in waiting
    assert "Confirm the payment" in waiting
