"""The team through the API: list, show, change role, remove; other organizations stay unseen."""

import pytest

from crm.extensions import db
from crm.foundation.models import User
from crm.tenancy import organization_context
from tests.api import assert_error, walk_pages
from tests.factories import bearer, make_user
from tests.queries import assert_max_queries, count_queries

USER_FIELDS = {"id", "email", "full_name", "role", "preferred_language", "last_login_at",
               "created_at"}


def _reload(org_id: int, user_id: int) -> User:
    with organization_context(org_id):
        db.session.expire_all()
        return db.session.get(User, user_id)


def test_users_list_pages_through_everyone_with_a_cursor(client, org):
    """limit=2 walks all active users in id order over several pages; the last has no cursor."""
    made = [make_user(org, role) for role in ("agent", "member", "manager", "agent", "member")]
    removed = make_user(org, "agent")
    with organization_context(org.id):
        removed.is_active = False
        db.session.flush()
    pages = walk_pages(client, "/api/users?limit=2", bearer(org.admin))
    assert all(len(items) <= 2 for items in pages)
    assert all(set(item) == USER_FIELDS for items in pages for item in items)
    assert len(pages) == 3
    assert [item["id"] for items in pages for item in items] == sorted(
        [org.admin.id] + [u.id for u in made])


def test_users_list_runs_the_same_queries_for_few_or_many_users(client, org):
    """No query per row: a page of 12 users costs what a page of 2 costs."""
    headers = bearer(org.admin)
    make_user(org)
    client.get("/api/users", headers=headers)  # warm-up: first-request work is not per row
    with assert_max_queries(8) as few:
        assert len(client.get("/api/users", headers=headers).get_json()["items"]) == 2
    for _ in range(10):
        make_user(org)
    with count_queries() as many:
        assert len(client.get("/api/users", headers=headers).get_json()["items"]) == 12
    assert len(many) == len(few)
    assert few


def test_users_list_shows_only_the_callers_organization(client, org, other_org):
    """Another organization's users never appear in the list."""
    make_user(other_org)
    items = client.get("/api/users", headers=bearer(org.admin)).get_json()["items"]
    assert [item["id"] for item in items] == [org.admin.id]


@pytest.mark.parametrize(("query", "field"), [("cursor=%21%21%21", "cursor"),
                                              ("cursor=LTE", "cursor"),
                                              ("limit=0", "limit"), ("limit=abc", "limit"),
                                              ("limit=201", "limit"), ("limit=%C2%B2", "limit")])
def test_users_list_with_a_bad_cursor_or_limit_is_422(client, org, query, field):
    """A cursor or limit that is not ours answers 422 naming the parameter."""
    response = client.get(f"/api/users?{query}", headers=bearer(org.admin))
    assert assert_error(response, 422, "validation_error")["fields"].keys() == {field}


def test_users_list_needs_users_read(client, org):
    """An agent (users: none) gets 403; no token gets 401."""
    assert_error(client.get("/api/users", headers=bearer(make_user(org, "agent"))), 403)
    assert_error(client.get("/api/users"), 401, "unauthorized")


def test_me_answers_the_caller_for_any_role(client, org):
    """Every logged-in role can read itself."""
    member = make_user(org, "member")
    body = client.get("/api/users/me", headers=bearer(member)).get_json()
    assert body["id"] == member.id
    assert set(body) == USER_FIELDS


def test_show_user(client, org):
    """A manager (users: read) reads a colleague by id."""
    manager, agent = make_user(org, "manager"), make_user(org, "agent")
    response = client.get(f"/api/users/{agent.id}", headers=bearer(manager))
    assert response.status_code == 200
    assert response.get_json()["email"] == agent.email


def test_change_role(client, org):
    """An admin changes an agent into a manager; the answer is the updated user."""
    org_id, agent = org.id, make_user(org, "agent")
    agent_id = agent.id
    response = client.patch(f"/api/users/{agent_id}/role", headers=bearer(org.admin),
                            json={"role": "manager"})
    assert response.status_code == 200
    assert response.get_json()["role"] == "manager"
    assert _reload(org_id, agent_id).role == "manager"


