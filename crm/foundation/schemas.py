"""The foundation API's bodies and answers (crm/api/kit.py): accounts, tokens and the team.

The models check shapes and JSON types; the services check what the values mean (an email's
form, a password's length, the last admin) with the messages the pages show too.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, WithJsonSchema

from crm.api.kit import Answer, Body, Id, Timestamp
from crm.foundation.models import ROLES
from crm.foundation.services import LANGUAGES, MIN_PASSWORD_LENGTH

Role = Literal[ROLES]
Language = Literal[LANGUAGES]
Name = Annotated[str, Field(min_length=1)]
Email = Annotated[str, Field(json_schema_extra={"format": "email"})]
Password = Annotated[str, Field(min_length=MIN_PASSWORD_LENGTH, max_length=1024)]
OptionalLanguage = Annotated[Literal[(*LANGUAGES, "")] | None,
                             Field(description="Absent, empty or null: the default.")]
# Login answers 401 to credentials of any other type, as to wrong ones: the same refusal.
Credential = Annotated[Any, WithJsonSchema({"type": "string"})]


# -- bodies ---------------------------------------------------------------------------------

class NewOrganization(Body):
    organization_name: Name
    full_name: Name
    email: Email
    password: Password
    language: OptionalLanguage = None


class Credentials(Body):
    email: Annotated[Credential, Field(json_schema_extra={"format": "email"})]
    password: Credential
    organization_slug: str | None = Field(
        None, description="Needed when the email belongs to several organizations.")
    code: str | None = Field(
        None, max_length=64,
        description="For a member with two-factor sign-in: the 6-digit code of their "
                    "authenticator app, or one of their recovery codes (each works once). "
                    "Left out for such a member, login answers 401 `two_factor_required`; a "
                    "wrong or used code is a 422 on `code`. API keys never need one.")


class PasswordResetRequest(Body):
    email: Email


class PasswordReset(Body):
    token: str
    password: Password


class InvitationAcceptance(Body):
    token: str
    full_name: Name
    password: Password


class NewInvitation(Body):
    email: Email
    role: Role
    language: OptionalLanguage = None


class EmailChangeRequest(Body):
    new_email: Email
    current_password: str = Field(description="The caller's password, to make sure it is them.")


class EmailConfirmation(Body):
    token: str = Field(description="The token of the link sent to the new address.")


class RoleChange(Body):
    role: Role


class NewApiKeyRequest(Body):
    name: Name
    user_id: Id


# -- answers --------------------------------------------------------------------------------

class User(Answer):
    id: int
    email: str
    full_name: str
    role: Role
    preferred_language: Language | None = Field(
        description="Null: the organization's default.")
    last_login_at: Timestamp | None
    created_at: Timestamp


class Organization(Answer):
    id: int
    name: str
    slug: str
    default_language: Language
    timezone: str
    country: str
    created_at: Timestamp


class Invitation(Answer):
    id: int
    email: str
    role: Role
    language: Language
    status: Literal["pending", "accepted", "revoked", "expired"]
    expires_at: Timestamp
    created_at: Timestamp


class EmailChange(Answer):
    new_email: str = Field(description="The address the caller logs in with once the link "
                                       "sent to it is opened; until then, the current one.")
    expires_at: Timestamp
    created_at: Timestamp


class Token(Answer):
    access_token: str
    token_type: Literal["Bearer"]
    expires_in: int = Field(description="Seconds.")
    user: User


class Registration(Token):
    organization: Organization


class ApiKey(Answer):
    id: int
    name: str
    user_id: int = Field(description="The member the key acts as.")
    created_at: Timestamp
    last_used_at: Timestamp | None = Field(validation_alias="last_seen_at")


class NewApiKey(ApiKey):
    key: str = Field(validation_alias="credential", pattern="^wasl_", examples=["wasl_…"],
                     description="The key itself, answered this once: send it as the bearer "
                                 "token.")


class Accepted(Answer):
    status: Literal["accepted"]


class Done(Answer):
    status: Literal["ok"]
