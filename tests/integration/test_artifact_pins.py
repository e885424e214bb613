"""What was approved is what is served, against LocalStack's real S3 and SSM.

A registration pins its artifact (SHA-256 digest and S3 VersionId), the approver passes the pin on, and
the deployer refuses bytes that no longer match: DeploymentFailed "artifact changed since approval", at
once, with the Parameter Store pointer left as it was. In a versioned bucket an overwrite does not matter:
the pinned version is what is served. The `local` target's inference server gets the checked file and its
digest, re-checks it, and runs without the deployer's credentials.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker
from structlog.testing import capture_logs

from services.deployer.deploy import DeployOptions, on_approval_decided, request_rollback, run_stage
from services.deployer.models import Deployment
from services.deployer.settings import DeployerSettings
from services.deployer.targets import LocalTarget, Target
from shared.aws import AwsClients
from shared.db import OutboxRow, UnitOfWork, create_tables, make_engine
from shared.events import Container, Envelope, ModelRegistered, ModelRegisteredPayload, parse_event
from shared.infra import boto_client, provision
from shared.pins import PREFIX, Pin, digest_of_checksum, pin_object
from shared.settings import REPO_ROOT
from shared.topology import parameter_name
from tests.factories import approval_decided
from tests.integration.test_approver_harness import Approver, bearer
from tests.integration.test_registrar_api import registrar_client, registration
from tests.unit.test_deployer_inference import model_bytes

FAST = DeployOptions(attempts=3, retry_seconds=0, lease_seconds=15)


def sha256(content: bytes) -> str:
    return PREFIX + hashlib.sha256(content).hexdigest()


@pytest.fixture
def bucket(localstack_endpoint, namespace) -> str:
    """The namespace's artifact bucket, as shared.infra provisions it: versioned."""
    return provision(namespace, endpoint_url=localstack_endpoint, services=()).bucket


@pytest.fixture
def plain_bucket(localstack_endpoint, namespace) -> str:
    """A bucket without versioning: an overwrite replaces the approved bytes for good."""
    name = f"{namespace}-plain"
    boto_client("s3", localstack_endpoint).create_bucket(Bucket=name)
    return name


@pytest.fixture
async def aws(localstack_endpoint, namespace):
    settings = DeployerSettings(aws_endpoint_url=localstack_endpoint, namespace=namespace, database_url="sqlite+aiosqlite://")
    async with AwsClients(settings, ("s3", "ssm")) as clients:
        yield clients


def put(endpoint: str, bucket: str, key: str, body: bytes, checksum: bool = True) -> dict[str, Any]:
    extra = {"ChecksumAlgorithm": "SHA256"} if checksum else {}
    return boto_client("s3", endpoint).put_object(Bucket=bucket, Key=key, Body=body, **extra)


# ---------------------------------------------------------------- registration


async def test_registration_records_the_digest_from_s3s_checksum_and_the_version_id(localstack_endpoint, bucket, plain_bucket, aws, tmp_path):
    body = model_bytes()
    put_response = put(localstack_endpoint, bucket, "fraud/model.skops", body)
    async with registrar_client(f"sqlite+aiosqlite:///{tmp_path}/r.db", aws=aws, artifact_buckets=[bucket, plain_bucket]) as api:
        created = (await api.post("/v1/groups/fraud/versions", json=registration(artifact_uri=f"s3://{bucket}/fraud/model.skops"))).json()
        read = (await api.get("/v1/groups/fraud/versions/1")).json()
        async with api.runtime.sessionmaker() as session:
            [event] = [parse_event(r.body) for r in await session.scalars(select(OutboxRow))]
    assert created["artifact_digest"] == read["artifact_digest"] == sha256(body)
    assert read["artifact_version_id"] == put_response["VersionId"]
    assert isinstance(event, ModelRegistered)
    assert (event.payload.artifact_digest, event.payload.artifact_version_id) == (sha256(body), put_response["VersionId"])


