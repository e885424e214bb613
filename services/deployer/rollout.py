"""Rollouts: a deployment going live step by step while guardrails watch it (docs/targets.md#rollouts).

Promises:
- A progressive rollout (canary, linear, shadow; its RolloutSpec came signed on ApprovalDecided) runs when the
  stage has a live version to compare with and the target has a router (`Target.router()`); otherwise the
  deployment goes live at once, as before, and its `reason` says why.
- The deployment worker runs it (deploy.run_stage), once the new version's server answers, under the stage's
  lease: it begins (Baking, step 1, RolloutStepped), then every guardrail interval reads the router's stats
  and evaluates the guardrails against the live version (services/deployer/guardrails.py). A breach stops
  it (RolledBack, RolloutRolledBack): the live version takes 100 % again and the new server is retired. A
  step that baked for its time with the guardrails judged and holding moves to the next (RolloutStepped);
  after the last one the caller promotes: 100 % to the new version, the pointer moves, and Promoted,
  RolloutPromoted and Deployed are committed together (deploy._go_live).
- Each step and each outcome is one transaction, with the outbox row of its event: after kill -9 the next
  deployer resumes from the persisted row, and no step is done twice. The router's routes are always
  computed from that row and PUT again (idempotent); the bake time of a step counts from its persisted start.
- The pointer /modelgate/<group>/<stage>/current keeps naming the live version until promotion; during the
  rollout it carries a `rollout` object (candidate, strategy, status, step, share, router_url) saying where
  the split traffic goes.
- Operators pause (the share stays, no step ends, guardrails still watch and still roll back), resume (the
  step's bake continues where it was) and abort (the worker rolls back: Aborted) through routes/rollouts.py.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import select

from services.deployer.guardrails import Evaluation, evaluate
from services.deployer.models import ROLLED_BACK, Deployment, Rollout, Stage
from shared.db import UnitOfWork
from shared.events import (
    RolloutPromoted,
    RolloutPromotedPayload,
    RolloutRolledBack,
    RolloutRolledBackPayload,
    RolloutSpec,
    RolloutStatus,
    RolloutStepped,
    RolloutSteppedPayload,
    utcnow,
)
from shared.topology import parameter_name

log = structlog.get_logger()

BAKING, PAUSED, PROMOTED, ROLLED_BACK_STATUS, ABORTED = (
    RolloutStatus.BAKING, RolloutStatus.PAUSED, RolloutStatus.PROMOTED, RolloutStatus.ROLLED_BACK, RolloutStatus.ABORTED,
)
ACTIVE = (BAKING, PAUSED)
PROMOTE, STOPPED, LOST = "promote", "stopped", "lost"


def spec_of(d: Deployment) -> RolloutSpec | None:
    spec = RolloutSpec.model_validate(d.rollout, context={"tolerant": True}) if d.rollout else None
    return spec if spec is not None and spec.strategy != "all-at-once" and spec.guardrails is not None else None


def why_not(d: Deployment, router: Any, live: Deployment | None) -> str | None:
    """Why the deployment's progressive rollout goes live at once instead (None: it rolls out)."""
    spec = spec_of(d)
    if spec is None:
        return "no rollout"
    if live is None or live.endpoint_url is None:
        return f"{spec.strategy} rollout skipped: nothing serves {d.stage} yet to compare with, so it went live at once"
    if router is None:
        return f"{spec.strategy} rollout skipped: target {d.target} cannot split traffic yet, so it went live at once"
    return None


@dataclass
class Leases:
    """The stage's lock and lease, as services/deployer/deploy.py keeps them (passed in: no import cycle)."""

    owner: str
    seconds: float
    lock_stage: Callable[[Any, str, str], Awaitable[Stage]]
    release_if_done: Callable[[UnitOfWork, Stage], Awaitable[bool]]


@dataclass
class Run:
    """One rollout being run: the deployment, what serves now, and where."""

    uow: UnitOfWork
    deployment: Deployment
    live: Deployment
    endpoint_url: str  # the new version's server
    router: Any
    ssm: Any
    leases: Leases

    @property
    def spec(self) -> RolloutSpec:
        spec = spec_of(self.deployment)
        assert spec is not None
        return spec

    def routes(self, row: Rollout, share: float | None = None) -> dict[str, Any]:
        """The router's routes, computed from the persisted state alone."""
        d, live = self.deployment, self.live
        return {
            "live": {"url": live.endpoint_url, "model_version_id": live.model_version_id},
            "candidate": {"url": self.endpoint_url, "model_version_id": d.model_version_id},
            "mode": "shadow" if row.strategy == "shadow" else "split",
            "share": row.share if share is None else share,
        }


