"""Who is calling: principals, roles, API tokens, and how every service verifies a credential.

Promises:
- A principal's name is the one spelling the system knows: NFKC-normalised, case-folded and limited to a safe
  alphabet (`normalise_name`), so `Lee`, `lee` and `lee\u200b` cannot pass as three people.
- A principal may do what its roles allow (`Principal.may`), `admin` everything; `require` refuses with 403
  and says which role is missing. The default table is in docs/identity.md.
- modelgate API tokens are 256-bit random strings made by modelgate (nobody chooses one, so none is weak),
  shown once and stored only as an HMAC-SHA256 under the approver's pepper (`token_digest`).
- Every service verifies a credential itself through an `Authenticator`. The approver owns principals and
  checks its own database; the other services ask the approver's `GET /v1/me` once and keep the answer for
  `auth_cache_seconds` (`IntrospectingAuthenticator`). A service that cannot verify refuses with 503: never
  allows.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
import unicodedata
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Any, Protocol

import httpx
from pydantic import BaseModel, ConfigDict

from shared.errors import Refused

TOKEN_PREFIX = "mgt_"  # an API token
SESSION_PREFIX = "mgs_"  # a console session (server-side; logout revokes it)
MAX_CREDENTIAL_LENGTH = 16 * 1024
SERVICE_KEY_HEADER = "x-modelgate-service-key"  # a sibling service asking on a caller's behalf (shared.secrets)
CLIENT_HEADER = "x-modelgate-client-address"  # ... and that caller's address
_NAME = re.compile(r"^[a-z0-9][a-z0-9._@+-]{0,99}$")


class Role(StrEnum):
    """What a principal may do. `operator` may be scoped to a stage (`operator:prod`)."""

    VIEWER = "viewer"  # read the catalog, approvals, deployments
    REGISTRANT = "registrant"  # register versions in (and create) the model groups its team owns
    APPROVER = "approver"  # vote, in the approver groups it belongs to
    OPERATOR = "operator"  # roll back / redeploy a stage
    AUDITOR = "auditor"  # read every audit trail and the delivery log
    ADMIN = "admin"  # everything, including principals


class Kind(StrEnum):
    PERSON = "person"
    SERVICE = "service"  # a CI pipeline, a training job


class Principal(BaseModel):
    """An authenticated caller, as every service sees it (the approver's `GET /v1/me` answers this shape)."""

    model_config = ConfigDict(frozen=True)

    name: str
    kind: Kind = Kind.PERSON
    roles: tuple[str, ...] = ()
    teams: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()  # approver groups
    via: str = "token"  # token | session | oidc

    def may(self, role: Role, scope: str | None = None) -> bool:
        if Role.ADMIN in self.roles or role in self.roles:
            return True
        if role is Role.APPROVER and self.groups:
            return True
        if role is Role.VIEWER and self.roles:  # every role reads
            return True
        return scope is not None and f"{role}:{scope}" in self.roles

    def require(self, role: Role, scope: str | None = None, *, to: str) -> None:
        """Refuses (403) unless this principal holds `role` (for `scope`, when given)."""
        if not self.may(role, scope):
            needed = f"{role}:{scope}" if scope else str(role)
            raise Refused(403, f"{self.name} may not {to}: that needs the {needed} role; ask an admin to grant it")

    def is_named(self, claimed: str) -> bool:
        """Whether `claimed` is this principal's name in any spelling normalise_name accepts."""
        try:
            return normalise_name(claimed) == self.name
        except ValueError:
            return False

    def in_team(self, team: str | None) -> bool:
        return Role.ADMIN in self.roles or (team is not None and team in self.teams)


def normalise_name(raw: str, what: str = "name") -> str:
    """The one spelling of a principal, team or group name; ValueError (saying what is allowed) otherwise."""
    name = unicodedata.normalize("NFKC", raw).casefold().strip()
    if not _NAME.fullmatch(name):
        raise ValueError(
            f"{what} {raw!r} is not allowed: use 1-100 of a-z 0-9 . _ @ + - (starting with a letter or digit)"
        )
    return name


def new_token(prefix: str = TOKEN_PREFIX) -> str:
    return prefix + secrets.token_urlsafe(32)


def token_digest(pepper: bytes, token: str) -> str:
    """What is stored of a token: HMAC-SHA256 under the pepper (a leaked table alone cannot be tried offline)."""
    return hmac.new(pepper, token.encode(), hashlib.sha256).hexdigest()


class Authenticator(Protocol):
    async def authenticate(self, credential: str, source: str | None = None) -> Principal:
        """The credential's principal (presented from `source`); Refused 401 (not valid), 429 or 503."""
        ...


class RememberedPrincipals:
    """Verified credentials (by a key derived from them) and their principals, each for `seconds`; the least
    recently verified go first beyond `max_entries`."""

    def __init__(self, seconds: float, max_entries: int = 10_000):
        self.seconds = seconds
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[float, Principal]] = OrderedDict()

    def get(self, key: str) -> Principal | None:
        hit = self._entries.get(key)
        return hit[1] if hit is not None and hit[0] > time.monotonic() else None

    def put(self, key: str, principal: Principal) -> None:
        self._entries[key] = (time.monotonic() + self.seconds, principal)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()


