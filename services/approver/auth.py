"""Principals and their credentials. The approver is modelgate's identity authority: it keeps people and
service accounts, their roles, teams and approver groups, and their API tokens and console sessions.

Promises:
- A token is shown once, when made; only its HMAC digest under the pepper (Secrets Manager) is kept.
  Revocation, expiry and disabling are rows in the database: they hold across restarts, and nothing at
  start-up re-enables anyone.
- A JWT of the organisation's identity provider is verified against its JWKS (shared.oidc). It is the
  service account bound to its `<issuer> <sub>`, or else the person its name claim names, with the roles
  and teams its groups claim maps to (settings `oidc_group_roles`, `oidc_group_teams`).
- Every change is recorded in the audit trail under the principal who made it.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.approver import audit
from services.approver.models import Credential, CredentialKind
from services.approver.models import Principal as PrincipalRow
from services.approver.settings import ApproverSettings
from shared.db import UnitOfWork
from shared.errors import Refused
from shared.events import utcnow
from shared.identity import (
    SESSION_PREFIX,
    Kind,
    Principal,
    RememberedPrincipals,
    Role,
    new_token,
    normalise_name,
    token_digest,
)
from shared.oidc import OidcRefused, OidcUnavailable, OidcVerifier, looks_like_jwt

log = structlog.get_logger()
ADMIN = "admin"


def principal_of(row: PrincipalRow, via: str = "token") -> Principal:
    return Principal(name=row.name, kind=Kind(row.kind), roles=tuple(row.roles), teams=tuple(row.teams),
                     groups=tuple(row.groups), via=via)


@dataclass
class ApproverAuthenticator:
    """Verifies API tokens and console sessions in the approver's database, and OIDC JWTs against the JWKS.

    A verified token is remembered for `cache_seconds` (1 s by default); every change of principals or
    credentials made through this process forgets them all at once (`forget`), so a revocation holds here
    immediately and on another approver replica within that second."""

    sessionmaker: async_sessionmaker[AsyncSession]
    pepper: bytes
    settings: ApproverSettings
    oidc: OidcVerifier | None = None
    cache_seconds: float = 1.0
    _remembered: RememberedPrincipals = field(init=False)

    def __post_init__(self) -> None:
        self._remembered = RememberedPrincipals(self.cache_seconds)

    def forget(self) -> None:
        self._remembered.clear()

    async def authenticate(self, credential: str, source: str | None = None) -> Principal:
        if looks_like_jwt(credential):
            return await self._from_jwt(credential)
        digest = token_digest(self.pepper, credential)
        principal = self._remembered.get(digest)
        if principal is None:
            principal = await self._from_database(digest)
            self._remembered.put(digest, principal)
        return principal

    async def _from_database(self, digest: str) -> Principal:
        async with self.sessionmaker() as session:
            found = await credential_of(session, digest)
        if found is None:
            raise Refused(401, "unknown token: check it, or ask an administrator for a new one "
                               "(`modelgate principals token NAME`)")
        cred, row = found
        refusal = why_invalid(cred, row)
        if refusal:
            raise Refused(401, refusal)
        return principal_of(row, via=cred.kind)

    async def _from_jwt(self, token: str) -> Principal:
        if self.oidc is None:
            raise Refused(401, "this looks like a JWT, but no identity provider is configured (MODELGATE_OIDC_ISSUER)")
        try:
            claims = await self.oidc.verify(token)
        except OidcRefused as exc:
            raise Refused(401, f"OIDC token refused: {exc}") from None
        except OidcUnavailable as exc:
            raise Refused(503, f"cannot verify OIDC tokens now: {exc}") from None
        async with self.sessionmaker() as session:
            return await principal_from_claims(session, self.settings, claims)

    async def aclose(self) -> None:
        if self.oidc is not None:
            await self.oidc.aclose()


async def credential_of(session: AsyncSession, digest: str) -> tuple[Credential, PrincipalRow] | None:
    """The credential with this digest and its principal, valid or not (None: nobody's)."""
    found = (await session.execute(
        select(Credential, PrincipalRow).join(PrincipalRow, PrincipalRow.name == Credential.principal)
        .where(Credential.digest == digest)
    )).first()
    return (found[0], found[1]) if found is not None else None


def why_invalid(cred: Credential, row: PrincipalRow) -> str | None:
    what = "console session" if cred.kind == CredentialKind.SESSION else "token"
    if row.disabled_at is not None:
        return f"{row.name} is disabled (since {row.disabled_at:%Y-%m-%d %H:%M} UTC); ask an administrator"
    if cred.revoked_at is not None:
        return f"this {what} of {row.name} was revoked at {cred.revoked_at:%Y-%m-%d %H:%M} UTC; " + (
            "sign in again" if cred.kind == CredentialKind.SESSION else "ask an administrator for a new one")
    if cred.expires_at is not None and cred.expires_at <= utcnow():
        return f"this {what} of {row.name} expired at {cred.expires_at:%Y-%m-%d %H:%M} UTC; " + (
            "sign in again" if cred.kind == CredentialKind.SESSION else "ask an administrator for a new one")
    return None


async def principal_from_claims(session: AsyncSession, settings: ApproverSettings, claims: dict[str, Any]) -> Principal:
    """The bound service account, or the SSO person the claims describe (never a local principal's name)."""
    subject = f"{claims['iss']} {claims['sub']}"
    bound = await session.scalar(select(PrincipalRow).where(PrincipalRow.oidc_subject == subject))
    if bound is not None:
        if bound.disabled_at is not None:
            raise Refused(401, f"{bound.name} is disabled; ask an administrator")
        return principal_of(bound, via="oidc")
    try:
        name = normalise_name(str(claims.get(settings.oidc_name_claim) or claims["sub"]))
    except ValueError as exc:
        raise Refused(401, f"OIDC token refused: {exc}") from None
    if await session.get(PrincipalRow, name) is not None:
        raise Refused(401, f"OIDC user {name!r} has the name of a local principal; an admin can bind them "
                           f"(`modelgate principals add {name} --oidc-subject ...`)")
    claimed = claims.get(settings.oidc_groups_claim) or []
    groups = sorted({normalise_name(str(g), "group") for g in claimed if isinstance(g, str)} if isinstance(claimed, list) else set())
    roles = {*settings.oidc_default_roles, *(r for g in groups for r in settings.oidc_group_roles.get(g, []))}
    teams = {t for g in groups for t in settings.oidc_group_teams.get(g, [])}
    return Principal(name=name, kind=Kind.PERSON, roles=tuple(sorted(roles)), teams=tuple(sorted(teams)),
                     groups=tuple(groups), via="oidc")


async def enabled_principal(uow: UnitOfWork, name: str) -> Principal:
    """A principal modelgate keeps, if enabled (decision links are issued to these only)."""
    row = await uow.session.get(PrincipalRow, name)
    if row is None or row.disabled_at is not None:
        raise Refused(401, f"{name} is unknown or disabled")
    return principal_of(row, via="link")


def check_roles(roles: list[str]) -> list[str]:
    """The roles, validated: viewer, registrant, approver, operator or operator:<stage>, auditor, admin."""
    valid = {str(r) for r in Role}
    out = set()
    for raw in roles:
        role, _, scope = raw.strip().partition(":")
        if role not in valid or (scope and role != Role.OPERATOR):
            raise Refused(422, f"unknown role {raw!r}: use one of {', '.join(sorted(valid))}, or operator:<stage>")
        out.add(f"{role}:{normalise_name(scope, 'stage')}" if scope else role)
    return sorted(out)


def names(values: list[str], what: str) -> list[str]:
    try:
        return sorted({normalise_name(v, what) for v in values})
    except ValueError as exc:
        raise Refused(422, str(exc)) from None


async def issue(uow: UnitOfWork, pepper: bytes, name: str, actor: str, ttl: timedelta | None,
                kind: CredentialKind = CredentialKind.TOKEN) -> tuple[str, Credential]:
    """A new credential of `name` (its secret returned once; its digest kept)."""
    secret = new_token(SESSION_PREFIX) if kind == CredentialKind.SESSION else new_token()
    cred = Credential(id=secrets.token_hex(8), principal=name, kind=kind, digest=token_digest(pepper, secret),
                      expires_at=utcnow() + ttl if ttl else None, csrf=secrets.token_urlsafe(24) if kind == CredentialKind.SESSION else None)
    uow.session.add(cred)
    if kind == CredentialKind.TOKEN:
        audit.record(uow, "token_issued", actor, reason=f"token {cred.id} of {name}", principal=name, credential=cred.id,
                     expires_at=cred.expires_at.isoformat() if cred.expires_at else None)
    return secret, cred


async def add_principal(uow: UnitOfWork, pepper: bytes, actor: str, *, name: str, kind: Kind, roles: list[str],
                        teams: list[str], groups: list[str], oidc_subject: str | None, ttl: timedelta | None,
                        with_token: bool = True) -> tuple[PrincipalRow, str | None, Credential | None]:
    if await uow.session.get(PrincipalRow, name) is not None:
        raise Refused(409, f"principal {name} exists already; issue a token with `modelgate principals token {name}`")
    row = PrincipalRow(name=name, kind=kind, roles=roles, teams=teams, groups=groups, oidc_subject=oidc_subject,
                       created_by=actor)
    uow.session.add(row)
    audit.record(uow, "principal_added", actor, reason=f"principal {name}", principal=name, kind=str(kind),
                 roles=roles, teams=teams, groups=groups, oidc_subject=oidc_subject)
    await uow.session.flush()
    if not with_token:
        return row, None, None
    token, cred = await issue(uow, pepper, name, actor, ttl)
    return row, token, cred


async def existing(uow: UnitOfWork, name: str) -> PrincipalRow:
    row = await uow.session.get(PrincipalRow, name)
    if row is None:
        raise Refused(404, f"no principal {name}; add one with `modelgate principals add {name}`")
    return row


async def revoke(uow: UnitOfWork, name: str, actor: str, credential_id: str | None = None) -> int:
    """Revokes one credential of `name`, or all of them; returns how many."""
    query = update(Credential).where(Credential.principal == name, Credential.revoked_at.is_(None))
    if credential_id:
        query = query.where(Credential.id == credential_id)
    result: Any = await uow.session.execute(query.values(revoked_at=utcnow()))
    if credential_id and result.rowcount == 0:
        raise Refused(404, f"{name} has no active credential {credential_id}")
    audit.record(uow, "credentials_revoked", actor, reason=f"{result.rowcount} of {name}", principal=name,
                 credential=credential_id or "all")
    return int(result.rowcount)


async def set_disabled(uow: UnitOfWork, name: str, actor: str, disabled: bool) -> PrincipalRow:
    row = await existing(uow, name)
    if disabled and name == actor:
        raise Refused(409, "you cannot disable yourself; another admin must")
    row.disabled_at = utcnow() if disabled else None
    if disabled:
        await revoke(uow, name, actor)
    audit.record(uow, "principal_disabled" if disabled else "principal_enabled", actor, reason=f"principal {name}", principal=name)
    return row


async def ensure_admin(uow: UnitOfWork, pepper: bytes) -> str | None:
    """An `admin` principal when no principal holds the admin role (the very first start, or the first after
    approvers became principals); returns its token, once. A disabled admin counts: nothing is re-enabled."""
    rows = await uow.session.scalars(select(PrincipalRow))
    if any(Role.ADMIN in row.roles for row in rows) or await uow.session.get(PrincipalRow, ADMIN) is not None:
        return None
    _, token, _ = await add_principal(uow, pepper, "first-start", name=ADMIN, kind=Kind.PERSON, roles=[Role.ADMIN],
                                      teams=[], groups=[], oidc_subject=None, ttl=None)
    return token


async def ensure_service_principal(uow: UnitOfWork, name: str, why: str) -> bool:
    """A service principal `name` with no roles and no credential (nobody can sign in as it), made once;
    an existing principal of that name is left as it is. Returns whether it was made."""
    if await uow.session.get(PrincipalRow, name) is not None:
        return False
    await add_principal(uow, b"", "first-start", name=name, kind=Kind.SERVICE, roles=[], teams=[], groups=[],
                        oidc_subject=None, ttl=None, with_token=False)
    log.info("service_principal_added", principal=name, why=why)
    return True


def write_token_file(path: Path, token: str) -> None:
    """Writes a token where only its owner can read it (mode 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(f"{token}\n")
    os.chmod(path, 0o600)
    log.info("admin_token_written", token_file=str(path))
