"""Deploying versions to stages: one deployment at a time per stage, each exactly once.

Every deployment, from an approval or a rollback, takes the same path:
1. recorded as Pending under the stage's lock. An approval already recorded is a duplicate (skipped); one
   for a version older than the newest approved for the stage is Superseded at once;
2. claimed: the stage is leased to this process, and its next deployment chosen: a Deploying one whose
   deployer died, else the newest Pending one (older Pending ones are Superseded), announced as
   DeploymentStarted;
3. run with bounded retries: the artifact is checked against the digest and S3 VersionId pinned at
   registration (shared/pins.py; a target that fetches the bytes itself, like `local`, checks the bytes it
   serves), the target deploys and verifies the version, then the Parameter Store pointer
   /modelgate/<group>/<stage>/current is written, so it only ever names a version that serves. An artifact
   changed since approval fails the deployment at once (no retry), and the pointer stays as it was. An
   inference pipeline has each of its steps' artifacts checked the same way. A stage in another AWS account
   (services/deployer/accounts.py) has its pointer written, and its target run, in that account, through
   the role it trusts; the deployment and its events name the account;
4. live (or Failed) in one transaction with its Deployed (or DeploymentFailed) event; then what served
   before is retired.
Every deployment marked Superseded (in step 1 or 2) is announced as DeploymentSuperseded, in the transaction
that marks it, so the registrar and the approver know it will never serve.
Step 1 is the ApprovalDecided handler's (or the rollback route's), in its own transaction; steps 2-4 are the
deployment worker's (services/deployer/worker.py), woken when step 1 commits, so no target ever runs inside
a message handler. Targets are idempotent per deployment, so resuming after kill -9 is safe.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential

from services.deployer import rollout as rollouts
from services.deployer.models import (
    DEPLOYED,
    DEPLOYING,
    FAILED,
    OPEN,
    PENDING,
    SUPERSEDED,
    Deployment,
    Rollout,
    Stage,
)
from services.deployer.targets.base import DeploySpec, ParameterStoreTarget, Target
from shared.bus import Skip
from shared.db import UnitOfWork
from shared.errors import Refused
from shared.events import (
    ApprovalDecided,
    Container,
    Deployed,
    DeployedPayload,
    DeploymentFailed,
    DeploymentFailedPayload,
    DeploymentStarted,
    DeploymentStartedPayload,
    DeploymentSuperseded,
    DeploymentSupersededPayload,
    model_version_id,
    new_id,
    utcnow,
)
from shared.pins import ArtifactChanged, check_pin
from shared.topology import parameter_name

log = structlog.get_logger()

#: Who holds a stage's lease: this process.
OWNER = f"{socket.gethostname()}:{os.getpid()}:{new_id()[:8]}"
DEFAULT_TARGET = ParameterStoreTarget()
_stage_locks: dict[tuple[str, str], asyncio.Lock] = {}


@dataclass(frozen=True)
class DeployOptions:
    attempts: int = 3
    retry_seconds: float = 1.0
    lease_seconds: float = 15.0


def target_for(targets: Mapping[str, Target], stage: str) -> Target:
    return targets.get(stage, DEFAULT_TARGET)


async def on_approval_decided(event: ApprovalDecided, uow: UnitOfWork, targets: Mapping[str, Target], wake: asyncio.Event) -> None:
    """Records an approved version's deployment as Pending, in the consumer's transaction; the deployment
    worker runs it once that commits (woken at once). A redelivery finds it recorded and deploys nothing."""
    p = event.payload
    if p.decision != "Approved":
        raise Skip(f"{p.model_version_id} was {p.decision} for {p.stage}: nothing to deploy")
    target = target_for(targets, p.stage)
    await record_approval(uow, event, target.name, target.account)
    uow.after_commit(wake.set)


async def record_approval(uow: UnitOfWork, event: ApprovalDecided, target: str, account: str | None = None) -> Deployment:
    p = event.payload
    stage = await lock_stage(uow.session, p.group, p.stage)
    if await uow.session.scalar(select(Deployment.id).where(Deployment.approval_id == p.approval_id)):
        raise Skip(f"approval {p.approval_id} is already recorded: deployed once only")
    deployment = Deployment(
        id=new_id(),
        group_name=p.group,
        stage=p.stage,
        model_version_id=p.model_version_id,
        version=p.version,
        artifact_uri=p.artifact_uri,
        artifact_digest=p.artifact_digest,
        artifact_version_id=p.artifact_version_id,
        containers=[c.model_dump(mode="json") for c in p.containers] or None,
        target=target,
        account=account,
        status=PENDING,
        approval_id=p.approval_id,
        cause_event_id=event.event_id,
        requested_by=", ".join(p.decided_by),
        rollback=p.rollback,
        rollout=p.rollout.model_dump(mode="json") if p.rollout else None,
    )
    if not p.rollback and p.version < stage.newest_version:
        _supersede(uow, deployment, model_version_id(p.group, stage.newest_version), stage.newest_version)
    else:
        stage.newest_version = max(stage.newest_version, p.version)
    uow.session.add(deployment)
    await uow.session.flush()
    return deployment


async def request_rollback(
    uow: UnitOfWork, group: str, stage_name: str, targets: Mapping[str, Target], requested_by: str, reason: str | None
) -> Deployment:
    """Records a rollback of the stage to the version live before the current one (run by resume_deployments)."""
    stage = await uow.session.get(Stage, (group, stage_name), with_for_update=True)
    live = await uow.session.get(Deployment, stage.live_deployment_id) if stage and stage.live_deployment_id else None
    if stage is None or live is None:
        raise Refused(404, f"nothing is live in {group}/{stage_name}, so there is nothing to roll back")
    busy = await uow.session.scalar(_open_in(group, stage_name).limit(1))
    if busy is not None:
        raise Refused(409, f"{busy.model_version_id} is being deployed to {stage_name} ({busy.status}); roll back once it is done")
    restore = await uow.session.get(Deployment, live.rollback_to_deployment_id) if live.rollback_to_deployment_id else None
    if restore is None:
        raise Refused(409, f"{live.model_version_id} is the first version live in {group}/{stage_name}: there is no earlier one")
    deployment = Deployment(
        group_name=group,
        stage=stage_name,
        model_version_id=restore.model_version_id,
        version=restore.version,
        artifact_uri=restore.artifact_uri,
        artifact_digest=restore.artifact_digest,  # the pin recorded when it was approved: checked again
        artifact_version_id=restore.artifact_version_id,
        containers=restore.containers,  # each step's pin, checked again
        target=target_for(targets, stage_name).name,
        account=target_for(targets, stage_name).account,
        status=PENDING,
        requested_by=requested_by,
        rollback=True,
        restores_deployment_id=restore.id,
        reason=reason or f"rollback from {live.model_version_id}",
    )
    uow.session.add(deployment)
    await uow.session.flush()
    return deployment


async def run_stage(
    uow: UnitOfWork, group: str, stage: str, ssm: Any, targets: Mapping[str, Target], options: DeployOptions,
    s3: Any = None,
) -> None:
    """Runs the stage's open deployments until none is left, or another deployer process holds the stage.
    `s3` reads pinned artifacts (needed as soon as a deployment has a digest)."""
    async with _stage_locks.setdefault((group, stage), asyncio.Lock()):
        deployment = await _claim(uow, group, stage, options)
        while deployment is not None:
            more = await _run(uow, deployment, ssm, targets, options, s3)
            deployment = await _claim(uow, group, stage, options) if more else None


async def lock_stage(session: AsyncSession, group: str, stage: str) -> Stage:
    """The stage's row, locked for this transaction (created on first use)."""
    insert = postgresql_insert if session.bind.dialect.name == "postgresql" else sqlite_insert
    await session.execute(insert(Stage).values(group_name=group, stage=stage, newest_version=0).on_conflict_do_nothing())
    row = await session.get(Stage, (group, stage), with_for_update=True, populate_existing=True)
    assert row is not None
    return row


