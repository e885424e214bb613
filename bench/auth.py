"""What authentication costs per request, against the same request without it, in one process.

Each row is one `/v1` request served in-process (ASGI, no network) by the approver's app on SQLite, with the
credential verified by:
- nothing (baseline: an authenticator that answers a fixed principal, no lookup);
- the approver's API token check (HMAC digest, one indexed SELECT), each time (no cache) and as served
  (remembered for a second);
- a sibling's check through the approver's GET /v1/me, answered from its cache (the hot path of the
  registrar, deployer and notifier; a miss is one extra HTTP call per `auth_cache_seconds`);
- an OIDC JWT (RS256 signature, claims), keys cached (the JWKS is served by an httpx MockTransport here:
  the benchmark measures CPU, not the identity provider).
It prints the median per request and the added cost against the baseline run in the same process.

    python -m bench.auth --requests 2000
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey
from sqlalchemy.ext.asyncio import async_sessionmaker

from bench.common import conditions, console, table
from services.approver import auth
from services.approver.approvals import Urls
from services.approver.bootstrap import ROUTERS
from services.approver.context import Approver
from services.approver.policy import load_policy
from services.approver.settings import DEFAULT_POLICY, ApproverSettings
from shared.app import build_app
from shared.db import make_engine
from shared.identity import IntrospectingAuthenticator, Kind, Principal
from shared.migrations import prepare_database
from shared.oidc import OidcVerifier
from shared.runtime import Runtime, Wiring

PEPPER = b"bench-pepper" * 3
ISSUER = "https://idp.bench"
ROUNDS = 10


class Fixed:
    """The baseline: every credential is the same principal, with no lookup at all."""

    async def authenticate(self, credential: str, source: str | None = None) -> Principal:
        return Principal(name="bench", roles=("viewer",))


class ViaOidc:
    def __init__(self, verifier: OidcVerifier):
        self.verifier = verifier

    async def authenticate(self, credential: str, source: str | None = None) -> Principal:
        claims = await self.verifier.verify(credential)
        return Principal(name=claims["sub"], roles=("viewer",), via="oidc")


async def timed(client: httpx.AsyncClient, headers: dict[str, str], requests: int) -> list[float]:
    out = []
    for _ in range(requests):
        started = time.perf_counter()
        response = await client.get("/v1/policy", headers=headers)
        out.append(time.perf_counter() - started)
        assert response.status_code == 200, response.text
    return out


def oidc_verifier() -> tuple[OidcVerifier, str]:
    key = RSAKey.generate_key(2048, parameters={"kid": "bench"})
    jwks = KeySet([key]).as_dict(private=False)
    http = httpx.AsyncClient(transport=httpx.MockTransport(lambda request: httpx.Response(200, json=jwks)))
    now = int(time.time())
    token = jwt.encode({"alg": "RS256", "kid": "bench"},
                       {"iss": ISSUER, "aud": "modelgate", "sub": "sso-user", "iat": now, "exp": now + 3600}, key)
    return OidcVerifier(ISSUER, "modelgate", f"{ISSUER}/jwks.json", http=http), token


async def measure(requests: int, directory: Path) -> list[tuple[str, float]]:
    url = f"sqlite+aiosqlite:///{directory}/approver.db"
    engine = make_engine(url)
    await prepare_database(engine, "approver")
    sessionmaker = async_sessionmaker(engine, expire_on_commit=False)
    settings = ApproverSettings(database_url=url)
    runtime = Runtime(settings=settings, engine=engine, sessionmaker=sessionmaker, aws={})
    async with runtime.uow() as uow:
        _, token, _ = await auth.add_principal(uow, PEPPER, "bench", name="lee", kind=Kind.PERSON, roles=["viewer"],
                                               teams=[], groups=[], oidc_subject=None, ttl=None)
        await uow.commit()
    parts = Approver(runtime, load_policy(DEFAULT_POLICY), Urls("http://a", "http://a/console"), pepper=PEPPER)
    tokens = auth.ApproverAuthenticator(sessionmaker, PEPPER, settings)
    approver_http = client_of(runtime, parts, tokens)
    verifier, jwt_token = oidc_verifier()
    cases: dict[str, tuple[Any, str]] = {
        "baseline: no verification": (Fixed(), "x"),
        "API token, approver's database, every time": (
            auth.ApproverAuthenticator(sessionmaker, PEPPER, settings, cache_seconds=0), token or ""),
        "API token, approver, as served (1 s cache)": (tokens, token or ""),
        "via the approver's /v1/me, cached": (IntrospectingAuthenticator("http://a", 300, http=approver_http), token or ""),
        "OIDC JWT (RS256), keys cached": (ViaOidc(verifier), jwt_token),
    }
    clients = {name: client_of(runtime, parts, authenticator) for name, (authenticator, _) in cases.items()}
    headers = {name: {"Authorization": f"Bearer {credential}"} for name, (_, credential) in cases.items()}
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for name, client in clients.items():
        await timed(client, headers[name], 50)  # warm-up: caches and first-call costs
    for _ in range(ROUNDS):  # interleaved, so a busy moment of the machine falls on every case alike
        for name, client in clients.items():
            samples[name] += await timed(client, headers[name], max(1, requests // ROUNDS))
    for client in clients.values():
        await client.aclose()
    medians = [(name, statistics.median(values)) for name, values in samples.items()]
    await approver_http.aclose()
    await verifier.aclose()
    await engine.dispose()
    return medians


def client_of(runtime: Runtime[Any], parts: Approver, authenticator: Any) -> httpx.AsyncClient:
    app = build_app(runtime, Wiring(handlers={}, routers=ROUTERS, context=parts, authenticator=authenticator))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://a")


def report(medians: list[tuple[str, float]], requests: int) -> None:
    base = medians[0][1]
    rows = [(name, f"{m * 1000:.3f}", f"{(m - base) * 1000:+.3f}", f"{m / base:.2f}×") for name, m in medians]
    console.print(table(f"authentication per request: median of {requests} GET /v1/policy in-process ({conditions()})",
                        ["credential checked by", "ms / request", "added ms", "vs baseline"], rows))


def main(argv: list[str] | None = None, run: Callable[..., Awaitable[list[tuple[str, float]]]] = measure) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="modelgate-bench-auth-") as directory:
        report(asyncio.run(run(args.requests, Path(directory))), args.requests)


if __name__ == "__main__":
    main()
