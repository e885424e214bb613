"""Soak: many journeys at a steady rate; the services' memory, their pruned tables and the latency stay flat.

    python -m bench.soak                                   # 20,000 journeys at 25/s (~15 min), SQLite
    python -m bench.soak --journeys 2000 --rate 20         # a shorter run
    python -m bench.soak --postgres --replicas 2 --json soak.json

The four services run as `modelgate up` starts them (SQLite files, or with `--postgres` one PostgreSQL database
per service made for the run and dropped after it), against a private LocalStack. One journey is one version
of a group of its own, registered every 1/rate s; it ends when the webhook receives its Deployed(dev)
notification, and its latency is that arrival minus the POST. Every `--sample-every` seconds: each service's
database size (the SQLite file and its WAL apart, or pg_database_size), the rows of its idempotency ledger and outbox, the RSS of
every service process, and p50/p99 of the journeys finished in that window.

After the warm-up (`--warmup`, a fraction of the journeys) each series gets a least-squares line against
journeys finished; its slope per 1,000 journeys is printed with its standard error. A series is flat when the
slope is within noise (|slope| <= 2 standard errors) or the drift it predicts over the whole run is under 5 %
of its level. The databases are not meant to be flat: versions, history, audit, approvals, deployments and
deliveries are the record and are kept (shared/retention.py); their growth per journey is printed. What
retention forgets, the ledger and published outbox rows, must be flat: so that pruning happens within the run,
the soak shortens the windows to minutes (MODELGATE_SHORT_RETENTION_FOR_BENCHMARKS, never in production) and
says so.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import sqlite3
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.common import (
    POSTGRES_ADMIN,
    WebhookReceiver,
    add_principal,
    cleanup_on_sigterm,
    conditions,
    console,
    drop_databases,
    free_port,
    new_stack,
    percentile,
    postgres_namespace,
    private_localstack,
    running_system,
    table,
    upload_artifact,
    verdict,
    write_json,
)
from modelgate import stack as stack_mod
from modelgate.stack import Stack
from shared.topology import SERVICES

PRUNED_TABLES = ("processed_events", "outbox")
FLAT_DRIFT = 0.05  # the drift a slope predicts over the whole run, as a share of the series' level


@dataclass
class Sample:
    at: float  # seconds into the run
    finished: int  # journeys finished so far
    rss_mb: dict[str, float]  # instance -> MB
    db_bytes: dict[str, int]  # service -> bytes
    rows: dict[str, int]  # "<service> <table>" -> rows
    latency_ms: list[float] = field(default_factory=list)  # the journeys finished in this window

    def series(self) -> dict[str, float]:
        out: dict[str, float] = {f"RSS {name} (MB)": mb for name, mb in self.rss_mb.items()}
        out |= {f"database {service} (MB)": size / 2**20 for service, size in self.db_bytes.items()}
        out |= {f"rows {name}": float(count) for name, count in self.rows.items()}
        if self.latency_ms:
            out["latency p50 (ms)"] = percentile(self.latency_ms, 50)
            out["latency p99 (ms)"] = percentile(self.latency_ms, 99)
        return out


@dataclass
class Slope:
    name: str
    level: float  # the mean after warm-up
    per_thousand: float  # slope per 1,000 journeys
    stderr: float
    samples: int
    journeys: int

    @property
    def flat(self) -> bool:
        drift = abs(self.per_thousand) * self.journeys / 1000
        return abs(self.per_thousand) <= 2 * self.stderr or drift <= FLAT_DRIFT * abs(self.level)

    @property
    def bounded(self) -> bool:
        """Flat, or for what retention prunes, falling (the pruner catching up is not a leak)."""
        return self.flat or (self.name.startswith("rows ") and self.per_thousand < 0)

    @property
    def kept_record(self) -> bool:
        """A database's size: it grows with what is kept by design; its growth per journey is the figure."""
        return self.name.startswith("database ") and not self.name.endswith("WAL (MB)")