async def run(r: Run) -> str:
    """Runs the rollout until it is to be promoted (PROMOTE), was stopped (STOPPED) or the lease was lost."""
    row = await _begin(r)
    spec = r.spec
    assert spec.guardrails is not None
    while True:
        row = await _fresh(r.uow, row.deployment_id)
        if row.status not in ACTIVE:
            return STOPPED
        row.router_url = await r.router.apply(r.deployment.id, r.routes(row))
        await annotate_pointer(r.ssm, r.deployment, row, r.endpoint_url)
        now = utcnow()
        evaluation = None
        if row.evaluated_at is None or (now - row.evaluated_at).total_seconds() >= spec.guardrails.interval_seconds:
            stats = await r.router.stats(r.deployment.id)
            evaluation = evaluate(spec.guardrails, stats, r.live.model_version_id, r.deployment.model_version_id)
        outcome = await _decide(r, row.deployment_id, evaluation, now)
        if outcome is not None:
            return outcome
        spent = (utcnow() - now).total_seconds()  # the loop's own work counts towards the next evaluation
        await asyncio.sleep(max(0.05, min(spec.guardrails.interval_seconds, r.leases.seconds / 3) - spent))


async def _decide(r: Run, deployment_id: str, evaluation: Evaluation | None, now: datetime) -> str | None:
    """Under the stage's lock: the abort, breach, next step or promotion the evaluation calls for, if any."""
    stage = await r.leases.lock_stage(r.uow.session, r.deployment.group_name, r.deployment.stage)
    if stage.lease_owner != r.leases.owner:
        await r.uow.commit()
        return LOST
    stage.lease_until = now + timedelta(seconds=r.leases.seconds)
    row = await r.uow.session.get(Rollout, deployment_id, populate_existing=True)
    assert row is not None
    if row.abort_requested_by:
        await _stop(r, row, ABORTED, f"aborted by {row.abort_requested_by}", evaluation)
        return STOPPED
    if evaluation is None:
        await r.uow.commit()
        return None
    row.evaluation, row.evaluated_at = {**evaluation.values, "requests": evaluation.requests}, now
    if evaluation.breached:
        await _stop(r, row, ROLLED_BACK_STATUS, f"guardrail breached: {evaluation.reason}", evaluation)
        return STOPPED
    baked = (now - row.step_started_at).total_seconds() >= r.spec.bake_seconds
    if row.status == BAKING and baked and evaluation.judged:
        if row.step_index + 1 >= len(row.steps):
            await r.uow.commit()
            return PROMOTE
        row.step_index, row.share, row.step_started_at = row.step_index + 1, row.steps[row.step_index + 1], now
        announce_step(r.uow, r.deployment, row)
        log.info("rollout_stepped", model_version_id=r.deployment.model_version_id, stage=row.stage, share=row.share)
    await r.uow.commit()
    return None


async def _begin(r: Run) -> Rollout:
    """The rollout's row: made (Baking, step 1, announced) on first run, found again on a resumed one."""
    d = r.deployment
    row = await r.uow.session.get(Rollout, d.id, populate_existing=True)
    if row is not None:
        log.info("rollout_resumed", model_version_id=d.model_version_id, stage=d.stage, status=row.status, step=row.step_index + 1)
        return row
    spec = r.spec
    row = Rollout(deployment_id=d.id, group_name=d.group_name, stage=d.stage, strategy=spec.strategy, steps=list(spec.steps),
                  step_index=0, share=spec.steps[0], status=BAKING, live_deployment_id=r.live.id,
                  live_model_version_id=r.live.model_version_id, started_at=utcnow(), step_started_at=utcnow())
    row.router_url = await r.router.apply(d.id, r.routes(row))  # before it is announced: the event says where
    await annotate_pointer(r.ssm, d, row, r.endpoint_url)
    row.step_started_at = utcnow()
    r.uow.session.add(row)
    announce_step(r.uow, d, row)
    await r.uow.commit()
    log.info("rollout_started", model_version_id=d.model_version_id, stage=d.stage, strategy=spec.strategy, steps=spec.steps)
    return row


async def _fresh(uow: UnitOfWork, deployment_id: str) -> Rollout:
    row = await uow.session.get(Rollout, deployment_id, populate_existing=True)
    assert row is not None
    await uow.commit()
    return row


def announce_step(uow: UnitOfWork, d: Deployment, row: Rollout, reason: str | None = None) -> None:
    uow.publish(RolloutStepped(
        producer="deployer", correlation_id=d.model_version_id, causation_id=d.cause_event_id,
        payload=RolloutSteppedPayload(
            group=d.group_name, version=d.version, model_version_id=d.model_version_id, deployment_id=d.id, stage=d.stage,
            target=d.target, strategy=row.strategy, status=row.status, step=row.step_index + 1, steps=len(row.steps),  # type: ignore[arg-type]
            share=row.share, mirror=row.strategy == "shadow", live_model_version_id=row.live_model_version_id,
            router_url=row.router_url, reason=reason, at=utcnow(),
        ),
    ))


