"""The deployer's background loop: finishes what a crash or a rollback request left open, and at start-up
brings the targets back to what is live (e.g. restarts local inference servers)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
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
from shared.service import Runtime

log = structlog.get_logger()


async def resume_deployments(
    runtime: Runtime, stop: asyncio.Event, ssm: Any, targets: Mapping[str, Target], options: DeployOptions,
    wake: asyncio.Event, every: float,
) -> None:
    await _reconcile(runtime, targets)
    running: dict[tuple[str, str], asyncio.Task[None]] = {}
    while not stop.is_set():
        try:
            async with runtime.uow() as uow:
                stages = await open_stages(uow)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the database is unreachable: try again later
            log.warning("resume_query_failed", error=str(exc))
            stages = []
        for key in stages:
            if key not in running or running[key].done():
                running[key] = asyncio.create_task(_run_one(runtime, key, ssm, targets, options))
        waiters = [asyncio.create_task(wake.wait()), asyncio.create_task(stop.wait())]
        await asyncio.wait(waiters, timeout=every, return_when=asyncio.FIRST_COMPLETED)
        for waiter in waiters:
            waiter.cancel()
        wake.clear()
    busy = [task for task in running.values() if not task.done()]
    if busy:  # leases make an interrupted deployment resumable by the next deployer
        await asyncio.wait(busy, timeout=runtime.settings.drain_seconds)


async def _run_one(runtime: Runtime, key: tuple[str, str], ssm: Any, targets: Mapping[str, Target], options: DeployOptions) -> None:
    try:
        async with runtime.uow() as uow:
            await run_stage(uow, key[0], key[1], ssm, targets, options)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.error("resume_failed", group=key[0], stage=key[1], error=repr(exc))


async def _reconcile(runtime: Runtime, targets: Mapping[str, Target]) -> None:
    try:
        async with runtime.uow() as uow:
            live = await live_deployments(uow)
            unfinished = await open_deployment_ids(uow)
        for target in {id(t): t for t in targets.values()}.values():
            await target.reconcile([(spec_of(d), d.endpoint_url) for d in live if d.target == target.name], unfinished)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.error("reconcile_failed", error=repr(exc))
