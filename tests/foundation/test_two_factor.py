"""Two-factor sign-in, the services: turning it on, codes (window, replay), recovery codes,
turning it off, an admin's reset."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from crm.errors import ConflictError, ValidationError
from crm.extensions import db
from crm.foundation import two_factor
from crm.foundation.models import AuditEntry
from crm.foundation.two_factor import SecondFactorRequiredError
from tests.factories import PASSWORD, TOTP_STEP, make_user, totp_code, turn_on_two_factor

STEP = TOTP_STEP


@pytest.fixture(autouse=True)
def _clock(totp_clock):
    return totp_clock


def last_action() -> str:
    return db.session.scalar(select(AuditEntry.action).order_by(AuditEntry.id.desc()))


def test_turning_it_on_needs_a_code_of_the_new_secret(acting):
    """A code from the app turns it on, audited; ten recovery codes come back, kept hashed;
    the secret is stored encrypted, never in clear."""
    user = acting.admin
    secret = two_factor.start_setup(user)
    assert re.fullmatch(r"[A-Z2-7]{32}", secret)
    assert two_factor.setup_secret(user) == secret
    assert secret.encode() not in user.totp_secret
    codes = two_factor.enable(user, totp_code(secret, STEP))
    assert user.has_two_factor
    assert len(codes) == 10 == len(set(codes))
    assert all(re.fullmatch(r"[a-z2-9]{5}-[a-z2-9]{5}", code) for code in codes)
    assert all(code not in str(user.recovery_code_hashes) for code in codes)
    assert two_factor.recovery_codes_left(user) == 10
    assert two_factor.setup_secret(user) is None  # never shown again
    assert last_action() == "user.two_factor_enabled"


def test_a_wrong_code_does_not_turn_it_on(acting):
    user = acting.admin
    secret = two_factor.start_setup(user)
    wrong = totp_code(secret, STEP + 5)
    with pytest.raises(ValidationError) as caught:
        two_factor.enable(user, wrong)
    assert set(caught.value.fields) == {"code"}
    assert not user.has_two_factor
    assert two_factor.recovery_codes_left(user) == 0


def test_it_cannot_be_set_up_twice(acting):
    turn_on_two_factor(acting.admin)
    with pytest.raises(ConflictError):
        two_factor.start_setup(acting.admin)


def test_a_user_without_it_signs_in_with_the_password(acting):
    user = two_factor.log_in(acting.admin.email, PASSWORD)
    assert user.id == acting.admin.id
    assert last_action() == "user.login"


def test_a_user_with_it_needs_a_code(acting):
    """The password alone raises SecondFactorRequiredError and records no login."""
    turn_on_two_factor(acting.admin)
    with pytest.raises(SecondFactorRequiredError):
        two_factor.log_in(acting.admin.email, PASSWORD)
    assert last_action() == "user.two_factor_enabled"


@pytest.mark.parametrize("offset", [-1, 0, 1])
def test_codes_of_the_next_and_previous_step_are_accepted(acting, monkeypatch, offset):
    """A phone's clock drifts: codes one step either side of now are accepted."""
    secret, _codes = turn_on_two_factor(acting.admin)
    later = STEP + 2  # enabling spent the steps up to STEP's
    monkeypatch.setattr(two_factor, "current_step", lambda: later)
    user = two_factor.log_in(acting.admin.email, PASSWORD, code=totp_code(secret, later + offset))
    assert user.totp_last_step == later + offset
    assert last_action() == "user.login"


@pytest.mark.parametrize("offset", [-2, 2])
def test_codes_further_away_are_refused(acting, offset):
    secret, _codes = turn_on_two_factor(acting.admin)
    with pytest.raises(ValidationError):
        two_factor.log_in(acting.admin.email, PASSWORD, code=totp_code(secret, STEP + 5 + offset))


