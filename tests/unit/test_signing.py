"""Signed events without a network: what a consumer accepts and what it refuses, and key rotation. The public
keys' Parameter Store is a dict here (the same checks run against LocalStack in
tests/integration/test_signed_events.py)."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from shared.events import utcnow
from shared.signing import (
    Forged,
    KeyRing,
    Signer,
    Unverifiable,
    Verifier,
    private_key_from_secret,
    publish_public_key,
)
from shared.topology import signing_keys_parameter
from tests.factories import approval_decided, model_registered


class ParameterNotFound(Exception):
    pass


class Parameters:
    """Just enough of SSM's GetParameter/PutParameter for the key ring."""

    class exceptions:  # noqa: N801 - the shape of a boto client
        ParameterNotFound = ParameterNotFound

    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        self.reads = 0

    async def get_parameter(self, Name: str) -> dict:  # noqa: N803
        self.reads += 1
        if Name not in self.values:
            raise ParameterNotFound(Name)
        return {"Parameter": {"Value": self.values[Name]}}

    async def put_parameter(self, Name: str, Value: str, **_: object) -> None:  # noqa: N803
        self.values[Name] = Value


def signer(service: str, secret: bytes = b"one") -> Signer:
    return Signer(service, private_key_from_secret(secret + service.encode()))


async def listed(ssm: Parameters, *signers: Signer) -> None:
    for each in signers:
        await publish_public_key(ssm, signing_keys_parameter("ns", each.service), each)


@pytest.fixture
async def ssm() -> Parameters:
    ssm = Parameters()
    await listed(ssm, signer("registrar"), signer("approver"), signer("deployer"))
    return ssm


def verifier(ssm: Parameters) -> Verifier:
    return Verifier(KeyRing(ssm, "ns", min_refresh_seconds=0))


async def refused(ssm: Parameters, body: str) -> Forged:
    with pytest.raises(Forged) as caught:
        await verifier(ssm).check(body)
    return caught.value


async def test_an_event_signed_by_its_owner_verifies_and_still_parses(ssm):
    body = signer("approver").sign(approval_decided().model_dump_json())
    await verifier(ssm).check(body)
    assert json.loads(body)["signature"]["key_id"].startswith("approver-")


async def test_an_unsigned_event_is_refused(ssm):
    assert (await refused(ssm, approval_decided().model_dump_json())).kind == "unsigned"


async def test_a_changed_field_breaks_the_signature(ssm):
    body = json.loads(signer("approver").sign(approval_decided().model_dump_json()))
    body["payload"]["stage"] = "prod"
    forged = await refused(ssm, json.dumps(body))
    assert forged.kind == "bad_signature" and "changed after signing" in str(forged)


async def test_an_event_claiming_another_producer_is_refused_even_when_signed(ssm):
    body = json.loads(approval_decided().model_dump_json())
    body["producer"] = "registrar"  # the registrar does not own ApprovalDecided
    forged = await refused(ssm, json.dumps(body))
    assert forged.kind == "not_owner" and "only the approver" in str(forged)


async def test_another_producers_key_cannot_sign_for_the_owner(ssm):
    body = json.loads(signer("approver").sign(approval_decided().model_dump_json()))
    registrar = signer("registrar")
    body["signature"] = json.loads(Signer("registrar", registrar.private).sign(model_registered().model_dump_json()))["signature"]
    assert (await refused(ssm, json.dumps(body))).kind == "unknown_key"


def test_a_producer_refuses_to_sign_what_it_does_not_own():
    with pytest.raises(ValueError, match="may not sign"):
        signer("registrar").sign(approval_decided().model_dump_json())


async def test_an_old_event_is_refused_as_a_replay(ssm):
    old = approval_decided().model_copy(update={"occurred_at": utcnow() - timedelta(days=30)})
    assert (await refused(ssm, signer("approver").sign(old.model_dump_json()))).kind == "too_old"


@pytest.mark.parametrize("body", ["{not json", "[1, 2]", json.dumps({"event_type": "ModelRetired", "producer": "registrar"})])
async def test_what_is_not_an_event_is_refused_with_the_reason(ssm, body):
    assert (await refused(ssm, body)).kind in {"malformed", "unknown_type"}


async def test_a_rotated_key_is_picked_up_and_the_previous_key_still_verifies(ssm):
    check = verifier(ssm)
    before = signer("approver").sign(approval_decided().model_dump_json())
    await check.check(before)
    rotated = signer("approver", secret=b"two")
    await listed(ssm, rotated)
    await check.check(rotated.sign(approval_decided().model_dump_json()))  # unknown key id: read the list again
    await check.check(before)  # in flight from before the rotation


async def test_an_unknown_key_right_after_a_read_is_retried_not_refused(ssm):
    check = Verifier(KeyRing(ssm, "ns", min_refresh_seconds=60))
    await check.check(signer("approver").sign(approval_decided().model_dump_json()))
    with pytest.raises(Unverifiable):
        await check.check(signer("approver", secret=b"new").sign(approval_decided().model_dump_json()))


async def test_keys_are_read_once_not_per_event(ssm):
    check, reads = verifier(ssm), ssm.reads
    for _ in range(50):
        await check.check(signer("approver").sign(approval_decided().model_dump_json()))
    assert ssm.reads - reads == 1
