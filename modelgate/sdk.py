"""modelgate as a library: `AsyncClient` and its synchronous twin `Client`, for training scripts,
notebooks and pipeline steps (the CLI goes through the same class).

    import modelgate

    with modelgate.Client() as mg:
        v = mg.register("fraud-detector", file="model.ubj", metrics={"auc": 0.95}, framework="xgboost")
        mg.wait(v.group, v.version, "dev")                     # until Deployed, or raises
        print(mg.live("fraud-detector", "dev").model_version_id)

Promises:
- Endpoints and credentials are found as the CLI finds them: arguments, else `MODELGATE_<SERVICE>_URL`,
  else `MODELGATE_URL` (one gateway, each service under /<service>), else the ports `make up` uses; the token
  from `token=`, else `MODELGATE_TOKEN`, else the local admin token file. Artifacts go to
  `<namespace>-artifacts` (MODELGATE_NAMESPACE) at AWS_ENDPOINT_URL (LocalStack's when unset; empty: AWS).
- Every failure is a `modelgate.errors` exception whose message says what to fix; a request that is safe
  to repeat (a read, or a registration, which always carries an idempotency key) is retried with backoff
  while a service cannot be reached.
- Answers are the SDK's own pydantic models (modelgate.models), never the services' classes.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, Self, TypeVar

import httpx

from modelgate.errors import NotFound, WaitFailed, WaitTimeout
from modelgate.gate import verdict
from modelgate.models import Approval, Deployment, GateVerdict, HistoryEntry, Period, Version
from shared.client import Clients
from shared.topology import bucket_name

T = TypeVar("T")

#: Up to this size an artifact goes up in one PUT, so that S3 keeps its full SHA-256 (a multipart upload's
#: checksum is a composite one): the registrar then pins it without reading it back (shared/pins.py).
SINGLE_PUT_BYTES = 1 << 30
LOCAL_AWS = "http://127.0.0.1:4566"
#: Where a stage's status can no longer become what wait() waits for.
END_STATES = frozenset({"Rejected", "DeploymentFailed", "Superseded", "Retired", "RolledBack"})


def artifact_key(path: Path, group: str) -> tuple[str, str]:
    """The content-addressed key of a local file in the artifact bucket, and its sha256:<hex> digest."""
    sha = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            sha.update(chunk)
    return f"{group}/{sha.hexdigest()[:16]}/{path.name}", f"sha256:{sha.hexdigest()}"


class AsyncClient(Clients):
    """The async client: `async with modelgate.AsyncClient() as mg: await mg.register(...)`.

    `.registrar`, `.approver`, `.deployer` and `.notifier` are the per-service HTTP clients underneath, for
    what the methods here do not cover."""

    def __init__(self, *, url: str | None = None, token: str | None = None, namespace: str | None = None,
                 aws_endpoint: str | None = None, timeout: float = 15.0, retries: int = 3,
                 registrar_url: str | None = None, approver_url: str | None = None, deployer_url: str | None = None,
                 notifier_url: str | None = None, transport: httpx.AsyncBaseTransport | None = None) -> None:
        super().__init__(transport, token, gateway=url, timeout=timeout, retries=retries, registrar=registrar_url,
                         approver=approver_url, deployer=deployer_url, notifier=notifier_url)
        self.namespace = namespace or os.environ.get("MODELGATE_NAMESPACE", "modelgate")
        self.aws_endpoint = aws_endpoint if aws_endpoint is not None else os.environ.get("AWS_ENDPOINT_URL", LOCAL_AWS)

    # -- registering -------------------------------------------------------------------------------------
    async def upload(self, file: str | Path, group: str, progress: Callable[[int], None] | None = None) -> str:
        """Uploads a local artifact to the artifact bucket with its SHA-256 checksum; its s3:// URI."""
        path = Path(file)
        if not path.is_file():
            raise FileNotFoundError(f"{path} is not a file: pass the model file your training wrote")
        key, _ = await asyncio.to_thread(artifact_key, path, group)
        bucket = bucket_name(self.namespace)
        await asyncio.to_thread(self._put, path, bucket, key, progress)
        return f"s3://{bucket}/{key}"

    def _put(self, path: Path, bucket: str, key: str, progress: Callable[[int], None] | None) -> None:
        from boto3.s3.transfer import (
            TransferConfig,  # boto3 only when uploading: importing modelgate stays fast
        )

        from shared.infra import boto_client

        boto_client("s3", self.aws_endpoint or None).upload_file(
            str(path), bucket, key, ExtraArgs={"ChecksumAlgorithm": "SHA256"},
            Config=TransferConfig(multipart_threshold=SINGLE_PUT_BYTES), Callback=progress,
        )

    async def register(self, group: str, *, file: str | Path | None = None, uri: str | None = None,
                       metrics: dict[str, float] | None = None, params: dict[str, Any] | None = None,
                       tags: dict[str, str] | None = None, framework: str | None = None, description: str = "",
                       model_card: dict[str, Any] | None = None, lineage: dict[str, Any] | None = None,
                       metadata: dict[str, Any] | None = None, idempotency_key: str | None = None,
                       containers: list[dict[str, Any]] | None = None,
                       progress: Callable[[int], None] | None = None) -> Version:
        """Registers a new version of `group` from a local `file` (uploaded first, with its digest) or an
        artifact already in S3 (`uri`). Retrying with the same `idempotency_key` (e.g. the CI job id)
        registers once; without one, a fresh key still makes this call's own retries safe.
        `containers`: an inference pipeline's steps in order, `{"name", "artifact_uri", "image"?,
        "environment"?}` each, the last one the model itself (its artifact_uri that of the version; with
        `file=`, leave the last step's artifact_uri out and the uploaded file's is used); docs/targets.md."""
        if (file is None) == (uri is None):
            raise ValueError("pass exactly one of file= (a local model file) or uri= (s3://bucket/key)")
        artifact = uri if uri is not None else await self.upload(file, group, progress)  # type: ignore[arg-type]
        body = {"artifact_uri": artifact, "metrics": metrics or {}, "params": params or {}, "tags": tags or {},
                "framework": framework, "description": description, "model_card": model_card or {},
                "lineage": lineage or {}, "metadata": metadata or {}}
        if containers:
            steps = [dict(step) for step in containers]
            steps[-1].setdefault("artifact_uri", artifact)
            body["containers"] = steps
        key = idempotency_key or f"sdk-{uuid.uuid4()}"
        return Version.model_validate(await self.registrar.register(group, body, key))

    async def from_comet(self, group: str, *, archive: str | Path | None = None, experiment: str | None = None,
                         workspace: str | None = None, project: str | None = None,
                         registry_model: str | None = None, registry_version: str | None = None,
                         **fields: Any) -> Version:
        """Registers from Comet: an OfflineExperiment `archive` (the zip comet_ml wrote), or an `experiment`
        key or `registry_model` the registrar reads from its Comet server (with `workspace` and `project`).
        `fields`: framework, description, tags, model_card."""
        if archive is not None:
            return Version.model_validate(await self.registrar.register_comet_archive(group, Path(archive), fields))
        if not (experiment or registry_model) or not (workspace and project):
            raise ValueError("pass archive=, or experiment= (or registry_model=) with workspace= and project=")
        body = {"workspace": workspace, "project": project, "experiment_key": experiment,
                "registry_model": registry_model, "registry_version": registry_version, **fields}
        return Version.model_validate(await self.registrar.register_from_comet(group, body))

    # -- reading -----------------------------------------------------------------------------------------
    async def version(self, group: str, version: int | None = None) -> Version:
        """One version; the group's latest when `version` is None."""
        if version is None:
            return Version.model_validate(await self.registrar.latest(group))
        return Version.model_validate(await self.registrar.version(group, version))

    async def versions(self, group: str | None = None, *, page_size: int = 200, **filters: Any) -> AsyncIterator[Version]:
        """Every version matching the filters (group, q, metric=["auc>=0.9"], tag=["team=risk"], stage,
        stage_status, sort, order), page after page."""
        offset: int | None = 0
        while offset is not None:
            page = await self.registrar.search(group=group, limit=page_size, offset=offset, **filters)
            for item in page["items"]:
                yield Version.model_validate(item)
            offset = page["next_offset"]

    async def history(self, group: str, version: int) -> list[HistoryEntry]:
        """Every event of a version, oldest first."""
        return [HistoryEntry.model_validate(e) for e in await self.registrar.history(group, version)]

    async def deployments(self, group: str | None = None) -> list[Deployment]:
        """Every deployment (of `group`), oldest first; `live` marks what each stage serves now."""
        return [Deployment.model_validate(d) for d in await self.deployer.deployments(group)]

    async def live(self, group: str, stage: str, at: datetime | None = None) -> Deployment:
        """The deployment serving `stage` now (or at time `at`); NotFound when nothing serves it."""
        if at is not None:
            found = await self.deployer.timeline(group, stage, at=at.isoformat())
            return await self.deployment(found["items"][0]["deployment_id"])
        for d in await self.deployments(group):
            if d.stage == stage and d.live:
                return d
        raise NotFound("deployer", 404, f"nothing serves {group} in {stage} yet")

    async def timeline(self, group: str, stage: str, *, page_size: int = 100) -> AsyncIterator[Period]:
        """Every period a version served `stage`, newest first: from, to, deployment, approvers, kind."""
        offset: int | None = 0
        while offset is not None:
            page = await self.deployer.timeline(group, stage, limit=page_size, offset=offset)
            for item in page["items"]:
                yield Period.model_validate(item)
            offset = page["next_offset"]

    async def wait(self, group: str, version: int, stage: str, until: str = "Deployed", timeout: float = 300.0,
                   progress: Callable[[str], None] | None = None, poll: float = 0.5) -> Version:
        """Waits until the version's status in `stage` is `until`; `progress` is told each new status.
        Raises WaitFailed when it reaches an end state that is not `until`, WaitTimeout after `timeout` s."""
        deadline, seen = time.monotonic() + timeout, None
        while True:
            record = await self.version(group, version)
            status = record.status(stage)
            if status != seen and progress is not None:
                progress(status or "not requested")
            seen = status
            if status == until:
                return record
            if status in END_STATES:
                raise WaitFailed(record, stage, until)
            if time.monotonic() >= deadline:
                raise WaitTimeout(record, stage, until, timeout)
            await asyncio.sleep(poll)

    # -- deciding ----------------------------------------------------------------------------------------
    async def approvals(self, status: str = "pending", *, group: str | None = None, stage: str | None = None,
                        model_version_id: str | None = None, mine: bool = False) -> list[Approval]:
        """Approval requests (pending by default); `mine`: only those this principal may vote on now."""
        found = await self.approver.approvals(status, group=group, stage=stage, model_version_id=model_version_id,
                                              approver="me" if mine else None)
        return [Approval.model_validate(a) for a in found]

    async def approve(self, approval_id: str, comment: str | None = None) -> Approval:
        """Votes to approve, as this client's principal; the answer says whether more votes are needed."""
        return Approval.model_validate(await self.approver.decide(approval_id, "approve", comment))

    async def reject(self, approval_id: str, comment: str) -> Approval:
        """Rejects; a rejection says why (kept in the audit trail)."""
        if not comment or not comment.strip():
            raise ValueError("say why the version is rejected: reject(approval_id, comment='...')")
        return Approval.model_validate(await self.approver.decide(approval_id, "reject", comment))

    async def rollback(self, group: str, stage: str, reason: str | None = None) -> Deployment:
        """Puts `stage` back to the version live before (accepted at once: follow it with deployment())."""
        return Deployment.model_validate(await self.deployer.rollback(group, stage, {"reason": reason}))

    async def deployment(self, deployment_id: str) -> Deployment:
        """One deployment, e.g. to follow a rollback until its status is Deployed or Failed."""
        return Deployment.model_validate(await self.deployer.deployment(deployment_id))

    async def gate(self, group: str, stage: str, version: int | None = None) -> GateVerdict:
        """Whether the version (default: the group's latest) may go to `stage`: truthy when it may."""
        return verdict(await self.version(group, version), stage)


