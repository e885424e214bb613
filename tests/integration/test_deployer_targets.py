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
import structlog.testing
from aiobotocore.session import get_session
from moto.sagemaker.responses import SageMakerResponse
from moto.server import ThreadedMotoServer

from services.deployer.targets import DeployError, DeploySpec, EcsTarget, LocalTarget, SageMakerTarget
from shared.events import Container
from shared.infra import boto_client
from tests.unit.test_deployer_inference import model_bytes, pickled_model_bytes


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
    name = target.endpoint_name(first)
    assert name.startswith(f"{namespace}-fraud-prod-") and name == target.endpoint_name(second)
    endpoint = await client.describe_endpoint(EndpointName=name)
    assert url.endswith(f"/endpoints/{name}/invocations")
    assert endpoint["EndpointStatus"] == "InService" and endpoint["EndpointConfigName"] == target.config_name(first)
    model = await client.describe_model(ModelName=target.config_name(first))
    assert model["PrimaryContainer"]["ModelDataUrl"] == first.artifact_uri
    assert await target.deploy(first) == url  # again after a crash: nothing new

    await target.verify(second, await target.deploy(second))
    endpoint = await client.describe_endpoint(EndpointName=name)
    assert endpoint["EndpointConfigName"] == target.config_name(second)
    served = await target.serving(second, url)  # what `modelgate verify` compares: endpoint -> config -> model
    assert (served.model_version_id, served.deployment_id) == ("fraud/2", second.deployment_id)
    assert (await target.serving(spec(1, group="elsewhere"), None)).model_version_id is None
    with pytest.raises(DeployError, match="not InService on"):
        await SageMakerTarget(client, namespace, "us-east-1", "r", "i", wait_seconds=0, poll_seconds=0).verify(first, url)


async def test_sagemaker_serves_an_inference_pipeline_as_one_model_of_serial_containers(moto_client):
    client = await moto_client("sagemaker")
    sent: list[dict] = []
    client.meta.events.register("provide-client-params.sagemaker.CreateModel", lambda params, **_: sent.append(params))
    namespace = f"t{uuid.uuid4().hex[:8]}"
    image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/modelgate-inference:1"
    target = SageMakerTarget(client, namespace, "us-east-1", "arn:aws:iam::123456789012:role/serving", image,
                             poll_seconds=0.1, wait_seconds=10)
    steps = (Container(name="scaler", artifact_uri="s3://models/fraud/scaler.tar.gz", artifact_digest="sha256:" + "a" * 64,
                       image="123456789012.dkr.ecr.us-east-1.amazonaws.com/sklearn:1", environment={"SAGEMAKER_PROGRAM": "x"}),
             Container(name="model", artifact_uri="s3://models/fraud/model.tar.gz"))
    pipeline = DeploySpec(str(uuid.uuid4()), "fraud", "prod", 1, "fraud/1", steps[-1].artifact_uri, containers=steps)
    await target.verify(pipeline, await target.deploy(pipeline))

    assert len(sent) == 1 and "PrimaryContainer" not in sent[0]
    assert sent[0]["InferenceExecutionConfig"] == {"Mode": "Serial"}
    scaler, model = sent[0]["Containers"]
    assert (scaler["ContainerHostname"], scaler["Image"], scaler["ModelDataUrl"]) == (
        "scaler", steps[0].image, steps[0].artifact_uri)
    assert scaler["Environment"] == {"SAGEMAKER_PROGRAM": "x", "MODELGATE_MODEL_VERSION_ID": "fraud/1", "MODELGATE_STEP": "scaler",
                                     "MODELGATE_DEPLOYMENT_ID": pipeline.deployment_id, "MODELGATE_MODEL_DIGEST": steps[0].artifact_digest}
    assert (model["ContainerHostname"], model["Image"], model["ModelDataUrl"]) == ("model", image, steps[1].artifact_uri)
    described = await client.describe_model(ModelName=target.config_name(pipeline))
    assert [c["ModelDataUrl"] for c in described["Containers"]] == [s.artifact_uri for s in steps]
    served = await target.serving(pipeline, None)  # drift reads the pipeline's model back
    assert (served.model_version_id, served.deployment_id) == ("fraud/1", pipeline.deployment_id)
    assert "2 containers, serial" in served.detail


async def test_sagemaker_gives_groups_that_look_alike_their_own_endpoints(moto_client):
    """`fraud_detector` and `fraud.detector`, and two long names sharing 60 characters, once shared an endpoint."""
    client = await moto_client("sagemaker")
    namespace = f"t{uuid.uuid4().hex[:8]}"
    target = SageMakerTarget(client, namespace, "us-east-1", "arn:aws:iam::123456789012:role/serving",
                             "123456789012.dkr.ecr.us-east-1.amazonaws.com/modelgate-inference:1", poll_seconds=0.1, wait_seconds=10)
    long = "credit-card-fraud-detector-for-the-european-retail-banking-u"
    specs = [spec(1, group="fraud_detector"), spec(1, group="fraud.detector"), spec(1, group=long + "nit-a"),
             spec(1, group=long + "nit-b")]
    for each in specs:
        await target.verify(each, await target.deploy(each))
    endpoints = [await client.describe_endpoint(EndpointName=target.endpoint_name(each)) for each in specs]
    assert len({e["EndpointName"] for e in endpoints}) == len(specs)
    assert [e["EndpointConfigName"] for e in endpoints] == [target.config_name(each) for each in specs]


