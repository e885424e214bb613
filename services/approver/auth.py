"""Approvers and their API tokens. Only a token's SHA-256 is stored; the token itself is shown once, when made.

Approvers come from two places: `python -m services.approver.admin` (kept in the database), and the
bootstrap variables MODELGATE_APPROVER_TOKENS / MODELGATE_APPROVER_GROUPS, applied at every start.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import select

from services.approver import audit
from services.approver.models import Approver
from shared.db import UnitOfWork
from shared.errors import Refused
from shared.events import utcnow

BOOTSTRAP = "bootstrap"  # the actor of changes made from MODELGATE_APPROVER_TOKENS / _GROUPS


@dataclass(frozen=True)
class Identity:
    """Who is deciding: an enabled approver and their groups."""

    name: str
    groups: list[str]


def new_token() -> str:
    return "mg_" + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def authenticate(uow: UnitOfWork, token: str) -> Identity:
    """The approver whose API token this is; refused (401) when it is nobody's, or theirs is disabled."""
    approver = await uow.session.scalar(select(Approver).where(Approver.token_hash == token_hash(token)))
    if approver is None:
        raise Refused(401, "unknown approver token: check it, or ask an administrator for a new one")
    if approver.disabled_at is not None:
        raise Refused(401, f"approver {approver.name} is disabled")
    return Identity(approver.name, list(approver.groups))


async def enabled_approver(uow: UnitOfWork, name: str) -> Identity:
    approver = await uow.session.get(Approver, name)
    if approver is None or approver.disabled_at is not None:
        raise Refused(401, f"approver {name} is unknown or disabled")
    return Identity(approver.name, list(approver.groups))


async def add_approver(uow: UnitOfWork, name: str, groups: list[str], actor: str) -> str:
    """Creates an approver and returns their new token (only its hash is kept)."""
    if await uow.session.get(Approver, name) is not None:
        raise ValueError(f"approver {name} exists already; use rotate-token or set-groups")
    token = new_token()
    uow.session.add(Approver(name=name, groups=sorted(set(groups)), token_hash=token_hash(token)))
    audit.record(uow, "approver_added", actor, reason=f"approver {name}", approver=name, groups=sorted(set(groups)))
    return token


async def rotate_token(uow: UnitOfWork, name: str, actor: str) -> str:
    approver = await _existing(uow, name)
    token = new_token()
    approver.token_hash = token_hash(token)
    approver.disabled_at = None
    audit.record(uow, "token_rotated", actor, reason=f"approver {name}", approver=name)
    return token


async def set_groups(uow: UnitOfWork, name: str, groups: list[str], actor: str) -> None:
    approver = await _existing(uow, name)
    audit.record(uow, "groups_changed", actor, reason=f"approver {name}", approver=name, before=approver.groups, after=sorted(set(groups)))
    approver.groups = sorted(set(groups))


async def disable(uow: UnitOfWork, name: str, actor: str) -> None:
    approver = await _existing(uow, name)
    approver.disabled_at = utcnow()
    approver.token_hash = None
    audit.record(uow, "approver_disabled", actor, reason=f"approver {name}", approver=name)


async def _existing(uow: UnitOfWork, name: str) -> Approver:
    approver = await uow.session.get(Approver, name)
    if approver is None:
        raise ValueError(f"no approver {name}; add one with add-approver")
    return approver


async def seed(uow: UnitOfWork, tokens: dict[str, str], groups: dict[str, list[str]]) -> None:
    """Brings the bootstrap approvers to what the environment says (a name in either map is an approver)."""
    hashes = [token_hash(t) for t in tokens.values()]
    if len(set(hashes)) != len(hashes):
        raise ValueError("MODELGATE_APPROVER_TOKENS gives two approvers the same token; each needs their own")
    for name in sorted(set(tokens) | set(groups)):
        approver = await uow.session.get(Approver, name)
        if approver is None:
            approver = Approver(name=name, groups=[])
            uow.session.add(approver)
            audit.record(uow, "approver_added", BOOTSTRAP, reason=f"approver {name}", approver=name)
        if name in tokens and approver.token_hash != token_hash(tokens[name]):
            approver.token_hash = token_hash(tokens[name])
            approver.disabled_at = None
            audit.record(uow, "token_rotated", BOOTSTRAP, reason=f"approver {name}", approver=name)
        if name in groups and approver.groups != sorted(set(groups[name])):
            audit.record(uow, "groups_changed", BOOTSTRAP, reason=f"approver {name}", approver=name, before=approver.groups, after=sorted(set(groups[name])))
            approver.groups = sorted(set(groups[name]))
        await uow.session.flush()
