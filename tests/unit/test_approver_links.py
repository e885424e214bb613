"""Decision links: signed, expiring, bound to one request; their key lives in Secrets Manager."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from services.approver.links import LinkSigner, load_or_create_key
from shared.errors import Refused
from shared.events import utcnow

SIGNER = LinkSigner(b"0123456789abcdef0123456789abcdef")


def refused(call) -> Refused:
    with pytest.raises(Refused) as error:
        call()
    assert error.value.status == 401
    return error.value


def test_a_link_carries_its_approver_request_and_expiry():
    now = utcnow()
    token, issued = SIGNER.issue("a1", "kim", timedelta(hours=24), now=now)
    claims = SIGNER.verify(token, "a1")
    assert (claims.approver, claims.approval_id, claims.nonce) == ("kim", "a1", issued.nonce)
    assert claims.expires_at == (now + timedelta(hours=24)).replace(microsecond=0)
    assert SIGNER.issue("a1", "kim", timedelta(hours=24))[1].nonce != issued.nonce  # every link is its own


def test_a_link_signed_with_another_key_or_altered_is_refused():
    token, _ = SIGNER.issue("a1", "kim", timedelta(hours=1))
    other, _ = LinkSigner(b"x" * 32).issue("a1", "kim", timedelta(hours=1))
    raj, _ = SIGNER.issue("a1", "raj", timedelta(hours=1))
    swapped = raj.split(".")[0] + "." + token.split(".")[1]
    for bad in (other, swapped, token[:-3], token.split(".")[0], "", "...", "a.b"):
        assert "not valid" in str(refused(lambda bad=bad: SIGNER.verify(bad, "a1")))


def test_a_link_for_another_request_or_past_its_expiry_is_refused():
    token, _ = SIGNER.issue("a1", "kim", timedelta(minutes=5))
    assert "another approval request" in str(refused(lambda: SIGNER.verify(token, "a2")))
    later = utcnow() + timedelta(minutes=5, seconds=1)
    assert "expired at" in str(refused(lambda: SIGNER.verify(token, "a1", now=later)))


def test_a_short_key_is_refused():
    with pytest.raises(ValueError, match="at least 32 bytes"):
        LinkSigner(b"short")


class FakeSecretsManager:
    """Secrets Manager's calls the approver makes, including the race of two replicas creating the key."""

    class exceptions:
        class ResourceNotFoundException(Exception):
            pass

        class ResourceExistsException(Exception):
            pass

    def __init__(self, lose_race: bool = False):
        self.secrets: dict[str, str] = {}
        self.lose_race = lose_race

    async def get_secret_value(self, SecretId: str) -> dict:
        if SecretId not in self.secrets:
            raise self.exceptions.ResourceNotFoundException(SecretId)
        return {"SecretString": self.secrets[SecretId]}

    async def create_secret(self, Name: str, SecretString: str, **_: object) -> dict:
        if self.lose_race:
            self.secrets[Name] = "the-other-replicas-key-0123456789abcdef"
        if Name in self.secrets:
            raise self.exceptions.ResourceExistsException(Name)
        self.secrets[Name] = SecretString
        return {}


def test_the_key_is_created_once_then_read_back():
    secrets = FakeSecretsManager()
    first = asyncio.run(load_or_create_key(secrets, "ns/approver/hmac-key"))
    assert len(first) == 64 and asyncio.run(load_or_create_key(secrets, "ns/approver/hmac-key")) == first


def test_a_replica_that_loses_the_race_to_create_the_key_uses_the_winners():
    secrets = FakeSecretsManager(lose_race=True)
    assert asyncio.run(load_or_create_key(secrets, "k")) == b"the-other-replicas-key-0123456789abcdef"
