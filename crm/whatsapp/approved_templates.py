"""The composer's templates: once WhatsApp's 24-hour window has closed on a cloud number, an agent
may send only a template Meta approved.

The composer offers the number's approved templates as the campaigns module keeps them synced
from the Graph API (crm/campaigns/templates.py). Each parameter is a fixed text or a variable
of the contact — {name}, {first_name}, {company}, {custom.key}, filled as campaigns fill them
(crm/campaigns/rendering.py) from the CRM's customer, else the contact's WhatsApp name — and
the body is previewed as the customer will read it. It goes out through the outbox like every
template (services.send_template), with that filled body shown in the thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from flask_babel import gettext as _

from crm.campaigns.rendering import check_variables, fill_placeholders, render, variables_of
from crm.campaigns.templates import TemplateChoice, template_choices
from crm.customers.services import resolve_customer
from crm.errors import ValidationError
from crm.foundation.models import User
from crm.permissions import module_enabled
from crm.text import has_control_characters
from crm.validation import parse_id
from crm.whatsapp import services
from crm.whatsapp.models import Conversation, Message

MAX_PARAMETER = 1024  # what the outbox takes (services.send_template)


def approved(conversation: Conversation) -> list[TemplateChoice]:
    """The approved templates of the conversation's number, by name and language."""
    return template_choices(conversation.profile, approved_only=True)


def chosen(choices: list[TemplateChoice], raw_id: object) -> TemplateChoice | None:
    """The template a form picked among `choices` (by id); None for any other."""
    wanted = parse_id(raw_id)
    return next((choice for choice in choices if choice.id == wanted), None)


def contact_variables(conversation: Conversation) -> dict[str, Any]:
    """What the variables say for this contact: their CRM customer's name, company and
    custom fields (while the CRM is on), else the name WhatsApp gave."""
    customer = resolve_customer(conversation.customer_id) if module_enabled("crm") else None
    if customer is not None:
        return variables_of(customer.name, customer.company or "", customer.custom_fields or {})
    return variables_of(conversation.contact_name or "", "", {})


def filled(parameters: Sequence[str], variables: dict[str, Any]) -> list[str]:
    """Each parameter with its variables replaced by the contact's values."""
    return [render(parameter, variables).strip() for parameter in parameters]


def preview(choice: TemplateChoice, parameters: Sequence[str], variables: dict[str, Any]
            ) -> str:
    """The body as the contact will read it; a parameter not given yet stays {{n}}."""
    values = filled(parameters, variables)
    return fill_placeholders(choice.body, [value or f"{{{{{n}}}}}"
                                           for n, value in enumerate(values, 1)])


def send_approved_template(conversation: Conversation, sender: User, template_id: object,
                           parameters: Sequence[str]) -> Message:
    """Send one of the number's approved templates, its parameters filled for the contact;
    refused (422) for any other template or a parameter that is missing or empty."""
    choice = chosen(approved(conversation), template_id)
    if choice is None:
        raise ValidationError({"template_id": _("Choose one of the number's approved "
                                                "templates.")})
    parameters = list(parameters)[:choice.parameters]
    for parameter in parameters:
        if has_control_characters(parameter) or len(parameter) > MAX_PARAMETER:
            raise ValidationError({"parameters": _("Enter each parameter as one line of at "
                                                   "most %(n)d characters.", n=MAX_PARAMETER)})
        check_variables(parameter, "parameters", None)
    values = filled(parameters, contact_variables(conversation))
    if len(values) < choice.parameters or not all(values):
        raise ValidationError({"parameters": _("Fill in every parameter: WhatsApp refuses "
                                               "an empty one.")})
    return services.send_template(conversation, sender, choice.name, choice.language, values,
                                  body=fill_placeholders(choice.body, values) or choice.name)
