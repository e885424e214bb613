"""Target `ecs`: an ECS service that serves the model, per group and stage.

Each deployment registers a new revision of the service's task definition with the model pinned in the
serving container's environment (MODELGATE_MODEL_URI, MODELGATE_MODEL_VERSION_ID, MODELGATE_DEPLOYMENT_ID,
and for a pinned artifact MODELGATE_MODEL_S3_VERSION_ID and MODELGATE_MODEL_DIGEST: what services.inference
reads; it fetches that S3 version and refuses bytes with another digest), then points the service at it (UpdateService). Verified when the service
runs that revision; with `wait_seconds` > 0, also when its rollout has COMPLETED.

The service's name comes from a template (MODELGATE_ECS_SERVICE) with `{namespace}`, `{group}`, `{stage}` and
`{name}`: the collision-free `<namespace>-<slug>-<hash>` name the sagemaker target uses (base.stage_name).
Distinct groups give distinct names as long as the template has `{group}` or `{name}`; a name ECS cannot
hold (a group with a '.', over 255 characters) is refused with a DeployError saying to use `{name}`. The
task definition's family is never derived from the group: each revision keeps the family of the service's
current task definition.
"""

from __future__ import annotations

import re
from typing import Any

from services.deployer.targets.base import (
    DeployError,
    DeploySpec,
    NotSettled,
    Serving,
    Target,
    stage_name,
    until_settled,
)

# ECS's rule for a service name.
ECS_SERVICE_NAME = re.compile(r"[A-Za-z0-9_-]{1,255}")

#: What a deployment pins in the serving container's environment (a previous revision's values are replaced).
PINNED = ("MODELGATE_MODEL_URI", "MODELGATE_MODEL_VERSION_ID", "MODELGATE_DEPLOYMENT_ID", "MODELGATE_MODEL_S3_VERSION_ID",
          "MODELGATE_MODEL_DIGEST")

# What RegisterTaskDefinition accepts back from DescribeTaskDefinition.
REGISTERABLE = (
    "family", "taskRoleArn", "executionRoleArn", "networkMode", "containerDefinitions", "volumes",
    "placementConstraints", "requiresCompatibilities", "cpu", "memory", "pidMode", "ipcMode",
    "proxyConfiguration", "inferenceAccelerators", "ephemeralStorage", "runtimePlatform",
)


