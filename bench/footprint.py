"""Footprint: each service's memory (RSS) and CPU, idle and under load, and the whole system's memory.

    python -m bench.footprint                     # a private LocalStack, so its memory is ours alone
    python -m bench.footprint --journeys 600      # the load: journeys registered as fast as they are taken
"""

from __future__ import annotations

import argparse
import asyncio
import time

from bench.common import (
    Processes,
    conditions,
    console,
    new_stack,
    private_localstack,
    running_system,
    table,
    verdict,
    write_json,
)
from bench.journey import run_journeys


async def sample(processes: Processes, seconds: float, every: float = 0.5) -> tuple[dict[str, float], dict[str, float]]:
    """Peak RSS (MB) and mean CPU (% of one core) of each process over `seconds`."""
    cpu_before, started = processes.cpu_seconds(), time.monotonic()
    peak: dict[str, float] = {}
    while time.monotonic() - started < seconds:
        for name, mb in processes.rss_mb().items():
            peak[name] = max(peak.get(name, 0.0), mb)
        await asyncio.sleep(every)
    wall = time.monotonic() - started
    cpu_after = processes.cpu_seconds()
    return peak, {name: 100 * (cpu_after[name] - cpu_before[name]) / wall for name in cpu_after}


async def _main(args: argparse.Namespace, endpoint: str, localstack_pid: int | None) -> dict:
    stack = new_stack(endpoint)
    with running_system(stack):
        processes = Processes.of_stack(stack, localstack_pid)
        await run_journeys(stack, processes, 20, None, timeout=60)  # every code path loaded once
        await asyncio.sleep(args.settle)
        idle_rss, idle_cpu = await sample(processes, args.idle)
        load = asyncio.create_task(run_journeys(stack, processes, args.journeys, None, timeout=300))
        load_rss, load_cpu = {}, {}
        while not load.done():
            rss, cpu = await sample(processes, 2.0)
            for name in rss:
                load_rss[name] = max(load_rss.get(name, 0.0), rss[name])
                load_cpu[name] = max(load_cpu.get(name, 0.0), cpu[name])
        run = await load
    console.print(f"machine: {conditions()}")
    rows = []
    for name in sorted(idle_rss, key=lambda n: (n == "localstack", n)):
        rows.append((name, idle_rss[name], f"{idle_cpu[name]:.2f}", load_rss.get(name, 0.0), load_cpu.get(name, 0.0)))
    total_idle, total_load = sum(idle_rss.values()), sum(load_rss.values())
    rows.append(("[bold]whole system[/]", total_idle, "", total_load, ""))
    console.print(table(
        f"footprint: idle {args.idle:g} s; load {len(run.journeys)} journeys as fast as taken",
        ["process", "idle RSS MB", "idle CPU %", "peak RSS MB under load", "peak CPU % under load (2 s)"], rows,
    ))
    services = [n for n in idle_rss if n != "localstack"]
    console.print(table("goals", ["goal", "measured", ""], [
        ("idle RSS <= 120 MB per service", f"max {max(idle_rss[s] for s in services):.0f} MB",
         verdict(all(idle_rss[s] <= 120 for s in services))),
        ("~0% idle CPU per service", f"max {max(idle_cpu[s] for s in services):.2f}%",
         verdict(all(idle_cpu[s] <= 1.0 for s in services))),
        ("whole system (4 services + LocalStack) <= 1 GB", f"{total_load:.0f} MB under load",
         verdict(total_load <= 1024)),
    ]))
    return {"idle_rss_mb": idle_rss, "idle_cpu_pct": idle_cpu, "load_rss_mb": load_rss, "load_cpu_pct": load_cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--journeys", type=int, default=600)
    parser.add_argument("--idle", type=float, default=30.0, help="seconds of idle measurement")
    parser.add_argument("--settle", type=float, default=10.0, help="seconds to wait before measuring idle")
    parser.add_argument("--endpoint", help="use this LocalStack (its memory then includes everyone's)")
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
