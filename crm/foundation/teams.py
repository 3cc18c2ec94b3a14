"""Teams: an organization's named groups of people (Support, Sales), each with its members and
an optional manager. Tickets route to a team and escalations notify its managers; the inbox
may route to teams later.

Each function validates, writes, records who did it and publishes what happened; none commits.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from flask_babel import gettext as _
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from crm import events
from crm.errors import ConflictError, NotFoundError, ValidationError
from crm.extensions import db
from crm.foundation.models import Team, TeamMember, User
from crm.foundation.services import _active_member, _required_text, audit
from crm.tenancy import get_in_organization
from crm.validation import collect

log = logging.getLogger("crm.foundation")
MAX_MEMBERS = 500


def list_teams() -> list[Team]:
    return list(db.session.scalars(select(Team).order_by(Team.name, Team.id)))


def access_team(team_id: int) -> Team:
    """The organization's team with this id, or 404 (another organization's looks the same)."""
    team = get_in_organization(Team, team_id)
    if team is None:
        raise NotFoundError(_("Not found."))
    return team


def member_ids(team_id: int) -> list[int]:
    """The team's members, active or not, by id."""
    return list(db.session.scalars(select(TeamMember.user_id).where(
        TeamMember.team_id == team_id).order_by(TeamMember.user_id)))


def manager_ids(team_ids: Iterable[int]) -> set[int]:
    """The managers of these teams (those that have one)."""
    team_ids = [team_id for team_id in team_ids if team_id is not None]
    if not team_ids:
        return set()
    return set(db.session.scalars(select(Team.manager_id).where(
        Team.id.in_(team_ids), Team.manager_id.is_not(None))))


def create_team(actor: User, data: Mapping) -> Team:
    """A new team: `name`, and optionally `manager_id` and `member_ids`."""
    name, manager, members = collect({
        "name": lambda: _required_text(data.get("name"), "name", 80),
        "manager_id": lambda: _manager(data.get("manager_id")),
        "member_ids": lambda: _members(data.get("member_ids") or []),
    }).values()
    team = Team(name=name, manager_id=manager.id if manager else None)
    _save(team)
    _set_members(team, members)
    audit("team.created", actor, team, name=name, members=[user.id for user in members])
    events.publish("team.created", {"team_id": team.id})
    return team


def update_team(actor: User, team: Team, data: Mapping) -> Team:
    """Rename the team, change its manager, replace its members (each only when given)."""
    checks = {}
    if "name" in data:
        checks["name"] = lambda: _required_text(data["name"], "name", 80)
    if "manager_id" in data:
        checks["manager"] = lambda: _manager(data["manager_id"])
    if "member_ids" in data:
        checks["members"] = lambda: _members(data["member_ids"] or [])
    values = collect(checks)
    if "name" in values:
        team.name = values["name"]
    if "manager" in values:
        team.manager_id = values["manager"].id if values["manager"] else None
    _save(team)
    if "members" in values:
        _set_members(team, values["members"])
    audit("team.updated", actor, team, name=team.name, manager_id=team.manager_id)
    events.publish("team.updated", {"team_id": team.id})
    return team


def delete_team(actor: User, team: Team) -> None:
    """Delete the team; its tickets stay, without a team."""
    audit("team.deleted", actor, team, name=team.name)
    events.publish("team.deleted", {"team_id": team.id})
    db.session.delete(team)
    db.session.flush()


def _save(team: Team) -> None:
    try:
        with db.session.begin_nested():
            db.session.add(team)
            db.session.flush()
    except IntegrityError:
        raise ConflictError(_("A team with this name exists already."),
                            {"name": _("Choose another name.")}) from None


def _manager(raw: object) -> User | None:
    return None if raw in (None, "") else _active_member(raw, "manager_id")


def _members(raw: object) -> list[User]:
    if not isinstance(raw, list | tuple) or len(raw) > MAX_MEMBERS:
        raise ValidationError({"member_ids": _("Choose members of the team.")})
    members = {}
    for item in raw:
        user = _active_member(item, "member_ids")
        members[user.id] = user
    return list(members.values())


def _set_members(team: Team, members: list[User]) -> None:
    db.session.execute(delete(TeamMember).where(TeamMember.team_id == team.id))
    db.session.add_all(TeamMember(team_id=team.id, user_id=user.id) for user in members)
    db.session.flush()
    log.info("team %s members: %s", team.id, [user.id for user in members])