async def test_registration_hashes_an_object_without_a_sha256_checksum(localstack_endpoint, bucket, plain_bucket, aws, tmp_path):
    body = b"weights " * 1000
    put(localstack_endpoint, bucket, "fraud/crc.bin", body, checksum=False)  # LocalStack keeps a CRC32 only
    put(localstack_endpoint, plain_bucket, "fraud/plain.bin", body, checksum=False)
    assert "ChecksumSHA256" not in boto_client("s3", localstack_endpoint).head_object(
        Bucket=bucket, Key="fraud/crc.bin", ChecksumMode="ENABLED")
    async with registrar_client(f"sqlite+aiosqlite:///{tmp_path}/r.db", aws=aws, artifact_buckets=[bucket, plain_bucket]) as api:
        versioned = (await api.post("/v1/groups/fraud/versions", json=registration(artifact_uri=f"s3://{bucket}/fraud/crc.bin"))).json()
        plain = (await api.post("/v1/groups/fraud/versions", json=registration(artifact_uri=f"s3://{plain_bucket}/fraud/plain.bin"))).json()
    assert versioned["artifact_digest"] == plain["artifact_digest"] == sha256(body)
    assert versioned["artifact_version_id"] and plain["artifact_version_id"] is None  # no versioning, no VersionId


async def test_a_multipart_uploads_composite_checksum_is_not_taken_for_a_digest(localstack_endpoint, bucket, aws):
    s3 = boto_client("s3", localstack_endpoint)
    parts = [b"a" * (5 * 2**20), b"b" * 100]
    upload = s3.create_multipart_upload(Bucket=bucket, Key="big.bin", ChecksumAlgorithm="SHA256")
    done = []
    for number, part in enumerate(parts, 1):
        sent = s3.upload_part(Bucket=bucket, Key="big.bin", UploadId=upload["UploadId"], PartNumber=number, Body=part,
                              ChecksumAlgorithm="SHA256")
        done.append({"PartNumber": number, "ETag": sent["ETag"], "ChecksumSHA256": sent["ChecksumSHA256"]})
    s3.complete_multipart_upload(Bucket=bucket, Key="big.bin", UploadId=upload["UploadId"], MultipartUpload={"Parts": done})
    head = s3.head_object(Bucket=bucket, Key="big.bin", ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"].endswith("-2") and digest_of_checksum(head) is None
    pin = await pin_object(aws["s3"], bucket, "big.bin")
    assert pin == Pin(sha256(b"".join(parts)), head["VersionId"])


async def test_the_cli_upload_asks_s3_for_a_sha256_checksum(localstack_endpoint, bucket, namespace, tmp_path, monkeypatch):
    from modelgate import AsyncClient

    (tmp_path / "model.skops").write_bytes(model_bytes())
    async with AsyncClient(namespace=namespace, aws_endpoint=localstack_endpoint) as mg:  # the CLI uploads through it
        uri = await mg.upload(tmp_path / "model.skops", "fraud")
    key = uri.removeprefix(f"s3://{bucket}/")
    head = boto_client("s3", localstack_endpoint).head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    assert digest_of_checksum(head) == sha256(model_bytes())


async def test_the_approver_passes_the_pin_on_to_its_requests_and_decisions(database_url):
    approver = await Approver.start(database_url)
    pin = {"artifact_digest": sha256(b"m"), "artifact_version_id": "v-1"}
    try:
        await approver.deliver(ModelRegistered(
            producer="registrar", correlation_id="fraud/1",
            payload=ModelRegisteredPayload(group="fraud", version=1, model_version_id="fraud/1", artifact_uri="s3://b/m",
                                           registered_by="ana", metrics={"auc": 0.93}, **pin),
        ))
        await approver.deployed("fraud", 1, "dev")  # opens test, which needs a person
        [decided] = await approver.published("ApprovalDecided")  # dev: automatic
        [requested] = [e for e in await approver.published("ApprovalRequested") if e.payload.stage == "test"]
        async with approver.http() as client:
            [listed] = (await client.get("/v1/approvals", params={"status": "pending"}, headers=bearer("admin"))).json()
    finally:
        await approver.close()
    for event in (decided, requested):
        assert (event.payload.artifact_digest, event.payload.artifact_version_id) == (pin["artifact_digest"], "v-1")
    assert (listed["artifact_digest"], listed["artifact_version_id"]) == (pin["artifact_digest"], "v-1")  # what approvers see


# ---------------------------------------------------------------- deploying


@dataclass
class Deployer:
    """The deployer's handler and worker step on an SQLite file, with LocalStack's S3 and SSM."""

    sessionmaker: Any
    aws: Any
    targets: dict[str, Target]
    group: str

    async def approve(self, version: int, uri: str, pin: Pin | None, stage: str = "prod", containers: Any = ()) -> None:
        event = approval_decided(self.group, version, stage, approval_id=str(uuid.uuid4()), artifact_uri=uri,
                                 artifact_digest=pin.digest if pin else None, artifact_version_id=pin.version_id if pin else None,
                                 **({"containers": list(containers)} if containers else {}))
        async with UnitOfWork(self.sessionmaker) as uow:
            await partial(on_approval_decided, targets=self.targets, wake=asyncio.Event())(event, uow)
            await uow.commit()
        await self.run(stage)

    async def rollback(self, stage: str = "prod") -> None:
        async with UnitOfWork(self.sessionmaker) as uow:
            await request_rollback(uow, self.group, stage, self.targets, "ops", None)
            await uow.commit()
        await self.run(stage)

    async def run(self, stage: str) -> None:
        async with UnitOfWork(self.sessionmaker) as uow:
            await run_stage(uow, self.group, stage, self.aws["ssm"], self.targets, FAST, self.aws["s3"])

    async def last(self) -> Deployment:
        async with self.sessionmaker() as session:
            return (await session.scalars(select(Deployment).order_by(Deployment.created_at.desc()))).first()

    async def events(self, event_type: str) -> list[Envelope]:
        async with self.sessionmaker() as session:
            events = [parse_event(r.body) for r in await session.scalars(select(OutboxRow).order_by(OutboxRow.id))]
        return [e for e in events if e.event_type == event_type]

    async def pointer(self, stage: str = "prod") -> dict[str, Any] | None:
        try:
            found = await self.aws["ssm"].get_parameter(Name=parameter_name(self.group, stage))
        except ClientError:
            return None
        return json.loads(found["Parameter"]["Value"])

    async def close(self) -> None:
        for target in self.targets.values():
            await target.close()


@pytest.fixture
async def deployer(aws, namespace, tmp_path):
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path}/d.db")
    await create_tables(engine)
    made = Deployer(async_sessionmaker(engine, expire_on_commit=False), aws, {}, group=namespace)
    yield made
    await made.close()
    await engine.dispose()


