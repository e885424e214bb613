"""OIDC bearer tokens (JWTs) checked against the organisation's identity provider, with joserfc.

Promises of `OidcVerifier.verify(token)`:

- It returns the token's claims only when all of these hold: the token is a compact JWS no longer than
  `MAX_TOKEN_BYTES`; its `alg` is asymmetric (`ACCEPTED_ALGORITHMS`: never `none`, never an HMAC); its `kid`
  names a key in the issuer's JWKS and the signature verifies with that key; `iss` equals the configured
  issuer; `aud` (a string or a list) contains the configured audience; `exp` is present and not past; `nbf`
  and `iat`, when present, are not in the future; `sub` is a non-empty string. Times allow `leeway_seconds`.
- Any other token raises `OidcRefused` (the caller answers 401) whose message says what is wrong and what
  to do about it.
- When the keys cannot be had (the JWKS cannot be fetched or parsed, and no fresh copy is cached), it
  raises `OidcUnavailable` (the caller answers 503). It never lets a token through because of an outage.
- The JWKS is fetched with one GET (5 s timeout) and kept for `cache_seconds`. A `kid` not in the cached
  set triggers one refetch, at most once every `MIN_REFETCH_SECONDS`, so tokens with made-up key ids
  cannot make it hammer the identity provider. Concurrent verifications share one fetch. Cached keys keep
  verifying while the provider is down, until they are `cache_seconds` old; after that, or for a `kid` that
  would need a refetch the provider cannot answer, it is `OidcUnavailable`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
import time
from datetime import UTC, datetime
from typing import Any

import httpx
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import Key, KeySet

ACCEPTED_ALGORITHMS: frozenset[str] = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA"})
MAX_TOKEN_BYTES = 16 * 1024
MIN_REFETCH_SECONDS = 30.0
FETCH_TIMEOUT_SECONDS = 5.0

_JWT_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_ASYMMETRIC_KEY_TYPES = frozenset({"RSA", "EC", "OKP"})


class OidcRefused(Exception):
    """The token is not acceptable; the message says exactly why and what to fix (answer 401)."""


class OidcUnavailable(Exception):
    """The identity provider's keys could not be fetched or parsed (answer 503; never allow)."""


def looks_like_jwt(token: str) -> bool:
    """Whether `token` has the shape of a compact JWT (three base64url segments); decodes nothing."""
    return isinstance(token, str) and _JWT_SHAPE.fullmatch(token) is not None


