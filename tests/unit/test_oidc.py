"""OIDC JWT verification (shared.oidc) against a real local identity provider over HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from shared.oidc import OidcRefused, OidcUnavailable, OidcVerifier, looks_like_jwt
from tests.oidc_provider import LocalIdP


@pytest.fixture(scope="module")
def idp() -> Iterator[LocalIdP]:
    with LocalIdP() as provider:
        yield provider


@pytest.fixture
async def verifier(idp: LocalIdP) -> AsyncIterator[OidcVerifier]:
    v = OidcVerifier(idp.issuer, "modelgate", idp.jwks_url)
    yield v
    await v.aclose()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _segment(obj: dict[str, Any]) -> str:
    return _b64(json.dumps(obj).encode())


def _parts(token: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    header, payload, signature = token.split(".")
    return _json(header), _json(payload), signature


def _json(segment: str) -> dict[str, Any]:
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


async def test_a_valid_token_gives_its_claims(idp: LocalIdP, verifier: OidcVerifier) -> None:
    claims = await verifier.verify(idp.issue("alice", groups=["ml-team"]))
    assert claims["sub"] == "alice" and claims["groups"] == ["ml-team"] and claims["iss"] == idp.issuer


async def test_an_ec_signed_token_and_an_audience_list_are_accepted(idp: LocalIdP, verifier: OidcVerifier) -> None:
    token = idp.issue("bob", key="ec", extra={"aud": ["other-app", "modelgate"]})
    assert (await verifier.verify(token))["sub"] == "bob"


@pytest.mark.parametrize(("extra", "expires_in", "why"), [
    ({"iss": "https://evil.example"}, 600, "is not the configured MODELGATE_OIDC_ISSUER"),
    ({"aud": "another-service"}, 600, "audience 'another-service'"),
    ({}, -3600, "token expired at .*get a new one"),
    ({"nbf": int(time.time()) + 3600}, 7200, "not valid before"),
    ({"iat": int(time.time()) + 3600}, 7200, "issued in the future"),
    ({"sub": None}, 600, "no subject"),
    ({"exp": None}, 600, "`exp` claim is missing"),
])
async def test_a_token_with_a_bad_claim_is_refused_saying_why(idp: LocalIdP, verifier: OidcVerifier,
                                                              extra: dict[str, Any], expires_in: int,
                                                              why: str) -> None:
    token = idp.issue(f"user-{uuid.uuid4().hex[:6]}", expires_in=expires_in, extra=extra)
    with pytest.raises(OidcRefused, match=why):
        await verifier.verify(token)


async def test_expiry_within_the_leeway_is_still_accepted(idp: LocalIdP, verifier: OidcVerifier) -> None:
    assert (await verifier.verify(idp.issue("carol", expires_in=-5)))["sub"] == "carol"


async def test_an_unsigned_alg_none_token_is_refused(idp: LocalIdP, verifier: OidcVerifier) -> None:
    header, claims, _ = _parts(idp.issue("mallory"))
    token = f"{_segment({**header, 'alg': 'none'})}.{_segment({**claims, 'sub': 'admin'})}."
    assert looks_like_jwt(token)
    with pytest.raises(OidcRefused, match="algorithm none not accepted"):
        await verifier.verify(token)


async def test_hs256_signed_with_the_public_key_is_refused(idp: LocalIdP, verifier: OidcVerifier) -> None:
    """Algorithm confusion: the RSA public key's bytes used as an HMAC secret."""
    header, claims, _ = _parts(idp.issue("mallory"))
    secret = idp.keys["rsa"].as_pem(private=False)
    signing_input = f"{_segment({**header, 'alg': 'HS256'})}.{_segment({**claims, 'sub': 'admin'})}"
    signature = _b64(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())
    with pytest.raises(OidcRefused, match="algorithm HS256 not accepted"):
        await verifier.verify(f"{signing_input}.{signature}")


async def test_a_tampered_payload_is_refused(idp: LocalIdP, verifier: OidcVerifier) -> None:
    header, claims, signature = _parts(idp.issue("mallory", groups=["viewers"]))
    forged = f"{_segment(header)}.{_segment({**claims, 'groups': ['admins']})}.{signature}"
    with pytest.raises(OidcRefused, match="signature does not verify"):
        await verifier.verify(forged)


