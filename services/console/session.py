"""Signing in to the console with an approver token: the token is the session, kept in an HttpOnly cookie.

Nothing is stored on the server, so any approver replica serves any request. On every request the token is
checked by the approver's own `GET /v1/me`, the same check as a Bearer token on the API: a disabled approver
or a rotated token is signed out at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx
from fastapi import HTTPException, Request

from shared.client import ApiError, Approver

COOKIE = "modelgate_console"


@dataclass(frozen=True)
class SignedIn:
    name: str
    token: str = field(repr=False)
    groups: tuple[str, ...] = ()

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


def approver_api(request: Request) -> Approver:
    """The approver's own API, called in-process: the console's decisions take exactly the API's path."""
    return Approver("http://approver", transport=httpx.ASGITransport(app=request.app))


async def identify(request: Request, token: str) -> SignedIn:
    """The approver this token belongs to; ApiError (401, with the approver's reason) when nobody."""
    api = approver_api(request)
    try:
        me = await api.me(token)
    finally:
        await api.aclose()
    return SignedIn(name=me["name"], token=token, groups=tuple(me["groups"]))


async def signed_in(request: Request) -> SignedIn:
    """FastAPI dependency: the signed-in approver, or a redirect to the sign-in page."""
    token = request.cookies.get(COOKIE)
    if token:
        try:
            return await identify(request, token)
        except ApiError as exc:
            if exc.status != 401:
                raise
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    raise HTTPException(303, "sign in first", headers={"Location": f"/console/login?next={target}"})
