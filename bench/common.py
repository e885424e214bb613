"""What the benchmarks and the chaos run share: a private LocalStack, a system of four services in a fresh
namespace, registering journeys, reading their timings back, and printing tables."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import psutil
from botocore.exceptions import ClientError
from rich.console import Console
from rich.table import Table

from modelgate import stack as stack_mod
from modelgate.stack import Stack
from shared.infra import boto_client
from shared.settings import REPO_ROOT
from shared.topology import SERVICES, bucket_name, dlq_name, queue_name, topic_name

console = Console(width=110)
POSTGRES_ADMIN = os.environ.get("MODELGATE_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
LOCALSTACK_SCRIPT = REPO_ROOT / "scripts" / "localstack.sh"


class WebhookReceiver:
    """A Slack-style incoming webhook on loopback that counts what it is sent, by Idempotency-Key.

    `hang_seconds` makes it answer that late (a slow or stuck receiver)."""

    def __init__(self, hang_seconds: float = 0.0) -> None:
        self.posts: list[dict] = []
        self.keys: Counter[str] = Counter()
        self.subjects: dict[str, str] = {}  # Idempotency-Key -> the model_version_id it is about
        self.arrivals: list[tuple[float, dict]] = []  # (epoch seconds it arrived, body), repeats included
        self.hang_seconds = hang_seconds
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if receiver.hang_seconds:
                    time.sleep(receiver.hang_seconds)
                receiver.posts.append(body)
                receiver.arrivals.append((time.time(), body))
                receiver.keys[self.headers.get("Idempotency-Key", "")] += 1
                receiver.subjects[self.headers.get("Idempotency-Key", "")] = body.get("model_version_id") or ""
                with suppress(BrokenPipeError, ConnectionResetError):  # the sender was killed meanwhile (chaos)
                    self.send_response(200)
                    self.end_headers()
                    self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/team"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def cleanup_on_sigterm() -> None:
    """SIGTERM (`timeout`, a CI job cancelled) unwinds like Ctrl-C, so the services, the private LocalStack
    and the databases a bench made are stopped and removed, not left behind."""
    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LocalStackProcess:
    """A LocalStack of our own, on its own port, with its own run directory (pidfile, log, data)."""

    endpoint: str
    pid: int
    run_dir: Path

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "LOCALSTACK_PORT": self.endpoint.rsplit(":", 1)[1], "LOCALSTACK_RUN_DIR": str(self.run_dir)}


@contextmanager
def private_localstack(port: int | None = None) -> Iterator[LocalStackProcess]:
    """Starts a LocalStack nobody else uses (safe to pause or measure), and stops it afterwards."""
    port = port or free_port()
    run_dir = Path(tempfile.mkdtemp(prefix="modelgate-localstack-"))
    env = {**os.environ, "LOCALSTACK_PORT": str(port), "LOCALSTACK_RUN_DIR": str(run_dir)}
    subprocess.run(["bash", str(LOCALSTACK_SCRIPT), "install"], check=True, env=env, capture_output=True)
    started = subprocess.run(["bash", str(LOCALSTACK_SCRIPT), "start"], check=False, env=env, capture_output=True, text=True)
    if started.returncode != 0:
        raise RuntimeError(f"private LocalStack did not start on port {port}: {started.stdout}{started.stderr}")
    pid = int((run_dir / "run" / "localstack.pid").read_text())
    try:
        yield LocalStackProcess(f"http://127.0.0.1:{port}", pid, run_dir)
    finally:
        subprocess.run(["bash", str(LOCALSTACK_SCRIPT), "stop"], check=False, env=env, capture_output=True)
        shutil.rmtree(run_dir, ignore_errors=True)


def new_stack(endpoint: str, prefix: str = "bench", extra_env: dict[str, str] | None = None) -> Stack:
    """Four services in a fresh namespace, on free ports, with their SQLite files in a fresh directory."""
    run_dir = Path(tempfile.mkdtemp(prefix=f"modelgate-{prefix}-"))
    return Stack(
        namespace=f"{prefix}{uuid.uuid4().hex[:8]}",
        endpoint=endpoint,
        run_dir=run_dir,
        ports={service: free_port() for service in SERVICES},
        database_urls={service: f"sqlite+aiosqlite:///{run_dir}/{service}.db" for service in SERVICES},
        extra_env=dict(extra_env or {}),
    )


@contextmanager
def running_system(stack: Stack, keep_files: bool = False) -> Iterator[Stack]:
    """The four services up (bus provisioned) for the duration; stopped and the namespace removed afterwards,
    also when one of them does not start."""
    try:
        stack_mod.up(stack, with_localstack=False, progress=lambda message: None)
        yield stack
    finally:
        stack_mod.down(stack, with_localstack=False, progress=lambda message: None)
        deprovision(stack.namespace, stack.endpoint)
        if not keep_files:
            shutil.rmtree(stack.run_dir, ignore_errors=True)


def postgres_namespace(stack: Stack, admin_url: str = POSTGRES_ADMIN) -> tuple[dict[str, str], list[str]]:
    """One PostgreSQL database per service for this stack (`<namespace>_<service>`, as `modelgate up --replicas`
    makes them): (URL per service, the databases' names, for drop_databases)."""
    server = "postgresql+asyncpg://" + admin_url.split("://", 1)[1].rsplit("/", 1)[0]
    urls = stack_mod.postgres_databases(stack, server)
    return urls, [url.rsplit("/", 1)[1] for url in urls.values()]


def drop_databases(admin_url: str, names: list[str]) -> None:
    import asyncio

    import asyncpg

    async def drop() -> None:
        connection = await asyncpg.connect(admin_url, timeout=10)
        try:
            for name in names:
                await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await connection.close()

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:  # its own event loop, whether or not the caller runs one
        pool.submit(asyncio.run, drop()).result()


def admin_headers(stack: Stack) -> dict[str, str]:
    """The Authorization header of the admin principal the system's approver made on its first start."""
    return {"Authorization": f"Bearer {stack.admin_token()}"}


def add_principal(stack: Stack, name: str, **fields: object) -> str:
    """Makes principal `name` (roles, teams, kind, ...) with the admin token the approver wrote; its token."""
    response = httpx.post(f"{stack.url('approver')}/v1/principals", json={"name": name, **fields},
                          headers={"Authorization": f"Bearer {stack.admin_token()}"}, timeout=10)
    if response.status_code != 201:
        raise RuntimeError(f"could not make principal {name}: {response.status_code} {response.text}")
    return str(response.json()["token"])


def deprovision(namespace: str, endpoint: str) -> None:
    """Deletes a namespace's topic, queues and bucket, so benchmark runs do not pile up in LocalStack."""
    sqs, sns, s3 = (boto_client(name, endpoint) for name in ("sqs", "sns", "s3"))
    for service in SERVICES:
        for name in (queue_name(namespace, service), dlq_name(namespace, service)):
            with suppress(ClientError):
                sqs.delete_queue(QueueUrl=sqs.get_queue_url(QueueName=name)["QueueUrl"])
    for topic in sns.list_topics().get("Topics", []):
        if topic["TopicArn"].endswith(f":{topic_name(namespace)}"):
            sns.delete_topic(TopicArn=topic["TopicArn"])
    bucket = bucket_name(namespace)
    with suppress(ClientError):
        for item in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
            s3.delete_object(Bucket=bucket, Key=item["Key"])
        s3.delete_bucket(Bucket=bucket)


def upload_artifact(stack: Stack, key: str) -> str:
    """Uploads with a SHA-256 checksum, as `modelgate register --file` does, so pins come from HeadObject."""
    boto_client("s3", stack.endpoint).put_object(
        Bucket=bucket_name(stack.namespace), Key=key, Body=b"model bytes", ChecksumAlgorithm="SHA256"
    )
    return f"s3://{bucket_name(stack.namespace)}/{key}"


@dataclass
class Journey:
    """One version's way from registration to Deployed(dev); times are epoch seconds."""

    group: str
    version: int = 0
    posted: float = 0.0  # the client sent POST /versions
    answered: float = 0.0  # the client got its 201
    registered: float | None = None  # ModelRegistered.occurred_at
    decided: float | None = None  # ApprovalDecided(dev).occurred_at
    deployed: float | None = None  # Deployed(dev).occurred_at
    notified: float | None = None  # the notifier's delivery of Deployed(dev) (created_at)

    @property
    def model_version_id(self) -> str:
        return f"{self.group}/{self.version}"

    @property
    def complete(self) -> bool:
        return None not in (self.registered, self.decided, self.deployed, self.notified)


async def register(client: httpx.AsyncClient, stack: Stack, journey: Journey, artifact: str, auc: float = 0.93) -> Journey:
    journey.posted = time.time()
    response = await client.post(
        f"{stack.url('registrar')}/v1/groups/{journey.group}/versions",
        json={"artifact_uri": artifact, "metrics": {"auc": auc}},
    )
    journey.answered = time.time()
    response.raise_for_status()
    journey.version = response.json()["version"]
    return journey


def _epoch(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp).timestamp()


async def every_row(client: httpx.AsyncClient, url: str, **params: Any) -> list[Any]:
    """Every row of a list route, page by page (X-Next-Offset, docs/limits.md)."""
    rows: list[Any] = []
    offset: str | None = "0"
    while offset is not None:
        answer = await client.get(url, params={**params, "offset": offset})
        answer.raise_for_status()
        rows += answer.json()
        offset = answer.headers.get("x-next-offset")
    return rows


async def read_timings(client: httpx.AsyncClient, stack: Stack, journeys: Sequence[Journey]) -> None:
    """Fills each journey's event times from the registrar's history and the notifier's delivery log."""
    deliveries = await every_row(client, f"{stack.url('notifier')}/v1/deliveries")
    notified: dict[str, float] = {}
    for d in deliveries:
        if d["event_type"] == "Deployed" and d["channel"] == "log":
            notified[d["correlation_id"]] = _epoch(d["created_at"])
    for journey in journeys:
        url = f"{stack.url('registrar')}/v1/groups/{journey.group}/versions/{journey.version}/history"
        for event in (await client.get(url)).json():
            at, stage = _epoch(event["occurred_at"]), event["payload"].get("stage")
            if event["event_type"] == "ModelRegistered":
                journey.registered = at
            elif event["event_type"] == "ApprovalDecided" and stage == "dev":
                journey.decided = at
            elif event["event_type"] == "Deployed" and stage == "dev":
                journey.deployed = at
        journey.notified = notified.get(journey.model_version_id)


async def metric_samples(client: httpx.AsyncClient, url: str, name: str) -> list[tuple[dict[str, str], float]]:
    """The samples of one Prometheus metric on a service's /metrics, as (labels, value)."""
    text = (await client.get(f"{url}/metrics")).text
    samples = []
    for line in text.splitlines():
        match = re.match(rf"^{re.escape(name)}(\{{(.*)\}})? (\S+)$", line)
        if match:
            samples.append((dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or "")), float(match.group(3))))
    return samples