async def test_sagemaker_says_when_an_endpoint_under_the_old_name_is_left_running(moto_client):
    client = await moto_client("sagemaker")
    namespace = f"t{uuid.uuid4().hex[:8]}"
    target = SageMakerTarget(client, namespace, "us-east-1", "arn:aws:iam::123456789012:role/serving", "i",
                             poll_seconds=0.1, wait_seconds=10)
    old, new = spec(1), spec(2)
    await client.create_model(ModelName=f"{namespace}-old", PrimaryContainer={"Image": "i"}, ExecutionRoleArn="arn:aws:iam::123456789012:role/serving")
    await client.create_endpoint_config(EndpointConfigName=f"{namespace}-old", ProductionVariants=[{
        "VariantName": "AllTraffic", "ModelName": f"{namespace}-old", "InitialInstanceCount": 1, "InstanceType": "ml.m5.large"}])
    await client.create_endpoint(EndpointName=target.legacy_endpoint_name(old), EndpointConfigName=f"{namespace}-old")
    with structlog.testing.capture_logs() as logs:
        await target.verify(new, await target.deploy(new))
    [warning] = [e for e in logs if e["event"] == "sagemaker_legacy_endpoint_left"]
    assert (warning["legacy_endpoint"], warning["endpoint"]) == (f"{namespace}-fraud-prod", target.endpoint_name(new))
    assert (await client.describe_endpoint(EndpointName=f"{namespace}-fraud-prod"))["EndpointConfigName"] == f"{namespace}-old"


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
    served = await target.serving(first, url)  # what `modelgate verify` compares: the task definition's pin
    assert (served.model_version_id, served.deployment_id) == ("fraud/1", first.deployment_id)
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
    s3.put_object(Bucket=name, Key="fraud/1.skops", Body=model_bytes())
    s3.put_object(Bucket=name, Key="fraud/2.skops", Body=model_bytes(flip=True))
    s3.put_object(Bucket=name, Key="fraud/broken.skops", Body=b"not a model")
    s3.put_object(Bucket=name, Key="fraud/pickled.joblib", Body=pickled_model_bytes())
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


async def test_local_starts_the_new_server_beside_the_old_one_and_stops_the_old_one_only_when_told(bucket, s3, tmp_path, monkeypatch):
    target = LocalTarget(tmp_path / "run", s3=s3)
    first, second = spec(1, f"s3://{bucket}/fraud/1.skops"), spec(2, f"s3://{bucket}/fraud/2.skops")
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
        assert (await target.serving(first, old_url)).model_version_id is None  # what `modelgate verify` sees
        served = await target.serving(second, new_url)
        assert (served.model_version_id, served.deployment_id) == ("fraud/2", second.deployment_id)
        assert await predict(new_url) == 0
        assert await target.deploy(second) == new_url  # again after a crash: the same server
    finally:
        await target.close()


async def test_local_reports_why_an_artifact_cannot_be_served(bucket, s3, tmp_path, monkeypatch):
    target = LocalTarget(tmp_path / "run", s3=s3)
    with pytest.raises(DeployError, match="not a skops file"):
        await target.deploy(spec(3, f"s3://{bucket}/fraud/broken.skops"))
    assert list((tmp_path / "run").glob("*.json")) == []


async def test_local_serves_a_pickle_only_for_a_group_opted_in(bucket, s3, tmp_path, monkeypatch):
    monkeypatch.delenv("MODELGATE_ALLOW_PICKLE", raising=False)
    pickled = f"s3://{bucket}/fraud/pickled.joblib"
    refusing = LocalTarget(tmp_path / "refusing", s3=s3, pickle_groups=frozenset({"churn"}))
    with pytest.raises(DeployError, match=r"pickle \(joblib\) file: loading it would run code.*MODELGATE_PICKLE_GROUPS=<group>"):
        await refusing.deploy(spec(4, pickled))
    serving = LocalTarget(tmp_path / "serving", s3=s3, pickle_groups=frozenset({"fraud"}))
    try:
        assert await predict(await serving.deploy(spec(5, pickled))) == 1
    finally:
        await serving.close()


async def test_local_refuses_a_local_path_unless_in_development(tmp_path, monkeypatch):
    path = tmp_path / "model.skops"
    path.write_bytes(model_bytes())
    with pytest.raises(DeployError, match=r"is a local path.*MODELGATE_ALLOW_LOCAL_ARTIFACTS=true"):
        await LocalTarget(tmp_path / "run").deploy(spec(6, str(path)))
    development = LocalTarget(tmp_path / "dev", allow_local_artifacts=True)
    try:
        assert await predict(await development.deploy(spec(7, f"file://{path}"))) == 1
    finally:
        await development.close()


async def test_local_serves_the_live_version_again_after_a_restart_and_stops_leftovers(bucket, s3, tmp_path, monkeypatch):
    live, leftover = spec(1, f"s3://{bucket}/fraud/1.skops"), spec(2, f"s3://{bucket}/fraud/2.skops")
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
