"""Latency and throughput of the whole journey, register -> Deployed(dev) announced, against the emulator ceiling.

- latency: one registration every 1/rate seconds (automatic dev policy, parameter-store target); each
  journey's times come from the events' occurred_at in the registrar's /history and the notifier's delivery
  log (created_at of the Deployed(dev) notification).
- throughput: journeys registered as fast as the registrar takes them; the completion rate over the middle
  80% of finish times, next to the bare journeys' rate measured in the same run (bench/ceiling.py).

    python -m bench.journey                           # a private LocalStack on a free port
    python -m bench.journey --endpoint http://127.0.0.1:4566 --journeys 200
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections import Counter
from dataclasses import dataclass

import httpx

from bench.ceiling import bare_latency, bare_throughput, middle_rate
from bench.common import (
    Journey,
    Processes,
    admin_headers,
    conditions,
    console,
    metric_samples,
    new_stack,
    private_localstack,
    read_timings,
    register,
    running_system,
    summary_ms,
    table,
    upload_artifact,
    verdict,
    write_json,
)
from modelgate.stack import Stack
from shared.topology import SERVICES

HOPS = (
    ("registrar: POST -> ModelRegistered", "posted", "registered"),
    ("approver: ModelRegistered -> ApprovalDecided", "registered", "decided"),
    ("deployer: ApprovalDecided -> Deployed", "decided", "deployed"),
    ("notifier: Deployed -> delivered", "deployed", "notified"),
)


@dataclass
class Run:
    journeys: list[Journey]
    seconds: float
    aws_calls: Counter[str]
    cpu_seconds: dict[str, float]
    commits: Counter[str]

    @property
    def complete(self) -> list[Journey]:
        return [j for j in self.journeys if j.complete]


async def run_journeys(stack: Stack, processes: Processes, count: int, rate: float | None, timeout: float) -> Run:
    """Registers `count` journeys, one every 1/rate s (or as fast as possible), and waits for all to finish."""
    artifact = upload_artifact(stack, "bench/model.bin")
    run = uuid.uuid4().hex[:6]  # one group per journey: in a group, only the newest approved version deploys
    journeys = [Journey(group=f"bench-{run}-{i}") for i in range(count)]
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=32), headers=admin_headers(stack)) as client:
        calls_before = await aws_calls(client, stack)
        commits_before = await commits(client, stack)
        done_before = await delivered(client, stack)
        cpu_before = processes.cpu_seconds()
        started = time.monotonic()
        if rate:
            tasks = []
            for i, journey in enumerate(journeys):
                await asyncio.sleep(max(0.0, started + i / rate - time.monotonic()))
                tasks.append(asyncio.create_task(register(client, stack, journey, artifact)))
            await asyncio.gather(*tasks)
        else:
            slots = asyncio.Semaphore(32)

            async def one(journey: Journey) -> None:
                async with slots:
                    await register(client, stack, journey, artifact)

            await asyncio.gather(*(one(j) for j in journeys))
        deadline = time.monotonic() + timeout
        while await delivered(client, stack) - done_before < count and time.monotonic() < deadline:
            await asyncio.sleep(0.25)
        seconds = time.monotonic() - started
        cpu_after = processes.cpu_seconds()
        calls = await aws_calls(client, stack) - calls_before
        committed = await commits(client, stack) - commits_before
        await read_timings(client, stack, journeys)
    cpu = {name: cpu_after[name] - cpu_before.get(name, 0.0) for name in cpu_after}
    return Run(journeys, seconds, calls, cpu, committed)


async def delivered(client: httpx.AsyncClient, stack: Stack) -> float:
    samples = await metric_samples(client, stack.url("notifier"), "modelgate_events_handled_total")
    return sum(v for labels, v in samples if labels.get("event_type") == "Deployed" and labels.get("outcome") == "handled")


async def commits(client: httpx.AsyncClient, stack: Stack) -> Counter[str]:
    out: Counter[str] = Counter()
    for service in SERVICES:
        for _labels, value in await metric_samples(client, stack.url(service), "modelgate_db_commits_total"):
            out[service] += int(value)
    return out


async def aws_calls(client: httpx.AsyncClient, stack: Stack) -> Counter[str]:
    calls: Counter[str] = Counter()
    for service in SERVICES:
        for labels, value in await metric_samples(client, stack.url(service), "modelgate_aws_calls_total"):
            calls[f"{labels['service']}.{labels['operation']}"] += int(value)
    return calls


def latency_table(run: Run, rate: float, bare_p: dict[str, float]) -> None:
    complete = run.complete
    total = [j.notified - j.posted for j in complete]
    deployed = [j.deployed - j.posted for j in complete]
    mean_total = sum(total) / len(total)
    rows = []
    for name, start, end in HOPS:
        values = [getattr(j, end) - getattr(j, start) for j in complete]
        s = summary_ms(values)
        rows.append((name, s["p50"], s["p90"], s["p99"], f"{100 * sum(values) / len(values) / mean_total:.0f}%"))
    for name, values in (("register -> Deployed(dev) (deployer)", deployed), ("register -> Deployed(dev) announced", total)):
        s = summary_ms(values)
        rows.append((f"[bold]{name}[/]", s["p50"], s["p90"], s["p99"], "100%" if values is total else ""))
    rows.append(("bare journey (no database, no logic)", bare_p["p50"], bare_p["p90"], bare_p["p99"], ""))
    console.print(table(
        f"latency at {rate:g} journeys/s over {len(complete)} journeys ({len(run.journeys) - len(complete)} incomplete), ms",
        ["hop", "p50", "p90", "p99", "share of mean"], rows,
    ))


async def _main(args: argparse.Namespace, endpoint: str, localstack_pid: int | None) -> dict:
    results: dict = {"conditions_before": conditions()}
    stack = new_stack(endpoint)
    with running_system(stack):
        processes = Processes.of_stack(stack, localstack_pid)
        await run_journeys(stack, processes, 20, None, timeout=60)  # warm-up: first calls, connections, caches
        latency = await run_journeys(stack, processes, args.journeys, args.rate, timeout=120)
        throughput = await run_journeys(stack, processes, args.throughput_journeys, None, timeout=300)
    bare_slow = await bare_latency(endpoint, min(args.journeys, 200), args.rate)
    bare_fast = await bare_throughput(endpoint, args.throughput_journeys)

    results["conditions_after"] = conditions()
    console.print(f"machine: {results['conditions_before']} before, {results['conditions_after']} after")
    bare_p = summary_ms(bare_slow.latencies)
    latency_table(latency, args.rate, bare_p)
    total = summary_ms([j.notified - j.posted for j in latency.complete])
    rate = middle_rate(sorted(j.notified for j in throughput.complete))
    ratio = rate / bare_fast.per_second
    rows = [
        ("journeys/s, modelgate", f"{rate:.1f}", ""),
        ("journeys/s, bare (emulator ceiling)", f"{bare_fast.per_second:.1f}", ""),
        ("[bold]ratio[/]", f"{100 * ratio:.0f}%", verdict(ratio >= 0.5) + " (goal >= 50%)"),
        ("AWS calls per journey, modelgate", f"{sum(throughput.aws_calls.values()) / len(throughput.journeys):.1f}", ""),
        ("AWS calls per journey, bare", f"{bare_fast.calls_per_journey:.1f}", ""),
    ]
    n = len(throughput.journeys)
    for name, seconds in sorted(throughput.cpu_seconds.items()):
        rows.append((f"CPU ms per journey, {name}", f"{1000 * seconds / n:.1f}", ""))
    for name, count in sorted(throughput.commits.items()):
        rows.append((f"database transactions per journey, {name}", f"{count / n:.1f}", ""))
    console.print(table(f"throughput over {len(throughput.journeys)} journeys", ["measure", "value", ""], rows))
    operations = sorted(set(throughput.aws_calls) | set(bare_fast.calls))
    console.print(table("AWS calls per journey, by operation", ["operation", "modelgate", "bare"], [
        (op, f"{throughput.aws_calls[op] / n:.2f}", f"{bare_fast.calls[op] / bare_fast.journeys:.2f}") for op in operations
    ]))
    console.print(table("goals", ["goal", "measured", ""], [
        ("p50 <= 150 ms at a low rate", f"{total['p50']:.0f} ms", verdict(total["p50"] <= 150)),
        ("p99 <= 300 ms at a low rate", f"{total['p99']:.0f} ms", verdict(total["p99"] <= 300)),
        ("throughput >= 50% of the emulator ceiling", f"{100 * ratio:.0f}%", verdict(ratio >= 0.5)),
    ]))
    results.update(
        latency_ms=total, rate=args.rate, journeys=len(latency.complete), bare_latency_ms=bare_p,
        throughput=rate, ceiling=bare_fast.per_second, ratio=ratio,
        aws_calls=dict(throughput.aws_calls), bare_calls=dict(bare_fast.calls),
    )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--journeys", type=int, default=1000, help="journeys for the latency run (default 1000)")
    parser.add_argument("--rate", type=float, default=4.0, help="journeys per second in the latency run (default 4)")
    parser.add_argument("--throughput-journeys", type=int, default=600)
    parser.add_argument("--endpoint", help="use this LocalStack (shared: figures are noisier); default: a private one")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    if args.endpoint:
        results = asyncio.run(_main(args, args.endpoint, None))
    else:
        with private_localstack() as localstack:
            results = asyncio.run(_main(args, localstack.endpoint, localstack.pid))
    write_json(args.json, results)


if __name__ == "__main__":
    main()