def _open_in(group: str, stage: str) -> Any:
    return (
        select(Deployment)
        .where(Deployment.group_name == group, Deployment.stage == stage, Deployment.status.in_(OPEN))
        .order_by(Deployment.created_at, Deployment.id)
    )


def _supersede(uow: UnitOfWork, deployment: Deployment, newer: str, newer_version: int) -> None:
    """Marks the deployment Superseded by `newer` and announces it (DeploymentSuperseded) in the same transaction."""
    d = deployment
    d.status, d.finished_at = SUPERSEDED, utcnow()
    d.reason = f"superseded: {newer} was approved for {d.stage} and is newer"
    uow.publish(
        DeploymentSuperseded(
            producer="deployer",
            correlation_id=d.model_version_id,
            causation_id=d.cause_event_id,
            payload=DeploymentSupersededPayload(
                group=d.group_name, version=d.version, model_version_id=d.model_version_id, deployment_id=d.id,
                stage=d.stage, superseded_by=newer, superseded_by_version=newer_version, approval_id=d.approval_id,
                rollback=bool(d.rollback), reason=d.reason,
            ),
        )
    )
    log.info("deployment_superseded", model_version_id=d.model_version_id, stage=d.stage, by=newer)


def _start(uow: UnitOfWork, d: Deployment, now: datetime) -> None:
    """Moves a Pending deployment to Deploying and announces it (DeploymentStarted) in the same transaction."""
    d.status, d.started_at = DEPLOYING, d.started_at or now
    uow.publish(
        DeploymentStarted(
            producer="deployer",
            correlation_id=d.model_version_id,
            causation_id=d.cause_event_id,
            payload=DeploymentStartedPayload(
                group=d.group_name, version=d.version, model_version_id=d.model_version_id, deployment_id=d.id,
                stage=d.stage, target=d.target, artifact_uri=d.artifact_uri, approval_id=d.approval_id,
                rollback=bool(d.rollback), started_at=d.started_at, account=d.account,
            ),
        )
    )


