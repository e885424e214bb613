"""Principals and their tokens (admin only): add one (its token is shown once), list, change roles, teams
and approver groups, disable, issue and revoke tokens. Every change is audited under the admin who made it."""

from __future__ import annotations

from fastapi import APIRouter, Response
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.approver import audit, auth
from services.approver.deps import ApproverDep, ForgetCredentials
from services.approver.models import Credential, CredentialKind
from services.approver.models import Principal as PrincipalRow
from services.approver.schemas import CredentialOut, PrincipalIn, PrincipalOut, PrincipalPatch
from shared.errors import Refused
from shared.http import CurrentPrincipal, SessionDep, UowDep
from shared.identity import Principal, Role, normalise_name
from shared.limits import PageLimit, PageOffset, one_page

router = APIRouter(tags=["principals"])


def admin(caller: Principal, to: str) -> str:
    caller.require(Role.ADMIN, to=to)
    return caller.name


def name_of(raw: str) -> str:
    try:
        return normalise_name(raw)
    except ValueError as exc:
        raise Refused(422, str(exc)) from None


async def out(session: AsyncSession, row: PrincipalRow, token: str | None = None) -> PrincipalOut:
    return shown(row, (await tokens_of(session, [row.name])).get(row.name, []), token)


def shown(row: PrincipalRow, creds: list[CredentialOut], token: str | None = None) -> PrincipalOut:
    return PrincipalOut(name=row.name, kind=row.kind, roles=row.roles, teams=row.teams, groups=row.groups,
                        oidc_subject=row.oidc_subject, created_at=row.created_at, created_by=row.created_by,
                        disabled_at=row.disabled_at, credentials=creds, token=token)


async def tokens_of(session: AsyncSession, names: list[str]) -> dict[str, list[CredentialOut]]:
    """The API tokens of these principals (one query), oldest first."""
    query = (select(Credential).where(Credential.principal.in_(names), Credential.kind == CredentialKind.TOKEN)
             .order_by(Credential.created_at))
    found: dict[str, list[CredentialOut]] = {}
    for cred in await session.scalars(query):
        found.setdefault(cred.principal, []).append(CredentialOut.model_validate(cred, from_attributes=True))
    return found


@router.post("/v1/principals", response_model=PrincipalOut, status_code=201,
             summary="Add a person or service account; answers its API token, once (admin)")
async def add_principal(body: PrincipalIn, uow: UowDep, approver_ctx: ApproverDep, caller: CurrentPrincipal) -> PrincipalOut:
    actor = admin(caller, "add principals")
    subject = f"{approver_ctx.settings.oidc_issuer} {body.oidc_subject}" if body.oidc_subject else None
    if subject and not approver_ctx.settings.oidc_issuer:
        raise Refused(422, "oidc_subject needs an identity provider: set MODELGATE_OIDC_ISSUER")
    row, token, _ = await auth.add_principal(
        uow, approver_ctx.pepper, actor, name=name_of(body.name), kind=body.kind, roles=auth.check_roles(body.roles),
        teams=auth.names(body.teams, "team"), groups=auth.names(body.groups, "approver group"), oidc_subject=subject,
        ttl=approver_ctx.settings.token_ttl, with_token=body.token,
    )
    await uow.commit()
    return await out(uow.session, row, token)


@router.get("/v1/principals", response_model=list[PrincipalOut], summary="The principals, by name (admin or auditor)")
async def list_principals(
    response: Response, session: SessionDep, caller: CurrentPrincipal, limit: PageLimit = 100, offset: PageOffset = 0,
) -> list[PrincipalOut]:
    caller.require(Role.AUDITOR, to="list principals")
    query = select(PrincipalRow).order_by(PrincipalRow.name).limit(limit + 1).offset(offset)
    rows = one_page(list(await session.scalars(query)), limit, offset, response)
    tokens = await tokens_of(session, [row.name for row in rows])
    return [shown(row, tokens.get(row.name, [])) for row in rows]


@router.patch("/v1/principals/{name}", response_model=PrincipalOut, summary="Change roles, teams, groups; disable (admin)")
async def patch_principal(name: str, body: PrincipalPatch, uow: UowDep, caller: CurrentPrincipal,
                          forget: ForgetCredentials) -> PrincipalOut:
    actor = admin(caller, "change principals")
    uow.after_commit(forget)
    row = await auth.existing(uow, name_of(name))
    before = {"roles": row.roles, "teams": row.teams, "groups": row.groups}
    if body.roles is not None:
        row.roles = auth.check_roles(body.roles)
    if body.teams is not None:
        row.teams = auth.names(body.teams, "team")
    if body.groups is not None:
        row.groups = auth.names(body.groups, "approver group")
    audit.record(uow, "principal_changed", actor, reason=f"principal {row.name}", principal=row.name, before=before,
                      after={"roles": row.roles, "teams": row.teams, "groups": row.groups})
    if body.disabled is not None:
        await auth.set_disabled(uow, row.name, actor, body.disabled)
    await uow.commit()
    return await out(uow.session, row)


@router.post("/v1/principals/{name}/tokens", response_model=PrincipalOut, status_code=201,
             summary="Issue a new API token (shown once); `revoke_others` revokes the old ones (admin)")
async def new_token(name: str, uow: UowDep, approver_ctx: ApproverDep, caller: CurrentPrincipal,
                    forget: ForgetCredentials, revoke_others: bool = False) -> PrincipalOut:
    actor = admin(caller, "issue tokens")
    uow.after_commit(forget)
    row = await auth.existing(uow, name_of(name))
    if row.disabled_at is not None:
        raise Refused(409, f"{row.name} is disabled; enable them first (PATCH disabled=false)")
    if revoke_others:
        await auth.revoke(uow, row.name, actor)
    token, _ = await auth.issue(uow, approver_ctx.pepper, row.name, actor, approver_ctx.settings.token_ttl)
    await uow.commit()
    return await out(uow.session, row, token)


@router.delete("/v1/principals/{name}/tokens/{credential_id}", status_code=204, summary="Revoke one token (admin)")
async def revoke_token(name: str, credential_id: str, uow: UowDep, caller: CurrentPrincipal,
                       forget: ForgetCredentials) -> None:
    actor = admin(caller, "revoke tokens")
    uow.after_commit(forget)
    await auth.revoke(uow, name_of(name), actor, credential_id)
    await uow.commit()
