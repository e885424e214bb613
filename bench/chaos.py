"""Chaos: journeys keep their promises while services are killed (kill -9) or AWS stops answering.

    python -m bench.chaos --journeys 1000                # kill -9 a random service every 3 s, restart it
    python -m bench.chaos --journeys 300 --kill-every 0 --pause 20   # SIGSTOP LocalStack 20 s mid-run
    python -m bench.chaos --journeys 1000 --replicas 2                # two of every service on PostgreSQL
    python -m bench.chaos --journeys 300 --replicas 2 --kill-every 0 --pg-restart-at 15   # PostgreSQL restarts

Each run has a private LocalStack (pausing the shared one would stop everyone's tests). A journey ends when
its version is Deployed to dev and the test approval is requested. Meanwhile a surge of versions of one more
group (`--surge`, registered at once) races for dev. Counted at the end: every journey at its end state, one
deployment per version, exactly one delivery per event and channel in the notifier's log, what the webhook
receiver got (the same Idempotency-Key twice is a repeat a receiver drops), and the catalog's truth: per
group, every version in an end state for dev and exactly one reading Deployed, the one the Parameter Store
pointer /modelgate/<group>/dev/current names.
With `--replicas N` every service runs N processes sharing one PostgreSQL database per service (made for
the run on 127.0.0.1:5432, `MODELGATE_BENCH_POSTGRES` to change, and dropped at the end); a kill picks any
replica but the last one of its service still running (what replicas are for), and registrations go to the
registrar replicas in turn, the next one when one does not answer (a
load balancer's retry). `--pg-restart-at S` restarts the PostgreSQL server S seconds into the run, once
(`pg_ctlcluster <version> <cluster> restart` of the cluster on the URL's port, or the command in
`MODELGATE_BENCH_PG_RESTART`): it is the machine's server, so this is for this bench only, never the tests.
MODELGATE_BENCH_KEEP=1 keeps the services' logs and databases (in /tmp/modelgate-chaos-*).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import shlex
import signal
import subprocess
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx

from bench.common import (
    POSTGRES_ADMIN,
    WebhookReceiver,
    add_principal,
    cleanup_on_sigterm,
    console,
    drop_databases,
    every_row,
    free_port,
    new_stack,
    postgres_namespace,
    private_localstack,
    running_system,
    table,
    upload_artifact,
)
from modelgate import stack as stack_mod
from modelgate.stack import Stack
from shared.infra import boto_client
from shared.topology import SERVICES, parameter_name

EVENTS_PER_JOURNEY = 3  # notified: ApprovalDecided(dev), Deployed(dev), ApprovalRequested(test)
SURGE_GROUP = "surge"  # not "chaos-": its notifications are not a journey's
T = TypeVar("T")
END_STATUSES = {"Deployed", "Superseded", "Retired", "RolledBack", "DeploymentFailed", "Rejected"}


@dataclass
class ChaosReport:
    journeys: int
    registered: int = 0
    at_end_state: int = 0
    deployed_twice: int = 0
    history_repeats: int = 0
    deliveries_expected: int = 0
    deliveries_sent: int = 0
    deliveries_missing: int = 0
    deliveries_duplicated: int = 0
    webhook_distinct: int = 0
    webhook_repeats: int = 0
    surge: int = 0
    groups_checked: int = 0
    stage_truth_violations: list[str] = field(default_factory=list)
    kills: Counter[str] = field(default_factory=Counter)
    not_ready_seen: dict[str, bool] = field(default_factory=dict)
    replicas: int = 1
    pg_restart: tuple[float, float] | None = None  # (seconds into the run, seconds it refused connections)
    registration_retries: int = 0  # POSTs that got no 201 (a replica killed, the database away) and were sent again
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return (
            self.at_end_state == self.journeys
            and self.deployed_twice == 0
            and self.history_repeats == 0
            and self.deliveries_missing == 0
            and self.deliveries_duplicated == 0
            and self.webhook_distinct == self.deliveries_expected
            and self.groups_checked > 0
            and not self.stage_truth_violations
        )

    def rows(self) -> list[tuple[str, object]]:
        rows: list[tuple[str, object]] = [
            ("journeys registered", f"{self.registered} / {self.journeys}"),
            ("journeys at their end state (Deployed dev, test requested)", f"{self.at_end_state} / {self.journeys}"),
            ("versions deployed more than once", self.deployed_twice),
            ("events recorded twice in a history", self.history_repeats),
            ("notifications expected (webhook)", self.deliveries_expected),
            ("  sent, per the notifier's delivery log", self.deliveries_sent),
            ("  missing", self.deliveries_missing),
            ("  recorded twice", self.deliveries_duplicated),
            ("  received by the webhook (distinct Idempotency-Key)", self.webhook_distinct),
            ("  repeated POSTs with the same key (dropped by the receiver)", self.webhook_repeats),
            (f"groups checked: one Deployed in dev, the pointer's (incl. {self.surge} versions of '{SURGE_GROUP}')",
             self.groups_checked),
            ("  groups where the catalog disagrees", len(self.stage_truth_violations)),
        ]
        rows += [("    " + problem, "") for problem in self.stage_truth_violations[:5]]
        if self.replicas > 1:
            rows.append(("replicas of every service (PostgreSQL)", self.replicas))
        if self.kills:
            rows.append(("kill -9", ", ".join(f"{s} x{n}" for s, n in sorted(self.kills.items()))))
        if self.pg_restart:
            rows.append(("PostgreSQL restarted at (s into the run) / refused connections for (s)",
                         f"{self.pg_restart[0]:.0f} / {self.pg_restart[1]:.1f}"))
        rows.append(("registrations sent again (same Idempotency-Key)", self.registration_retries))
        for service, seen in sorted(self.not_ready_seen.items()):
            rows.append((f"/readyz of {service} reported the outage", "yes" if seen else "no"))
        rows.append(("seconds", f"{self.seconds:.0f}"))
        return rows


class Chaos:
    def __init__(self, stack: Stack, webhook: WebhookReceiver, journeys: int, rate: float, surge: int = 0):
        self.stack, self.webhook, self.journeys, self.rate, self.surge = stack, webhook, journeys, rate, surge
        self.report = ChaosReport(journeys, surge=surge)
        self.versions: dict[int, tuple[str, int]] = {}  # journey -> (group, version)
        self.registering_done = asyncio.Event()
        self._turns = itertools.count()
        self.over = threading.Event()  # the run is over (or interrupted): no more restarts

    async def register_all(self, client: httpx.AsyncClient, artifact: str, deadline: float) -> None:
        """Registers every journey at `rate`, each retried (same Idempotency-Key) until the registrar takes it."""
        started = time.monotonic()

        async def one(i: int) -> None:
            group = f"chaos-{i}"  # one version per group: in a group, only the newest approved version deploys
            number = await self._register(client, group, artifact, f"{self.stack.namespace}-{i}", deadline)
            if number is not None:
                self.versions[i] = (group, number)

        async def surge() -> None:  # many versions of one group at once: the newest takes dev, none stays Approved
            await asyncio.gather(*(self._register(client, SURGE_GROUP, artifact, f"{self.stack.namespace}-surge-{i}", deadline)
                                   for i in range(self.surge)))

        tasks = [asyncio.create_task(surge())]
        for i in range(self.journeys):
            await asyncio.sleep(max(0.0, started + i / self.rate - time.monotonic()))
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
        self.report.registered = len(self.versions)
        self.registering_done.set()

    async def _register(self, client: httpx.AsyncClient, group: str, artifact: str, key: str, deadline: float) -> int | None:
        """Registers one version, retried (same Idempotency-Key) until the registrar takes it; its number."""
        body = {"artifact_uri": artifact, "metrics": {"auc": 0.93}}  # registered by the caller: chaos
        registrars = self.stack.instances("registrar")
        attempt = next(self._turns)  # the replicas in turn, as a load balancer would
        while time.monotonic() < deadline:
            try:
                url = self.stack.url(registrars[attempt % len(registrars)])
                response = await client.post(f"{url}/v1/groups/{group}/versions", json=body, headers={"Idempotency-Key": key})
                if response.status_code == 201:
                    return response.json()["version"]
            except httpx.HTTPError:
                pass
            attempt += 1
            self.report.registration_retries += 1
            if attempt % len(registrars) == 0:  # every replica tried: wait a little before the next round
                await asyncio.sleep(0.5)
        return None

    async def kill_now_and_then(self, every: float, rng: random.Random, min_kills: int = 0) -> None:
        """kill -9 a random running service (any replica) every `every` seconds and start it again, until
        registering is done. With one replica, the next kill waits until the last one killed is ready again:
        on a loaded machine a restart can outlast `every`, and kills piling up would keep the registrar or
        the approver (which authenticates its callers) down for good, a run that measures nothing."""
        restarting: dict[str, asyncio.Task[None]] = {}
        while not (self.registering_done.is_set() and sum(self.report.kills.values()) >= min_kills):
            if self.stack.replicas == 1:
                await asyncio.gather(*restarting.values())
            await asyncio.sleep(every)
            up = [s for s in self.stack.all_instances() if s not in restarting or restarting[s].done()]
            if self.stack.replicas > 1:  # with replicas, any one but the last of its service still running
                up = [i for i in up if sum(stack_mod.service_of(j) == stack_mod.service_of(i) for j in up) > 1]
            if not up:  # every service is still starting again (a loaded machine): nothing to kill this round
                continue
            service = rng.choice(up)
            pid = stack_mod.running_pid(self.stack, service)
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
                self.report.kills[service] += 1
            restarting[service] = asyncio.create_task(asyncio.to_thread(self._restart, service, pid))
        await asyncio.gather(*restarting.values())

    def _restart(self, service: str, pid: int | None) -> None:
        if pid is not None:
            _reap(pid)
        self.stack.pidfile(service).unlink(missing_ok=True)
        deadline = time.monotonic() + 600
        while not self.over.is_set():  # a busy machine can take minutes to start one: wait, or start it again
            stack_mod.start_service(self.stack, service)
            try:
                stack_mod.wait_ready(self.stack, service, 120.0)
                return
            except stack_mod.StackError:
                if time.monotonic() > deadline or self.over.is_set():
                    raise

    async def pause_aws(self, localstack_pid: int, after: float, seconds: float) -> None:
        """SIGSTOP LocalStack `after` s into the run for `seconds`, watching every service's /readyz meanwhile."""
        await asyncio.sleep(after)
        seen = dict.fromkeys(SERVICES, False)
        os.kill(localstack_pid, signal.SIGSTOP)
        try:
            until = time.monotonic() + seconds
            while time.monotonic() < until:
                for service in SERVICES:
                    try:  # a client of its own: the registrations waiting for S3 hold the other one's connections
                        async with httpx.AsyncClient(timeout=2) as probe:
                            response = await probe.get(f"{self.stack.url(service)}/readyz")
                        seen[service] |= response.status_code == 503
                    except httpx.HTTPError:
                        pass
                await asyncio.sleep(1)
        finally:
            os.kill(localstack_pid, signal.SIGCONT)
        self.report.not_ready_seen = seen

    async def restart_postgres(self, after: float, admin_url: str) -> None:
        """Restarts the PostgreSQL server `after` s into the run, once; notes how long it refused connections."""
        await asyncio.sleep(after)
        begun = time.monotonic()
        command = postgres_restart_command(admin_url)
        done = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{shlex.join(command)} failed: {done.stdout}{done.stderr}")
        await wait_for_postgres(admin_url, 120.0)
        self.report.pg_restart = (after, time.monotonic() - begun)

    async def wait_for_end_states(self, client: httpx.AsyncClient, deadline: float) -> None:
        while time.monotonic() < deadline:
            if await _or_none(self._count_end_states(client)) == self.journeys:
                return
            await asyncio.sleep(2)

    async def wait_for_stage_truth(self, client: httpx.AsyncClient, deadline: float) -> None:
        while time.monotonic() < deadline and await _or_none(self.stage_truth(client)) != []:
            await asyncio.sleep(2)

    async def stage_truth(self, client: httpx.AsyncClient) -> list[str]:
        """What disagrees, per group: a version not in an end state for dev, or other than exactly one version
        reading Deployed there, the one the Parameter Store pointer names."""
        statuses: dict[str, dict[int, str | None]] = defaultdict(dict)
        for record in await self._all_versions(client):
            statuses[record["group"]][record["version"]] = record["stages"].get("dev")
        pointers = await asyncio.to_thread(self._pointers, list(statuses))
        problems = []
        for group, found in sorted(statuses.items()):
            waiting = sorted(n for n, status in found.items() if status not in END_STATUSES)
            deployed = sorted(f"{group}/{n}" for n, status in found.items() if status == "Deployed")
            if waiting:
                problems.append(f"{group}: versions {waiting[:5]} not in an end state for dev")
            if deployed != [pointers.get(group)]:
                problems.append(f"{group}: {deployed or 'none'} read Deployed in dev, the pointer names {pointers.get(group)}")
        self.report.groups_checked = len(statuses)
        self.report.stage_truth_violations = problems
        return problems

    async def _all_versions(self, client: httpx.AsyncClient) -> list[dict[str, Any]]:
        found, offset = [], 0
        while offset is not None:
            page = (await client.get(f"{self.stack.url('registrar')}/v1/versions", params={
                "registered_by": "chaos", "limit": 1000, "offset": offset})).json()
            found += page["items"]
            offset = page["next_offset"]
        return found

    def _pointers(self, groups: list[str]) -> dict[str, str]:
        """group -> the model_version_id its dev pointer names (10 a call, GetParameters' limit)."""
        ssm, found = boto_client("ssm", self.stack.endpoint), {}
        names = [parameter_name(group, "dev") for group in groups]
        for i in range(0, len(names), 10):
            for parameter in ssm.get_parameters(Names=names[i:i + 10])["Parameters"]:
                found[parameter["Name"].split("/")[2]] = json.loads(parameter["Value"])["model_version_id"]
        return found

    async def wait_for_deliveries(self, client: httpx.AsyncClient, deadline: float) -> None:
        """Waits for every notification: one received in the moment AWS stopped answering stays invisible on its
        queue until its visibility timeout (60 s) ends, and only then comes back to the notifier."""
        while time.monotonic() < deadline:
            if (await _or_none(self._count_sent(client)) or 0) >= EVENTS_PER_JOURNEY * self.journeys:
                return
            await asyncio.sleep(2)

    async def _count_sent(self, client: httpx.AsyncClient) -> int:
        rows = await every_row(client, f"{self.stack.url('notifier')}/v1/deliveries", channel="webhook")
        return sum(1 for r in rows if r["status"] == "sent" and r["correlation_id"].startswith("chaos-"))

    async def _count_end_states(self, client: httpx.AsyncClient) -> int:
        done, offset = 0, 0
        while offset is not None:
            page = (await client.get(f"{self.stack.url('registrar')}/v1/versions", params={
                "registered_by": "chaos", "stage": "test", "limit": 1000, "offset": offset,
            })).json()
            done += sum(1 for r in page["items"] if r["group"].startswith("chaos-") and r["stages"].get("dev") == "Deployed")
            offset = page["next_offset"]
        self.report.at_end_state = done
        return done

    async def count(self, client: httpx.AsyncClient) -> None:
        report = self.report
        await self._count_end_states(client)
        await self.stage_truth(client)
        deployments = Counter(
            d["model_version_id"]
            for d in await every_row(client, f"{self.stack.url('deployer')}/v1/deployments", stage="dev")
            if d["status"] != "Superseded"
        )
        report.deployed_twice = sum(1 for n in deployments.values() if n > 1)
        for group, version in self.versions.values():
            url = f"{self.stack.url('registrar')}/v1/groups/{group}/versions/{version}/history"
            history = (await client.get(url)).json()
            kinds = Counter((e["event_type"], e["payload"].get("stage")) for e in history)
            report.history_repeats += sum(n - 1 for n in kinds.values() if n > 1)
        rows = await every_row(client, f"{self.stack.url('notifier')}/v1/deliveries", channel="webhook")
        per_event = Counter(r["event_id"] for r in rows if r["correlation_id"].startswith("chaos-"))
        sent = sum(1 for r in rows if r["status"] == "sent" and r["correlation_id"].startswith("chaos-"))
        report.deliveries_expected = EVENTS_PER_JOURNEY * self.journeys
        report.deliveries_sent = sent
        report.deliveries_missing = max(0, report.deliveries_expected - sent)
        report.deliveries_duplicated = sum(n - 1 for n in per_event.values() if n > 1)
        keys = [k for k in self.webhook.keys if k and self.webhook.subjects.get(k, "").startswith("chaos-")]
        report.webhook_distinct = len(keys)
        report.webhook_repeats = sum(self.webhook.keys[k] - 1 for k in keys)


