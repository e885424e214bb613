"""The `local` target's rollout routers: one router process (services/inference/router.py) per rollout.

A router starts when a rollout begins, in front of the stage's live inference server and the new one, and
stops when the rollout ends (promoted: the stage's pointer then names the new server; rolled back: the live
one). Like the inference servers it is a process of its own session, found again after a deployer restart
from its state file (`<run_dir>/routers/<deployment>.json`), and started again at the same port if it died.
`apply` PUTs the routes computed from the deployer's persisted rollout state: doing it twice is harmless.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import structlog

from services.deployer.targets.base import DeployError
from services.deployer.targets.local import INHERITED, LocalTarget, _alive, _free_port, _signal, _tail
from shared.settings import REPO_ROOT

log = structlog.get_logger()


class RoutedLocalTarget(LocalTarget):
    """Target `local` with rollouts: LocalTarget, and a LocalRouter in front of its servers during a rollout."""

    def router(self) -> LocalRouter:
        if getattr(self, "_router", None) is None:
            self._router = LocalRouter(self.run_dir / "routers", self.host, self.start_timeout)
        return self._router

    async def reconcile(self, live: list[tuple[Any, str | None]], unfinished: set[str]) -> None:
        await super().reconcile(live, unfinished)
        await self.router().reconcile(unfinished)

    async def close(self) -> None:
        await super().close()
        if self.stop_on_exit:
            await self.router().reconcile(set())


class LocalRouter:
    def __init__(self, run_dir: Path, host: str = "127.0.0.1", start_timeout: float = 30.0):
        self.run_dir = run_dir
        self.host = host
        self.start_timeout = start_timeout
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        run_dir.mkdir(parents=True, exist_ok=True)

    async def apply(self, deployment_id: str, routes: dict[str, Any]) -> str:
        """Makes the rollout's router route as `routes` says (started first, if it is not running); its URL."""
        state = self._state(deployment_id)
        if state is None or not await self._answers(state):
            state = await self._start(deployment_id, routes, state["port"] if state else _free_port())
        try:
            async with httpx.AsyncClient(timeout=5) as http:
                response = await http.put(f"{state['url']}/routes", json=routes)
        except httpx.HTTPError as exc:
            raise DeployError(f"the rollout router at {state['url']} does not take routes: {exc}") from exc
        if response.status_code != 200:
            raise DeployError(f"the rollout router refused its routes ({response.status_code}): {response.text[:300]}")
        return str(state["url"])

    async def stats(self, deployment_id: str) -> dict[str, Any]:
        state = self._state(deployment_id)
        if state is None:
            raise DeployError("the rollout has no router")
        async with httpx.AsyncClient(timeout=5) as http:
            response = await http.get(f"{state['url']}/stats")
        response.raise_for_status()
        return dict(response.json())

    async def stop(self, deployment_id: str) -> None:
        state = self._state(deployment_id)
        if state is None:
            return
        pid, child = state["pid"], self._children.pop(deployment_id, None)
        if child is not None or await self._answers(state):
            _signal(pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while _alive(pid, child) and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            if _alive(pid, child):
                _signal(pid, signal.SIGKILL)
            log.info("rollout_router_stopped", pid=pid, deployment_id=deployment_id)
        self._state_file(deployment_id).unlink(missing_ok=True)

    async def reconcile(self, unfinished: set[str]) -> None:
        """At start-up: stops the routers of rollouts that are over (a crash left them behind)."""
        for path in sorted(self.run_dir.glob("*.json")):
            if path.stem not in unfinished:
                await self.stop(path.stem)

    def _state_file(self, deployment_id: str) -> Path:
        return self.run_dir / f"{deployment_id}.json"

    def _state(self, deployment_id: str) -> dict[str, Any] | None:
        try:
            return dict(json.loads(self._state_file(deployment_id).read_text()))
        except FileNotFoundError:
            return None

    async def _start(self, deployment_id: str, routes: dict[str, Any], port: int) -> dict[str, Any]:
        url = f"http://{self.host}:{port}"
        env = {name: os.environ[name] for name in INHERITED if name in os.environ} | {
            "MODELGATE_ROUTER_ROUTES": json.dumps(routes),
            "MODELGATE_ROUTER_DEPLOYMENT_ID": deployment_id,
            "MODELGATE_ROUTER_HTTP_HOST": self.host,
            "MODELGATE_ROUTER_HTTP_PORT": str(port),
        }
        logfile = self.run_dir / f"{deployment_id}.log"
        with logfile.open("ab") as out:
            process = subprocess.Popen([sys.executable, "-m", "services.inference.router"], cwd=REPO_ROOT, env=env,
                                       stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        self._children[deployment_id] = process
        state = {"deployment_id": deployment_id, "pid": process.pid, "port": port, "url": url}
        self._state_file(deployment_id).write_text(json.dumps(state))
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if not _alive(process.pid, process):
                raise DeployError(f"the rollout router exited: {_tail(logfile)}")
            if await self._answers(state):
                log.info("rollout_router_started", pid=process.pid, url=url, deployment_id=deployment_id)
                return state
            await asyncio.sleep(0.1)
        await self.stop(deployment_id)
        raise DeployError(f"the rollout router did not answer within {self.start_timeout:.0f}s: {_tail(logfile)}")

    async def _answers(self, state: dict[str, Any]) -> bool:
        try:
            async with httpx.AsyncClient(timeout=2) as http:
                response = await http.get(f"{state['url']}/healthz")
            return response.status_code == 200 and response.json().get("deployment_id") == state["deployment_id"]
        except (httpx.HTTPError, ValueError):
            return False