class Client:
    """The synchronous client, for scripts and notebooks: the same methods as AsyncClient, without await.

        with modelgate.Client() as mg:
            mg.register("fraud-detector", file="model.ubj", metrics={"auc": 0.95})
    """

    def __init__(self, **options: Any) -> None:
        """The options of AsyncClient (url, token, namespace, aws_endpoint, timeout, retries, *_url)."""
        self._runner = asyncio.Runner()
        self._async = self._runner.run(_make(options))

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Closes the connections (a `with` block does it for you)."""
        self._runner.run(self._async.__aexit__(None, None, None))
        self._runner.close()

    def _run(self, work: Any) -> Any:
        return self._runner.run(work)

    def _each(self, items: AsyncIterator[T]) -> Iterator[T]:
        """An async iterator of the client's, walked one item (a page fetched when needed) at a time."""
        while True:
            try:
                yield self._run(_next(items))
            except StopAsyncIteration:
                return

    def register(self, group: str, **options: Any) -> Version:
        return self._run(self._async.register(group, **options))

    def from_comet(self, group: str, **options: Any) -> Version:
        return self._run(self._async.from_comet(group, **options))

    def upload(self, file: str | Path, group: str) -> str:
        return self._run(self._async.upload(file, group))

    def version(self, group: str, version: int | None = None) -> Version:
        return self._run(self._async.version(group, version))

    def versions(self, group: str | None = None, **filters: Any) -> Iterator[Version]:
        """Every matching version, fetched a page at a time as you iterate."""
        return self._each(self._async.versions(group, **filters))

    def history(self, group: str, version: int) -> list[HistoryEntry]:
        return self._run(self._async.history(group, version))

    def deployments(self, group: str | None = None) -> list[Deployment]:
        return self._run(self._async.deployments(group))

    def deployment(self, deployment_id: str) -> Deployment:
        return self._run(self._async.deployment(deployment_id))

    def live(self, group: str, stage: str, at: datetime | None = None) -> Deployment:
        return self._run(self._async.live(group, stage, at))

    def timeline(self, group: str, stage: str, *, page_size: int = 100) -> Iterator[Period]:
        return self._each(self._async.timeline(group, stage, page_size=page_size))

    def wait(self, group: str, version: int, stage: str, until: str = "Deployed", timeout: float = 300.0,
             progress: Callable[[str], None] | None = None) -> Version:
        return self._run(self._async.wait(group, version, stage, until, timeout, progress))

    def approvals(self, status: str = "pending", **filters: Any) -> list[Approval]:
        return self._run(self._async.approvals(status, **filters))

    def approve(self, approval_id: str, comment: str | None = None) -> Approval:
        return self._run(self._async.approve(approval_id, comment))

    def reject(self, approval_id: str, comment: str) -> Approval:
        return self._run(self._async.reject(approval_id, comment))

    def rollback(self, group: str, stage: str, reason: str | None = None) -> Deployment:
        return self._run(self._async.rollback(group, stage, reason))

    def gate(self, group: str, stage: str, version: int | None = None) -> GateVerdict:
        return self._run(self._async.gate(group, stage, version))


for _name, _method in vars(Client).items():  # each sync method says what its async twin says
    if callable(_method) and not _name.startswith("_") and not _method.__doc__ and hasattr(AsyncClient, _name):
        _method.__doc__ = getattr(AsyncClient, _name).__doc__


async def _next(pages: AsyncIterator[T]) -> T:
    return await anext(pages)


async def _make(options: dict[str, Any]) -> AsyncClient:
    return AsyncClient(**options)  # inside the runner's loop, where its connections will live