def fit(name: str, points: list[tuple[float, float]], journeys: int) -> Slope | None:
    """Least squares of y against x (journeys finished); the slope per 1,000 journeys and its standard error."""
    if len(points) < 3:
        return None
    xs, ys = [x / 1000 for x, _ in points], [y for _, y in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return None
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    residuals = sum((y - my - slope * (x - mx)) ** 2 for x, y in zip(xs, ys, strict=True))
    stderr = math.sqrt(residuals / (len(xs) - 2) / sxx)
    return Slope(name, my, slope, stderr, len(xs), journeys)


class Sampler:
    """What one sample reads: processes (psutil), database files or pg_database_size, table counts."""

    def __init__(self, stack: Stack, postgres: bool):
        self.stack, self.postgres = stack, postgres

    def rss_mb(self) -> dict[str, float]:
        out = {}
        for instance in self.stack.all_instances():
            pid = stack_mod.running_pid(self.stack, instance)
            if pid is None:
                continue
            try:
                process = psutil.Process(pid)
                out[instance] = (process.memory_info().rss + sum(c.memory_info().rss for c in process.children(recursive=True))) / 2**20
            except psutil.Error:
                pass
        return out

    async def databases(self) -> tuple[dict[str, int], dict[str, int]]:
        sizes, rows = {}, {}
        for service in SERVICES:
            url = self.stack.database_urls[service]
            if self.postgres:
                import asyncpg

                connection = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"), timeout=10)
                try:
                    sizes[service] = await connection.fetchval("SELECT pg_database_size(current_database())")
                    for name in PRUNED_TABLES:
                        rows[f"{service} {name}"] = await connection.fetchval(f"SELECT count(*) FROM {name}")
                finally:
                    await connection.close()
            else:
                path = Path(url.split(":///", 1)[1])
                sizes[service] = path.stat().st_size
                wal = Path(f"{path}-wal")
                sizes[f"{service} WAL"] = wal.stat().st_size if wal.exists() else 0
                with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10) as db:
                    for name in PRUNED_TABLES:
                        rows[f"{service} {name}"] = db.execute(f"SELECT count(*) FROM {name}").fetchone()[0]
        return sizes, rows


@dataclass
class SoakRun:
    journeys: int
    rate: float
    samples: list[Sample] = field(default_factory=list)
    registered: int = 0
    finished: int = 0
    failed_posts: int = 0
    seconds: float = 0.0


async def soak(stack: Stack, webhook: WebhookReceiver, journeys: int, rate: float, every: float, timeout: float) -> SoakRun:
    run = SoakRun(journeys, rate)
    artifact = upload_artifact(stack, "soak/model.bin")
    token = add_principal(stack, "soak", kind="service", roles=["registrant"], teams=["soak"])
    posted: dict[str, float] = {}  # model_version_id -> when its POST went
    sampler = Sampler(stack, postgres=not stack.database_urls["registrar"].startswith("sqlite"))
    started = time.monotonic()
    deadline = started + timeout

    async def register(client: httpx.AsyncClient, i: int) -> None:
        group = f"soak-{i}"  # a group of its own: in a group only the newest approved version deploys
        at = time.time()
        for _attempt in range(20):
            try:
                response = await client.post(f"{stack.url('registrar')}/v1/groups/{group}/versions", headers={
                    "Idempotency-Key": f"soak-{i}"}, json={"artifact_uri": artifact, "metrics": {"auc": 0.93}})
                if response.status_code == 201:
                    posted[f"{group}/{response.json()['version']}"] = at
                    run.registered += 1
                    return
            except httpx.HTTPError:
                pass
            run.failed_posts += 1
            await asyncio.sleep(0.5)

    async def register_all(client: httpx.AsyncClient) -> None:
        tasks = []
        for i in range(journeys):
            await asyncio.sleep(max(0.0, started + i / rate - time.monotonic()))
            tasks.append(asyncio.create_task(register(client, i)))
        await asyncio.gather(*tasks)

    seen, done = 0, set()

    def finished_since() -> list[float]:
        nonlocal seen
        arrivals, latencies = webhook.arrivals[seen:], []
        seen += len(arrivals)
        for at, body in arrivals:
            mvid = body.get("model_version_id") or ""
            if body.get("event_type") == "Deployed" and body.get("stage") == "dev" and mvid in posted and mvid not in done:
                done.add(mvid)
                latencies.append((at - posted[mvid]) * 1000)
        return latencies

    async def sample() -> None:
        sizes, rows = await sampler.databases()
        latencies = finished_since()
        run.samples.append(Sample(time.monotonic() - started, len(done), sampler.rss_mb(), sizes, rows, latencies))
        last = run.samples[-1]
        console.print(f"[dim]{last.at:6.0f} s  {last.finished:>6} finished  "
                      f"p50 {percentile(latencies, 50):6.0f} ms  p99 {percentile(latencies, 99):6.0f} ms  "
                      f"ledger rows {sum(v for k, v in rows.items() if k.endswith('processed_events'))}  "
                      f"outbox rows {sum(v for k, v in rows.items() if k.endswith('outbox'))}[/]")

    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=64),
                                 headers={"Authorization": f"Bearer {token}"}) as client:
        registering = asyncio.create_task(register_all(client))
        next_sample = started + every
        while time.monotonic() < deadline and not (registering.done() and len(done) >= run.registered):
            await asyncio.sleep(max(0.0, next_sample - time.monotonic()))
            next_sample += every
            await sample()
        if not registering.done():
            registering.cancel()
    run.finished, run.seconds = len(done), time.monotonic() - started
    return run


