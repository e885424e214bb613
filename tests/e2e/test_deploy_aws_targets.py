"""The `sagemaker` (dev) and `ecs` (test) targets on the whole journey.

LocalStack's free edition has neither SageMaker nor ECS, so the deployer reaches them on moto's server
(moto.server.ThreadedMotoServer on a free port, through AWS_ENDPOINT_URL_SAGEMAKER / AWS_ENDPOINT_URL_ECS);
everything else is on LocalStack. moto never runs ECS tasks, so the ecs rollout is not waited for.
"""

from __future__ import annotations

import json
import uuid

import boto3
import httpx
import pytest
from moto.server import ThreadedMotoServer

from services.deployer.targets.base import stage_name
from shared.infra import boto_client
from shared.topology import bucket_name
from tests.e2e.conftest import free_port
from tests.helpers import eventually

GROUP = f"credit-{uuid.uuid4().hex[:6]}"


def moto_client(service: str, url: str):  # type: ignore[no-untyped-def]
    """A plain boto3 client for moto's server: moto is not LocalStack, so not shared.infra's localstack-client."""
    return boto3.client(service, endpoint_url=url, region_name="us-east-1", aws_access_key_id="t", aws_secret_access_key="t")


@pytest.fixture
def moto():  # type: ignore[no-untyped-def]
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    ecs = moto_client("ecs", url)
    ecs.create_cluster(clusterName="serving")
    definition = ecs.register_task_definition(
        family=f"{GROUP}-test", containerDefinitions=[{"name": "model", "image": "modelgate-inference:1", "memory": 512}]
    )
    ecs.create_service(cluster="serving", serviceName=f"{GROUP}-test", desiredCount=1,
                       taskDefinition=definition["taskDefinition"]["taskDefinitionArn"])
    yield url
    server.stop()


@pytest.fixture
def system_env(moto) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {
        "MODELGATE_TARGETS": json.dumps({"dev": "sagemaker", "test": "ecs"}),
        "AWS_ENDPOINT_URL_SAGEMAKER": moto,
        "AWS_ENDPOINT_URL_ECS": moto,
        "MODELGATE_SAGEMAKER_ROLE_ARN": "arn:aws:iam::123456789012:role/serving",
        "MODELGATE_SAGEMAKER_IMAGE_URI": "123456789012.dkr.ecr.us-east-1.amazonaws.com/modelgate-inference:1",
        "MODELGATE_SAGEMAKER_POLL_SECONDS": "0.2",
        "MODELGATE_ECS_CLUSTER": "serving",
        "MODELGATE_ECS_SERVICE": "{group}-{stage}",
        "MODELGATE_ECS_WAIT_SECONDS": "0",
    }


async def test_dev_deploys_to_a_sagemaker_endpoint_and_test_to_an_ecs_service(system, moto):
    key = f"{GROUP}/model.tar.gz"
    boto_client("s3", system.endpoint).put_object(Bucket=bucket_name(system.namespace), Key=key, Body=b"model")
    artifact = f"s3://{bucket_name(system.namespace)}/{key}"
    async with httpx.AsyncClient(timeout=30, headers=system.headers("ana")) as client:
        body = {"artifact_uri": artifact, "metrics": {"auc": 0.95}}
        assert (await client.post(f"{system.url('registrar')}/v1/groups/{GROUP}/versions", json=body)).status_code == 201

        async def live(stage: str) -> dict | None:
            rows = (await client.get(f"{system.url('deployer')}/v1/deployments/live", params={"group": GROUP})).json()
            return next((d for d in rows if d["stage"] == stage), None)

        dev = await eventually(lambda: live("dev"), timeout=60, interval=0.5)
        assert dev["target"] == "sagemaker"
        assert dev["endpoint_url"].endswith(f"/endpoints/{stage_name(system.namespace, GROUP, 'dev')}/invocations")

        async def pending_test() -> list:
            pending = (await client.get(f"{system.url('approver')}/v1/approvals", params={"status": "pending"})).json()
            return [a for a in pending if a["model_version_id"] == f"{GROUP}/1" and a["stage"] == "test"]

        approval = (await eventually(pending_test, timeout=30))[0]
        decided = await client.post(f"{system.url('approver')}/v1/approvals/{approval['approval_id']}/decision",
                                    json={"decision": "approve", "comment": "ok"}, headers=system.headers("lee"))
        assert decided.status_code == 200, decided.text
        test = await eventually(lambda: live("test"), timeout=60, interval=0.5)
        assert test["target"] == "ecs"

    sagemaker = moto_client("sagemaker", moto)
    endpoint = sagemaker.describe_endpoint(EndpointName=stage_name(system.namespace, GROUP, "dev"))
    config = sagemaker.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])
    model = sagemaker.describe_model(ModelName=config["ProductionVariants"][0]["ModelName"])
    assert endpoint["EndpointStatus"] == "InService" and model["PrimaryContainer"]["ModelDataUrl"] == artifact
    ecs = moto_client("ecs", moto)
    service = ecs.describe_services(cluster="serving", services=[f"{GROUP}-test"])["services"][0]
    definition = ecs.describe_task_definition(taskDefinition=service["taskDefinition"])["taskDefinition"]
    env = {e["name"]: e["value"] for e in definition["containerDefinitions"][0]["environment"]}
    assert env["MODELGATE_MODEL_URI"] == artifact and env["MODELGATE_MODEL_VERSION_ID"] == f"{GROUP}/1"
