"""What each recipient's message says: variables in texts and template parameters, and the
preview of the message as a chosen customer's phone will show it."""

from __future__ import annotations

import pytest

from crm.campaigns import services
from crm.campaigns.models import Campaign
from crm.campaigns.rendering import empty_variables, outbound, render, variables_of
from crm.errors import ValidationError
from crm.extensions import db
from crm.tenancy import organization_context
from tests.campaigns.factories import (
    cloud_number,
    make_campaign,
    make_template,
    template_message,
)
from tests.customers.factories import make_customer, make_field
from tests.foundation import ident
from tests.whatsapp.factories import make_profile


def preview(org, campaign, customer=None) -> services.Preview:
    with organization_context(ident(org)):
        return services.preview_message(db.session.get(Campaign, ident(campaign)),
                                        ident(customer) if customer is not None else None)


def test_variables_are_the_customers_values():
    variables = variables_of("Huda Saleh", "Noor", {"city": "Jeddah", "visits": 3})

    assert render("{name}|{first_name}|{company}|{custom.city}|{custom.visits}|{custom.none}",
                  variables) == "Huda Saleh|Huda|Noor|Jeddah|3|"


def test_braces_that_are_not_variables_are_left_alone_in_the_text():
    assert render("{{1}} {x y} {name}", variables_of("Omar", "", {})) == "{{1}} {x y} Omar"


def test_an_empty_template_parameter_is_sent_as_a_dash():
    """Meta refuses empty parameters: a recipient without a company gets "-" there."""
    message = outbound(template_message("{company}", "{first_name}"),
                       variables_of("Omar", "", {}), [{"type": "BODY", "text": "{{1}} {{2}}"}])

    assert message.body == "- Omar"
    assert message.content["components"][0]["parameters"][0] == {"type": "text", "text": "-"}


def test_the_preview_shows_a_text_as_a_chosen_customer_reads_it(org):
    make_field(org, key="city")
    sandbox = make_profile(org, "sandbox")
    huda = make_customer(org, name="هدى صالح", company="نور", custom_fields={"city": "جدة"})
    campaign = make_campaign(org, sandbox,
                             message={"text": "أهلاً {first_name} من {company} في {custom.city}"})

    shown = preview(org, campaign, huda)

    assert (shown.type, shown.text) == ("text", "أهلاً هدى من نور في جدة")


def test_the_preview_fills_a_templates_body_with_the_parameters(org):
    number = cloud_number(org)
    make_template(org, number, body="مرحبا {{1}}، خصم {{2}} لك")
    omar = make_customer(org, name="Omar Ali", tags=["vip"])
    campaign = make_campaign(org, number, audience={"tag": "vip"},
                             message=template_message("{first_name}", "20%"))

    chosen, first = preview(org, campaign, omar), preview(org, campaign)

    assert chosen.text == "مرحبا Omar، خصم 20% لك"
    assert chosen.template == {"name": "spring_offer", "language": "ar",
                               "parameters": ["Omar", "20%"]}
    assert first == chosen  # without a choice, the audience's first customer


def test_the_preview_refuses_a_customer_of_another_organization(org, other_org):
    sandbox = make_profile(org, "sandbox")
    campaign = make_campaign(org, sandbox, message={"text": "{name}"})
    stranger = make_customer(other_org)

    with pytest.raises(ValidationError):
        preview(org, campaign, stranger)


def test_the_variables_empty_for_a_recipient_are_named_once_each():
    """Blank values count as empty; a 0 does not; a template's parameters are read too."""
    variables = variables_of("Omar Ali", " ", {"visits": 0, "city": ""})

    assert empty_variables({"text": "{company} {custom.city} {company} {custom.visits} "
                                    "{name} {custom.none}"}, variables) == [
        "{company}", "{custom.city}", "{custom.none}"]
    assert empty_variables(template_message("{first_name}", "{company}"), variables) == [
        "{company}"]