async def _claim(uow: UnitOfWork, group: str, stage_name: str, options: DeployOptions) -> Deployment | None:
    now = utcnow()
    stage = await lock_stage(uow.session, group, stage_name)
    if stage.lease_owner not in (None, OWNER) and stage.lease_until is not None and stage.lease_until > now:
        await uow.commit()
        return None  # another deployer process is at work on this stage; it takes what is open
    open_ = list((await uow.session.scalars(_open_in(group, stage_name))).all())
    deploying = [d for d in open_ if d.status == DEPLOYING]
    pending = [d for d in open_ if d.status == PENDING]
    if deploying:  # its deployer died (or was stopped) half-way: finish it (announced as started already)
        chosen = deploying[0]
    elif pending:
        chosen = pending[-1]
        for older in pending[:-1]:
            _supersede(uow, older, chosen.model_version_id, chosen.version)
        _start(uow, chosen, now)
    else:
        stage.lease_owner, stage.lease_until = None, None
        await uow.commit()
        return None
    stage.lease_owner, stage.lease_until = OWNER, now + timedelta(seconds=options.lease_seconds)
    await uow.commit()
    return chosen


async def _run(
    uow: UnitOfWork, deployment: Deployment, ssm: Any, targets: Mapping[str, Target], options: DeployOptions, s3: Any = None
) -> bool:
    """Checks the artifact, deploys, verifies and points to the version (after its rollout, if it has one:
    services/deployer/rollout.py); True if the stage has more open deployments to run."""
    spec = spec_of(deployment)
    target = _target_named(targets, deployment.target, deployment.stage)
    live = await rollouts.live_of(uow, deployment.group_name, deployment.stage)
    skipped = rollouts.why_not(deployment, target.router() if target else None, live)
    progressive = skipped is None
    work = asyncio.create_task(_deploy_with_retries(deployment, target, ssm, options, s3, write=not progressive))
    try:
        while not (await asyncio.wait({work}, timeout=options.lease_seconds / 3))[0]:
            await _renew_lease(uow, deployment, options)
    except asyncio.CancelledError:
        work.cancel()
        raise
    try:
        endpoint_url, deployed_at, tries = work.result()
    except DeployFailure as failure:  # every try failed: announce it, keep what was live
        exc, tries = failure.error, failure.tries
        log.error("deployment_failed", model_version_id=deployment.model_version_id, stage=deployment.stage, tries=tries, error=str(exc))
        failed, more = await _finish_failed(uow, deployment, str(exc) or type(exc).__name__, tries)
        if failed and target:
            await _quietly(target.retire(spec), "retire_failed_deployment")
        return more
    if progressive:
        assert target is not None and live is not None
        outcome = await _roll_out(uow, deployment, live, target, endpoint_url, target.ssm or ssm, options)
        if outcome != rollouts.PROMOTE:
            return outcome == rollouts.STOPPED and await _has_open(uow, deployment)
        deployed_at = utcnow()
        await write_pointer(target.ssm or ssm, deployment, endpoint_url, deployed_at)
    elif skipped != "no rollout":
        log.warning("rollout_skipped", model_version_id=deployment.model_version_id, stage=deployment.stage, reason=skipped)
        deployment.reason = skipped
    previous, more = await _go_live(uow, deployment, endpoint_url, deployed_at, tries)
    if previous is not None and (old_target := _target_named(targets, previous.target, previous.stage)) is not None:
        await _quietly(old_target.retire(spec_of(previous)), "retire_previous_deployment")
    if progressive and target is not None:
        await _quietly(target.router().stop(deployment.id), "stop_rollout_router")
    return more


