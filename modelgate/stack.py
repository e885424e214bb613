"""Starting and stopping the whole system as local processes: LocalStack, the bus, the four services."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from modelgate.runenv import service_command, service_env
from shared import infra, topology
from shared.settings import REPO_ROOT

LOCALSTACK_SCRIPT = REPO_ROOT / "scripts" / "localstack.sh"
DEFAULT_ENDPOINT = "http://127.0.0.1:4566"


class StackError(RuntimeError):
    pass


@dataclass
class Stack:
    """Where the processes of one running system keep their pids and logs."""

    namespace: str = "modelgate"
    endpoint: str = DEFAULT_ENDPOINT
    run_dir: Path = REPO_ROOT / "var"
    ports: dict[str, int] = field(default_factory=lambda: dict(topology.DEFAULT_PORTS))
    extra_env: dict[str, str] = field(default_factory=dict)
    service_extra_env: dict[str, dict[str, str]] = field(default_factory=dict)  # service -> more, for it alone
    database_urls: dict[str, str] = field(default_factory=dict)
    replicas: int = 1  # processes per service; more than one needs a shared (PostgreSQL) database

    def instances(self, service: str) -> list[str]:
        """The processes of `service`: "registrar", then "registrar-2", "registrar-3", ..."""
        return [service, *(f"{service}-{k}" for k in range(2, self.replicas + 1))]

    def all_instances(self) -> list[str]:
        return [i for service in topology.SERVICES for i in self.instances(service)]

    def port(self, instance: str) -> int:
        """Replica k of a service listens 100 * (k - 1) above the service's port, unless `ports` names it."""
        if instance in self.ports:
            return self.ports[instance]
        service = service_of(instance)
        replica = int(instance[len(service) + 1:] or 1)
        return self.ports.get(service, topology.DEFAULT_PORTS[service]) + 100 * (replica - 1)

    def pidfile(self, service: str) -> Path:
        return self.run_dir / "run" / f"{self.namespace}-{service}.pid"

    def logfile(self, service: str) -> Path:
        return self.run_dir / "log" / f"{self.namespace}-{service}.log"

    def owner_marker(self) -> Path:
        return self.run_dir / "run" / "localstack.started-by-modelgate"

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.port(service)}"

    def admin_token_file(self) -> Path:
        """Where the approver's first start leaves the admin principal's token (mode 0600)."""
        return self.run_dir / f"{self.namespace}-admin.token"

    def admin_token(self) -> str:
        path = self.admin_token_file()
        if not path.is_file():
            raise StackError(f"no admin token at {path}: the approver writes it on its very first start "
                             "(else: python -m services.approver.admin admin-token)")
        return path.read_text().strip()

    def env(self, instance: str) -> dict[str, str]:
        service = service_of(instance)
        env = {**os.environ, **service_env(service, endpoint=self.endpoint, namespace=self.namespace)}
        env["MODELGATE_HTTP_PORT"] = str(self.port(instance))
        env.update({f"MODELGATE_{other.upper()}_URL": self.url(other) for other in topology.SERVICES})  # first replicas
        env["MODELGATE_ADMIN_TOKEN_FILE"] = str(self.admin_token_file())
        if service in self.database_urls:
            env["MODELGATE_DATABASE_URL"] = self.database_urls[service]
        env.update(self.extra_env)
        env.update(self.service_extra_env.get(service, {}))
        return env


def service_of(instance: str) -> str:
    """"registrar-2" -> "registrar"."""
    return next(s for s in topology.SERVICES if instance == s or instance.startswith(f"{s}-"))


def postgres_databases(stack: Stack, server: str = "postgresql+asyncpg://postgres@127.0.0.1:5432") -> dict[str, str]:
    """One PostgreSQL database per service (`<namespace>_<service>`, made when missing), for replicas."""
    import asyncio

    import asyncpg

    plain = server.replace("postgresql+asyncpg://", "postgresql://")

    async def make() -> None:
        connection = await asyncpg.connect(f"{plain}/postgres")
        try:
            for service in topology.SERVICES:
                name = f"{stack.namespace.replace('-', '_')}_{service}"
                if not await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
                    await connection.execute(f'CREATE DATABASE "{name}"')
        finally:
            await connection.close()

    from concurrent.futures import ThreadPoolExecutor

    try:
        with ThreadPoolExecutor(1) as pool:  # its own event loop, whether or not the caller runs one
            pool.submit(asyncio.run, make()).result()
    except (OSError, asyncpg.PostgresError) as exc:
        raise StackError(f"replicas share a PostgreSQL database per service, and {plain} did not answer ({exc}); "
                         "start PostgreSQL or pass --replicas 1") from None
    return {s: f"{server}/{stack.namespace.replace('-', '_')}_{s}" for s in topology.SERVICES}


def _localstack(step: str, check: bool = True) -> bool:
    done = subprocess.run(["bash", str(LOCALSTACK_SCRIPT), step], cwd=REPO_ROOT, capture_output=step == "status")
    if check and done.returncode != 0:
        raise StackError(f"LocalStack {step} failed; see var/log/localstack.log")
    return done.returncode == 0


