"""Progressive delivery on the `local` target, with real processes on LocalStack: a rollout router in front of
the live and the new inference servers, guardrails read from it, rollback and promotion by themselves."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import signal
import time
import uuid
from collections import Counter
from datetime import datetime

import httpx
import pytest
import yaml

from modelgate import stack as stack_mod
from shared.infra import boto_client
from shared.topology import bucket_name, parameter_name
from tests.helpers import eventually
from tests.unit.test_deployer_inference import model_bytes

INTERVAL = 1.0  # seconds between guardrail evaluations
# The shifted version's score distribution mirrors the live one's (p -> 1 - p on symmetric traffic): the
# disagreement on the same requests catches it; psi is watched too, loosely (a few dozen requests are noisy).
GUARDRAILS = {"interval": "1s", "min_requests": 20, "error_rate": 0.05, "psi": 2.0, "disagreement": 0.3}
POLICY = {"stages": [
    {"name": "dev", "approval": "automatic", "thresholds": {"auc": ">= 0.8"},
     "rollout": {"strategy": "canary", "share": 50, "bake": "5s", "guardrails": GUARDRAILS}},
    {"name": "test", "approval": "automatic", "thresholds": {"auc": ">= 0.8"},
     "rollout": {"strategy": "shadow", "mirror": 100, "bake": "5s", "guardrails": GUARDRAILS}},
]}
SLOW_CANARY = {"stages": [  # baked long enough for an operator (and a slow CLI) to step in
    {"name": "dev", "approval": "automatic", "thresholds": {"auc": ">= 0.8"},
     "rollout": {"strategy": "canary", "share": 50, "bake": "2m", "guardrails": GUARDRAILS}},
]}
LINEAR = {"stages": [
    {"name": "dev", "approval": "automatic", "thresholds": {"auc": ">= 0.8"},
     "rollout": {"strategy": "linear", "step": 25, "bake": "4s", "guardrails": GUARDRAILS}},
]}


def policy(document: dict):  # type: ignore[no-untyped-def]
    def mark(test):  # type: ignore[no-untyped-def]
        test.policy = document
        return test
    return mark


@pytest.fixture
def system_env(tmp_path, request) -> dict[str, str]:  # type: ignore[no-untyped-def]
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(getattr(request.function, "policy", POLICY)))
    return {
        "MODELGATE_TARGETS": json.dumps({"dev": "local", "test": "local"}),
        "MODELGATE_LOCAL_RUN_DIR": str(tmp_path / "inference"),
        "MODELGATE_LEASE_SECONDS": "3",
        "MODELGATE_POLICY_FILE": str(path),
    }


class Traffic:
    """Requests to each stage as its pointer says: to the rollout's router while one runs, else the live server."""

    def __init__(self, system, group: str, stages: tuple[str, ...]):  # type: ignore[no-untyped-def]
        self.ssm = boto_client("ssm", system.endpoint)
        self.group, self.stages = group, stages
        self.answers: dict[str, list[tuple[str, str | None, str]]] = {s: [] for s in stages}  # (served by, request id, via)
        self.task: asyncio.Task | None = None

    def pointer(self, stage: str) -> dict | None:
        try:
            return json.loads(self.ssm.get_parameter(Name=parameter_name(self.group, stage))["Parameter"]["Value"])
        except self.ssm.exceptions.ParameterNotFound:
            return None

    async def run(self) -> None:
        rng = random.Random(3)
        async with httpx.AsyncClient(timeout=10) as http:
            while True:
                for stage in self.stages:
                    pointer = await asyncio.to_thread(self.pointer, stage)
                    if pointer is None:
                        continue
                    router = (pointer.get("rollout") or {}).get("router_url")
                    url = router or pointer["endpoint_url"]
                    for _ in range(5):
                        row = {"instances": [[rng.gauss(0, 1), rng.gauss(0, 1), rng.gauss(0, 1)]]}
                        with contextlib.suppress(httpx.HTTPError):
                            answer = await http.post(f"{url}/invocations", json=row)
                            if answer.status_code == 200:
                                self.answers[stage].append((answer.json()["model_version_id"],
                                                            answer.headers.get("x-request-id"), "router" if router else "server"))
                await asyncio.sleep(0.05)

    def __enter__(self) -> Traffic:
        self.task = asyncio.get_running_loop().create_task(self.run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.task is not None
        self.task.cancel()


def upload(stack, key: str, body: bytes) -> str:  # type: ignore[no-untyped-def]
    boto_client("s3", stack.endpoint).put_object(Bucket=bucket_name(stack.namespace), Key=key, Body=body)
    return f"s3://{bucket_name(stack.namespace)}/{key}"


async def register(client: httpx.AsyncClient, system, group: str, version: int, flip: bool = False) -> None:  # type: ignore[no-untyped-def]
    artifact = upload(system, f"{group}/{version}.skops", model_bytes(flip=flip))
    body = {"artifact_uri": artifact, "metrics": {"auc": 0.93}, "framework": "sklearn"}
    response = await client.post(f"{system.url('registrar')}/v1/groups/{group}/versions", json=body)
    assert response.status_code == 201, response.text


async def history(client: httpx.AsyncClient, system, group: str, version: int) -> list[dict]:  # type: ignore[no-untyped-def]
    return (await client.get(f"{system.url('registrar')}/v1/groups/{group}/versions/{version}/history")).json()


async def live(client: httpx.AsyncClient, system, group: str, stage: str) -> dict | None:  # type: ignore[no-untyped-def]
    rows = (await client.get(f"{system.url('deployer')}/v1/deployments/live", params={"group": group})).json()
    return next((d for d in rows if d["stage"] == stage), None)


async def serving(client, system, group: str, stage: str, version: int) -> dict | None:  # type: ignore[no-untyped-def]
    row = await live(client, system, group, stage)
    return row if row and row["version"] == version else None


def of(events: list[dict], event_type: str, stage: str) -> list[dict]:
    return [e["payload"] for e in events if e["event_type"] == event_type and e["payload"]["stage"] == stage]


async def test_a_good_version_goes_through_canary_and_shadow_to_100_and_a_bad_one_is_rolled_back_by_a_guardrail(system):
    group = f"fraud-{uuid.uuid4().hex[:6]}"
    async with httpx.AsyncClient(timeout=30, headers=system.headers("ana")) as client:
        await register(client, system, group, 1)  # nothing live yet: all at once, in dev then test
        await eventually(lambda: serving(client, system, group, "test", 1), timeout=240, interval=0.5)
        with Traffic(system, group, ("dev", "test")) as traffic:
            await register(client, system, group, 2)

            async def rolling_out_in_dev() -> dict | None:
                version = (await client.get(f"{system.url('registrar')}/v1/groups/{group}/versions/2")).json()
                entry = version["stage_details"].get("dev", {})
                return entry if entry.get("status") == "Deploying" and entry.get("rollout") else None

            entry = await eventually(rolling_out_in_dev, timeout=240, interval=0.2)
            assert entry["rollout"]["share"] == 50 and entry["rollout"]["strategy"] == "canary"
            assert entry["rollout"]["live"] == f"{group}/1"
            pointer = traffic.pointer("dev")
            assert pointer["model_version_id"] == f"{group}/1"  # the pointer names the live version until promotion
            assert pointer["rollout"]["candidate_model_version_id"] == f"{group}/2" and pointer["rollout"]["router_url"]
            assert pointer["rollout"]["share"] == 50 and pointer["rollout"]["status"] == "Baking"
            await eventually(lambda: serving(client, system, group, "dev", 2), timeout=180, interval=0.2)
            dev = [a for a in traffic.answers["dev"] if a[2] == "router"]
            served = Counter(a[0] for a in dev)
            assert served[f"{group}/1"] > 0 and served[f"{group}/2"] > 0  # the canary took part of the traffic
            assert all(request_id for _, request_id, _ in dev)  # X-Request-Id on every answer

            # test rolls out as a shadow: every answer still comes from the live version
            await eventually(lambda: serving(client, system, group, "test", 2), timeout=180, interval=0.2)
            shadowed = [a for a in traffic.answers["test"] if a[2] == "router"]
            assert len(shadowed) >= 10 and {a[0] for a in shadowed} == {f"{group}/1"}

            async def announced() -> list[dict]:
                found = await history(client, system, group, 2)
                return found if all(of(found, t, s) for t in ("RolloutPromoted", "Deployed") for s in ("dev", "test")) else []

            events = await eventually(announced, timeout=60, interval=0.5)
            for stage, strategy in (("dev", "canary"), ("test", "shadow")):
                stepped = of(events, "RolloutStepped", stage)
                assert [(s["step"], s["status"], s["strategy"]) for s in stepped] == [(1, "Baking", strategy)]
                (promoted,) = of(events, "RolloutPromoted", stage)
                assert promoted["live_model_version_id"] == f"{group}/1" and promoted["evaluation"]["requests"] >= 20
                assert len(of(events, "Deployed", stage)) == 1
            assert traffic.pointer("dev")["model_version_id"] == f"{group}/2" and "rollout" not in traffic.pointer("dev")

            # a version whose scores are shifted (trained the other way round) is caught in dev and rolled back
            await register(client, system, group, 3, flip=True)
            router_url = (await eventually(lambda: _router_of(traffic, "dev", f"{group}/3"), timeout=240, interval=0.1))
            breach_seen = await _first_breach(router_url, f"{group}/3")
            rolled_back = await eventually(lambda: _rolled_back(client, system, group), timeout=30, interval=0.1)

        assert rolled_back["status"] == "RolledBack" and set(rolled_back["breached"]) & {"psi", "disagreement"}
        detected_after = time.time() - breach_seen - (time.time() - _at(rolled_back))
        print(f"breach to RolloutRolledBack: {detected_after:.2f}s (guardrail interval {INTERVAL:g}s)")
        # one interval, plus the stats read, the commit and the bus on a machine shared by many test runs
        assert detected_after <= INTERVAL + 1.5, f"rolled back {detected_after:.2f}s after the breach"
        version = (await client.get(f"{system.url('registrar')}/v1/groups/{group}/versions/3")).json()
        assert version["stages"]["dev"] == "RolledBack" and "test" not in version["stages"]  # never promoted further
        assert (await live(client, system, group, "dev"))["version"] == 2
        assert json.loads(boto_client("ssm", system.endpoint).get_parameter(Name=parameter_name(group, "dev"))["Parameter"]["Value"])[
            "model_version_id"] == f"{group}/2"
        rollout = (await client.get(f"{system.url('deployer')}/v1/groups/{group}/stages/dev/rollout")).json()
        assert rollout["status"] == "RolledBack" and rollout["model_version_id"] == f"{group}/3" and "guardrail" in rollout["reason"]
        deployments = (await client.get(f"{system.url('deployer')}/v1/deployments", params={"group": group})).json()
        assert [d["status"] for d in deployments if d["version"] == 3] == ["RolledBack"]

        async def retired() -> bool:  # the rolled back version's server and the router are gone
            try:
                await client.get(f"{router_url}/healthz", timeout=1)
            except httpx.HTTPError:
                return True
            return False

        await eventually(retired, timeout=20)


def _at(payload: dict) -> float:
    return datetime.fromisoformat(payload["at"]).timestamp()


async def _router_of(traffic: Traffic, stage: str, candidate: str) -> str | None:
    rollout = (await asyncio.to_thread(traffic.pointer, stage) or {}).get("rollout") or {}
    return rollout.get("router_url") if rollout.get("candidate_model_version_id") == candidate else None


async def _first_breach(router_url: str, candidate: str) -> float:
    """When the router's own stats first showed the new version judged (20 requests) and over a guardrail."""
    async with httpx.AsyncClient(timeout=2) as http:
        while True:
            try:
                stats = (await http.get(f"{router_url}/stats")).json()
            except httpx.HTTPError:
                raise AssertionError("the router went away before a breach was seen") from None
            mine = stats["versions"].get(candidate, {})
            if mine.get("requests", 0) >= 20 and (stats.get("disagreement_rate") or 0) > 0.3:
                return time.time()
            await asyncio.sleep(0.05)


async def _rolled_back(client: httpx.AsyncClient, system, group: str) -> dict | None:  # type: ignore[no-untyped-def]
    found = of(await history(client, system, group, 3), "RolloutRolledBack", "dev")
    return found[0] if found else None


@policy(LINEAR)
async def test_a_deployer_killed_mid_rollout_resumes_it_where_it_was_with_no_step_done_twice(system):
    group = f"fraud-{uuid.uuid4().hex[:6]}"
    async with httpx.AsyncClient(timeout=30, headers=system.headers("ana")) as client:
        await register(client, system, group, 1)
        await eventually(lambda: serving(client, system, group, "dev", 1), timeout=240, interval=0.5)
        with Traffic(system, group, ("dev",)):
            await register(client, system, group, 2)

            async def at_step(n: int) -> bool:
                return len(of(await history(client, system, group, 2), "RolloutStepped", "dev")) >= n

            await eventually(lambda: at_step(2), timeout=240, interval=0.2)  # 50 %, baking
            stack_mod.stop_service(system, "deployer", sig=signal.SIGKILL)
            await asyncio.sleep(1)
            stack_mod.start_service(system, "deployer")
            stack_mod.wait_ready(system, "deployer")
            await eventually(lambda: serving(client, system, group, "dev", 2), timeout=240, interval=0.5)

        assert "rollout_resumed" in system.logfile("deployer").read_text()  # the restarted deployer took it up

        async def promoted() -> list[dict]:
            found = await history(client, system, group, 2)
            return found if of(found, "Deployed", "dev") and of(found, "RolloutPromoted", "dev") else []

        events = await eventually(promoted, timeout=60, interval=0.5)  # the registrar has them all
        stepped = of(events, "RolloutStepped", "dev")
        assert [(s["step"], s["share"]) for s in stepped] == [(1, 25.0), (2, 50.0), (3, 75.0)]  # each step once
        assert len(of(events, "RolloutPromoted", "dev")) == 1 and len(of(events, "Deployed", "dev")) == 1
        rows = (await client.get(f"{system.url('deployer')}/v1/deployments", params={"group": group})).json()
        assert [(d["version"], d["status"], d["live"]) for d in rows] == [(1, "Deployed", False), (2, "Deployed", True)]


@policy(SLOW_CANARY)
async def test_an_operator_pauses_resumes_and_aborts_a_rollout_from_the_command_line(system):
    from tests.e2e.test_cli import modelgate

    group = f"fraud-{uuid.uuid4().hex[:6]}"

    def cli(*args: str) -> dict:
        result = modelgate(system, *args, "--json", who="lee")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    async with httpx.AsyncClient(timeout=30, headers=system.headers("ana")) as client:
        await register(client, system, group, 1)
        await eventually(lambda: serving(client, system, group, "dev", 1), timeout=240, interval=0.5)
        with Traffic(system, group, ("dev",)):
            await register(client, system, group, 2)
            rollout_url = f"{system.url('deployer')}/v1/groups/{group}/stages/dev/rollout"

            async def baking() -> dict | None:
                response = await client.get(rollout_url)
                return response.json() if response.status_code == 200 and response.json()["status"] == "Baking" else None

            await eventually(baking, timeout=240, interval=0.2)
            refused = await client.post(f"{rollout_url}/pause")  # ana registers; she does not operate
            assert refused.status_code == 403 and "operator" in refused.json()["detail"]
            paused = await asyncio.to_thread(cli, "rollout", "pause", group, "dev")
            assert paused["status"] == "Paused"
            await asyncio.sleep(3)
            status = await asyncio.to_thread(cli, "rollout", "status", group, "dev")
            assert (status["status"], status["step"]) == ("Paused", paused["step"]) and status["evaluation"]
            resumed = await asyncio.to_thread(cli, "rollout", "resume", group, "dev")
            assert resumed["status"] == "Baking"
            paused_for = datetime.fromisoformat(resumed["step_started_at"]) - datetime.fromisoformat(paused["step_started_at"])
            assert paused_for.total_seconds() >= 3  # the bake goes on where it was: the pause does not count
            again = await client.post(f"{rollout_url}/pause", headers=system.headers("lee"))  # paused again, at once:
            assert again.status_code == 200, again.text  # so the rollout cannot end before the slow CLI aborts it
            aborted = await asyncio.to_thread(cli, "rollout", "abort", group, "dev")
            assert aborted["abort_requested_by"] == "lee"

            async def over() -> dict | None:
                found = of(await history(client, system, group, 2), "RolloutRolledBack", "dev")
                return found[0] if found else None

            stopped = await eventually(over, timeout=30, interval=0.2)
        assert (stopped["status"], stopped["by"], stopped["reason"]) == ("Aborted", "lee", "aborted by lee")
        reasons = [s["reason"] for s in of(await history(client, system, group, 2), "RolloutStepped", "dev")]
        assert "paused by lee" in reasons and "resumed by lee" in reasons
        assert (await live(client, system, group, "dev"))["version"] == 1
        final = (await client.get(rollout_url)).json()
        assert final["status"] == "Aborted" and final["share"] == 0
        again = await client.post(f"{rollout_url}/abort", headers=system.headers("lee"))
        assert again.status_code == 409 and "Aborted" in again.json()["detail"]
