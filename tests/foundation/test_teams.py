"""Teams: an organization's named groups of people, each with members and an optional
manager (the services; their pages come with the settings pages)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from crm.errors import ConflictError, NotFoundError, ValidationError
from crm.extensions import db
from crm.foundation import teams
from crm.foundation.models import AuditEntry
from crm.tenancy import organization_context
from tests.factories import make_user


def test_create_a_team_with_members_and_a_manager(acting):
    org = acting
    agent, manager = make_user(org, "agent"), make_user(org, "manager")
    team = teams.create_team(org.admin, {"name": "  الدعم  الفني ", "manager_id": manager.id,
                                         "member_ids": [agent.id, manager.id]})
    assert team.name == "الدعم الفني"
    assert team.manager_id == manager.id
    assert teams.member_ids(team.id) == sorted([agent.id, manager.id])
    assert [t.id for t in teams.list_teams()] == [team.id]
    assert db.session.scalar(select(AuditEntry.action).order_by(AuditEntry.id.desc())) == (
        "team.created")


def test_every_mistake_is_reported_together(acting):
    """No name, a manager and a member from nowhere: three field errors, nothing written."""
    with pytest.raises(ValidationError) as caught:
        teams.create_team(acting.admin, {"name": " ", "manager_id": 999_999,
                                         "member_ids": [999_998]})
    assert set(caught.value.fields) == {"name", "manager_id", "member_ids"}
    assert teams.list_teams() == []


def test_names_are_unique_in_an_organization(org, other_org):
    with organization_context(org.id):
        teams.create_team(org.admin, {"name": "Support"})
        with pytest.raises(ConflictError):
            teams.create_team(org.admin, {"name": "Support"})
    with organization_context(other_org.id):
        teams.create_team(other_org.admin, {"name": "Support"})  # another organization's


def test_update_members_and_delete(acting):
    org = acting
    first, second = make_user(org, "agent"), make_user(org, "agent")
    team = teams.create_team(org.admin, {"name": "Sales", "member_ids": [first.id]})
    teams.update_team(org.admin, team, {"name": "Sales KSA", "member_ids": [second.id],
                                        "manager_id": None})
    assert (team.name, teams.member_ids(team.id)) == ("Sales KSA", [second.id])
    teams.delete_team(org.admin, team)
    with pytest.raises(NotFoundError):
        teams.access_team(team.id)


def test_another_organization_s_team_is_not_found(org, other_org):
    with organization_context(other_org.id):
        theirs = teams.create_team(other_org.admin, {"name": "Theirs"})
        db.session.flush()
    with organization_context(org.id), pytest.raises(NotFoundError):
        teams.access_team(theirs.id)


def test_a_removed_user_cannot_join(acting):
    from crm.foundation.services import remove_user

    org = acting
    gone = make_user(org, "agent")
    remove_user(org.admin, gone)
    with pytest.raises(ValidationError) as caught:
        teams.create_team(org.admin, {"name": "X", "member_ids": [gone.id]})
    assert "member_ids" in caught.value.fields


def test_managers_of_teams(acting):
    org = acting
    manager = make_user(org, "manager")
    one = teams.create_team(org.admin, {"name": "One", "manager_id": manager.id})
    two = teams.create_team(org.admin, {"name": "Two"})
    assert teams.manager_ids([one.id, two.id]) == {manager.id}