async def pinned(aws: Any, bucket: str, key: str) -> Pin:
    return await pin_object(aws["s3"], bucket, key)


async def test_a_good_artifact_deploys_and_the_pointer_carries_its_pin(localstack_endpoint, bucket, deployer):
    put(localstack_endpoint, bucket, "m/1.bin", b"one")
    pin = await pinned(deployer.aws, bucket, "m/1.bin")
    await deployer.approve(1, f"s3://{bucket}/m/1.bin", pin)
    assert (await deployer.last()).status == "Deployed"
    pointer = await deployer.pointer()
    assert pointer["version"] == 1
    assert (pointer["artifact_digest"], pointer["artifact_version_id"]) == (sha256(b"one"), pin.version_id)
    [deployed] = await deployer.events("Deployed")
    assert (deployed.payload.artifact_digest, deployed.payload.artifact_version_id) == (pin.digest, pin.version_id)


async def test_an_artifact_overwritten_after_approval_is_refused_and_the_pointer_stays(localstack_endpoint, plain_bucket, deployer):
    for version in (1, 2):
        put(localstack_endpoint, plain_bucket, f"m/{version}.bin", b"approved %d" % version, checksum=version == 1)
    first, second = [await pinned(deployer.aws, plain_bucket, f"m/{v}.bin") for v in (1, 2)]
    await deployer.approve(1, f"s3://{plain_bucket}/m/1.bin", first)
    put(localstack_endpoint, plain_bucket, "m/2.bin", b"not what was approved", checksum=False)
    await deployer.approve(2, f"s3://{plain_bucket}/m/2.bin", second)

    refused = await deployer.last()
    assert refused.version == 2 and refused.status == "Failed" and refused.attempts == 1  # not retried
    assert refused.reason.startswith("artifact changed since approval")
    assert f"expected {sha256(b'approved 2')}" in refused.reason and sha256(b"not what was approved") in refused.reason
    [failed] = await deployer.events("DeploymentFailed")
    assert failed.payload.reason == refused.reason and failed.payload.model_version_id == f"{deployer.group}/2"
    assert (await deployer.pointer())["version"] == 1


