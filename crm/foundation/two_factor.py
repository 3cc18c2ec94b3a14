"""Two-factor sign-in: after the password, a code from an authenticator app (TOTP, RFC 6238)
or one of ten one-time recovery codes.

The secret is encrypted at rest (crm/crypto.py) and shown only while it is being set up.
A code is accepted within one time step either side of now (a phone's clock drifts), and
never twice: the step of the last accepted code is kept, and codes of it or earlier are
refused. Recovery codes are kept as argon2 hashes, and one is deleted when used.
Checking a code locks the user's row, so two requests cannot spend the same code.
"""

from __future__ import annotations

import re
import secrets
import time
from hmac import compare_digest

import pyotp
import segno
from flask_babel import gettext as _
from sqlalchemy import select
from sqlalchemy.orm import undefer

from crm.crypto import decrypt_bytes, encrypt
from crm.errors import AuthenticationError, ConflictError, ValidationError
from crm.extensions import db
from crm.foundation import services
from crm.foundation.models import User
from crm.models import utcnow
from crm.search import latin_digits
from crm.tenancy import get_in_organization, set_current_organization
from crm.transaction import keep_on_error

ISSUER = "Wasl"
STEP_SECONDS = 30
WINDOW_STEPS = 1  # codes of the step before and after now are accepted too
CODE_DIGITS = 6
RECOVERY_CODE_COUNT = 10
# Lowercase letters and digits that cannot be mistaken for one another (no 0/o, 1/l/i).
_RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
_RECOVERY_LENGTH = 10
_APP_CODE = re.compile(rf"\d{{{CODE_DIGITS}}}")
_RECOVERY_CODE = re.compile(rf"[{_RECOVERY_ALPHABET}]{{{_RECOVERY_LENGTH}}}")


class SecondFactorRequiredError(AuthenticationError):
    """The password was right; the user has two-factor sign-in and gave no code."""

    code = "two_factor_required"

    def __init__(self, user: User):
        message = _("Enter the code from your authenticator app, or a recovery code.")
        super().__init__(message, {"code": message})
        self.user = user


# -- signing in -----------------------------------------------------------------------------

def log_in(email: object, password: object, organization_slug: object = None,
           code: object = None) -> User:
    """Sign in with the password, and the second factor of a user who has one; record it.

    Raises SecondFactorRequiredError when the user has one and `code` is missing, so a page can
    ask for it in a second step (the API asks for it in the same body).
    """
    user = services.check_credentials(email, password, organization_slug)
    if not user.has_two_factor:
        services.audit("user.login", user, user)
        return user
    if code is None or code == "":
        raise SecondFactorRequiredError(user)
    return complete_login(user, code)


def complete_login(user: User, code: object) -> User:
    """The second step of a sign-in whose password was right: check the code, record it."""
    kind = _check_code(user, code)
    services.audit("user.login", user, user, second_factor=kind)
    return user


def pending_login(organization_id: int, user_id: int) -> User | None:
    """The user a half-done sign-in names, if they can still finish it (in their organization)."""
    set_current_organization(organization_id)
    user = get_in_organization(User, user_id)
    if user is None or not user.is_active or not user.has_two_factor:
        set_current_organization(None)
        return None
    return user


# -- turning it on --------------------------------------------------------------------------

def start_setup(user: User) -> str:
    """Make a new secret for the user to add to their app; it works once a code confirms it."""
    if user.has_two_factor:
        raise ConflictError(_("Two-factor authentication is already on."))
    secret = pyotp.random_base32()
    user.totp_secret = encrypt(secret.encode())
    user.totp_last_step = None
    return secret


def setup_secret(user: User) -> str | None:
    """The secret being set up (None once it is on, or before the setup started)."""
    if user.has_two_factor or not user.totp_secret:
        return None
    return decrypt_bytes(user.totp_secret).decode()


def setup_qr_code(user: User, secret: str) -> str:
    """A data: URI of the QR code an authenticator app scans (the CSP allows data: images)."""
    uri = pyotp.TOTP(secret).provisioning_uri(name=user.email, issuer_name=ISSUER)
    return segno.make_qr(uri, error="m").svg_data_uri(scale=5, border=2, dark="#000",
                                                      light="#fff")


def enable(user: User, code: object) -> list[str]:
    """Turn two-factor sign-in on with a code from the app; the recovery codes, shown once."""
    secret = setup_secret(user)
    if secret is None:
        raise ConflictError(_("Start the setup again: it was finished or never begun."))
    _lock(user)
    if not _accept_app_code(user, secret, _normalized(code)):
        raise ValidationError({"code": _("The code is incorrect. Check that your phone's "
                                         "clock is right and enter the newest code.")})
    user.totp_enabled_at = utcnow()
    codes = _new_recovery_codes(user)
    services.audit("user.two_factor_enabled", user, user)
    return codes


