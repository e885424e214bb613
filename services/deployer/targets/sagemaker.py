"""Target `sagemaker`: a SageMaker real-time endpoint per group and stage.

Each deployment creates a model and an endpoint config named after it, then creates the stage's endpoint
(`<namespace>-<group>-<stage>`) or updates it to the new config; verified when the endpoint is InService
on that config. Old models and configs are kept (what served when, for the audit trail).
The artifact must be what the serving image expects (for modelgate's inference image: a model.tar.gz holding
an XGBoost .ubj/.json or a skops file; a pickle only with MODELGATE_ALLOW_PICKLE=true in the image's
environment, see services/inference/model.py).
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from services.deployer.targets.base import (
    DeployError,
    DeploySpec,
    NotSettled,
    Target,
    aws_name,
    until_settled,
)


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
        return aws_name(self.namespace, spec.group, spec.stage)

    def config_name(self, spec: DeploySpec) -> str:
        """The model's and the endpoint config's name: one per deployment."""
        suffix = f"v{spec.version}-{spec.deployment_id[:8]}"
        return f"{aws_name(self.namespace, spec.group, spec.stage, limit=62 - len(suffix))}-{suffix}"

    async def deploy(self, spec: DeploySpec) -> str:
        endpoint, config = self.endpoint_name(spec), self.config_name(spec)
        tags = [{"Key": "modelgate:model_version_id", "Value": spec.model_version_id},
                {"Key": "modelgate:deployment_id", "Value": spec.deployment_id}]
        if not await self._exists(self.client.describe_model, ModelName=config):
            await self.client.create_model(
                ModelName=config,
                PrimaryContainer={
                    "Image": self.image_uri,
                    "ModelDataUrl": spec.artifact_uri,
                    "Environment": {"MODELGATE_MODEL_VERSION_ID": spec.model_version_id,
                                    "MODELGATE_DEPLOYMENT_ID": spec.deployment_id},
                },
                ExecutionRoleArn=self.role_arn,
                Tags=tags,
            )
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
            await self.client.create_endpoint(EndpointName=endpoint, EndpointConfigName=config, Tags=tags)
        elif current["EndpointConfigName"] != config:
            await self.client.update_endpoint(EndpointName=endpoint, EndpointConfigName=config)
        return f"https://runtime.sagemaker.{self.region}.amazonaws.com/endpoints/{endpoint}/invocations"

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
