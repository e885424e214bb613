"""Target `sagemaker`: a SageMaker real-time endpoint per group and stage.

Each deployment creates a model and an endpoint config named after it, then creates the stage's endpoint
or updates it to the new config; verified when the endpoint is InService on that config. Old models and
configs are kept (what served when, for the audit trail).

Names (base.stage_name): `<namespace>-<slug of group and stage>-<hash of the exact (group, stage)>`, e.g.
`modelgate-fraud-detector-prod-3f9a1c2b` for the endpoint, with `-v<version>-<deployment id[:8]>` after it
for the model and endpoint config. Deterministic, at most 63 characters, always within SageMaker's rule,
and distinct for groups that differ only in punctuation or case or share a long prefix. Endpoints made
before these names (`<namespace>-<group>-<stage>`) are not reused: see docs/targets.md, "Upgrading".
An inference pipeline (a version with `containers`) becomes one model with `Containers=[...]` in the steps
order and `InferenceExecutionConfig={"Mode": "Serial"}` (a SageMaker Inference Pipeline: each container's
answer is the next one's request); each container gets its step's image (default the serving image), its
environment, and MODELGATE_MODEL_VERSION_ID / MODELGATE_DEPLOYMENT_ID / MODELGATE_STEP (and, when pinned,
MODELGATE_MODEL_DIGEST, which modelgate's inference image checks before it loads the step).
The artifact must be what the serving image expects (for modelgate's inference image: a model.tar.gz holding
an XGBoost .ubj/.json or a skops file; a pickle only with MODELGATE_ALLOW_PICKLE=true in the image's
environment, see services/inference/model.py).
"""

from __future__ import annotations

from typing import Any

import structlog
from botocore.exceptions import ClientError

from services.deployer.targets.base import (
    DeployError,
    DeploySpec,
    NotSettled,
    Serving,
    Target,
    aws_name,
    stage_name,
    until_settled,
)

log = structlog.get_logger()

# The longest suffix a config name is sure to hold: a version of 10 digits and a deployment id's first 8
# characters; with it, namespaces of up to 32 characters fit (what infra/cloudformation.yaml allows).
LONGEST_CONFIG_SUFFIX = "v9999999999-00000000"