class DeployFailure(Exception):
    def __init__(self, error: Exception, tries: int):
        super().__init__(str(error))
        self.error, self.tries = error, tries


async def _deploy_with_retries(
    deployment: Deployment, target: Target | None, ssm: Any, options: DeployOptions, s3: Any, write: bool
) -> tuple[str | None, datetime, int]:
    """Deploys and verifies with bounded retries, and writes the pointer (unless `write` is False: a rollout
    moves it when it promotes); the endpoint URL, when it went live, and the tries it took."""
    spec, tries = spec_of(deployment), 0
    try:
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(options.attempts), wait=wait_exponential(multiplier=options.retry_seconds, max=60),
            retry=retry_if_exception(_worth_retrying), reraise=True,
        ):
            with attempt:
                tries += 1
                if target is None:
                    raise RuntimeError(f"target {deployment.target} is not configured (MODELGATE_TARGETS)")
                if target.account != deployment.account:
                    raise RuntimeError(f"{deployment.stage} is now configured in account {target.account or 'of the deployer'}, "
                                       f"not {deployment.account or 'the deployer'}'s where this deployment was recorded: "
                                       "approve the version again (or roll back) to deploy it there")
                await check_artifact(s3, spec, target)
                endpoint_url = await target.deploy(spec)
                await target.verify(spec, endpoint_url)
                deployed_at = utcnow()
                if write:
                    await write_pointer(target.ssm or ssm, deployment, endpoint_url, deployed_at)
                return endpoint_url, deployed_at, tries
    except Exception as exc:
        raise DeployFailure(exc, tries) from exc
    raise AssertionError("unreachable")


async def _roll_out(
    uow: UnitOfWork, deployment: Deployment, live: Deployment, target: Target, endpoint_url: str | None, ssm: Any,
    options: DeployOptions,
) -> str:
    """Runs the deployment's rollout; on PROMOTE the router already sends it 100 %. A stopped rollout's new
    server and router are retired here."""
    router = target.router()
    leases = rollouts.Leases(OWNER, options.lease_seconds, lock_stage, _release_lease_if_done)
    run = rollouts.Run(uow, deployment, live, endpoint_url or "", router, ssm, leases)
    outcome = await rollouts.run(run)
    if outcome == rollouts.PROMOTE:
        row = await uow.session.get(Rollout, deployment.id)
        assert row is not None
        await router.apply(deployment.id, run.routes(row, share=100.0))
    elif outcome == rollouts.STOPPED:
        await _quietly(target.retire(spec_of(deployment)), "retire_rolled_back_deployment")
        await _quietly(router.stop(deployment.id), "stop_rollout_router")
    return outcome


async def _has_open(uow: UnitOfWork, deployment: Deployment) -> bool:
    more = await uow.session.scalar(_open_in(deployment.group_name, deployment.stage).limit(1)) is not None
    await uow.commit()
    return more


