"""Two-factor sign-in, the pages: the login's second step (the half-signed session reaches
nothing), turning it on and off on the profile, and an admin's reset on the team page."""

from __future__ import annotations

import re

import pytest
from flask_babel import force_locale, ngettext

from crm.foundation.models import User
from crm.security import SECOND_FACTOR
from tests.factories import (
    PASSWORD,
    TOTP_STEP,
    login,
    make_user,
    totp_code,
    turn_on_two_factor,
)
from tests.foundation import arabic, audit_actions, log_in, reload

# Pages and API calls a signed-in person reaches; a half-signed one must reach none of them.
SIGNED_IN_ONLY = ["/", "/profile", "/team", "/settings", "/notifications/bell",
                  "/profile/two-factor", "/api/users/me"]


def codes_left(num: int) -> str:
    """What an Arabic profile says of `num` recovery codes left."""
    with force_locale("ar"):
        return ngettext("%(num)d recovery code left.", "%(num)d recovery codes left.", num)


@pytest.fixture
def member(org, totp_clock):
    """The admin, with two-factor sign-in on: (user, secret, recovery codes)."""
    secret, codes = turn_on_two_factor(org.admin)
    totp_clock(TOTP_STEP + 1)  # the enabling code's step is spent
    return org.admin, secret, codes


def test_the_password_leads_to_the_code_step(client, member):
    user, secret, _codes = member
    response = log_in(client, user.email, next="/team")
    assert response.status_code == 303
    assert response.headers["Location"] == "/login/two-factor"
    page = client.get("/login/two-factor")
    assert page.status_code == 200
    assert 'autocomplete="one-time-code"' in page.text
    assert 'inputmode="numeric"' in page.text
    response = client.post("/login/two-factor", data={"code": totp_code(secret, TOTP_STEP + 1)})
    assert response.status_code == 303
    assert response.headers["Location"] == "/team"
    assert client.get("/").status_code == 200
    with client.session_transaction() as session:
        assert SECOND_FACTOR not in session


@pytest.mark.parametrize("path", SIGNED_IN_ONLY)
def test_the_half_signed_session_reaches_nothing(client, member, path):
    """After the password but before the code, every page and the API answer as to a
    stranger."""
    log_in(client, member[0].email)
    response = client.get(path)
    assert response.status_code in (302, 401), path
    if response.status_code == 302:
        assert response.headers["Location"].startswith("/login")


def test_a_wrong_code_is_refused_in_arabic(client, org, member):
    user, _secret, _codes = member
    log_in(client, user.email)
    response = client.post("/login/two-factor", data={"code": "000000"})
    assert response.status_code == 422
    assert arabic("The code is incorrect or was already used.") in response.text
    assert client.get("/").status_code == 302
    assert audit_actions(org)[-1] == "user.two_factor_failed"


def test_arabic_indic_digits_are_accepted(client, member):
    user, secret, _codes = member
    log_in(client, user.email)
    code = totp_code(secret, TOTP_STEP + 1).translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩"))
    assert client.post("/login/two-factor", data={"code": code}).status_code == 303
    assert client.get("/").status_code == 200


def test_a_recovery_code_signs_in_once(client, member):
    """Its own field (a phone's number pad cannot type letters) signs in once with a code."""
    user, _secret, codes = member
    log_in(client, user.email)
    assert "/login/two-factor?recovery=1" in client.get("/login/two-factor").text
    field = client.get("/login/two-factor?recovery=1").text
    assert arabic("Recovery code") in field
    assert 'inputmode="numeric"' not in field
    refused = client.post("/login/two-factor", data={"code": "aaaaa-bbbbb", "recovery": "1"})
    assert refused.status_code == 422
    assert 'name="recovery"' in refused.text  # the recovery field again, not the app's
    assert client.post("/login/two-factor", data={"code": codes[0]}).status_code == 303
    assert codes_left(9) in client.get("/profile").text
    client.post("/logout")
    log_in(client, user.email)
    assert client.post("/login/two-factor", data={"code": codes[0]}).status_code == 422


def test_wrong_codes_spend_the_login_allowance(app, client, member, monkeypatch):
    """Guessing codes is limited with the password's allowance: then even the right code
    answers 429."""
    monkeypatch.setitem(app.config, "RATELIMIT_LOGIN_PER_ACCOUNT", "2 per minute")
    user, secret, _codes = member
    log_in(client, user.email)
    assert client.post("/login/two-factor", data={"code": "111111"}).status_code == 422
    assert client.post("/login/two-factor", data={"code": "222222"}).status_code == 422
    response = client.post("/login/two-factor", data={"code": totp_code(secret, TOTP_STEP + 1)})
    assert response.status_code == 429
    assert client.get("/").status_code == 302


def test_naming_another_email_buys_no_guesses(app, client, member, monkeypatch):
    """The code step counts on the account whose password was right, whatever email the
    post names; and a password step on another account is not counted on this one."""
    monkeypatch.setitem(app.config, "RATELIMIT_LOGIN_PER_ACCOUNT", "2 per minute")
    user, secret, _codes = member
    log_in(client, user.email)
    for n in range(2):
        response = client.post("/login/two-factor",
                               data={"code": "111111", "email": f"other{n}@x.example"})
        assert response.status_code == 422
    response = client.post("/login/two-factor", data={"code": totp_code(secret, TOTP_STEP + 1),
                                                      "email": "other9@x.example"})
    assert response.status_code == 429
    assert log_in(client, "nobody@else.example", "wrong password").status_code == 422


