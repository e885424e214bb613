"""Who may read and change which model groups.

Promises: a team owns each model group (`ModelGroup.team`); registering into it, or changing it, needs the
registrant role and membership of that team (admin: any). A group is read by its team, by the teams it is
shared with (`shared_with`, `"*"` for every team: the organisation's central library), and by the roles
that review across teams (approver, operator, auditor, admin). A group with no team (made before teams
existed) is open to every registrant and reader until an admin gives it one.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.registrar.catalog import Registration
from services.registrar.models import ModelGroup
from shared.errors import Refused
from shared.identity import Principal, Role

EVERYONE = "*"


def reviews_everything(principal: Principal) -> bool:
    return any(principal.may(role) for role in (Role.APPROVER, Role.OPERATOR, Role.AUDITOR, Role.ADMIN))


def can_read(principal: Principal, group: ModelGroup) -> bool:
    if group.team is None or reviews_everything(principal) or principal.in_team(group.team):
        return principal.may(Role.VIEWER)
    shared = set(group.shared_with or [])
    return principal.may(Role.VIEWER) and (EVERYONE in shared or bool(shared & set(principal.teams)))


def require_read(principal: Principal, group: ModelGroup) -> None:
    principal.require(Role.VIEWER, to="read the catalog")
    if not can_read(principal, group):
        raise Refused(403, f"model group '{group.name}' belongs to team {group.team} and is not shared with "
                           f"{'your teams' if principal.teams else 'you (you are in no team)'}; ask that team to share it")


def require_write(principal: Principal, group: ModelGroup | None, name: str, to: str) -> None:
    principal.require(Role.REGISTRANT, to=to)
    if group is not None and group.team is not None and not principal.in_team(group.team):
        raise Refused(403, f"{principal.name} may not {to}: model group '{name}' belongs to team {group.team}, "
                           f"and {principal.name} is not in it")


def team_for_new_group(principal: Principal, asked: str | None) -> str | None:
    """The team a new group gets: the one asked for (the caller's own), else the caller's first team."""
    if asked is None:
        return principal.teams[0] if principal.teams else None
    if not principal.in_team(asked):
        raise Refused(403, f"{principal.name} is not in team {asked}, so cannot create a group it owns")
    return asked


async def readable_groups(session: AsyncSession, principal: Principal) -> list[str] | None:
    """The names of the groups `principal` may read; None when it may read them all."""
    principal.require(Role.VIEWER, to="read the catalog")
    if reviews_everything(principal):
        return None
    groups = await session.scalars(select(ModelGroup))
    return [g.name for g in groups if can_read(principal, g)]


def registrant(caller: Principal, claimed: str | None) -> str:
    """The caller's name; refused (403) when the body names someone else (look-alikes included)."""
    if claimed is not None and not caller.is_named(claimed):
        raise Refused(403, f"registered_by {claimed!r} is not you ({caller.name}): the registrant is whoever "
                           "the credential names; leave registered_by out")
    return caller.name


async def authorise_registration(
    session: AsyncSession, caller: Principal, group: str, body: Registration
) -> tuple[Registration, str | None]:
    """The registration as the caller's own, and the team a new group gets; refused unless the caller may
    register into `group`."""
    body = body.model_copy(update={"registered_by": registrant(caller, body.registered_by)})
    existing = await session.get(ModelGroup, group)
    require_write(caller, existing, group, to=f"register versions in model group '{group}'")
    return body, team_for_new_group(caller, None) if existing is None else None