# -- living with it -------------------------------------------------------------------------

def recovery_codes_left(user: User) -> int:
    if not user.has_two_factor:
        return 0  # and the codes' column, deferred, is not read
    return len(user.recovery_code_hashes or ())


def regenerate_recovery_codes(user: User, code: object) -> list[str]:
    """Replace the recovery codes (after a code), returning the new ones, shown once."""
    _check_code(user, code)
    codes = _new_recovery_codes(user)
    services.audit("user.recovery_codes_regenerated", user, user)
    return codes


def disable(user: User, password: object, code: object) -> None:
    """Turn two-factor sign-in off, proven with the password and a code."""
    if not isinstance(password, str) or not services.password_matches(user.password_hash,
                                                                        password):
        raise ValidationError({"password": _("The password is incorrect.")})
    _check_code(user, code)
    _clear(user)
    services.audit("user.two_factor_disabled", user, user)


def reset(actor: User, user: User) -> None:
    """An admin turns a member's two-factor sign-in off (a lost phone): the password alone
    signs them in until they turn it on again."""
    if actor.id == user.id:  # their own is turned off with a password and a code
        raise ConflictError(_("Turn your own two-factor authentication off on your profile."))
    if not user.has_two_factor:
        raise ConflictError(_("Two-factor authentication is not on for this member."))
    _clear(user)
    services.audit("user.two_factor_reset", actor, user)


# -- the codes ------------------------------------------------------------------------------

def current_step() -> int:
    return int(time.time()) // STEP_SECONDS


def _normalized(code: object) -> str:
    """A typed code as compared: Arabic-Indic digits as 0-9, no spaces or dashes, lowercase."""
    if not isinstance(code, str):
        return ""
    return re.sub(r"[\s-]", "", latin_digits(code)).lower()[:64]


def _check_code(user: User, code: object) -> str:
    """Accept an app code or an unused recovery code of `user`, once; say which it was.

    A wrong code is audited, and the record kept though the answer is an error.
    """
    _lock(user)
    typed = _normalized(code)
    secret = decrypt_bytes(user.totp_secret).decode() if user.totp_secret else None
    if secret and user.has_two_factor and _accept_app_code(user, secret, typed):
        return "app"
    if user.has_two_factor and _spend_recovery_code(user, typed):
        return "recovery_code"
    keep_on_error()
    services.audit("user.two_factor_failed", user, user)
    raise ValidationError({"code": _("The code is incorrect or was already used.")})


def _accept_app_code(user: User, secret: str, typed: str) -> bool:
    """Is `typed` the code of a step near now that is later than the last one accepted?"""
    if not _APP_CODE.fullmatch(typed):
        return False
    totp = pyotp.TOTP(secret, digits=CODE_DIGITS, interval=STEP_SECONDS)
    now = current_step()
    for step in range(now - WINDOW_STEPS, now + WINDOW_STEPS + 1):
        fresh = user.totp_last_step is None or step > user.totp_last_step
        if fresh and compare_digest(totp.generate_otp(step), typed):
            user.totp_last_step = step
            return True
    return False


def _spend_recovery_code(user: User, typed: str) -> bool:
    """Delete the recovery code `typed` is, if it is one; was it?"""
    if not _RECOVERY_CODE.fullmatch(typed):
        return False  # an app code costs no argon2 check
    hashes = list(user.recovery_code_hashes or ())
    for index, digest in enumerate(hashes):
        if services.password_matches(digest, typed):
            user.recovery_code_hashes = hashes[:index] + hashes[index + 1:]
            return True
    return False


def _new_recovery_codes(user: User) -> list[str]:
    codes = ["".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(_RECOVERY_LENGTH))
             for _ in range(RECOVERY_CODE_COUNT)]
    user.recovery_code_hashes = [services.hash_password(code) for code in codes]
    half = _RECOVERY_LENGTH // 2
    return [f"{code[:half]}-{code[half:]}" for code in codes]


def _clear(user: User) -> None:
    user.totp_secret = None
    user.totp_enabled_at = None
    user.totp_last_step = None
    user.recovery_code_hashes = []


def _lock(user: User) -> None:
    """Lock the user's row and read its codes afresh: two requests cannot spend one code."""
    db.session.execute(select(User).where(User.id == user.id).with_for_update()
                       .options(undefer(User.totp_secret), undefer(User.recovery_code_hashes))
                       .execution_options(populate_existing=True)).scalar_one()