def test_a_code_is_accepted_once(acting, monkeypatch):
    """No replay: the same code, or one of an earlier step, is refused after it was used."""
    secret, _codes = turn_on_two_factor(acting.admin)
    monkeypatch.setattr(two_factor, "current_step", lambda: STEP + 3)
    code = totp_code(secret, STEP + 3)
    two_factor.log_in(acting.admin.email, PASSWORD, code=code)
    with pytest.raises(ValidationError):
        two_factor.log_in(acting.admin.email, PASSWORD, code=code)
    with pytest.raises(ValidationError):
        two_factor.log_in(acting.admin.email, PASSWORD, code=totp_code(secret, STEP + 2))
    assert last_action() == "user.two_factor_failed"


def test_arabic_indic_digits_and_spaces_are_read(acting, monkeypatch):
    secret, _codes = turn_on_two_factor(acting.admin)
    monkeypatch.setattr(two_factor, "current_step", lambda: STEP + 1)
    code = totp_code(secret, STEP + 1)
    typed = " " + code[:3].translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")) + " " + code[3:]
    assert two_factor.log_in(acting.admin.email, PASSWORD, code=typed).id == acting.admin.id


def test_a_recovery_code_works_once(acting):
    """A recovery code signs in once and is gone; the others still work."""
    _secret, codes = turn_on_two_factor(acting.admin)
    two_factor.log_in(acting.admin.email, PASSWORD, code=codes[3].upper())
    assert two_factor.recovery_codes_left(acting.admin) == 9
    with pytest.raises(ValidationError):
        two_factor.log_in(acting.admin.email, PASSWORD, code=codes[3])
    two_factor.log_in(acting.admin.email, PASSWORD, code=codes[0].replace("-", ""))
    assert two_factor.recovery_codes_left(acting.admin) == 8


def test_new_recovery_codes_replace_the_old(acting, monkeypatch):
    secret, old = turn_on_two_factor(acting.admin)
    with pytest.raises(ValidationError):
        two_factor.regenerate_recovery_codes(acting.admin, "000000")
    monkeypatch.setattr(two_factor, "current_step", lambda: STEP + 1)
    new = two_factor.regenerate_recovery_codes(acting.admin, totp_code(secret, STEP + 1))
    assert len(new) == 10
    assert not set(new) & set(old)
    assert last_action() == "user.recovery_codes_regenerated"
    with pytest.raises(ValidationError):
        two_factor.log_in(acting.admin.email, PASSWORD, code=old[0])
    two_factor.log_in(acting.admin.email, PASSWORD, code=new[0])


def test_turning_it_off_needs_the_password_and_a_code(acting, monkeypatch):
    secret, _codes = turn_on_two_factor(acting.admin)
    monkeypatch.setattr(two_factor, "current_step", lambda: STEP + 1)
    code = totp_code(secret, STEP + 1)
    with pytest.raises(ValidationError) as caught:
        two_factor.disable(acting.admin, "wrong password", code)
    assert set(caught.value.fields) == {"password"}
    with pytest.raises(ValidationError) as caught:
        two_factor.disable(acting.admin, PASSWORD, "123456")
    assert set(caught.value.fields) == {"code"}
    assert acting.admin.has_two_factor
    two_factor.disable(acting.admin, PASSWORD, code)
    assert not acting.admin.has_two_factor
    assert acting.admin.totp_secret is None
    assert acting.admin.recovery_code_hashes == []
    assert last_action() == "user.two_factor_disabled"
    assert two_factor.log_in(acting.admin.email, PASSWORD).id == acting.admin.id


def test_an_admin_resets_a_members(acting):
    """A member who lost their phone: an admin resets it, audited; the password signs in."""
    member = make_user(acting, "agent")
    turn_on_two_factor(member)
    two_factor.reset(acting.admin, member)
    assert not member.has_two_factor
    entry = db.session.scalars(select(AuditEntry).order_by(AuditEntry.id.desc())).first()
    assert (entry.action, entry.actor_id, entry.target_id) == (
        "user.two_factor_reset", acting.admin.id, member.id)
    assert two_factor.log_in(member.email, PASSWORD).id == member.id
    with pytest.raises(ConflictError):
        two_factor.reset(acting.admin, member)  # nothing left to reset


def test_an_admin_does_not_reset_their_own(acting):
    turn_on_two_factor(acting.admin)
    with pytest.raises(ConflictError):
        two_factor.reset(acting.admin, acting.admin)
    assert acting.admin.has_two_factor
