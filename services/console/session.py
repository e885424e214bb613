"""Signing in to the console: a server-side session, never the API token in a cookie.

Promises:
- Signing in with an API token (checked like a Bearer token on the API, and throttled per source) starts a
  session: a random secret in an HttpOnly, SameSite=Strict cookie, kept in the approver's database only as
  its digest, with a CSRF token, and expiring after MODELGATE_SESSION_TTL. Logout revokes it: the cookie is
  worthless afterwards, wherever it was copied.
- The console calls the APIs with the session secret as its Bearer credential (the other services verify it
  through the approver like any token), so a disabled principal is signed out everywhere.
- Every form post carries the session's CSRF token and must come from this origin (Origin and
  Sec-Fetch-Site checked); the cookie is `Secure` whenever the original scheme was https.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from fastapi import HTTPException, Request
from sqlalchemy import update

from services.approver.auth import credential_of, issue, why_invalid
from services.approver.models import Credential, CredentialKind
from services.approver.models import Principal as PrincipalRow
from shared.errors import Refused
from shared.events import utcnow
from shared.http import authenticate, runtime_of
from shared.identity import SESSION_PREFIX, token_digest

COOKIE = "modelgate_console"


@dataclass(frozen=True)
class SignedIn:
    name: str
    token: str = field(repr=False)  # the session secret: the console's Bearer credential for the APIs
    groups: tuple[str, ...] = ()
    csrf: str = field(default="", repr=False)

    def why_not(self, approval: dict[str, Any]) -> str | None:
        """Why this approver may not vote on `approval` (None: they may), as the approver would refuse it.
        Only a hint for the page: the approver decides, and the console shows its answer."""
        if approval.get("registered_by") == self.name:
            return f"you registered {approval['model_version_id']}: someone else must approve it"
        eligible = approval.get("eligible_groups") or ([approval["approver_group"]] if approval.get("approver_group") else [])
        if eligible and not set(eligible) & set(self.groups):
            return f"needs an approver from {' or '.join(eligible)}"
        if self.name in (approval.get("approved_by") or []):
            return "you already approved it; it waits for another approver"
        return None


def _pepper(request: Request) -> bytes:
    return request.app.state.context.pepper  # type: ignore[no-any-return]


async def start_session(request: Request, api_token: str) -> str:
    """A new session of the token's principal; its secret, for the cookie. Refused like the API refuses."""
    principal = await authenticate(request, api_token)
    if principal.via == "session":
        raise Refused(401, "paste an API token, not a console session")
    runtime = runtime_of(request)
    async with runtime.uow() as uow:
        if await uow.session.get(PrincipalRow, principal.name) is None:
            raise Refused(401, f"{principal.name} signs in with a modelgate API token (SSO users: ask an admin for one)")
        secret, _ = await issue(uow, _pepper(request), principal.name, principal.name, runtime.settings.session_ttl,
                                CredentialKind.SESSION)
        await uow.commit()
    return secret


async def current_session(request: Request) -> SignedIn | None:
    secret = request.cookies.get(COOKIE, "")
    if not secret.startswith(SESSION_PREFIX) or len(secret) > 200:
        return None
    async with runtime_of(request).sessionmaker() as session:
        found = await credential_of(session, token_digest(_pepper(request), secret))
    if found is None or found[0].kind != CredentialKind.SESSION or why_invalid(*found) is not None:
        return None
    cred, row = found
    return SignedIn(name=row.name, token=secret, groups=tuple(row.groups), csrf=cred.csrf or "")


async def signed_in(request: Request) -> SignedIn:
    """FastAPI dependency: the signed-in principal, or a redirect to the sign-in page."""
    me = await current_session(request)
    if me is not None:
        return me
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    raise HTTPException(303, "sign in first", headers={"Location": f"/console/login?next={target}"})


async def end_session(request: Request) -> None:
    """Revokes the session in the cookie (the cookie is useless afterwards, wherever it was copied)."""
    secret = request.cookies.get(COOKIE, "")
    if not secret:
        return
    async with runtime_of(request).uow() as uow:
        uow.after_commit(getattr(request.app.state.authenticator, "forget", lambda: None))
        await uow.session.execute(
            update(Credential).where(Credential.digest == token_digest(_pepper(request), secret),
                                     Credential.revoked_at.is_(None)).values(revoked_at=utcnow())
        )
        await uow.commit()


def original_scheme(request: Request) -> str:
    if runtime_of(request).settings.trust_forwarded_headers:
        return request.headers.get("x-forwarded-proto", request.url.scheme).split(",")[0].strip()
    return request.url.scheme


def _origins(request: Request) -> set[str]:
    public = urlsplit(runtime_of(request).settings.public_url)
    own = f"{original_scheme(request)}://{request.headers.get('host', request.url.netloc)}"
    return {own, f"{public.scheme}://{public.netloc}"}


def check_same_origin(request: Request) -> None:
    """Refuses (403) a form post another site made the browser send."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        raise Refused(403, f"refused a cross-site form post (Sec-Fetch-Site: {site})")
    origin = request.headers.get("origin")
    if origin is not None and origin not in _origins(request):
        raise Refused(403, f"refused a form post from another origin ({origin})")


def check_csrf(request: Request, me: SignedIn, form: dict[str, str]) -> None:
    check_same_origin(request)
    if not me.csrf or not hmac.compare_digest(form.get("csrf", ""), me.csrf):
        raise Refused(403, "the form's CSRF token is missing or stale; reload the page and try again")
