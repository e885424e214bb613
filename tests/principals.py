"""Principals for tests that build one service's app without the approver: a fixed token -> principal map
(`StaticAuthenticator`), passed to that service's `bootstrap(..., authenticator=...)`. Tests of the real
verification (tokens in the approver's database, introspection, OIDC) use the approver itself."""

from __future__ import annotations

from shared.errors import Refused
from shared.identity import Kind, Principal

ADMIN = Principal(name="admin", roles=("admin",))
ANA = Principal(name="ana@example.com", roles=("registrant",), teams=("fraud",))  # registers fraud models
LEE = Principal(name="lee", roles=("viewer",), groups=("ml-leads",))
RISK = Principal(name="rita", roles=("viewer",), groups=("model-risk",))
OPS = Principal(name="ops", roles=("operator",))
AUDITOR = Principal(name="audrey", roles=("auditor",))
CI = Principal(name="ci-fraud", kind=Kind.SERVICE, roles=("registrant",), teams=("fraud",))
OTHER_TEAM = Principal(name="omar", roles=("registrant",), teams=("credit",))
NOBODY = Principal(name="nobody")  # authenticated, without any role

EVERYONE = {p.name: p for p in (ADMIN, ANA, LEE, RISK, OPS, AUDITOR, CI, OTHER_TEAM, NOBODY)}


def token_of(principal: Principal) -> str:
    return f"test-token-of-{principal.name}"


def bearer(principal: Principal) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_of(principal)}"}


class StaticAuthenticator:
    """Knows each principal above by `token_of(principal)`; anything else is refused (401)."""

    def __init__(self, principals: dict[str, Principal] | None = None):
        self.by_token = {token_of(p): p for p in (principals or EVERYONE).values()}

    async def authenticate(self, credential: str, source: str | None = None) -> Principal:
        try:
            return self.by_token[credential]
        except KeyError:
            raise Refused(401, "unknown token") from None