class OidcVerifier:
    """Verifies the identity provider's JWTs for one audience; see the module docstring for the promises."""

    def __init__(self, issuer: str, audience: str, jwks_url: str, *, http: httpx.AsyncClient | None = None,
                 cache_seconds: float = 300, leeway_seconds: int = 30) -> None:
        self.issuer = issuer
        self.audience = audience
        self.jwks_url = jwks_url
        self._own_http = http is None
        self._http = http or httpx.AsyncClient(timeout=FETCH_TIMEOUT_SECONDS)
        self._cache_seconds = cache_seconds
        self._leeway = leeway_seconds
        self._lock = asyncio.Lock()
        self._keys: KeySet | None = None
        self._fetched_at = float("-inf")
        self._last_forced = float("-inf")

    async def verify(self, token: str) -> dict[str, Any]:
        """The token's claims once signature and claims are checked; OidcRefused or OidcUnavailable if not."""
        header = _header_of(token)
        key = await self._key_for(header["kid"])
        try:
            claims = jwt.decode(token, key, algorithms=[header["alg"]]).claims
        except JoseError as error:
            raise OidcRefused(f"the token's signature does not verify with key {header['kid']!r} "
                              f"({error.__class__.__name__}); it was altered or not issued by "
                              f"{self.issuer}: get a new one from your identity provider") from error
        self._check_claims(claims)
        return claims

    async def aclose(self) -> None:
        """Close the HTTP client if this verifier made it."""
        if self._own_http:
            await self._http.aclose()

    async def _key_for(self, kid: str) -> Key:
        key = _find(await self._fresh_keys(), kid)
        if key is None:
            key = _find(await self._refetch_for_unknown_kid(), kid)
        if key is None:
            raise OidcRefused(f"unknown signing key id {kid!r}: the identity provider at {self.jwks_url} does not "
                              "publish it; the token is not from MODELGATE_OIDC_ISSUER or its key was retired, "
                              "get a new token")
        return key

    async def _fresh_keys(self) -> KeySet:
        if self._keys is None or self._stale():
            async with self._lock:
                if self._keys is None or self._stale():
                    await self._fetch()
        assert self._keys is not None
        return self._keys

    async def _refetch_for_unknown_kid(self) -> KeySet | None:
        asked = time.monotonic()
        async with self._lock:
            if self._fetched_at >= asked:  # another verification refetched while this one waited
                return self._keys
            if asked - self._last_forced < MIN_REFETCH_SECONDS:
                return None
            self._last_forced = asked
            await self._fetch()
        return self._keys

    def _stale(self) -> bool:
        return time.monotonic() - self._fetched_at > self._cache_seconds

    async def _fetch(self) -> None:
        try:
            response = await self._http.get(self.jwks_url, timeout=FETCH_TIMEOUT_SECONDS)
            response.raise_for_status()
            self._keys = _signing_keys(response.json())
        except (httpx.HTTPError, TypeError, ValueError) as error:
            raise OidcUnavailable(f"cannot get the identity provider's keys from {self.jwks_url}: {error}; "
                                  "check MODELGATE_OIDC_JWKS_URL and that the identity provider is up") from error
        self._fetched_at = time.monotonic()

    def _check_claims(self, claims: dict[str, Any]) -> None:
        if claims.get("iss") != self.issuer:
            raise OidcRefused(f"issuer {claims.get('iss')!r} is not the configured MODELGATE_OIDC_ISSUER "
                              f"{self.issuer!r}; get a token from that identity provider")
        audiences = claims.get("aud")
        audiences = [audiences] if isinstance(audiences, str) else audiences
        if not isinstance(audiences, list) or self.audience not in audiences:
            raise OidcRefused(f"audience {claims.get('aud')!r} does not include {self.audience!r}; ask your "
                              f"identity provider for a token for {self.audience!r}")
        self._check_times(claims, time.time())
        if not isinstance(claims.get("sub"), str) or not claims["sub"]:
            raise OidcRefused("the token has no subject (`sub`); the identity provider must name the user")

    def _check_times(self, claims: dict[str, Any], now: float) -> None:
        exp = _number(claims, "exp", required=True)
        assert exp is not None
        if now > exp + self._leeway:
            raise OidcRefused(f"token expired at {_when(exp)}; get a new one from your identity provider")
        nbf = _number(claims, "nbf")
        if nbf is not None and nbf > now + self._leeway:
            raise OidcRefused(f"token is not valid before {_when(nbf)}; check the clocks or wait")
        iat = _number(claims, "iat")
        if iat is not None and iat > now + self._leeway:
            raise OidcRefused(f"token was issued in the future ({_when(iat)}); check the clocks")


def _header_of(token: str) -> dict[str, Any]:
    if not isinstance(token, str) or len(token) > MAX_TOKEN_BYTES:
        raise OidcRefused(f"the token is longer than {MAX_TOKEN_BYTES} bytes; send an access token, not a blob")
    if not looks_like_jwt(token):
        raise OidcRefused("the bearer token is not a JWT (three base64url parts separated by dots)")
    try:
        header = json.loads(_b64url(token.split(".", 1)[0]))
    except (ValueError, binascii.Error) as error:
        raise OidcRefused("the token's header is not base64url-encoded JSON; it is not a JWT") from error
    if not isinstance(header, dict):
        raise OidcRefused("the token's header is not a JSON object; it is not a JWT")
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in ACCEPTED_ALGORITHMS:
        raise OidcRefused(f"algorithm {alg} not accepted; only asymmetric signatures "
                          f"({', '.join(sorted(ACCEPTED_ALGORITHMS))}) from the identity provider are")
    if not isinstance(header.get("kid"), str) or not header["kid"]:
        raise OidcRefused("the token's header has no key id (`kid`); the identity provider must set one")
    return header


def _b64url(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _signing_keys(document: Any) -> KeySet:
    """The asymmetric signing keys of a JWKS document (shared secrets and encryption keys are dropped)."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise TypeError("the answer is not a JWKS (a JSON object with a `keys` list)")
    usable = [k for k in document["keys"] if isinstance(k, dict) and k.get("kty") in _ASYMMETRIC_KEY_TYPES
              and k.get("use", "sig") == "sig" and isinstance(k.get("kid"), str)]
    try:
        return KeySet.import_key_set({"keys": usable})
    except (JoseError, KeyError, TypeError, ValueError) as error:
        raise ValueError(f"the JWKS has no usable signing key ({error})") from error


def _find(keys: KeySet | None, kid: str) -> Key | None:
    return next((key for key in keys or () if key.kid == kid), None)


def _number(claims: dict[str, Any], name: str, *, required: bool = False) -> float | None:
    value = claims.get(name)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise OidcRefused(f"the token's `{name}` claim is {'missing' if value is None else 'not a number'}; "
                          "the identity provider must set it as seconds since the epoch")
    return float(value)


def _when(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")
