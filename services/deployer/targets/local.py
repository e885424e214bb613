"""Target `local`: one inference server process per deployment on this machine (python -m services.inference).

A new version starts on a new port beside the old one; it must answer its health check (model loaded)
before the stage switches to it, and only then is the old server stopped: no downtime.
Servers are their own processes (their own session): they keep serving while the deployer restarts,
and the deployer finds them again from the state files in `run_dir` (one JSON file per deployment).
A server loads a pickle only for a group in `pickle_groups` (MODELGATE_PICKLE_GROUPS), and a local path
only with `allow_local_artifacts` (MODELGATE_ALLOW_LOCAL_ARTIFACTS); otherwise the deployment fails saying why.

What was approved is what is served: the deployer downloads exactly the pinned S3 VersionId into
`run_dir/artifacts/<deployment>/`, checking its SHA-256 digest as it writes (a mismatch is ArtifactChanged,
and nothing starts), and hands the server that file and the digest; the server checks the file again before
loading it. The server starts with a minimal environment (INHERITED, plus its own MODELGATE_* settings):
no AWS credentials, no tokens, none of the deployer's secrets. It needs none: it reads no S3.

An inference pipeline (a version with `containers`) runs in one server: every step's artifact is fetched and
checked the same way (into `artifacts/<deployment>/<n>-<step>/`), and the server runs the steps in order
behind its one POST /invocations (MODELGATE_PIPELINE: each step's name, file and digest; the last one the model).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlparse

import httpx
import structlog
from botocore.exceptions import BotoCoreError, ClientError

from services.deployer.targets.base import DeployError, DeploySpec, Serving, Target
from shared.events import Container
from shared.pins import ArtifactChanged, changed, download_pinned, file_digest, s3_location
from shared.settings import REPO_ROOT

log = structlog.get_logger()

#: What an inference server keeps of the deployer's environment; everything else is left out.
INHERITED = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV",
             "MODELGATE_LOG_LEVEL", "MODELGATE_LOG_FORMAT")


def server_environment(spec: DeploySpec, model_file: Path, digest: str, host: str, port: int,
                       pipeline: list[dict[str, str]] | None = None) -> dict[str, str]:
    """The whole environment of an inference server: INHERITED, and its own settings (services/inference).
    `pipeline`: an inference pipeline's steps in order ({name, uri, file, digest}); the model is the last."""
    env = {name: os.environ[name] for name in INHERITED if name in os.environ}
    if pipeline:
        env["MODELGATE_PIPELINE"] = json.dumps(pipeline)
    return env | {
        "MODELGATE_MODEL_URI": spec.artifact_uri,
        "MODELGATE_MODEL_FILE": str(model_file),
        "MODELGATE_MODEL_DIGEST": digest,
        "MODELGATE_MODEL_VERSION_ID": spec.model_version_id,
        "MODELGATE_DEPLOYMENT_ID": spec.deployment_id,
        "MODELGATE_HTTP_HOST": host,
        "MODELGATE_HTTP_PORT": str(port),
    }