def _worth_retrying(exc: BaseException) -> bool:
    """Errors, except an artifact changed since approval (permanent); never a cancellation."""
    return isinstance(exc, Exception) and not isinstance(exc, ArtifactChanged)


async def check_artifact(s3: Any, spec: DeploySpec, target: Target) -> None:
    """Raises ArtifactChanged unless the artifact (exactly its pinned S3 VersionId) has the digest pinned at
    registration. A target that fetches the pinned bytes itself checks those instead (`fetches_pinned_bytes`).
    A version registered before pinning has no digest: it deploys as before, with a warning."""
    for step in spec.steps:  # an inference pipeline: every step's artifact
        if step.artifact_digest is None:
            log.warning("artifact_not_pinned", model_version_id=spec.model_version_id, stage=spec.stage, step=step.name,
                        artifact_uri=step.artifact_uri, hint="registered before artifact pinning, or not in S3: its bytes are not checked")
            continue
        if target.fetches_pinned_bytes:
            continue
        if s3 is None:
            raise RuntimeError("the deployer has no S3 client to check the pinned artifact with")
        await check_pin(s3, step.artifact_uri, step.artifact_digest, step.artifact_version_id)


async def write_pointer(ssm: Any, deployment: Deployment, endpoint_url: str | None, deployed_at: datetime) -> None:
    """The Parameter Store pointer to what the stage serves (the four contract fields, then extras)."""
    value = {
        "model_version_id": deployment.model_version_id,
        "version": deployment.version,
        "artifact_uri": deployment.artifact_uri,
        "deployed_at": deployed_at.isoformat(),
        "deployment_id": deployment.id,
        "target": deployment.target,
        "endpoint_url": endpoint_url,
        "rollback": deployment.rollback,
        "artifact_digest": deployment.artifact_digest,
        "artifact_version_id": deployment.artifact_version_id,
    }
    if deployment.containers:  # an inference pipeline: its steps, in order, each with its pin
        value["containers"] = deployment.containers
    if deployment.account:
        value["account"] = deployment.account
    name = parameter_name(deployment.group_name, deployment.stage)
    await ssm.put_parameter(Name=name, Value=json.dumps(value), Type="String", Overwrite=True)


async def _renew_lease(uow: UnitOfWork, deployment: Deployment, options: DeployOptions) -> None:
    stage = await lock_stage(uow.session, deployment.group_name, deployment.stage)
    if stage.lease_owner == OWNER:
        stage.lease_until = utcnow() + timedelta(seconds=options.lease_seconds)
    await uow.commit()


async def _go_live(
    uow: UnitOfWork, deployment: Deployment, endpoint_url: str | None, deployed_at: datetime, tries: int
) -> tuple[Deployment | None, bool]:
    """Makes the deployment the stage's live one and announces it; returns what was live before, and whether
    the stage has more open deployments (if not, its lease is released in the same transaction)."""
    stage = await lock_stage(uow.session, deployment.group_name, deployment.stage)
    if stage.lease_owner != OWNER:
        log.warning("stage_lease_lost", model_version_id=deployment.model_version_id, stage=deployment.stage)
        await uow.commit()
        return None, False
    d = await uow.session.get(Deployment, deployment.id, populate_existing=True)
    assert d is not None
    previous = await uow.session.get(Deployment, stage.live_deployment_id) if stage.live_deployment_id else None
    if previous is not None and previous.id == d.id:
        previous = None
    restored = await uow.session.get(Deployment, d.restores_deployment_id) if d.restores_deployment_id else None
    d.status, d.endpoint_url, d.deployed_at, d.finished_at = DEPLOYED, endpoint_url, deployed_at, utcnow()
    d.attempts += tries
    d.previous_deployment_id = previous.id if previous else None
    d.previous_model_version_id = previous.model_version_id if previous else None
    # What a later rollback restores: for a rollback, what the restored deployment would have restored.
    d.rollback_to_deployment_id = restored.rollback_to_deployment_id if restored else (previous.id if previous else None)
    stage.live_deployment_id = d.id
    await rollouts.promoted(uow, d)  # a rollout's promotion, with the Deployed it leads to
    uow.publish(
        Deployed(
            producer="deployer",
            correlation_id=d.model_version_id,
            causation_id=d.cause_event_id,
            payload=DeployedPayload(
                group=d.group_name,
                version=d.version,
                model_version_id=d.model_version_id,
                deployment_id=d.id,
                stage=d.stage,
                target=d.target,
                artifact_uri=d.artifact_uri,
                parameter_name=parameter_name(d.group_name, d.stage),
                endpoint_url=endpoint_url,
                previous_model_version_id=d.previous_model_version_id,
                previous_version=previous.version if previous else None,
                rollback=d.rollback,
                deployed_at=deployed_at,
                artifact_digest=d.artifact_digest,
                artifact_version_id=d.artifact_version_id,
                containers=[Container.model_validate(c) for c in d.containers or []],
                account=d.account,
            ),
        )
    )
    more = await _release_lease_if_done(uow, stage)
    await uow.commit()
    log.info("deployed", model_version_id=d.model_version_id, stage=d.stage, target=d.target, endpoint_url=endpoint_url,
             previous=d.previous_model_version_id, rollback=d.rollback)
    return previous, more