class IntrospectingAuthenticator:
    """Verifies credentials with the approver's `GET /v1/me`, keeping each answer briefly (revocation takes
    effect here within `cache_seconds`; on the approver at once)."""

    def __init__(self, approver_url: str, cache_seconds: float = 30.0, *, http: httpx.AsyncClient | None = None,
                 max_entries: int = 10_000, service_key: str | None = None):
        self.approver_url = approver_url.rstrip("/")
        self.service_key = service_key  # shown to the approver, so that it counts failures against `source`
        self.http = http or httpx.AsyncClient(timeout=5.0)
        self._remembered = RememberedPrincipals(cache_seconds, max_entries)

    async def authenticate(self, credential: str, source: str | None = None) -> Principal:
        key = hashlib.sha256(credential.encode()).hexdigest()
        principal = self._remembered.get(key)
        if principal is None:
            principal = await self._ask(credential, source)
            self._remembered.put(key, principal)
        return principal

    async def _ask(self, credential: str, source: str | None) -> Principal:
        headers = {"Authorization": f"Bearer {credential}"}
        if self.service_key and source:
            headers |= {SERVICE_KEY_HEADER: self.service_key, CLIENT_HEADER: source}
        try:
            answer = await self.http.get(f"{self.approver_url}/v1/me", headers=headers)
        except httpx.HTTPError as exc:
            raise Refused(503, f"cannot verify credentials: the approver at {self.approver_url} is unreachable "
                               f"({type(exc).__name__}); try again shortly") from None
        if answer.status_code == 200:
            return Principal.model_validate(answer.json())
        if answer.status_code in (401, 429):
            raise Refused(answer.status_code, _detail(answer))
        raise Refused(503, f"cannot verify credentials: the approver answered {answer.status_code}; try again shortly")

    async def aclose(self) -> None:
        await self.http.aclose()


def _detail(answer: httpx.Response) -> str:
    try:
        return str(answer.json()["detail"])
    except Exception:
        return answer.text[:200]


def introspecting(settings: Any, service_key: str | None = None) -> IntrospectingAuthenticator:
    """How the registrar, deployer and notifier verify credentials: the approver at MODELGATE_APPROVER_URL."""
    return IntrospectingAuthenticator(settings.approver_url, settings.auth_cache_seconds, service_key=service_key)


def closer(authenticator: Authenticator) -> Callable[[], Awaitable[None]] | None:
    """What closes the authenticator's connections at stop (None when it keeps none)."""
    return getattr(authenticator, "aclose", None)
