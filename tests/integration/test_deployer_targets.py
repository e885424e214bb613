"""The deployment targets against real servers.

`sagemaker` and `ecs` run against moto's server (moto.server.ThreadedMotoServer on a free port), because
LocalStack's free edition has neither SageMaker nor ECS. moto has no UpdateEndpoint, so the test adds one to
its in-process server (re-creating the endpoint on the new config), and moto never runs ECS tasks, so the
ecs target is checked without waiting for the rollout (wait_seconds=0). `local` runs real inference
servers on models the target downloads from LocalStack's S3.
"""

from __future__ import annotations

import socket
import uuid

import httpx
import pytest
from aiobotocore.session import get_session
from moto.sagemaker.responses import SageMakerResponse
from moto.server import ThreadedMotoServer

from services.deployer.targets import DeployError, DeploySpec, EcsTarget, LocalTarget, SageMakerTarget
from shared.infra import boto_client
from tests.unit.test_deployer_inference import model_bytes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spec(version: int, artifact: str = "s3://models/fraud/model.tar.gz", group: str = "fraud") -> DeploySpec:
    return DeploySpec(str(uuid.uuid4()), group, "prod", version, f"{group}/{version}", artifact)


@pytest.fixture(scope="module")
def moto_url():
    def update_endpoint(self):  # type: ignore[no-untyped-def]  # moto lacks it: re-create on the new config
        from moto.core.responses import ActionResult

        endpoint = self.sagemaker_backend.create_endpoint(
            endpoint_name=self._get_param("EndpointName"), endpoint_config_name=self._get_param("EndpointConfigName"), tags=[]
        )
        return ActionResult({"EndpointArn": endpoint.arn})

    SageMakerResponse.update_endpoint = update_endpoint  # type: ignore[attr-defined]
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()
    del SageMakerResponse.update_endpoint  # type: ignore[attr-defined]


@pytest.fixture
async def moto_client(moto_url):
    clients = {}

    async def make(service: str):  # type: ignore[no-untyped-def]
        context = get_session().create_client(
            service, endpoint_url=moto_url, region_name="us-east-1", aws_access_key_id="t", aws_secret_access_key="t"
        )
        clients[service] = (context, await context.__aenter__())
        return clients[service][1]

    yield make
    for context, _client in clients.values():
        await context.__aexit__(None, None, None)


async def test_sagemaker_creates_the_stage_endpoint_then_updates_it_to_the_next_version(moto_client):
    client = await moto_client("sagemaker")
    namespace = f"t{uuid.uuid4().hex[:8]}"
    target = SageMakerTarget(client, namespace, "us-east-1", "arn:aws:iam::123456789012:role/serving",
                             "123456789012.dkr.ecr.us-east-1.amazonaws.com/modelgate-inference:1", poll_seconds=0.1, wait_seconds=10)
    first, second = spec(1), spec(2)
    url = await target.deploy(first)
    await target.verify(first, url)
    endpoint = await client.describe_endpoint(EndpointName=f"{namespace}-fraud-prod")
    assert url.endswith(f"/endpoints/{namespace}-fraud-prod/invocations")
    assert endpoint["EndpointStatus"] == "InService" and endpoint["EndpointConfigName"] == target.config_name(first)
    model = await client.describe_model(ModelName=target.config_name(first))
    assert model["PrimaryContainer"]["ModelDataUrl"] == first.artifact_uri
    assert await target.deploy(first) == url  # again after a crash: nothing new

    await target.verify(second, await target.deploy(second))
    endpoint = await client.describe_endpoint(EndpointName=f"{namespace}-fraud-prod")
    assert endpoint["EndpointConfigName"] == target.config_name(second)
    with pytest.raises(DeployError, match="not InService on"):
        await SageMakerTarget(client, namespace, "us-east-1", "r", "i", wait_seconds=0, poll_seconds=0).verify(first, url)


async def test_ecs_registers_a_revision_with_the_model_pinned_and_points_the_service_at_it(moto_client):
    client = await moto_client("ecs")
    cluster, service = f"serving-{uuid.uuid4().hex[:6]}", "fraud-prod"
    await client.create_cluster(clusterName=cluster)
    base = await client.register_task_definition(
        family=f"{cluster}-fraud", containerDefinitions=[{"name": "model", "image": "modelgate-inference:1", "memory": 512,
                                                          "environment": [{"name": "LOG_LEVEL", "value": "INFO"}]}]
    )
    await client.create_service(cluster=cluster, serviceName=service, taskDefinition=base["taskDefinition"]["taskDefinitionArn"], desiredCount=1)
    target = EcsTarget(client, cluster, "{group}-{stage}", "ns", endpoint_template="http://{stage}.serving.internal", wait_seconds=0)
    first = spec(1)
    url = await target.deploy(first)
    await target.verify(first, url)
    described = (await client.describe_services(cluster=cluster, services=[service]))["services"][0]
    definition = (await client.describe_task_definition(taskDefinition=described["taskDefinition"]))["taskDefinition"]
    env = {e["name"]: e["value"] for e in definition["containerDefinitions"][0]["environment"]}
    assert definition["revision"] == 2 and url == "http://prod.serving.internal"
    assert env == {"LOG_LEVEL": "INFO", "MODELGATE_MODEL_URI": first.artifact_uri, "MODELGATE_MODEL_VERSION_ID": "fraud/1",
                   "MODELGATE_DEPLOYMENT_ID": first.deployment_id}
    await target.deploy(first)  # again after a crash: no third revision
    assert (await client.describe_services(cluster=cluster, services=[service]))["services"][0]["taskDefinition"].endswith(":2")
    with pytest.raises(DeployError, match="not found"):
        await EcsTarget(client, cluster, "missing-{stage}", "ns", wait_seconds=0).deploy(first)

    pinned = DeploySpec(str(uuid.uuid4()), "fraud", "prod", 2, "fraud/2", "s3://models/fraud/2.tar.gz",
                        "sha256:" + "ab" * 32, "v-2")
    await target.deploy(pinned)
    unpinned = spec(3)
    await target.deploy(unpinned)

    async def environment() -> dict[str, str]:
        described = (await client.describe_services(cluster=cluster, services=[service]))["services"][0]
        definition = (await client.describe_task_definition(taskDefinition=described["taskDefinition"]))["taskDefinition"]
        return {e["name"]: e["value"] for e in definition["containerDefinitions"][0]["environment"]}

    env = await environment()
    assert env["MODELGATE_DEPLOYMENT_ID"] == unpinned.deployment_id
    assert "MODELGATE_MODEL_DIGEST" not in env and "MODELGATE_MODEL_S3_VERSION_ID" not in env  # not left from fraud/2