class EcsTarget(Target):
    name = "ecs"

    def __init__(
        self,
        client: Any,
        cluster: str,
        service_template: str,
        namespace: str,
        container: str | None = None,
        endpoint_template: str | None = None,
        wait_seconds: float = 900.0,
        poll_seconds: float = 10.0,
    ):
        self.client = client
        self.cluster = cluster
        self.service_template = service_template
        self.namespace = namespace
        self.container = container
        self.endpoint_template = endpoint_template
        self.wait_seconds = wait_seconds
        self.poll_seconds = poll_seconds

    def _format(self, template: str, spec: DeploySpec) -> str:
        fields = {"namespace": self.namespace, "group": spec.group, "stage": spec.stage}
        if "{name}" in template:
            try:
                fields["name"] = stage_name(self.namespace, spec.group, spec.stage)
            except ValueError as exc:
                raise DeployError(str(exc)) from None
        return template.format(**fields)

    def service_name(self, spec: DeploySpec) -> str:
        """The stage's ECS service, from the template; DeployError when ECS could not have such a service."""
        name = self._format(self.service_template, spec)
        if not ECS_SERVICE_NAME.fullmatch(name):
            raise DeployError(
                f"ECS service name {name!r} (MODELGATE_ECS_SERVICE={self.service_template!r}) is not a valid ECS name "
                "(1 to 255 letters, digits, '-' and '_'): use '{name}' in the template, and create the service under that name"
            )
        return name

    async def deploy(self, spec: DeploySpec) -> str | None:
        if len(spec.containers) > 1:  # serving the model alone would skip the steps before it
            raise DeployError(
                f"{spec.model_version_id} is an inference pipeline of {len(spec.containers)} steps, and target ecs pins "
                "one model per task definition: deploy it to target local or sagemaker, or register the steps as one "
                "scikit-learn Pipeline saved with skops")
        service = await self._service(spec)
        current = (await self.client.describe_task_definition(taskDefinition=service["taskDefinition"]))["taskDefinition"]
        if _pinned(current, spec.deployment_id) is None:  # not already done before a crash
            definition = {k: v for k, v in current.items() if k in REGISTERABLE}
            definition["containerDefinitions"] = self._pin(current["containerDefinitions"], spec)
            registered = await self.client.register_task_definition(**definition)
            arn = registered["taskDefinition"]["taskDefinitionArn"]
            await self.client.update_service(cluster=self.cluster, service=self.service_name(spec), taskDefinition=arn)
        if self.endpoint_template:
            return self._format(self.endpoint_template, spec)
        return None

    async def verify(self, spec: DeploySpec, endpoint_url: str | None) -> None:
        async def rolled_out() -> None:
            service = await self._service(spec)
            definition = (await self.client.describe_task_definition(taskDefinition=service["taskDefinition"]))["taskDefinition"]
            if _pinned(definition, spec.deployment_id) is None:
                raise DeployError(f"ECS service {self.service_name(spec)} runs {service['taskDefinition']}, not {spec.model_version_id}")
            if self.wait_seconds <= 0:
                return
            primary = next((d for d in service.get("deployments", []) if d.get("status") == "PRIMARY"), {})
            if primary.get("rolloutState") == "FAILED":
                raise DeployError(f"ECS rollout failed: {primary.get('rolloutStateReason', 'no reason')}")
            if primary.get("taskDefinition") != service["taskDefinition"] or primary.get("rolloutState") != "COMPLETED":
                raise NotSettled(f"ECS service {self.service_name(spec)} rollout not COMPLETED")

        await until_settled(rolled_out, self.wait_seconds, self.poll_seconds)

    async def serving(self, spec: DeploySpec, endpoint_url: str | None) -> Serving:
        """What the stage's ECS service runs: the model pinned in its current task definition."""
        service = await self._service(spec)
        arn = service["taskDefinition"]
        definition = (await self.client.describe_task_definition(taskDefinition=arn))["taskDefinition"]
        env = _environment(definition, self.container)
        return Serving(env.get("MODELGATE_MODEL_VERSION_ID"), env.get("MODELGATE_DEPLOYMENT_ID"),
                       f"ECS service {self.service_name(spec)} on {arn}")

    async def _service(self, spec: DeploySpec) -> dict[str, Any]:
        name = self.service_name(spec)
        found = await self.client.describe_services(cluster=self.cluster, services=[name])
        if not found["services"]:
            raise DeployError(f"ECS service {name} not found in cluster {self.cluster}: create it (with a serving task definition) first")
        return found["services"][0]

    def _pin(self, containers: list[dict[str, Any]], spec: DeploySpec) -> list[dict[str, Any]]:
        names = [c["name"] for c in containers]
        target = self.container or names[0]
        if target not in names:
            raise DeployError(f"no container {target!r} in the task definition (it has {names})")
        pinned = {"MODELGATE_MODEL_URI": spec.artifact_uri, "MODELGATE_MODEL_VERSION_ID": spec.model_version_id,
                  "MODELGATE_DEPLOYMENT_ID": spec.deployment_id}
        if spec.artifact_version_id:
            pinned["MODELGATE_MODEL_S3_VERSION_ID"] = spec.artifact_version_id
        if spec.artifact_digest:
            pinned["MODELGATE_MODEL_DIGEST"] = spec.artifact_digest
        result = []
        for container in containers:
            if container["name"] == target:
                env = [e for e in container.get("environment", []) if e["name"] not in PINNED]
                container = {**container, "environment": env + [{"name": k, "value": v} for k, v in pinned.items()]}
            result.append(container)
        return result


def _environment(definition: dict[str, Any], container: str | None) -> dict[str, str]:
    """The environment of the serving container (`container`, default the first) of a task definition."""
    containers = definition.get("containerDefinitions", [])
    chosen = next((c for c in containers if c["name"] == container), None) if container else (containers[:1] or [None])[0]
    return {e["name"]: e["value"] for e in (chosen or {}).get("environment", [])}


def _pinned(definition: dict[str, Any], deployment_id: str) -> str | None:
    """The container pinned to `deployment_id` in a task definition, if any."""
    for container in definition.get("containerDefinitions", []):
        for env in container.get("environment", []):
            if env["name"] == "MODELGATE_DEPLOYMENT_ID" and env["value"] == deployment_id:
                return container["name"]
    return None