class SageMakerTarget(Target):
    name = "sagemaker"

    def __init__(
        self,
        client: Any,
        namespace: str,
        region: str,
        role_arn: str,
        image_uri: str,
        instance_type: str = "ml.m5.large",
        instance_count: int = 1,
        wait_seconds: float = 1800.0,
        poll_seconds: float = 15.0,
    ):
        stage_name(namespace, "group", "stage", LONGEST_CONFIG_SUFFIX)  # refuses a namespace names cannot hold
        self.client = client
        self.namespace = namespace
        self.region = region
        self.role_arn = role_arn
        self.image_uri = image_uri
        self.instance_type = instance_type
        self.instance_count = instance_count
        self.wait_seconds = wait_seconds
        self.poll_seconds = poll_seconds

    def endpoint_name(self, spec: DeploySpec) -> str:
        """The stage's endpoint: one per (group, stage)."""
        return self._name(spec)

    def config_name(self, spec: DeploySpec) -> str:
        """The model's and the endpoint config's name: one per deployment."""
        return self._name(spec, f"v{spec.version}-{spec.deployment_id[:8]}")

    def _name(self, spec: DeploySpec, suffix: str = "") -> str:
        try:
            return stage_name(self.namespace, spec.group, spec.stage, suffix)
        except ValueError as exc:
            raise DeployError(str(exc)) from None

    def legacy_endpoint_name(self, spec: DeploySpec) -> str:
        """The endpoint's name before names were unique per (group, stage), which groups could share."""
        return aws_name(self.namespace, spec.group, spec.stage)

    async def deploy(self, spec: DeploySpec) -> str:
        endpoint, config = self.endpoint_name(spec), self.config_name(spec)
        tags = [{"Key": "modelgate:model_version_id", "Value": spec.model_version_id},
                {"Key": "modelgate:deployment_id", "Value": spec.deployment_id}]
        if not await self._exists(self.client.describe_model, ModelName=config):
            await self.client.create_model(ModelName=config, **self.model_of(spec), ExecutionRoleArn=self.role_arn, Tags=tags)
        if not await self._exists(self.client.describe_endpoint_config, EndpointConfigName=config):
            await self.client.create_endpoint_config(
                EndpointConfigName=config,
                ProductionVariants=[{
                    "VariantName": "AllTraffic",
                    "ModelName": config,
                    "InitialInstanceCount": self.instance_count,
                    "InstanceType": self.instance_type,
                    "InitialVariantWeight": 1.0,
                }],
                Tags=tags,
            )
        current = await self._describe_endpoint(endpoint)
        if current is None:
            await self._warn_of_legacy_endpoint(spec, endpoint)
            await self.client.create_endpoint(EndpointName=endpoint, EndpointConfigName=config, Tags=tags)
        elif current["EndpointConfigName"] != config:
            await self.client.update_endpoint(EndpointName=endpoint, EndpointConfigName=config)
        return f"https://runtime.sagemaker.{self.region}.amazonaws.com/endpoints/{endpoint}/invocations"

    def model_of(self, spec: DeploySpec) -> dict[str, Any]:
        """CreateModel's containers: the PrimaryContainer of one model, or an inference pipeline's, run serially."""
        ids = {"MODELGATE_MODEL_VERSION_ID": spec.model_version_id, "MODELGATE_DEPLOYMENT_ID": spec.deployment_id}
        if not spec.containers:
            return {"PrimaryContainer": {"Image": self.image_uri, "ModelDataUrl": spec.artifact_uri, "Environment": ids}}
        containers = []
        for step in spec.containers:
            pinned = {"MODELGATE_MODEL_DIGEST": step.artifact_digest} if step.artifact_digest else {}
            containers.append({
                "ContainerHostname": step.name,
                "Image": step.image or self.image_uri,
                "ModelDataUrl": step.artifact_uri,
                "Environment": {**step.environment, **ids, "MODELGATE_STEP": step.name, **pinned},
            })
        return {"Containers": containers, "InferenceExecutionConfig": {"Mode": "Serial"}}

    async def verify(self, spec: DeploySpec, endpoint_url: str | None) -> None:
        endpoint, config = self.endpoint_name(spec), self.config_name(spec)

        async def in_service() -> None:
            current = await self._describe_endpoint(endpoint)
            if current is None:
                raise DeployError(f"SageMaker endpoint {endpoint} disappeared")
            status = current["EndpointStatus"]
            if status == "Failed":
                raise DeployError(f"SageMaker endpoint {endpoint} failed: {current.get('FailureReason', 'no reason')}")
            if status != "InService" or current["EndpointConfigName"] != config:
                raise NotSettled(f"SageMaker endpoint {endpoint} not InService on {config} ({status})")

        await until_settled(in_service, self.wait_seconds, self.poll_seconds)

    async def serving(self, spec: DeploySpec, endpoint_url: str | None) -> Serving:
        """What the stage's endpoint serves: DescribeEndpoint, its endpoint config, then that config's model."""
        endpoint = self.endpoint_name(spec)
        current = await self._describe_endpoint(endpoint)
        if current is None:
            return Serving(None, detail=f"SageMaker endpoint {endpoint} does not exist")
        config = await self.client.describe_endpoint_config(EndpointConfigName=current["EndpointConfigName"])
        model_name = config["ProductionVariants"][0]["ModelName"]
        model = await self.client.describe_model(ModelName=model_name)
        containers = model.get("Containers") or [model.get("PrimaryContainer", {})]  # a pipeline: its last step
        container = containers[-1]
        env = container.get("Environment", {})
        steps = f" ({len(containers)} containers, serial)" if len(containers) > 1 else ""
        return Serving(env.get("MODELGATE_MODEL_VERSION_ID"), env.get("MODELGATE_DEPLOYMENT_ID"),
                       f"endpoint {endpoint} ({current['EndpointStatus']}) on model {model_name}{steps}, {container.get('ModelDataUrl')}")

    async def _warn_of_legacy_endpoint(self, spec: DeploySpec, endpoint: str) -> None:
        """An endpoint under the old name keeps running (and costing) untouched: say so, once per stage."""
        legacy = self.legacy_endpoint_name(spec)
        try:
            left = await self._describe_endpoint(legacy)
        except ClientError:  # only advice: never a reason not to deploy
            return
        if left is not None:
            log.warning("sagemaker_legacy_endpoint_left", legacy_endpoint=legacy, endpoint=endpoint,
                        group=spec.group, stage=spec.stage,
                        advice=f"{legacy} is no longer updated; point its callers at {endpoint}, then delete it")

    async def _describe_endpoint(self, name: str) -> dict[str, Any] | None:
        try:
            return await self.client.describe_endpoint(EndpointName=name)
        except ClientError as exc:
            if "Could not find" in str(exc):
                return None
            raise

    async def _exists(self, describe: Any, **name: str) -> bool:
        try:
            await describe(**name)
        except ClientError as exc:
            if "Could not find" in str(exc):
                return False
            raise
        return True
