"""Drift: whether what modelgate believes serves a stage is what serves it.

For each (group, stage) the deployer has a row for, up to four views of what serves it:
- `live`: the deployer's live record (Stage.live_deployment_id), the reference the others are compared to;
- `pointer`: the Parameter Store pointer /modelgate/<group>/<stage>/current, read in the stage's account
  (another one's, through the role it trusts, when MODELGATE_TARGETS says so: services/deployer/accounts.py);
- `target`: the target itself (Target.serving: the inference server's /metadata, SageMaker's endpoint, its
  config and model, ECS's task definition); none for parameter-store, where the pointer is what serves;
- `registrar`: the version(s) whose stage reads Deployed in the catalog; added by `modelgate verify`,
  which asks the registrar (the deployer does not).
A view naming another version, or another deployment of it, than `live` is a disagreement. A view that
could not be read is unknown: shown, never drift. While a deployment is under way in the stage its steps
disagree for a moment (target first, then pointer, then record), so a stage drifts only when nothing is open.

GET /v1/drift and the DriftWorker (every `drift_check_seconds`, 0: never) run `check_stages`; the worker sets
the gauge modelgate_stage_drift{group,stage} (1: drifts), counts modelgate_stage_drift_found_total, and logs
a `stage_drift` warning naming what disagrees: a line worth an alarm.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import structlog
from botocore.exceptions import BotoCoreError, ClientError
from prometheus_client import Counter, Gauge
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.deployer.deploy import spec_of, target_for
from services.deployer.models import OPEN, Deployment, Stage
from services.deployer.schemas import DriftView, StageDriftOut
from services.deployer.targets import Target
from shared.runtime import Runtime
from shared.topology import parameter_name

log = structlog.get_logger()

STAGE_DRIFT = Gauge("modelgate_stage_drift", "1 when a stage's pointer, live record and target disagree (last check)",
                    ["group", "stage"])
DRIFT_FOUND = Counter("modelgate_stage_drift_found_total", "Periodic checks that found a stage drifting", ["group", "stage"])
NAMES = {"live": "the deployer's live record", "pointer": "the Parameter Store pointer", "target": "the target",
         "registrar": "the registrar's catalog"}


def compare(group: str, stage: str, views: list[DriftView], deploying: bool = False) -> StageDriftOut:
    """What disagrees with the `live` view (the first view when there is none)."""
    live = next((v for v in views if v.source == "live"), views[0] if views else None)
    disagreements = []
    for view in views:
        if view is live or live is None or view.error is not None:
            continue
        said = f"{NAMES[view.source]} names {view.model_version_id or 'nothing'}"
        if view.model_version_id != live.model_version_id:
            disagreements.append(f"{said}, {NAMES[live.source]} {live.model_version_id or 'nothing'}"
                                 + (f" ({view.detail})" if view.detail else ""))
        elif view.deployment_id and live.deployment_id and view.deployment_id != live.deployment_id:
            disagreements.append(f"{said} as deployment {view.deployment_id}, {NAMES[live.source]} as {live.deployment_id}")
    return StageDriftOut(group=group, stage=stage, views=views, disagreements=disagreements, deploying=deploying,
                         drifted=bool(disagreements) and not deploying)


POINTERS_PER_CALL = 10  # GetParameters takes at most 10 names


async def pointer_views(ssm: Any, stages: list[tuple[str, str]], account: str | None = None,
                        ) -> dict[tuple[str, str], DriftView]:
    """The pointer view of each (group, stage), read ten names per GetParameters call (in `account`, when the
    stages' target lives in another AWS account: `ssm` is then that account's client)."""
    views: dict[tuple[str, str], DriftView] = {}
    where = f" in account {account}" if account else ""
    for start in range(0, len(stages), POINTERS_PER_CALL):
        chunk = {parameter_name(g, s): (g, s) for g, s in stages[start:start + POINTERS_PER_CALL]}
        try:
            answer = await ssm.get_parameters(Names=list(chunk))
        except (ClientError, BotoCoreError) as exc:
            views.update({key: DriftView(source="pointer", model_version_id=None, detail=name + where, error=str(exc))
                          for name, key in chunk.items()})
            continue
        for parameter in answer.get("Parameters", []):
            views[chunk[parameter["Name"]]] = _pointed(parameter["Name"] + where, parameter["Value"])
        for name in answer.get("InvalidParameters", []):
            views[chunk[name]] = DriftView(source="pointer", model_version_id=None, detail=f"{name}{where} does not exist")
        for name, key in chunk.items():
            views.setdefault(key, DriftView(source="pointer", model_version_id=None, detail=name + where,
                                            error="Parameter Store returned neither the parameter nor an error for it"))
    return views


def _pointed(name: str, value: str) -> DriftView:
    try:
        pointed = json.loads(value)
        return DriftView(source="pointer", model_version_id=pointed["model_version_id"],
                         deployment_id=pointed.get("deployment_id"), detail=name)
    except (ValueError, TypeError, KeyError):
        return DriftView(source="pointer", model_version_id=None, detail=f"{name} holds no pointer: {value[:80]!r}")


async def target_view(target: Target, live: Deployment) -> DriftView | None:
    try:
        serving = await target.serving(spec_of(live), live.endpoint_url)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 (the target's API failed: unknown, not drift)
        return DriftView(source="target", model_version_id=None, detail=target.name, error=str(exc) or type(exc).__name__)
    if serving is None:
        return None
    return DriftView(source="target", model_version_id=serving.model_version_id, deployment_id=serving.deployment_id,
                     detail=f"{target.name}: {serving.detail}" if serving.detail else target.name)


async def check_stage(stage: Stage, live: Deployment | None, deploying: bool, pointer: DriftView,
                      targets: Mapping[str, Target]) -> StageDriftOut:
    views = [DriftView(source="live", model_version_id=live.model_version_id if live else None,
                       deployment_id=live.id if live else None,
                       detail=f"deployed {live.deployed_at.isoformat()}" if live and live.deployed_at else "nothing live")]
    views.append(pointer)
    if live is not None and (found := await target_view(target_for(targets, stage.stage), live)) is not None:
        views.append(found)
    return compare(stage.group_name, stage.stage, views, deploying)


async def check_stages(session: AsyncSession, ssm: Any, targets: Mapping[str, Target], group: str | None = None,
                       stage: str | None = None, limit: int | None = None, offset: int = 0) -> list[StageDriftOut]:
    """Compares the views of each stage the deployer knows (optionally one group, one stage, one page)."""
    query = select(Stage, Deployment).outerjoin(Deployment, Deployment.id == Stage.live_deployment_id)
    if group:
        query = query.where(Stage.group_name == group)
    if stage:
        query = query.where(Stage.stage == stage)
    query = query.order_by(Stage.group_name, Stage.stage).offset(offset).limit(limit)
    rows = (await session.execute(query)).all()
    busy = {(g, s) for g, s in (await session.execute(
        select(Deployment.group_name, Deployment.stage).where(Deployment.status.in_(OPEN)).distinct())).all()}
    pointers: dict[tuple[str, str], DriftView] = {}
    for stage_name in sorted({s.stage for s, _ in rows}):
        target = target_for(targets, stage_name)
        keys = [(s.group_name, s.stage) for s, _ in rows if s.stage == stage_name]
        pointers.update(await pointer_views(target.ssm or ssm, keys, target.account))
    return [await check_stage(s, d, (s.group_name, s.stage) in busy, pointers[(s.group_name, s.stage)], targets)
            for s, d in rows]


def report(checked: StageDriftOut) -> None:
    """The gauge, the counter, and the `stage_drift` warning for one stage the worker checked."""
    STAGE_DRIFT.labels(checked.group, checked.stage).set(1 if checked.drifted else 0)
    if not checked.drifted:
        return
    DRIFT_FOUND.labels(checked.group, checked.stage).inc()
    seen = {v.source: v.model_version_id for v in checked.views if v.error is None}
    log.warning("stage_drift", group=checked.group, stage=checked.stage, disagreements=checked.disagreements,
                **{f"{source}_model_version_id": version for source, version in seen.items()})


@dataclass
class DriftWorker:
    """Checks every stage each `every` seconds (the first check one interval after start)."""

    runtime: Runtime[Any]
    ssm: Any
    targets: Mapping[str, Target]
    every: float = 60.0

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.every)
                return
            except TimeoutError:
                pass
            await self.check()

    async def check(self) -> list[StageDriftOut]:
        try:
            async with self.runtime.sessionmaker() as session:
                checked = await check_stages(session, self.ssm, self.targets)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 (the database is unreachable: try again next time)
            log.warning("drift_check_failed", error=str(exc))
            return []
        for each in checked:
            report(each)
        return checked
