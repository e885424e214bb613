"""What every deployment target does: bring a stage to a version, check it serves, let go of the old one.

Before a target runs, the deployer has checked the artifact against its pin (services/deployer/deploy.py)."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_fixed


@dataclass(frozen=True)
class DeploySpec:
    """Which version goes to which stage, as one deployment."""

    deployment_id: str
    group: str
    stage: str
    version: int
    model_version_id: str
    artifact_uri: str
    artifact_digest: str | None = None  # sha256:<hex> pinned at registration; None: not pinned
    artifact_version_id: str | None = None  # the S3 VersionId to serve; None: the object's latest


class DeployError(Exception):
    """The target could not serve the version; the message says why (it becomes DeploymentFailed.reason)."""


class NotSettled(Exception):
    """The target is still on its way to the version; the message says where it stands."""


async def until_settled(check: Callable[[], Awaitable[None]], wait_seconds: float, poll_seconds: float) -> None:
    """Calls `check` every `poll_seconds` until it returns; still NotSettled after `wait_seconds` is a DeployError."""
    try:
        async for attempt in AsyncRetrying(
            stop=stop_after_delay(wait_seconds), wait=wait_fixed(poll_seconds),
            retry=retry_if_exception_type(NotSettled), reraise=True,
        ):
            with attempt:
                await check()
    except NotSettled as exc:
        raise DeployError(f"{exc} after {wait_seconds:.0f}s") from None


class Target:
    """A deployment target. Every method is safe to call again for the same deployment (after a crash)."""

    name = "target"
    #: Whether the target downloads the pinned version and checks its digest itself (then the deployer does
    #: not check it beforehand): the bytes checked are then exactly the bytes served.
    fetches_pinned_bytes = False

    async def deploy(self, spec: DeploySpec) -> str | None:
        """Makes the stage serve `spec`'s version; returns the endpoint URL, if the target has one."""
        return None

    async def verify(self, spec: DeploySpec, endpoint_url: str | None) -> None:
        """Raises DeployError unless `spec`'s version is what the stage serves now."""

    async def retire(self, spec: DeploySpec) -> None:
        """Stops what served `spec` (replaced by a newer deployment, or failed)."""

    async def reconcile(self, live: list[tuple[DeploySpec, str | None]], unfinished: set[str]) -> None:
        """At start-up: serve again what is live (with its endpoint URL), let go of anything neither live nor
        `unfinished` (the ids of deployments still to be resumed)."""

    async def close(self) -> None:
        """At shutdown."""


class ParameterStoreTarget(Target):
    """The pointer alone: for systems that read /modelgate/<group>/<stage>/current themselves."""

    name = "parameter-store"


def aws_name(*parts: str, limit: int = 63) -> str:
    """A SageMaker/ECS-safe name: letters, digits and hyphens, at most `limit` characters."""
    name = re.sub(r"[^A-Za-z0-9-]+", "-", "-".join(parts)).strip("-")
    return name[:limit].rstrip("-")