class LocalTarget(Target):
    name = "local"
    fetches_pinned_bytes = True

    def __init__(self, run_dir: Path, host: str = "127.0.0.1", start_timeout: float = 60.0, stop_on_exit: bool = True,
                 s3: Any = None, pickle_groups: frozenset[str] = frozenset(), allow_local_artifacts: bool = False):
        self.s3 = s3  # downloads the artifacts (aiobotocore client)
        self.run_dir = run_dir
        self.pickle_groups = pickle_groups
        self.allow_local_artifacts = allow_local_artifacts
        self.host = host
        self.start_timeout = start_timeout
        self.stop_on_exit = stop_on_exit
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        run_dir.mkdir(parents=True, exist_ok=True)

    async def deploy(self, spec: DeploySpec) -> str:
        known = self._state(spec.deployment_id)
        if known and await self._is_ours(known):  # started before a crash: let it finish loading, keep it
            try:
                return await self._await_health(known, None)
            except DeployError:
                await self._stop(known)
        elif known:
            self._state_file(spec.deployment_id).unlink(missing_ok=True)
        return await self._start(spec, port=known["port"] if known else _free_port())

    async def verify(self, spec: DeploySpec, endpoint_url: str | None) -> None:
        state = self._state(spec.deployment_id)
        if state is None or not await self._answers(state, spec.deployment_id):
            raise DeployError(f"the inference server of {spec.model_version_id} does not answer at {endpoint_url}")

    async def serving(self, spec: DeploySpec, endpoint_url: str | None) -> Serving:
        """What the inference server at the stage's URL says it serves (its /metadata)."""
        url = endpoint_url or (self._state(spec.deployment_id) or {}).get("url")
        if not url:
            return Serving(None, detail="no inference server is recorded for the stage")
        try:
            async with httpx.AsyncClient(timeout=5) as http:
                response = await http.get(f"{url}/metadata")
            body = response.json() if response.status_code == 200 else {}
        except (httpx.HTTPError, ValueError):
            return Serving(None, detail=f"no inference server answers at {url}")
        return Serving(body.get("model_version_id"), body.get("deployment_id"), f"{url}/metadata")

    async def retire(self, spec: DeploySpec) -> None:
        state = self._state(spec.deployment_id)
        if state is not None:
            await self._stop(state)

    async def reconcile(self, live: list[tuple[DeploySpec, str | None]], unfinished: set[str]) -> None:
        keep = {spec.deployment_id for spec, _ in live} | unfinished
        for path in sorted(self.run_dir.glob("*.json")):
            if path.stem not in keep:  # a crash left it behind: nothing routes to it any more
                await self._stop(json.loads(path.read_text()))
        for spec, url in live:
            state = self._state(spec.deployment_id)
            if state is None or not await self._answers(state, spec.deployment_id):
                log.info("local_server_restarting", model_version_id=spec.model_version_id, stage=spec.stage)
                port = state["port"] if state else urlparse(url).port if url else None
                try:
                    await self._start(spec, port=port or _free_port())  # at its old address, which people know
                except (DeployError, ArtifactChanged) as exc:
                    log.error("local_server_not_restarted", model_version_id=spec.model_version_id, reason=str(exc))

    async def close(self) -> None:
        if self.stop_on_exit:
            for path in sorted(self.run_dir.glob("*.json")):
                await self._stop(json.loads(path.read_text()))

    def _state_file(self, deployment_id: str) -> Path:
        return self.run_dir / f"{deployment_id}.json"

    def _state(self, deployment_id: str) -> dict[str, Any] | None:
        try:
            return json.loads(self._state_file(deployment_id).read_text())
        except FileNotFoundError:
            return None

    async def fetch(self, spec: DeploySpec) -> tuple[Path, str]:
        """The artifact as a local file, and its digest: exactly the pinned VersionId, checked against the
        pinned digest (ArtifactChanged otherwise). Kept for restarts; fetched again unless it still matches."""
        return await self.fetch_step(spec, spec.steps[-1], self.run_dir / "artifacts" / spec.deployment_id)

    async def fetch_pipeline(self, spec: DeploySpec) -> list[dict[str, str]]:
        """Every step of an inference pipeline fetched and checked like `fetch`, in order."""
        steps = []
        for n, step in enumerate(spec.containers, start=1):
            path, digest = await self.fetch_step(spec, step, self.run_dir / "artifacts" / spec.deployment_id / f"{n}-{step.name}")
            steps.append({"name": step.name, "uri": step.artifact_uri, "file": str(path), "digest": digest})
        return steps

    async def fetch_step(self, spec: DeploySpec, step: Container, folder: Path) -> tuple[Path, str]:
        location = s3_location(step.artifact_uri)
        if location is None:  # a local path (no S3): served where it is
            return await self._local_file(step)
        path = folder / (PurePosixPath(location[1]).name or "model")
        if step.artifact_digest and path.exists() and await asyncio.to_thread(file_digest, path) == step.artifact_digest:
            return path, step.artifact_digest
        if self.s3 is None:
            raise DeployError("target local has no S3 client to fetch the artifact with")
        try:
            digest = await download_pinned(self.s3, step.artifact_uri, step.artifact_digest, step.artifact_version_id, path)
        except (ClientError, BotoCoreError) as exc:
            raise DeployError(f"cannot download {step.artifact_uri}: {exc}") from exc
        return path, digest

    async def _local_file(self, step: Container) -> tuple[Path, str]:
        if not self.allow_local_artifacts:
            raise DeployError(f"artifact URI {step.artifact_uri} is a local path; serve artifacts from s3://bucket/key "
                              "(local paths only for development, with MODELGATE_ALLOW_LOCAL_ARTIFACTS=true on the deployer)")
        path = Path(step.artifact_uri.removeprefix("file://"))
        try:
            digest = await asyncio.to_thread(file_digest, path)
        except OSError as exc:
            raise DeployError(f"cannot read {step.artifact_uri}: {exc}") from exc
        if step.artifact_digest and digest != step.artifact_digest:
            raise changed(step.artifact_uri, None, step.artifact_digest, digest)
        return path, digest

    async def _start(self, spec: DeploySpec, port: int) -> str:
        url = f"http://{self.host}:{port}"
        logfile = self.run_dir / f"{spec.deployment_id}.log"
        pipeline = await self.fetch_pipeline(spec) if spec.containers else None
        model_file, digest = (Path(pipeline[-1]["file"]), pipeline[-1]["digest"]) if pipeline else await self.fetch(spec)
        env = server_environment(spec, model_file, digest, self.host, port, pipeline) | self._loading_policy(spec)
        with logfile.open("ab") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "services.inference"],
                cwd=REPO_ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self._children[spec.deployment_id] = process
        state = {"deployment_id": spec.deployment_id, "pid": process.pid, "port": port, "url": url,
                 "model_version_id": spec.model_version_id, "stage": spec.stage}
        self._state_file(spec.deployment_id).write_text(json.dumps(state))
        log.info("local_server_started", pid=process.pid, url=url, model_version_id=spec.model_version_id)
        return await self._await_health(state, process)

    def _loading_policy(self, spec: DeploySpec) -> dict[str, str]:
        """What the server may load: a pickle only for an opted-in group, a local path only in development."""
        return {
            "MODELGATE_ALLOW_PICKLE": str(spec.group in self.pickle_groups).lower(),
            "MODELGATE_ALLOW_LOCAL_ARTIFACTS": str(self.allow_local_artifacts).lower(),
        }

    async def _await_health(self, state: dict[str, Any], process: subprocess.Popen[bytes] | None) -> str:
        """Waits for the server to answer its health check (its model loaded); stops it if it never does."""
        logfile = self.run_dir / f"{state['deployment_id']}.log"
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if not _alive(state["pid"], process):
                self._state_file(state["deployment_id"]).unlink(missing_ok=True)
                raise DeployError(f"the inference server exited: {_tail(logfile)}")
            if await self._answers(state, state["deployment_id"]):
                return state["url"]
            await asyncio.sleep(0.1)
        await self._stop(state)
        raise DeployError(f"the inference server did not answer within {self.start_timeout:.0f}s: {_tail(logfile)}")

    async def _is_ours(self, state: dict[str, Any]) -> bool:
        """Whether the state's pid is still that deployment's inference server (a pid can be reused)."""
        if not _alive(state["pid"], None):
            return False
        try:
            environ = Path(f"/proc/{state['pid']}/environ").read_bytes()
        except OSError:  # no /proc (macOS): only a server that answers proves it
            return await self._answers(state, state["deployment_id"])
        return f"MODELGATE_DEPLOYMENT_ID={state['deployment_id']}".encode() in environ.split(b"\0")

    async def _answers(self, state: dict[str, Any], deployment_id: str) -> bool:
        try:
            async with httpx.AsyncClient(timeout=2) as http:
                response = await http.get(f"{state['url']}/healthz")
            body = response.json()
        except (httpx.HTTPError, ValueError):
            return False
        return response.status_code == 200 and body.get("deployment_id") == deployment_id

    async def _stop(self, state: dict[str, Any], grace: float = 10.0) -> None:
        deployment_id, pid = state["deployment_id"], state["pid"]
        child = self._children.pop(deployment_id, None)
        if child is not None or await self._is_ours(state):
            _signal(pid, signal.SIGTERM)
            deadline = time.monotonic() + grace
            while _alive(pid, child) and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            if _alive(pid, child):
                _signal(pid, signal.SIGKILL)
            log.info("local_server_stopped", pid=pid, model_version_id=state.get("model_version_id"))
        self._state_file(deployment_id).unlink(missing_ok=True)
        shutil.rmtree(self.run_dir / "artifacts" / deployment_id, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _alive(pid: int, child: subprocess.Popen[bytes] | None) -> bool:
    if child is not None:
        return child.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _tail(logfile: Path, lines: int = 5) -> str:
    try:
        text = logfile.read_text(errors="replace").strip().splitlines()
    except FileNotFoundError:
        return "no log"
    return " | ".join(text[-lines:])[-1500:] or "no output"