def steady(run: SoakRun, warmup: float) -> list[Sample]:
    """The samples of the steady flow: after the warm-up, and while registrations still arrive at the rate
    (once they stop, the pruned tables empty and the slopes would say nothing about a long run)."""
    return [s for s in run.samples if s.finished >= warmup * run.journeys and s.at <= run.journeys / run.rate]


def kept_up(run: SoakRun, warmup: float) -> float:
    """Journeys finished per second over the steady samples (the offered rate when the system keeps up)."""
    window = steady(run, warmup)
    if len(window) < 2 or window[-1].at == window[0].at:
        return float("nan")
    return (window[-1].finished - window[0].finished) / (window[-1].at - window[0].at)


def slopes(run: SoakRun, warmup: float) -> list[Slope]:
    after = steady(run, warmup)
    names = list(dict.fromkeys(name for s in after for name in s.series()))
    out = []
    for name in names:
        points = [(float(s.finished), s.series()[name]) for s in after if name in s.series()]
        if (found := fit(name, points, run.journeys)) is not None:
            out.append(found)
    return out


def report(run: SoakRun, found: list[Slope], args: argparse.Namespace, retention: str) -> dict[str, Any]:
    rows = []
    for s in found:
        if s.kept_record:
            judged = f"kept: {s.per_thousand * 1.024:.1f} KB / journey"
        else:
            judged = "flat" if s.flat else "[red]grows[/]" if s.per_thousand > 0 else "falls" if s.bounded else "[yellow]falls[/]"
        rows.append((s.name, f"{s.level:.1f}", f"{s.per_thousand:+.2f}", f"{s.stderr:.2f}", judged))
    title = (f"soak: {run.finished:,} / {run.journeys:,} journeys finished at {run.rate:g}/s in {run.seconds:.0f} s, "
             f"{len(run.samples)} samples every {args.sample_every:g} s; slopes after the first "
             f"{args.warmup:.0%} of the journeys")
    console.print(table(title, ["series", "level", "slope / 1,000 journeys", "± stderr", ""], rows))
    console.print(f"[bold]retention shortened for the soak[/]: {retention}")
    achieved = kept_up(run, args.warmup)
    console.print(f"finished {achieved:.1f} journeys/s while {run.rate:g}/s were registered"
                  + ("" if achieved >= 0.9 * run.rate else
                     " [red]: the system did not keep up, so latency grows with the backlog (lower --rate)[/]"))
    flat = [s for s in found if not s.kept_record]
    ok = run.finished == run.journeys and all(s.bounded for s in flat) and achieved >= 0.9 * run.rate
    console.print(f"every journey finished, RSS, pruned tables and latency flat: {verdict(ok)}")
    console.print(f"[dim]{conditions()}; registrations retried {run.failed_posts} times[/]")
    return {
        "journeys": run.journeys, "finished": run.finished, "rate": run.rate, "seconds": run.seconds,
        "retention": retention, "warmup": args.warmup, "ok": ok, "finished_per_second": achieved,
        "slopes": {s.name: {"level": s.level, "per_1000_journeys": s.per_thousand, "stderr": s.stderr,
                            "flat": s.flat, "bounded": s.bounded, "kept_record": s.kept_record} for s in found},
        "samples": [{"at": s.at, "finished": s.finished, **s.series()} for s in run.samples],
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--journeys", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=25.0, help="registrations per second (default 25)")
    parser.add_argument("--sample-every", type=float, default=10.0, help="seconds between samples (default 10)")
    parser.add_argument("--warmup", type=float, default=0.2, help="share of the journeys before slopes are fitted")
    parser.add_argument("--postgres", action="store_true", help="the services on PostgreSQL (a database each, dropped after)")
    parser.add_argument("--replicas", type=int, default=1, help="processes of every service (more than 1: --postgres)")
    parser.add_argument("--ledger-seconds", type=float, default=120.0, help="the ledger's window in the soak (default 120)")
    parser.add_argument("--outbox-seconds", type=float, default=60.0, help="published outbox rows' window (default 60)")
    parser.add_argument("--prune-every", type=float, default=15.0, help="seconds between prunes (default 15)")
    parser.add_argument("--timeout", type=float, default=0.0, help="give up after this many seconds (default: 2x the run + 5 min)")
    parser.add_argument("--json", help="also write the samples and slopes to this file")
    args = parser.parse_args()
    cleanup_on_sigterm()
    postgres = args.postgres or args.replicas > 1
    timeout = args.timeout or 2 * args.journeys / args.rate + 300
    retention = (f"ledger {args.ledger_seconds:g} s, published outbox rows {args.outbox_seconds:g} s, pruned every "
                 f"{args.prune_every:g} s (MODELGATE_SHORT_RETENTION_FOR_BENCHMARKS=true; production: 21 days, 7 days, hourly)")
    console.print(f"[bold]{' '.join(['python -m bench.soak', *sys.argv[1:]])}[/]  [dim]{conditions()}[/]")
    webhook = WebhookReceiver()
    databases: list[str] = []
    try:
        with private_localstack() as localstack:
            stack = new_stack(localstack.endpoint, "soak", {
                "MODELGATE_WEBHOOK_URL": webhook.url,
                "MODELGATE_SHORT_RETENTION_FOR_BENCHMARKS": "true",
                "MODELGATE_LEDGER_RETENTION_DAYS": repr(args.ledger_seconds / 86400),
                "MODELGATE_OUTBOX_RETENTION_DAYS": repr(args.outbox_seconds / 86400),
                "MODELGATE_PRUNE_INTERVAL_SECONDS": repr(args.prune_every),
            })
            if postgres:
                stack.replicas = args.replicas
                stack.ports.update({i: free_port() for s in SERVICES for i in stack.instances(s)})
                stack.database_urls, databases = postgres_namespace(stack, POSTGRES_ADMIN)
            with running_system(stack, keep_files=bool(os.environ.get("MODELGATE_BENCH_KEEP"))):
                run = asyncio.run(soak(stack, webhook, args.journeys, args.rate, args.sample_every, timeout))
    finally:
        webhook.close()
        if databases:
            drop_databases(POSTGRES_ADMIN, databases)
    summary = report(run, slopes(run, args.warmup), args, retention)
    write_json(args.json, summary)
    raise SystemExit(0 if summary["ok"] else 1)


if __name__ == "__main__":
    main()