async def test_every_step_of_a_pipeline_is_checked_and_a_changed_step_fails_the_deployment(localstack_endpoint, plain_bucket, deployer):
    def steps(version: int, pins: list[Pin]) -> list[Container]:
        return [Container(name=name, artifact_uri=f"s3://{plain_bucket}/p{version}/{name}.bin", artifact_digest=pin.digest,
                          artifact_version_id=pin.version_id) for name, pin in zip(("scaler", "model"), pins, strict=True)]

    for version in (1, 2):
        for name in ("scaler", "model"):
            put(localstack_endpoint, plain_bucket, f"p{version}/{name}.bin", b"%s %d" % (name.encode(), version))
    first = [await pinned(deployer.aws, plain_bucket, f"p1/{n}.bin") for n in ("scaler", "model")]
    second = [await pinned(deployer.aws, plain_bucket, f"p2/{n}.bin") for n in ("scaler", "model")]
    await deployer.approve(1, f"s3://{plain_bucket}/p1/model.bin", first[1], containers=steps(1, first))
    assert (await deployer.last()).status == "Deployed"
    pointer = await deployer.pointer()
    assert [(c["name"], c["artifact_digest"]) for c in pointer["containers"]] == [("scaler", first[0].digest), ("model", first[1].digest)]
    [deployed] = await deployer.events("Deployed")
    assert [c.name for c in deployed.payload.containers] == ["scaler", "model"]

    put(localstack_endpoint, plain_bucket, "p2/scaler.bin", b"another scaler", checksum=False)  # the model is unchanged
    await deployer.approve(2, f"s3://{plain_bucket}/p2/model.bin", second[1], containers=steps(2, second))
    refused = await deployer.last()
    assert refused.status == "Failed" and refused.attempts == 1 and refused.reason.startswith("artifact changed since approval")
    assert "p2/scaler.bin" in refused.reason
    assert (await deployer.pointer())["version"] == 1


async def test_in_a_versioned_bucket_an_overwrite_changes_nothing_a_deleted_version_is_refused(localstack_endpoint, bucket, deployer):
    put(localstack_endpoint, bucket, "m.bin", b"approved")
    pin = await pinned(deployer.aws, bucket, "m.bin")
    put(localstack_endpoint, bucket, "m.bin", b"overwritten", checksum=False)
    await deployer.approve(1, f"s3://{bucket}/m.bin", pin)
    assert (await deployer.last()).status == "Deployed"  # the pinned version is still there, unchanged

    boto_client("s3", localstack_endpoint).delete_object(Bucket=bucket, Key="m.bin", VersionId=pin.version_id)
    await deployer.approve(2, f"s3://{bucket}/m.bin", pin)
    refused = await deployer.last()
    assert refused.status == "Failed" and refused.attempts == 1
    assert refused.reason.startswith(f"artifact changed since approval: version {pin.version_id} of s3://{bucket}/m.bin is gone")
    assert (await deployer.pointer())["version"] == 1


async def test_a_rollback_to_a_version_whose_object_was_overwritten_is_refused(localstack_endpoint, plain_bucket, deployer):
    pins = []
    for version in (1, 2):
        put(localstack_endpoint, plain_bucket, f"m/{version}.bin", b"approved %d" % version)
        pins.append(await pinned(deployer.aws, plain_bucket, f"m/{version}.bin"))
        await deployer.approve(version, f"s3://{plain_bucket}/m/{version}.bin", pins[-1])
    put(localstack_endpoint, plain_bucket, "m/1.bin", b"tampered")
    await deployer.rollback()

    refused = await deployer.last()
    assert refused.rollback and refused.version == 1 and refused.artifact_digest == pins[0].digest
    assert refused.status == "Failed" and refused.reason.startswith("artifact changed since approval")
    assert f"expected {pins[0].digest}" in refused.reason
    assert (await deployer.pointer())["version"] == 2


async def test_a_version_registered_before_pinning_deploys_as_before_with_a_warning(localstack_endpoint, plain_bucket, deployer):
    put(localstack_endpoint, plain_bucket, "old.bin", b"old")
    with capture_logs() as logs:
        await deployer.approve(1, f"s3://{plain_bucket}/old.bin", None)
    assert (await deployer.last()).status == "Deployed"
    assert (await deployer.pointer())["artifact_digest"] is None
    assert any(e["event"] == "artifact_not_pinned" and e["log_level"] == "warning" for e in logs)


# ---------------------------------------------------------------- the local inference server


async def predict(url: str) -> int:
    async with httpx.AsyncClient(timeout=5) as http:
        response = await http.post(f"{url}/invocations", json={"instances": [[3.0, 0.0, 0.0]]})
    response.raise_for_status()
    return response.json()["predictions"][0]


