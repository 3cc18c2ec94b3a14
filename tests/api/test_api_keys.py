"""API keys through the API: integrations act as a chosen user until an admin revokes the key."""

from __future__ import annotations

from crm.extensions import db
from crm.foundation.models import User
from crm.tenancy import organization_context
from tests.api import assert_error
from tests.factories import PASSWORD, bearer, login, make_user

KEY_FIELDS = {"id", "name", "user_id", "created_at", "last_used_at"}


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _create(client, org, user_id: int, name: str = "Zapier"):
    return client.post("/api/api-keys", headers=bearer(org.admin),
                       json={"name": name, "user_id": user_id})


def test_a_key_acts_as_its_user_and_records_its_use(client, org):
    """The key is answered once, recognisable by its prefix; it acts as the chosen user and
    the list shows when it was last used, never the key."""
    agent = make_user(org, "agent")
    agent_id = agent.id
    response = _create(client, org, agent_id)
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert set(body) == KEY_FIELDS | {"key"}
    assert body["key"].startswith("wasl_")
    assert (body["name"], body["user_id"], body["last_used_at"]) == ("Zapier", agent_id, None)

    me = client.get("/api/users/me", headers=_auth(body["key"]))
    assert me.status_code == 200
    assert me.get_json()["id"] == agent_id
    listing = client.get("/api/api-keys", headers=bearer(org.admin)).get_json()
    [item] = listing["items"]
    assert set(item) == KEY_FIELDS
    assert item["last_used_at"] is not None


def test_a_key_survives_its_users_logouts(app, client, org):
    """The user logging out, or changing their password (which signs out their other
    sessions), leaves the key working."""
    admin_id, email = org.admin.id, org.admin.email
    browser = app.test_client()
    login(browser, org.admin)
    key = _create(client, org, admin_id).get_json()["key"]
    token = client.post("/api/auth/login", json={"email": email,
                                                 "password": PASSWORD}).get_json()["access_token"]
    assert client.post("/api/auth/logout", headers=_auth(token)).status_code == 204
    assert client.get("/api/users/me", headers=_auth(key)).status_code == 200
    new_password = PASSWORD + " changed"
    assert browser.post("/profile/password", data={
        "current_password": PASSWORD, "new_password": new_password,
        "new_password_confirmation": new_password}).status_code == 303
    assert client.get("/api/users/me", headers=_auth(key)).status_code == 200


def test_a_key_cannot_log_out(client, org):
    """Logging out with a key is refused (409): only an admin revokes a key."""
    key = _create(client, org, org.admin.id).get_json()["key"]
    assert_error(client.post("/api/auth/logout", headers=_auth(key)), 409, "conflict")
    assert client.get("/api/users/me", headers=_auth(key)).status_code == 200


def test_a_revoked_key_stops_at_once(client, org, other_org):
    """DELETE revokes the key: 204, then 401 for the key and 404 for a second DELETE;
    another organization's key is a 404 and keeps working."""
    admin, admin_id = bearer(org.admin), org.admin.id
    foreign = _create(client, other_org, other_org.admin.id).get_json()
    created = client.post("/api/api-keys", headers=admin,
                          json={"name": "Zapier", "user_id": admin_id}).get_json()
    url = f"/api/api-keys/{created['id']}"
    assert client.delete(url, headers=admin).status_code == 204
    assert_error(client.get("/api/users/me", headers=_auth(created["key"])), 401)
    assert_error(client.delete(url, headers=admin), 404)
    assert client.get("/api/api-keys", headers=admin).get_json()["items"] == []
    assert_error(client.delete(f"/api/api-keys/{foreign['id']}", headers=admin), 404)
    assert client.get("/api/users/me", headers=_auth(foreign["key"])).status_code == 200


def test_the_key_of_a_removed_user_stops(client, org):
    """Removing the user a key acts as stops the key, and inviting them back does not revive
    it."""
    agent = make_user(org, "agent")
    agent_id, org_id = agent.id, org.id
    key = _create(client, org, agent_id).get_json()["key"]
    assert client.delete(f"/api/users/{agent_id}", headers=bearer(org.admin)).status_code == 204
    assert_error(client.get("/api/users/me", headers=_auth(key)), 401)
    with organization_context(org_id):
        db.session.get(User, agent_id).is_active = True  # as accepting a new invitation does
        db.session.flush()
    assert_error(client.get("/api/users/me", headers=_auth(key)), 401)


def test_keys_are_for_admins_and_active_members_only(client, org, other_org):
    """A manager gets 403; a user of another organization or no name is a 422; made-up keys
    answer 401."""
    manager = make_user(org, "manager")
    manager_id, org_id, stranger_id = manager.id, org.id, other_org.admin.id
    response = client.post("/api/api-keys", headers=bearer(manager),
                           json={"name": "Mine", "user_id": manager_id})
    assert_error(response, 403, "forbidden")
    assert_error(client.get("/api/api-keys", headers=bearer(manager)), 403)
    stranger = _create(client, org, stranger_id)
    assert assert_error(stranger, 422)["fields"].keys() == {"user_id"}
    nameless = _create(client, org, manager_id, name="")
    assert assert_error(nameless, 422)["fields"].keys() == {"name"}
    for made_up in ("wasl_", f"wasl_{org_id}.{'x' * 43}", "wasl_nonsense"):
        assert_error(client.get("/api/users/me", headers=_auth(made_up)), 401)


def test_a_key_under_another_organizations_number_is_refused(client, org, other_org):
    """A key names its organization in clear; the same secret under another organization's
    number finds no session (401): nobody reaches an organization by renaming a key."""
    org_id = org.id
    key = _create(client, other_org, other_org.admin.id).get_json()["key"]
    secret = key.removeprefix("wasl_").split(".", 1)[1]
    assert client.get("/api/users/me", headers=_auth(key)).status_code == 200
    assert_error(client.get("/api/users/me", headers=_auth(f"wasl_{org_id}.{secret}")), 401)