@dataclass
class Processes:
    """The processes of a running system (the four services, LocalStack if known), for CPU and memory."""

    by_name: dict[str, psutil.Process]

    @classmethod
    def of_stack(cls, stack: Stack, localstack_pid: int | None = None) -> Processes:
        by_name = {service: psutil.Process(stack_mod.running_pid(stack, service)) for service in SERVICES}
        pid = localstack_pid or listening_pid(stack.endpoint)
        if pid:
            by_name["localstack"] = psutil.Process(pid)
        return cls(by_name)

    def cpu_seconds(self) -> dict[str, float]:
        out = {}
        for name, process in self.by_name.items():
            with suppress(psutil.Error):
                times = process.cpu_times()
                out[name] = times.user + times.system + sum(
                    c.cpu_times().user + c.cpu_times().system for c in _children(process)
                )
        return out

    def rss_mb(self) -> dict[str, float]:
        out = {}
        for name, process in self.by_name.items():
            with suppress(psutil.Error):
                out[name] = (process.memory_info().rss + sum(c.memory_info().rss for c in _children(process))) / 2**20
        return out


def _children(process: psutil.Process) -> list[psutil.Process]:
    with suppress(psutil.Error):
        return process.children(recursive=True)
    return []


def listening_pid(endpoint: str) -> int | None:
    """The pid of the process listening on the endpoint's port (needs the right to see it), or None."""
    port = int(endpoint.rsplit(":", 1)[1].rstrip("/"))
    with suppress(psutil.Error):
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
                return conn.pid
    return None


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def summary_ms(values: Sequence[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values]
    return {
        "p50": percentile(ms, 50),
        "p90": percentile(ms, 90),
        "p99": percentile(ms, 99),
        "mean": statistics.fmean(ms) if ms else float("nan"),
        "max": max(ms) if ms else float("nan"),
    }


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> Table:
    out = Table(title=title, title_justify="left")
    for i, column in enumerate(columns):
        out.add_column(column, justify="left" if i == 0 else "right")
    for row in rows:
        out.add_row(*(f"{cell:.1f}" if isinstance(cell, float) else str(cell) for cell in row))
    return out


def conditions() -> str:
    """What else the machine was doing: figures from a busy machine are slower than the code."""
    one, five, _ = os.getloadavg()
    return f"{os.cpu_count()} cores, load average {one:.1f} (1 min) / {five:.1f} (5 min)"


def verdict(ok: bool) -> str:
    return "[green]met[/]" if ok else "[red]missed[/]"


def write_json(path: str | None, data: dict) -> None:
    if path:
        Path(path).write_text(json.dumps(data, indent=2, default=str))