def test_change_role_to_an_unknown_role_is_422(client, org):
    """An unknown role is a 422 on `role` and the role stays."""
    org_id, agent = org.id, make_user(org, "agent")
    agent_id = agent.id
    response = client.patch(f"/api/users/{agent_id}/role", headers=bearer(org.admin),
                            json={"role": "owner"})
    assert assert_error(response, 422)["fields"].keys() == {"role"}
    assert _reload(org_id, agent_id).role == "agent"


def test_the_last_admin_cannot_be_demoted_or_removed(client, org):
    """Demoting or removing the only admin answers 409 and changes nothing."""
    org_id, admin_id, headers = org.id, org.admin.id, bearer(org.admin)
    demote = client.patch(f"/api/users/{admin_id}/role", headers=headers,
                          json={"role": "agent"})
    assert_error(demote, 409, "conflict")
    assert_error(client.delete(f"/api/users/{admin_id}", headers=headers), 409, "conflict")
    admin = _reload(org_id, admin_id)
    assert (admin.role, admin.is_active) == ("admin", True)


def test_a_second_admin_can_be_demoted(client, org):
    """With two admins, one may be demoted."""
    second = make_user(org, "admin")
    response = client.patch(f"/api/users/{second.id}/role", headers=bearer(org.admin),
                            json={"role": "member"})
    assert response.status_code == 200
    assert response.get_json()["role"] == "member"


def test_removed_users_token_stops_working_at_once(client, org):
    """DELETE answers 204; the removed user's token answers 401 on the very next request."""
    agent = make_user(org, "agent")
    agent_id, agent_headers, admin_headers = agent.id, bearer(agent), bearer(org.admin)
    assert client.get("/api/users/me", headers=agent_headers).status_code == 200
    response = client.delete(f"/api/users/{agent_id}", headers=admin_headers)
    assert response.status_code == 204
    assert response.get_data() == b""
    assert_error(client.get("/api/users/me", headers=agent_headers), 401, "unauthorized")
    assert_error(client.get(f"/api/users/{agent_id}", headers=admin_headers), 404)


def test_a_manager_cannot_change_roles_or_remove(client, org):
    """users: read is not enough to write: 403, and nothing changes."""
    manager, agent = make_user(org, "manager"), make_user(org, "agent")
    org_id, agent_id, headers = org.id, agent.id, bearer(manager)
    assert_error(client.patch(f"/api/users/{agent_id}/role", headers=headers,
                              json={"role": "admin"}), 403)
    assert_error(client.delete(f"/api/users/{agent_id}", headers=headers), 403)
    agent = _reload(org_id, agent_id)
    assert (agent.role, agent.is_active) == ("agent", True)


@pytest.mark.parametrize(("method", "suffix", "body"), [
    ("get", "", None), ("patch", "/role", {"role": "agent"}), ("delete", "", None)])
def test_another_organizations_user_answers_404_like_a_missing_one(client, org, other_org,
                                                                    method, suffix, body):
    """Org B's user id, asked for by org A's admin, answers exactly what a missing id answers."""
    victim = make_user(other_org, "admin")
    other_org_id, victim_id, headers = other_org.id, victim.id, bearer(org.admin)
    call = getattr(client, method)
    foreign = call(f"/api/users/{victim_id}{suffix}", headers=headers, json=body)
    missing = call(f"/api/users/{2**63 - 1}{suffix}", headers=headers, json=body)
    assert_error(foreign, 404, "not_found")
    assert foreign.get_json() == missing.get_json()
    victim = _reload(other_org_id, victim_id)
    assert (victim.role, victim.is_active) == ("admin", True)


@pytest.mark.parametrize(("method", "suffix", "body"), [
    ("get", "", None), ("patch", "/role", {"role": "agent"}), ("delete", "", None)])
@pytest.mark.parametrize("beyond", [2**63, 2**64])
def test_an_id_beyond_bigint_is_404(client, org, method, suffix, body, beyond):
    """An id no database column can hold is simply not found, whatever the method (never a
    500, nor the 405 of another route of the same path)."""
    response = getattr(client, method)(f"/api/users/{beyond}{suffix}", headers=bearer(org.admin),
                                       json=body)
    assert_error(response, 404, "not_found")