def start_localstack(stack: Stack) -> None:
    """Starts LocalStack unless one already answers; remembers whether `down` should stop it."""
    if _localstack("status", check=False):
        return
    _localstack("install")
    _localstack("start")
    stack.owner_marker().parent.mkdir(parents=True, exist_ok=True)
    stack.owner_marker().touch()


def stop_localstack(stack: Stack) -> None:
    """Stops LocalStack only if `up` started it: a LocalStack someone else runs is left alone."""
    if stack.owner_marker().exists():
        _localstack("stop", check=False)
        stack.owner_marker().unlink()


def provision(stack: Stack) -> infra.Provisioned:
    bridge, groups = infra.bridge_from_env({**os.environ, **stack.extra_env})  # the SageMaker bridge, when asked for
    return infra.provision(stack.namespace, endpoint_url=stack.endpoint, sagemaker_bridge=bridge, sagemaker_groups=groups)


def start_service(stack: Stack, service: str) -> int:
    """Starts one service in the background, detached from this terminal; returns its pid."""
    stack.logfile(service).parent.mkdir(parents=True, exist_ok=True)
    stack.pidfile(service).parent.mkdir(parents=True, exist_ok=True)
    if (pid := running_pid(stack, service)) is not None:
        return pid
    with stack.logfile(service).open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, *service_command(service_of(service))[1:]],
            cwd=REPO_ROOT,
            env=stack.env(service),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    stack.pidfile(service).write_text(str(process.pid))
    return process.pid


def running_pid(stack: Stack, service: str) -> int | None:
    try:
        pid = int(stack.pidfile(service).read_text())
        os.kill(pid, 0)
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return None
    return pid


def wait_ready(stack: Stack, service: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if running_pid(stack, service) is None:
            raise StackError(f"{service} exited during start-up; see {stack.logfile(service)}")
        try:
            response = httpx.get(f"{stack.url(service)}/readyz", timeout=2)
            _check_answered_by(stack, service, response)
            if response.status_code == 200:
                return
            last = response.text
        except httpx.HTTPError as exc:
            last = str(exc)
        time.sleep(0.2)
    raise StackError(f"{service} not ready after {timeout:.0f}s ({last}); see {stack.logfile(service)}")


def _check_answered_by(stack: Stack, service: str, response: httpx.Response) -> None:
    """Another stack's service on this port would pass for ours: say so instead."""
    try:
        body = response.json()
    except ValueError:
        body = {}
    answered = (body.get("service"), body.get("namespace")) if isinstance(body, dict) else (None, None)
    if answered != (None, None) and answered != (service_of(service), stack.namespace):
        raise StackError(
            f"port {stack.port(service)} answers as the {answered[0]} of namespace {answered[1]!r}, not this stack's "
            f"{service} (namespace {stack.namespace!r}): stop that one (modelgate down) or give this stack other ports"
        )


def stop_service(stack: Stack, service: str, timeout: float = 35.0, sig: int = signal.SIGTERM) -> bool:
    """SIGTERM (the service drains its in-flight work), then SIGKILL after `timeout`. True if it was running."""
    pid = running_pid(stack, service)
    if pid is None:
        stack.pidfile(service).unlink(missing_ok=True)
        return False
    os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.1)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)
    stack.pidfile(service).unlink(missing_ok=True)
    return True


def _is_instance(name: str) -> bool:
    return any(name == s or (name.startswith(f"{s}-") and name[len(s) + 1:].isdigit()) for s in topology.SERVICES)


def _alive(pid: int) -> bool:
    try:
        done, _status = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def up(stack: Stack, with_localstack: bool = True, progress: Callable[[str], None] = print) -> None:
    if with_localstack:
        progress("starting LocalStack")
        start_localstack(stack)
    progress("provisioning the bus")
    provision(stack)
    if stack.replicas > 1 and not stack.database_urls:
        stack.database_urls = postgres_databases(stack)
    for service in topology.SERVICES:
        progress(f"starting {service}")
        start_service(stack, service)
    for service in topology.SERVICES:
        wait_ready(stack, service)
        progress(f"{service} ready at {stack.url(service)}")
    # further replicas once the first made the schema and the admin: they then only join the queue
    extra = [i for i in stack.all_instances() if i not in topology.SERVICES]
    for instance in extra:
        start_service(stack, instance)
    for instance in extra:
        wait_ready(stack, instance)
        progress(f"{instance} ready at {stack.url(instance)}")


def down(stack: Stack, with_localstack: bool = True, progress: Callable[[str], None] = print) -> None:
    """Stops every process of the stack, replicas included (found by their pid files)."""
    found = {p.name.removeprefix(f"{stack.namespace}-").removesuffix(".pid")
             for p in (stack.run_dir / "run").glob(f"{stack.namespace}-*.pid")}
    for instance in sorted(found | set(stack.all_instances())):
        if _is_instance(instance) and stop_service(stack, instance):
            progress(f"stopped {instance}")
    if with_localstack:
        stop_localstack(stack)