async def _stop(r: Run, row: Rollout, status: RolloutStatus, reason: str, evaluation: Evaluation | None) -> None:
    """The live version takes 100 % again (router, pointer), then the rollout and its deployment end,
    announced, in one transaction. The new server is retired by the caller (deploy._run) after this commits."""
    d = await r.uow.session.get(Deployment, r.deployment.id, populate_existing=True)
    assert d is not None
    share = row.share
    await r.router.apply(d.id, r.routes(row, share=0.0))  # first: a crash before the commit only repeats this
    await annotate_pointer(r.ssm, d, None, None)
    row.status, row.reason, row.finished_at, row.share = status, reason[:4000], utcnow(), 0.0
    d.status, d.reason, d.finished_at = ROLLED_BACK, reason[:4000], utcnow()
    values = evaluation.values if evaluation else dict(row.evaluation or {})
    r.uow.publish(RolloutRolledBack(
        producer="deployer", correlation_id=d.model_version_id, causation_id=d.cause_event_id,
        payload=RolloutRolledBackPayload(
            group=d.group_name, version=d.version, model_version_id=d.model_version_id, deployment_id=d.id, stage=d.stage,
            strategy=row.strategy, status=status, reason=reason[:4000], breached=evaluation.breached if evaluation else [],  # type: ignore[arg-type]
            evaluation={k: v for k, v in values.items() if isinstance(v, int | float) or v is None}, share=share,
            step=row.step_index + 1, live_model_version_id=row.live_model_version_id,
            by=row.abort_requested_by, at=utcnow(),
        ),
    ))
    stage = await r.leases.lock_stage(r.uow.session, d.group_name, d.stage)
    await r.leases.release_if_done(r.uow, stage)
    await r.uow.commit()
    log.warning("rollout_stopped", model_version_id=d.model_version_id, stage=d.stage, status=status, reason=reason)


async def promoted(uow: UnitOfWork, d: Deployment) -> None:
    """Marks the rollout Promoted and announces it: in deploy._go_live's transaction (with Deployed)."""
    row = await uow.session.get(Rollout, d.id, populate_existing=True)
    if row is None:
        return
    row.status, row.share, row.finished_at = PROMOTED, 100.0, utcnow()
    uow.publish(RolloutPromoted(
        producer="deployer", correlation_id=d.model_version_id, causation_id=d.cause_event_id,
        payload=RolloutPromotedPayload(
            group=d.group_name, version=d.version, model_version_id=d.model_version_id, deployment_id=d.id, stage=d.stage,
            strategy=row.strategy, live_model_version_id=row.live_model_version_id,  # type: ignore[arg-type]
            evaluation={k: v for k, v in (row.evaluation or {}).items() if isinstance(v, int | float) or v is None},
            at=utcnow(),
        ),
    ))


async def annotate_pointer(ssm: Any, d: Deployment, row: Rollout | None, endpoint_url: str | None) -> None:
    """Adds (or with `row` None, removes) the `rollout` object of the stage's pointer; the rest stays as it
    is: the pointer names the live version until promotion."""
    name = parameter_name(d.group_name, d.stage)
    try:
        value = json.loads((await ssm.get_parameter(Name=name))["Parameter"]["Value"])
    except Exception as exc:  # no pointer yet (nothing live): nothing to annotate
        log.warning("pointer_not_annotated", parameter=name, error=str(exc))
        return
    if row is None:
        if "rollout" not in value:
            return
        value.pop("rollout")
    else:
        rollout = {"deployment_id": d.id, "candidate_model_version_id": d.model_version_id, "candidate_version": d.version,
                   "candidate_endpoint_url": endpoint_url, "strategy": row.strategy, "status": row.status,
                   "step": row.step_index + 1, "steps": len(row.steps), "share": row.share,
                   "mirror": row.strategy == "shadow", "router_url": row.router_url}
        if value.get("rollout") == rollout:
            return
        value["rollout"] = rollout
    await ssm.put_parameter(Name=name, Value=json.dumps(value), Type="String", Overwrite=True)


async def live_of(uow: UnitOfWork, group: str, stage: str) -> Deployment | None:
    row = await uow.session.get(Stage, (group, stage), populate_existing=True)
    live = await uow.session.get(Deployment, row.live_deployment_id) if row and row.live_deployment_id else None
    await uow.commit()
    return live


async def current(uow: UnitOfWork, group: str, stage: str) -> Rollout | None:
    """The stage's newest rollout (running or not)."""
    return await uow.session.scalar(
        select(Rollout).where(Rollout.group_name == group, Rollout.stage == stage).order_by(Rollout.started_at.desc()).limit(1)
    )