@pytest.mark.parametrize("token", ["", "not-a-jwt", "a.b", "a.b.c.d", "ab$.cd.ef", "x" * 20000])
async def test_things_that_are_not_jwts_are_refused(verifier: OidcVerifier, token: str) -> None:
    with pytest.raises(OidcRefused):
        await verifier.verify(token)


def test_looks_like_jwt_is_a_cheap_shape_check(idp: LocalIdP) -> None:
    assert looks_like_jwt(idp.issue("dave"))
    assert not any(looks_like_jwt(t) for t in ["", "mg_apikey_123", "a.b", "a..c", "a.b.c.d", "é.b.c"])


async def test_a_rotated_key_verifies_after_one_refetch() -> None:
    async with LocalIdP() as idp:
        v = OidcVerifier(idp.issuer, "modelgate", idp.jwks_url)
        old_token = idp.issue("erin")
        await v.verify(old_token)
        idp.rotate()
        assert (await v.verify(idp.issue("erin")))["sub"] == "erin"
        assert idp.jwks_requests == 2
        with pytest.raises(OidcRefused, match="unknown signing key id"):  # the retired key is gone
            await v.verify(old_token)
        assert idp.jwks_requests == 2  # no second refetch within 30 s
        await v.aclose()


async def test_made_up_key_ids_cause_at_most_one_refetch() -> None:
    async with LocalIdP() as idp:
        v = OidcVerifier(idp.issuer, "modelgate", idp.jwks_url)
        await v.verify(idp.issue("frank"))
        header, claims, signature = _parts(idp.issue("frank"))

        async def attempt() -> None:
            kid = uuid.uuid4().hex
            with pytest.raises(OidcRefused, match=f"unknown signing key id '{kid}'"):
                await v.verify(f"{_segment({**header, 'kid': kid})}.{_segment(claims)}.{signature}")

        await asyncio.gather(*(attempt() for _ in range(30)))
        for _ in range(30):
            await attempt()
        assert idp.jwks_requests == 2
        await v.aclose()


async def test_concurrent_verifications_share_one_fetch() -> None:
    async with LocalIdP() as idp:
        v = OidcVerifier(idp.issuer, "modelgate", idp.jwks_url)
        results = await asyncio.gather(*(v.verify(idp.issue(f"user-{i}")) for i in range(20)))
        assert [c["sub"] for c in results] == [f"user-{i}" for i in range(20)]
        assert idp.jwks_requests == 1
        await v.aclose()


async def test_idp_down_and_no_keys_cached_is_unavailable_not_allowed() -> None:
    idp = LocalIdP().start()
    token = idp.issue("grace")
    idp.stop()
    v = OidcVerifier(idp.issuer, "modelgate", idp.jwks_url)
    with pytest.raises(OidcUnavailable, match="cannot get the identity provider's keys"):
        await v.verify(token)
    await v.aclose()


async def test_a_jwks_url_that_is_not_a_jwks_is_unavailable(idp: LocalIdP) -> None:
    v = OidcVerifier(idp.issuer, "modelgate", f"{idp.issuer}/.well-known/openid-configuration")
    with pytest.raises(OidcUnavailable, match="not a JWKS"):
        await v.verify(idp.issue("ivan"))
    await v.aclose()


async def test_a_header_with_odd_types_is_refused(idp: LocalIdP, verifier: OidcVerifier) -> None:
    header, claims, signature = _parts(idp.issue("judy"))
    for odd in ({**header, "alg": ["RS256"]}, {**header, "kid": 7}):
        with pytest.raises(OidcRefused):
            await verifier.verify(f"{_segment(odd)}.{_segment(claims)}.{signature}")


async def test_idp_down_with_keys_cached_still_verifies() -> None:
    idp = LocalIdP().start()
    v = OidcVerifier(idp.issuer, "modelgate", idp.jwks_url)
    await v.verify(idp.issue("heidi"))
    token = idp.issue("heidi")
    idp.stop()
    assert (await v.verify(token))["sub"] == "heidi"
    await v.aclose()


async def test_the_discovery_document_names_issuer_and_jwks(idp: LocalIdP) -> None:
    async with httpx.AsyncClient() as http:
        doc = (await http.get(f"{idp.issuer}/.well-known/openid-configuration")).json()
    assert doc["issuer"] == idp.issuer and doc["jwks_uri"] == idp.jwks_url