def test_the_code_step_runs_out(client, member):
    """A half-done sign-in lasts a few minutes; then the password is asked again."""
    user, secret, _codes = member
    log_in(client, user.email)
    with client.session_transaction() as session:
        session[SECOND_FACTOR] = {**session[SECOND_FACTOR], "until": 0}
    response = client.post("/login/two-factor", data={"code": totp_code(secret, TOTP_STEP + 1)})
    assert response.status_code == 303
    assert response.headers["Location"] == "/login"
    assert client.get("/").status_code == 302


def test_the_code_step_without_a_password_goes_to_login(client):
    assert client.get("/login/two-factor").headers["Location"] == "/login"


def test_turning_it_on_from_the_profile(client, org, totp_clock):
    """The setup page shows the QR code and the key; a wrong code keeps it off; the right one
    turns it on and shows ten recovery codes once."""
    login(client, org.admin)
    assert arabic("Turn on two-factor authentication") in client.get("/profile").text
    response = client.post("/profile/two-factor/setup")
    assert response.headers["Location"] == "/profile/two-factor"
    page = client.get("/profile/two-factor").text
    assert 'src="data:image/svg+xml' in page
    secret = re.search(r'id="totp-secret"[^>]*>([A-Z2-7 ]+)<', page).group(1).replace(" ", "")
    wrong = client.post("/profile/two-factor", data={"code": "123456"})
    assert wrong.status_code == 422
    assert 'id="error-code"' in wrong.text
    assert not reload(org, User, org.admin).has_two_factor
    done = client.post("/profile/two-factor", data={"code": totp_code(secret, TOTP_STEP)})
    assert done.status_code == 201
    codes = re.findall(r"<li><code>([a-z2-9]{5}-[a-z2-9]{5})</code></li>", done.text)
    assert len(codes) == 10
    assert "data:text/plain" in done.text
    assert reload(org, User, org.admin).has_two_factor
    assert audit_actions(org)[-1] == "user.two_factor_enabled"
    profile = client.get("/profile").text
    assert codes_left(10) in profile
    assert secret not in profile
    assert client.get("/profile/two-factor").headers["Location"] == "/profile"


def test_new_recovery_codes_from_the_profile(client, member):
    user, secret, codes = member
    login(client, user)
    assert client.post("/profile/two-factor/recovery-codes",
                       data={"code": "000000"}).status_code == 422
    response = client.post("/profile/two-factor/recovery-codes",
                           data={"code": totp_code(secret, TOTP_STEP + 1)})
    assert response.status_code == 201
    assert codes[0] not in response.text
    assert len(re.findall(r"<li><code>", response.text)) == 10


def test_turning_it_off_asks_for_the_password_and_a_code(client, org, member):
    user, secret, _codes = member
    login(client, user)
    code = totp_code(secret, TOTP_STEP + 1)
    refused = client.post("/profile/two-factor/disable", data={"password": "wrong", "code": code})
    assert refused.status_code == 422
    assert arabic("The password is incorrect.") in refused.text
    response = client.post("/profile/two-factor/disable", data={"password": PASSWORD, "code": code})
    assert response.status_code == 303
    assert not reload(org, User, user).has_two_factor
    assert audit_actions(org)[-1] == "user.two_factor_disabled"


def test_an_admin_sees_and_resets_a_members(client, org, totp_clock):
    """The team page says who has it on; an admin resets a member's (with a confirmation)."""
    agent = make_user(org, "agent", full_name="Nour Agent")
    turn_on_two_factor(agent)
    login(client, org.admin)
    team = client.get("/team").text
    row = team[team.index(f'id="member-{agent.id}"'):]
    row = row[:row.index("</tr>")]
    assert arabic("On") in row
    assert f"/team/{agent.id}/two-factor/reset" in row
    assert "hx-confirm" in row
    response = client.post(f"/team/{agent.id}/two-factor/reset")
    assert response.status_code == 303
    assert not reload(org, User, agent).has_two_factor
    assert audit_actions(org)[-1] == "user.two_factor_reset"


def test_only_admins_reset(client, org, totp_clock):
    manager = make_user(org, "manager")
    agent = make_user(org, "agent")
    turn_on_two_factor(agent)
    login(client, manager)
    assert client.post(f"/team/{agent.id}/two-factor/reset").status_code == 403
    assert reload(org, User, agent).has_two_factor


def test_the_profile_names_each_field_once(client, member):
    """Two forms ask for a code: each label points at its own field (ids are unique)."""
    login(client, member[0])
    page = client.get("/profile").text
    ids = re.findall(r'\bid="([^"]+)"', page)
    assert len(ids) == len(set(ids))
    refused = client.post("/profile/two-factor/disable", data={"password": PASSWORD,
                                                               "code": "000000"}).text
    assert 'id="error-disable-code"' in refused
    assert 'aria-describedby="error-disable-code"' in refused


def test_the_audit_log_names_each_step(client, org, totp_clock):
    """Turning it on and an admin's reset read in Arabic in the audit log."""
    agent = make_user(org, "agent", full_name="Nour Agent")
    turn_on_two_factor(agent)
    login(client, org.admin)
    client.post(f"/team/{agent.id}/two-factor/reset")
    log = client.get("/settings/audit")
    assert log.status_code == 200
    for label in ("Two-factor authentication turned on",
                  "Two-factor authentication reset by an admin"):
        assert arabic(label) in log.text
