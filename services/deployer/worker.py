"""The deployment worker: runs what the handler and the rollback route recorded, stage by stage.

At start it brings the targets back to what is live (e.g. restarts local inference servers). Then, woken
when a deployment is recorded (or every `resume_seconds`, for what a crash left open), it runs each open
stage in a task of its own: one deployment at a time per stage, stages side by side, each under a lease in
the database (deploy.run_stage), so a deployment taking half an hour holds back no other stage and no
message of the queue. On SIGTERM it waits up to drain_seconds; a lease left behind lets the next deployer
resume the deployment.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from services.deployer.deploy import (
    DeployOptions,
    live_deployments,
    open_deployment_ids,
    open_stages,
    run_stage,
    spec_of,
)
from services.deployer.targets import Target
from shared.runtime import Runtime

log = structlog.get_logger()


@dataclass
class DeploymentWorker:
    runtime: Runtime[Any]
    ssm: Any
    targets: Mapping[str, Target]
    options: DeployOptions
    wake: asyncio.Event
    every: float = 5.0
    s3: Any = None  # reads the pinned artifacts (deploy.check_artifact)
    running: dict[tuple[str, str], asyncio.Task[None]] = field(default_factory=dict)

    async def run(self, stop: asyncio.Event) -> None:
        await self._reconcile()
        while not stop.is_set():
            self.wake.clear()
            for key in await self._open_stages():
                if key not in self.running or self.running[key].done():
                    self.running[key] = asyncio.create_task(self._run_stage(key))
            waiters = [asyncio.create_task(self.wake.wait()), asyncio.create_task(stop.wait())]
            await asyncio.wait(waiters, timeout=self.every, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                waiter.cancel()
        busy = [task for task in self.running.values() if not task.done()]
        if busy:  # leases make an interrupted deployment resumable by the next deployer
            await asyncio.wait(busy, timeout=self.runtime.settings.drain_seconds)

    async def _open_stages(self) -> list[tuple[str, str]]:
        try:
            async with self.runtime.uow() as uow:
                return await open_stages(uow)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the database is unreachable: try again later
            log.warning("resume_query_failed", error=str(exc))
            return []

    async def _run_stage(self, key: tuple[str, str]) -> None:
        try:
            async with self.runtime.uow() as uow:
                await run_stage(uow, key[0], key[1], self.ssm, self.targets, self.options, self.s3)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("resume_failed", group=key[0], stage=key[1], error=repr(exc))
        if key in await self._open_stages():
            self.wake.set()  # more was recorded while this stage ran: go round again at once

    async def _reconcile(self) -> None:
        try:
            async with self.runtime.uow() as uow:  # read inside: leaving the unit of work expires its rows
                live = [(spec_of(d), d.endpoint_url, d.target) for d in await live_deployments(uow)]
                unfinished = await open_deployment_ids(uow)
            for target in {id(t.unwrapped): t.unwrapped for t in self.targets.values()}.values():
                await target.reconcile([(spec, url) for spec, url, name in live if name == target.name], unfinished)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("reconcile_failed", error=repr(exc))