async def _or_none(reading: Awaitable[T]) -> T | None:
    """A reading of the services while they may still be recovering (a replica starting, the database back
    a moment ago): None when one does not answer well, and the caller asks again."""
    try:
        return await reading
    except (httpx.HTTPError, ValueError, KeyError):
        return None


def postgres_restart_command(admin_url: str) -> list[str]:
    """How to restart the PostgreSQL server of `admin_url`: MODELGATE_BENCH_PG_RESTART, else Debian's
    `pg_ctlcluster <version> <cluster> restart` of the cluster listening on the URL's port."""
    if os.environ.get("MODELGATE_BENCH_PG_RESTART"):
        return shlex.split(os.environ["MODELGATE_BENCH_PG_RESTART"])
    port = (admin_url.split("@", 1)[-1].split("/", 1)[0].split(":") + ["5432"])[1]
    try:
        listed = subprocess.run(["pg_lsclusters", "--no-header"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise RuntimeError(f"cannot find the PostgreSQL cluster to restart ({exc}); set MODELGATE_BENCH_PG_RESTART "
                           "to the command that restarts it") from None
    for line in listed.splitlines():
        version, cluster, cluster_port, *_ = line.split()
        if cluster_port == port:
            return ["pg_ctlcluster", version, cluster, "restart", "--", "-m", "fast"]
    raise RuntimeError(f"no PostgreSQL cluster on port {port} in pg_lsclusters; set MODELGATE_BENCH_PG_RESTART")


async def wait_for_postgres(admin_url: str, timeout: float) -> None:
    import asyncpg

    deadline = time.monotonic() + timeout
    while True:
        try:
            connection = await asyncpg.connect(admin_url, timeout=2)
            await connection.close()
            return
        except (OSError, asyncpg.PostgresError, TimeoutError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


def _reap(pid: int) -> None:
    """Waits until a killed service is gone (it is our child when we started it)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        except ChildProcessError:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
        time.sleep(0.05)


async def run_chaos(
    endpoint: str,
    journeys: int,
    rate: float = 10.0,
    kill_every: float | None = 3.0,
    min_kills: int = 0,
    pause: tuple[int, float, float] | None = None,  # (LocalStack pid, after seconds, for seconds)
    timeout: float = 600.0,
    seed: int = 7,
    extra_env: dict[str, str] | None = None,
    surge: int = 20,
    replicas: int = 1,
    pg_restart_at: float | None = None,
) -> ChaosReport:
    """One chaos run; with `replicas` > 1 the services share PostgreSQL databases made (and dropped) for it."""
    webhook = WebhookReceiver()
    stack = new_stack(endpoint, "chaos", {
        "MODELGATE_WEBHOOK_URL": webhook.url,
        "MODELGATE_POLL_WAIT_SECONDS": "5",
        **(extra_env or {}),
    })
    databases: list[str] = []
    if replicas > 1 or pg_restart_at is not None:
        stack.replicas = replicas
        stack.ports.update({i: free_port() for s in SERVICES for i in stack.instances(s)})
        stack.database_urls, databases = postgres_namespace(stack, POSTGRES_ADMIN)
    started = time.monotonic()
    try:
        with running_system(stack, keep_files=bool(os.environ.get("MODELGATE_BENCH_KEEP"))):
            chaos = Chaos(stack, webhook, journeys, rate, surge)
            chaos.report.replicas = replicas
            try:
                artifact = upload_artifact(stack, "chaos/model.bin")
                deadline = started + timeout
                # the journeys' registrant, which also reads the delivery log (auditor) to count what was sent
                token = add_principal(stack, "chaos", kind="service", roles=["registrant", "auditor"], teams=["chaos"])
                async with httpx.AsyncClient(timeout=60, headers={"Authorization": f"Bearer {token}"}) as client:
                    work = [asyncio.create_task(chaos.register_all(client, artifact, deadline))]
                    if kill_every:
                        work.append(asyncio.create_task(chaos.kill_now_and_then(kill_every, random.Random(seed), min_kills)))
                    if pause:
                        work.append(asyncio.create_task(chaos.pause_aws(*pause)))
                    if pg_restart_at is not None:
                        work.append(asyncio.create_task(chaos.restart_postgres(pg_restart_at, POSTGRES_ADMIN)))
                    await asyncio.gather(*work)
                    await chaos.wait_for_end_states(client, deadline)
                    await chaos.wait_for_stage_truth(client, deadline)
                    await chaos.wait_for_deliveries(client, deadline)
                    await asyncio.sleep(3)  # anything still to arrive (a repeat) arrives now
                    await chaos.count(client)
            finally:  # a restart still under way must not start a service after the system is stopped
                chaos.over.set()
    finally:
        webhook.close()
        if databases:
            drop_databases(POSTGRES_ADMIN, databases)
    chaos.report.seconds = time.monotonic() - started
    return chaos.report


def print_report(report: ChaosReport, title: str) -> None:
    console.print(table(title, ["", "count"], report.rows()))
    console.print("[green]PASS[/]: every journey kept its promises" if report.ok else "[red]FAIL[/]")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--journeys", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=10.0, help="registrations per second (default 10)")
    parser.add_argument("--kill-every", type=float, default=3.0, help="seconds between kills; 0: no kills")
    parser.add_argument("--pause", type=float, default=0.0, help="SIGSTOP LocalStack this many seconds (e.g. 20)")
    parser.add_argument("--surge", type=int, default=50, help=f"versions of the group '{SURGE_GROUP}' registered at once (default 50)")
    parser.add_argument("--replicas", type=int, default=1, help="processes of every service, on PostgreSQL when > 1")
    parser.add_argument("--pg-restart-at", type=float, default=None,
                        help="restart the PostgreSQL server this many seconds into the run (once; services on PostgreSQL)")
    parser.add_argument("--timeout", type=float, default=1800.0)
    args = parser.parse_args()
    cleanup_on_sigterm()
    with private_localstack() as localstack:
        pause = (localstack.pid, 5.0, args.pause) if args.pause else None
        report = asyncio.run(run_chaos(
            localstack.endpoint, args.journeys, rate=args.rate, kill_every=args.kill_every or None, pause=pause,
            timeout=args.timeout, surge=args.surge, replicas=args.replicas, pg_restart_at=args.pg_restart_at,
        ))
    what = [f"{args.replicas} replicas of every service on PostgreSQL"] if args.replicas > 1 else []
    if args.kill_every:
        what.append(f"kill -9 every {args.kill_every:g} s")
    if args.pause:
        what.append(f"LocalStack stopped for {args.pause:g} s")
    if args.pg_restart_at is not None:
        what.append(f"PostgreSQL restarted at {args.pg_restart_at:g} s")
    print_report(report, f"chaos: {args.journeys} journeys, {', '.join(what)}")
    raise SystemExit(0 if report.ok else 1)


if __name__ == "__main__":
    main()