async def test_ecs_pins_the_artifacts_s3_version_and_digest_for_the_serving_container(moto_client):
    client = await moto_client("ecs")
    cluster = f"serving-{uuid.uuid4().hex[:6]}"
    await client.create_cluster(clusterName=cluster)
    base = await client.register_task_definition(
        family=f"{cluster}-fraud", containerDefinitions=[{"name": "model", "image": "modelgate-inference:1", "memory": 512}])
    await client.create_service(cluster=cluster, serviceName="fraud-prod", taskDefinition=base["taskDefinition"]["taskDefinitionArn"],
                                desiredCount=1)
    pinned = DeploySpec(str(uuid.uuid4()), "fraud", "prod", 2, "fraud/2", "s3://models/fraud/2.tar.gz", "sha256:" + "ab" * 32, "v-2")
    await EcsTarget(client, cluster, "{group}-{stage}", "ns", wait_seconds=0).deploy(pinned)
    described = (await client.describe_services(cluster=cluster, services=["fraud-prod"]))["services"][0]
    definition = (await client.describe_task_definition(taskDefinition=described["taskDefinition"]))["taskDefinition"]
    env = {e["name"]: e["value"] for e in definition["containerDefinitions"][0]["environment"]}
    assert env["MODELGATE_MODEL_S3_VERSION_ID"] == "v-2" and env["MODELGATE_MODEL_DIGEST"] == pinned.artifact_digest


@pytest.fixture
def bucket(localstack_endpoint, namespace):
    s3 = boto_client("s3", localstack_endpoint)
    name = f"{namespace}-artifacts"
    s3.create_bucket(Bucket=name)
    s3.put_object(Bucket=name, Key="fraud/1.joblib", Body=model_bytes())
    s3.put_object(Bucket=name, Key="fraud/2.joblib", Body=model_bytes(flip=True))
    s3.put_object(Bucket=name, Key="fraud/broken.joblib", Body=b"not a model")
    return name


@pytest.fixture
async def s3(localstack_endpoint):
    """The deployer's S3 client: the local target downloads the artifacts, its servers read no S3."""
    async with get_session().create_client(
        "s3", endpoint_url=localstack_endpoint, region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test"
    ) as client:
        yield client


async def predict(url: str) -> int:
    async with httpx.AsyncClient(timeout=5) as http:
        response = await http.post(f"{url}/invocations", json={"instances": [[3.0, 0.0, 0.0]]})
    response.raise_for_status()
    return response.json()["predictions"][0]


async def test_local_starts_the_new_server_beside_the_old_one_and_stops_the_old_one_only_when_told(bucket, s3, tmp_path):
    target = LocalTarget(tmp_path / "run", s3=s3)
    first, second = spec(1, f"s3://{bucket}/fraud/1.joblib"), spec(2, f"s3://{bucket}/fraud/2.joblib")
    try:
        old_url = await target.deploy(first)
        await target.verify(first, old_url)
        assert await predict(old_url) == 1
        new_url = await target.deploy(second)
        assert new_url != old_url
        assert await predict(old_url) == 1 and await predict(new_url) == 0  # both serve until the switch
        await target.retire(first)
        with pytest.raises(httpx.HTTPError):
            await predict(old_url)
        assert await predict(new_url) == 0
        assert await target.deploy(second) == new_url  # again after a crash: the same server
    finally:
        await target.close()


async def test_local_reports_why_an_artifact_cannot_be_served(bucket, s3, tmp_path):
    target = LocalTarget(tmp_path / "run", s3=s3)
    with pytest.raises(DeployError, match="not a joblib model"):
        await target.deploy(spec(3, f"s3://{bucket}/fraud/broken.joblib"))
    assert list((tmp_path / "run").glob("*.json")) == []


async def test_local_serves_the_live_version_again_after_a_restart_and_stops_leftovers(bucket, s3, tmp_path):
    live, leftover = spec(1, f"s3://{bucket}/fraud/1.joblib"), spec(2, f"s3://{bucket}/fraud/2.joblib")
    before = LocalTarget(tmp_path / "run", s3=s3)
    url = await before.deploy(live)
    await before.close()  # the deployer stopped: its servers too
    with pytest.raises(httpx.HTTPError):
        await predict(url)
    after = LocalTarget(tmp_path / "run", s3=s3)
    try:
        leftover_url = await after.deploy(leftover)  # as if a crash left it behind, neither live nor to resume
        await after.reconcile([(live, url)], unfinished=set())
        assert await predict(url) == 1  # back, at the same address
        with pytest.raises(httpx.HTTPError):
            await predict(leftover_url)
    finally:
        await after.close()