async def test_local_serves_the_pinned_bytes_with_a_minimal_environment(localstack_endpoint, bucket, deployer, tmp_path, monkeypatch):
    for name in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "MODELGATE_SERVICE_KEY", "MODELGATE_ADMIN_TOKEN"):
        monkeypatch.setenv(name, f"secret-{name}")
    put(localstack_endpoint, bucket, "fraud.skops", model_bytes())
    pin = await pinned(deployer.aws, bucket, "fraud.skops")
    expected = model_bytes()
    put(localstack_endpoint, bucket, "fraud.skops", model_bytes(flip=True))  # the latest is another model now
    deployer.targets["prod"] = LocalTarget(tmp_path / "run", s3=deployer.aws["s3"])

    await deployer.approve(1, f"s3://{bucket}/fraud.skops", pin)
    live = await deployer.last()
    assert live.status == "Deployed", live.reason
    state = json.loads((tmp_path / "run" / f"{live.id}.json").read_text())
    environ = dict(
        line.split("=", 1) for line in Path(f"/proc/{state['pid']}/environ").read_text().split("\0") if "=" in line
    )
    served = Path(environ["MODELGATE_MODEL_FILE"])
    assert served.read_bytes() == expected and environ["MODELGATE_MODEL_DIGEST"] == pin.digest
    assert not {k for k in environ if k.startswith("AWS_") or "SECRET" in k or "TOKEN" in k}
    assert set(environ) <= {"PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV"} | {
        k for k in environ if k.startswith("MODELGATE_") and not k.endswith(("KEY", "TOKEN"))}
    async with httpx.AsyncClient(timeout=5) as http:
        health = (await http.get(f"{live.endpoint_url}/healthz")).json()
    assert health["model_digest"] == pin.digest
    assert await predict(live.endpoint_url) == 1  # the approved model's answer, not the flipped one's


async def test_local_refuses_to_start_a_server_on_bytes_that_changed(localstack_endpoint, plain_bucket, deployer, tmp_path):
    put(localstack_endpoint, plain_bucket, "fraud.skops", model_bytes())
    pin = await pinned(deployer.aws, plain_bucket, "fraud.skops")
    put(localstack_endpoint, plain_bucket, "fraud.skops", model_bytes(flip=True))
    deployer.targets["prod"] = LocalTarget(tmp_path / "run", s3=deployer.aws["s3"])
    await deployer.approve(1, f"s3://{plain_bucket}/fraud.skops", pin)
    refused = await deployer.last()
    assert refused.status == "Failed" and refused.attempts == 1
    assert refused.reason.startswith("artifact changed since approval") and f"expected {pin.digest}" in refused.reason
    assert list((tmp_path / "run").glob("*.json")) == []  # no server was started
    assert not list((tmp_path / "run").glob("artifacts/*/*"))  # and the wrong bytes were not kept


def test_the_inference_server_refuses_a_file_whose_digest_differs(tmp_path):
    model = tmp_path / "model.skops"
    model.write_bytes(model_bytes())
    env = {"PATH": os.environ["PATH"], "MODELGATE_MODEL_URI": "s3://b/model.skops", "MODELGATE_MODEL_FILE": str(model),
           "MODELGATE_MODEL_DIGEST": sha256(b"what was approved"), "MODELGATE_HTTP_PORT": "1"}
    done = subprocess.run([sys.executable, "-m", "services.inference"], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 2
    assert "artifact changed since approval" in done.stderr and sha256(model_bytes()) in done.stderr
    assert f"expected {sha256(b'what was approved')}" in done.stderr


def test_s3s_full_object_checksum_is_the_digest():
    checksum = base64.b64encode(hashlib.sha256(b"x").digest()).decode()
    assert digest_of_checksum({"ChecksumSHA256": checksum, "ChecksumType": "FULL_OBJECT"}) == sha256(b"x")
    assert digest_of_checksum({"ChecksumSHA256": checksum + "-3"}) is None
    assert digest_of_checksum({"ChecksumCRC32": "NhCmhg=="}) is None


def test_a_serving_container_fetches_exactly_the_pinned_version(localstack_endpoint, bucket, tmp_path):
    """ECS/SageMaker containers fetch the artifact themselves (MODELGATE_MODEL_S3_VERSION_ID), then check it."""
    from services.inference.model import BadArtifact, check_digest, fetch_artifact

    first = put(localstack_endpoint, bucket, "m.skops", model_bytes())
    put(localstack_endpoint, bucket, "m.skops", model_bytes(flip=True))
    s3 = boto_client("s3", localstack_endpoint)
    path = fetch_artifact(f"s3://{bucket}/m.skops", tmp_path, s3, first["VersionId"])
    assert path.read_bytes() == model_bytes()
    check_digest(path, sha256(model_bytes()))
    (tmp_path / "latest").mkdir()
    latest = fetch_artifact(f"s3://{bucket}/m.skops", tmp_path / "latest", s3)  # no version: the overwrite
    with pytest.raises(BadArtifact, match="artifact changed since approval"):
        check_digest(latest, sha256(model_bytes()))
