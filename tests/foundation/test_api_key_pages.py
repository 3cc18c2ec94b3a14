"""API keys in the settings: an admin creates named keys for integrations and revokes them."""

from __future__ import annotations

import re

from sqlalchemy import text

from crm.extensions import db
from crm.tenancy import organization_context
from tests.factories import login, make_user
from tests.foundation import HTMX, arabic, audit_actions, ident

KEY = re.compile(r"\bwasl_[\w.-]{20,}")


def _create(client, name: str, user_id: int):
    return client.post("/settings/api-keys", data={"name": name, "user_id": user_id})


def _stored_rows(org) -> str:
    with organization_context(ident(org)):
        return " ".join(db.session.execute(text("SELECT t::text FROM user_sessions t")).scalars())


def test_an_admin_creates_a_key_that_is_shown_once(client, org):
    """The new key is shown once, acts as the chosen user, and only its hash is stored."""
    agent = make_user(org, "agent")
    agent_id, agent_name = ident(agent), agent.full_name
    login(client, org.admin)
    page = client.get("/settings/api-keys")
    assert page.status_code == 200
    assert f'<option value="{agent_id}"' in page.text

    created = _create(client, "Zapier", agent_id)
    assert created.status_code == 201
    [key] = KEY.findall(created.text)
    assert arabic("Copy the key now: it will not be shown again.") in created.text

    me = client.get("/api/users/me", headers={"Authorization": f"Bearer {key}"})
    assert me.status_code == 200
    assert me.get_json()["id"] == agent_id
    listing = client.get("/settings/api-keys").text
    assert "Zapier" in listing
    assert agent_name in listing
    assert not KEY.search(listing)
    secret = key.split(".", 1)[1]
    assert secret not in _stored_rows(org)
    assert audit_actions(org)[-1] == "api_key.created"


def test_revoking_a_key_stops_it_at_once(client, org):
    """Revoke asks first, then the key answers 401 from the next call; it is audited."""
    login(client, org.admin)
    [key] = KEY.findall(_create(client, "Old integration", ident(org.admin)).text)
    page = client.get("/settings/api-keys").text
    [key_id] = re.findall(r'action="/settings/api-keys/(\d+)/revoke"', page)
    confirmation = arabic("Revoke the key %(name)s? Integrations that use it stop working.",
                          name="Old integration")
    assert f'hx-confirm="{confirmation}"' in page
    response = client.post(f"/settings/api-keys/{key_id}/revoke", headers=HTMX)
    assert response.status_code == 200
    assert response.text.lstrip().startswith('<section id="api-keys"')
    assert f'id="api-key-{key_id}"' not in response.text
    assert client.get("/api/users/me",
                      headers={"Authorization": f"Bearer {key}"}).status_code == 401
    assert audit_actions(org)[-1] == "api_key.revoked"


def test_bad_input_creates_no_key(client, org, other_org):
    """A missing name, or a user who is not an active member, answers 422 beside the field."""
    stranger_id = ident(other_org.admin)
    login(client, org.admin)
    response = _create(client, " ", stranger_id)
    assert response.status_code == 422
    assert 'id="error-name"' in response.text
    assert 'id="error-user_id"' in response.text
    assert not KEY.search(response.text)
    assert "api_key.created" not in audit_actions(org)


def test_only_admins_manage_keys(client, org):
    """Managers read the settings but cannot see or make keys; the settings link to keys for
    admins only."""
    manager = make_user(org, "manager")
    manager_id = ident(manager)
    login(client, org.admin)
    assert 'href="/settings/api-keys"' in client.get("/settings").text
    login(client, manager)
    assert 'href="/settings/api-keys"' not in client.get("/settings").text
    assert client.get("/settings/api-keys").status_code == 403
    assert _create(client, "Mine", manager_id).status_code == 403