async def _finish_failed(uow: UnitOfWork, deployment: Deployment, reason: str, tries: int) -> tuple[bool, bool]:
    """Records the failure and announces it; returns whether it did, and whether the stage has more to run."""
    stage = await lock_stage(uow.session, deployment.group_name, deployment.stage)
    if stage.lease_owner != OWNER:
        await uow.commit()
        return False, False
    d = await uow.session.get(Deployment, deployment.id, populate_existing=True)
    assert d is not None
    d.status, d.reason, d.finished_at = FAILED, reason[:4000], utcnow()
    d.attempts += tries
    uow.publish(
        DeploymentFailed(
            producer="deployer",
            correlation_id=d.model_version_id,
            causation_id=d.cause_event_id,
            payload=DeploymentFailedPayload(
                group=d.group_name,
                version=d.version,
                model_version_id=d.model_version_id,
                deployment_id=d.id,
                stage=d.stage,
                target=d.target,
                reason=d.reason,
                attempts=d.attempts,
                account=d.account,
            ),
        )
    )
    more = await _release_lease_if_done(uow, stage)
    await uow.commit()
    return True, more


async def _release_lease_if_done(uow: UnitOfWork, stage: Stage) -> bool:
    """Releases the stage's lease when nothing more is open on it; True if something is (the lease is kept)."""
    await uow.session.flush()
    if await uow.session.scalar(_open_in(stage.group_name, stage.stage).limit(1)) is not None:
        return True
    stage.lease_owner, stage.lease_until = None, None
    return False


def spec_of(d: Deployment) -> DeploySpec:
    return DeploySpec(d.id, d.group_name, d.stage, d.version, d.model_version_id, d.artifact_uri, d.artifact_digest,
                      d.artifact_version_id, tuple(Container.model_validate(c) for c in d.containers or []), d.account)


def _target_named(targets: Mapping[str, Target], name: str, stage: str) -> Target | None:
    """The stage's target when it is of that kind (it knows the stage's account), else one of that kind."""
    own = target_for(targets, stage)
    if own.name == name:
        return own
    return {t.name: t for t in (DEFAULT_TARGET, *targets.values()) if t.account is None}.get(name)


async def _quietly(step: Any, what: str) -> None:
    try:
        await step
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # the new version is live either way; the leftover is logged for a person
        log.warning(what, error=str(exc))


async def live_deployments(uow: UnitOfWork) -> list[Deployment]:
    rows = await uow.session.scalars(
        select(Deployment).join(Stage, Stage.live_deployment_id == Deployment.id).order_by(Deployment.group_name, Deployment.stage)
    )
    return list(rows.all())


async def open_deployment_ids(uow: UnitOfWork) -> set[str]:
    return set((await uow.session.scalars(select(Deployment.id).where(Deployment.status.in_(OPEN)))).all())


async def open_stages(uow: UnitOfWork) -> list[tuple[str, str]]:
    rows = await uow.session.execute(
        select(Deployment.group_name, Deployment.stage).where(Deployment.status.in_(OPEN)).distinct()
    )
    return [(group, stage) for group, stage in rows.all()]
