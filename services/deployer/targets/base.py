"""What every deployment target does: bring a stage to a version, check it serves, let go of the old one.

Before a target runs, the deployer has checked the artifact against its pin (services/deployer/deploy.py)."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_fixed

from shared.events import Container


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
    containers: tuple[Container, ...] = ()  # an inference pipeline's steps in order, the last one the model; () one model
    account: str | None = None  # the AWS account of the stage's pointer and target; None: the deployer's own

    @property
    def steps(self) -> tuple[Container, ...]:
        """What serves, in order: the pipeline's steps, or the one model."""
        if self.containers:
            return self.containers
        return (Container(name="model", artifact_uri=self.artifact_uri, artifact_digest=self.artifact_digest,
                          artifact_version_id=self.artifact_version_id),)


@dataclass(frozen=True)
class Serving:
    """What a target itself says it serves for a stage (services/deployer/drift.py compares it)."""

    model_version_id: str | None  # None: nothing serves
    deployment_id: str | None = None
    detail: str = ""  # where it was read, for a person: "endpoint X on config Y", "server at URL"


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
    #: The AWS account the stage's pointer and target live in (None: the deployer's own), and that account's
    #: SSM client for the pointer (None: the deployer's own). Set by InAccount.
    account: str | None = None
    ssm: Any = None

    @property
    def unwrapped(self) -> Target:
        """The target object itself (what InAccount wraps): the one to reconcile and close, once."""
        return self

    async def deploy(self, spec: DeploySpec) -> str | None:
        """Makes the stage serve `spec`'s version; returns the endpoint URL, if the target has one."""
        return None

    async def verify(self, spec: DeploySpec, endpoint_url: str | None) -> None:
        """Raises DeployError unless `spec`'s version is what the stage serves now."""

    async def retire(self, spec: DeploySpec) -> None:
        """Stops what served `spec` (replaced by a newer deployment, or failed)."""

    async def serving(self, spec: DeploySpec, endpoint_url: str | None) -> Serving | None:
        """What the stage of `spec` (its live deployment, served at `endpoint_url`) actually serves, asked of the
        target itself; None when the target has nothing of its own to ask (the pointer is what is served)."""
        return None

    async def reconcile(self, live: list[tuple[DeploySpec, str | None]], unfinished: set[str]) -> None:
        """At start-up: serve again what is live (with its endpoint URL), let go of anything neither live nor
        `unfinished` (the ids of deployments still to be resumed)."""

    async def close(self) -> None:
        """At shutdown."""

    def router(self) -> Any:
        """What splits or mirrors a stage's traffic during a rollout (services/deployer/rollout.py), or None:
        then a progressive rollout on this target goes live all at once, saying so."""
        return None


@dataclass(eq=False)
class InAccount(Target):
    """A target whose stage lives in another AWS account: its pointer is written with that account's SSM
    client (`ssm`), and `inner` was built with that account's clients (for `local`, the one local target:
    the server runs here, only the pointer is there)."""

    inner: Target
    account: str | None = None
    ssm: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.name = self.inner.name
        self.fetches_pinned_bytes = self.inner.fetches_pinned_bytes

    @property
    def unwrapped(self) -> Target:
        return self.inner.unwrapped

    async def deploy(self, spec: DeploySpec) -> str | None:
        return await self.inner.deploy(spec)

    async def verify(self, spec: DeploySpec, endpoint_url: str | None) -> None:
        await self.inner.verify(spec, endpoint_url)

    async def retire(self, spec: DeploySpec) -> None:
        await self.inner.retire(spec)

    async def serving(self, spec: DeploySpec, endpoint_url: str | None) -> Serving | None:
        return await self.inner.serving(spec, endpoint_url)


class ParameterStoreTarget(Target):
    """The pointer alone: for systems that read /modelgate/<group>/<stage>/current themselves."""

    name = "parameter-store"


def aws_name(*parts: str, limit: int = 63) -> str:
    """A SageMaker/ECS-safe name: letters, digits and hyphens, at most `limit` characters. Not unique:
    `fraud_detector` and `fraud.detector` give the same name; use `stage_name` for a resource per stage."""
    name = re.sub(r"[^A-Za-z0-9-]+", "-", "-".join(parts)).strip("-")
    return name[:limit].rstrip("-")


# SageMaker's rule for EndpointName, EndpointConfigName and ModelName (at most 63 characters).
SAGEMAKER_NAME = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}")
NAME_HASH_CHARS = 8


def stage_hash(group: str, stage: str) -> str:
    """A short hash of the exact (group, stage): what keeps slugs that look alike apart."""
    exact = json.dumps([group, stage], ensure_ascii=False).encode()
    return hashlib.sha256(exact).hexdigest()[:NAME_HASH_CHARS]


def slug(text: str) -> str:
    """Lower-case letters and digits, runs of anything else as one hyphen, none at either end."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def stage_name(prefix: str, group: str, stage: str, suffix: str = "", limit: int = 63) -> str:
    """A name unique per (group, stage), e.g. `mg-fraud-detector-prod-3f9a1c2b[-suffix]`, at most `limit`
    characters: `prefix` kept whole, then a slug of group and stage (cut to fit), the hash of the exact
    (group, stage), and `suffix`. Deterministic; ValueError when it cannot fit or breaks SageMaker's rule."""
    tail = "-".join(p for p in (stage_hash(group, stage), suffix) if p)
    room = limit - len(prefix) - len(tail) - 2  # the two hyphens around the slug
    if room < 0:
        raise ValueError(f"the prefix {prefix!r} leaves no room in a {limit}-character name: shorten MODELGATE_NAMESPACE")
    readable = slug(f"{group}-{stage}")[:room].rstrip("-")
    name = "-".join(p for p in (prefix, readable, tail) if p)
    if not SAGEMAKER_NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not a valid SageMaker name ({SAGEMAKER_NAME.pattern}): "
                         "MODELGATE_NAMESPACE must be letters, digits and single hyphens")
    return name
