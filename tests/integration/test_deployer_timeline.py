"""What served a stage, and when; and whether what serves is what modelgate records. The deployer runs
in-process on its own bootstrap (its HTTP API, its deployment worker), its Parameter Store is LocalStack's,
on SQLite and on PostgreSQL; approvals are delivered to its handler as the consumer would."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone

import httpx
import pytest
import structlog.testing
from aiobotocore.session import get_session
from prometheus_client import REGISTRY
from sqlalchemy.ext.asyncio import async_sessionmaker
from typer.testing import CliRunner

from modelgate.cli import app as cli
from modelgate.commands import common
from modelgate.commands.common import ExitCode
from services.deployer.bootstrap import bootstrap
from services.deployer.drift import DriftWorker
from services.deployer.settings import DeployerSettings
from shared.app import build_app
from shared.db import make_engine
from shared.events import utcnow
from shared.infra import boto_client
from shared.migrations import prepare_database
from shared.runtime import Runtime
from shared.topology import parameter_name
from tests.factories import approval_decided
from tests.helpers import eventually
from tests.principals import LEE, OPS, StaticAuthenticator, bearer


@asynccontextmanager
async def running_deployer(database_url: str, localstack: str):
    """The deployer's app and workers, its Parameter Store LocalStack's; yields (HTTP client, runtime, wiring)."""
    engine = make_engine(database_url)
    await prepare_database(engine, "deployer")
    async with get_session().create_client("ssm", endpoint_url=localstack, region_name="us-east-1",
                                           aws_access_key_id="test", aws_secret_access_key="test") as ssm:
        settings = DeployerSettings(database_url=database_url, namespace="it", deploy_retry_seconds=0, drift_check_seconds=0,
                                    resume_seconds=0.5)
        runtime = Runtime(settings=settings, engine=engine, sessionmaker=async_sessionmaker(engine, expire_on_commit=False),
                          aws={"ssm": ssm})
        wiring = await bootstrap(runtime, authenticator=StaticAuthenticator({p.name: p for p in (OPS, LEE)}))
        stop = asyncio.Event()
        workers = [asyncio.create_task(w.run(stop)) for w in wiring.workers]
        transport = httpx.ASGITransport(app=build_app(runtime, wiring))
        async with httpx.AsyncClient(transport=transport, base_url="http://deployer", headers=bearer(LEE)) as client:
            try:
                yield client, runtime, wiring
            finally:
                stop.set()
                await asyncio.wait_for(asyncio.gather(*workers), timeout=10)
                await wiring.on_stop()
    await engine.dispose()


async def approve(runtime, wiring, group: str, version: int, stage: str = "prod") -> None:  # type: ignore[no-untyped-def]
    event = approval_decided(group, version, stage, approval_id=uuid.uuid4().hex)
    async with runtime.uow() as uow:
        await wiring.handlers["ApprovalDecided"](event, uow)
        uow.mark_processed(event)
        await uow.commit()


async def serving(client: httpx.AsyncClient, group: str, version: int, stage: str = "prod") -> dict:
    async def live() -> dict | None:
        items = (await client.get(f"/v1/groups/{group}/stages/{stage}/timeline")).json()["items"]
        return items[0] if items and items[0]["live"] and items[0]["version"] == version else None

    return await eventually(live)


@pytest.fixture
def group() -> str:
    return f"tl-{uuid.uuid4().hex[:10]}"  # the pointer's name has no namespace: a group of its own


async def test_the_timeline_says_which_version_served_before_between_and_after_three_promotions_and_a_rollback(
    database_url, localstack_endpoint, group
):
    async with running_deployer(database_url, localstack_endpoint) as (client, runtime, wiring):
        before = utcnow()
        await asyncio.sleep(0.01)
        for version in (1, 2, 3):
            await approve(runtime, wiring, group, version)
            await serving(client, group, version)
        rollback = await client.post(f"/v1/groups/{group}/stages/prod/rollback", json={"reason": "alarm"}, headers=bearer(OPS))
        assert rollback.status_code == 202, rollback.text
        await serving(client, group, 2)
        url = f"/v1/groups/{group}/stages/prod/timeline"
        page = (await client.get(url)).json()

        periods = page["items"]
        assert [(p["version"], p["kind"]) for p in periods] == [(2, "rollback"), (3, "rollout"), (2, "rollout"), (1, "rollout")]
        assert [p["to"] for p in periods] == [None] + [p["from"] for p in periods[:-1]]  # each ends as the next begins
        assert periods[0]["live"] and not any(p["live"] for p in periods[1:])
        assert periods[0]["requested_by"] == "ops" and periods[0]["approvers"] == [] and periods[0]["reason"] == "alarm"
        assert periods[1]["approvers"] == ["policy"] and periods[1]["approval_id"]

        async def at(when: datetime) -> httpx.Response:
            return await client.get(url, params={"at": when.isoformat()})

        nothing = await at(before)
        assert nothing.status_code == 404 and "nothing served" in nothing.json()["detail"]
        for period in periods[1:]:  # between each: the one that served then, its start included
            start, end = datetime.fromisoformat(period["from"]), datetime.fromisoformat(period["to"])
            for moment in (start, start + (end - start) / 2):
                [found] = (await at(moment)).json()["items"]
                assert found["deployment_id"] == period["deployment_id"], moment
        [after] = (await at(utcnow() + timedelta(days=1))).json()["items"]
        assert after["deployment_id"] == periods[0]["deployment_id"] and after["to"] is None
        moment = datetime.fromisoformat(periods[2]["from"]) + (datetime.fromisoformat(periods[2]["to"]) - datetime.fromisoformat(periods[2]["from"])) / 2
        [elsewhere] = (await at(moment.astimezone(timezone(timedelta(hours=5, minutes=30))))).json()["items"]
        assert elsewhere["deployment_id"] == periods[2]["deployment_id"]  # the same instant, written in another zone
        naive = await client.get(url, params={"at": "2026-01-01T00:00:00"})
        assert naive.status_code == 422 and "no offset" in naive.json()["detail"]

        first = (await client.get(url, params={"limit": 3})).json()
        rest = (await client.get(url, params={"limit": 3, "offset": first["next_offset"]})).json()
        assert first["items"] + rest["items"] == periods and rest["next_offset"] is None
        assert (await client.get(url, params={"limit": 501})).status_code == 422
        assert (await client.get(f"/v1/groups/{'g' * 201}/stages/prod/timeline")).status_code == 422
        never = await client.get(f"/v1/groups/{group}/stages/dev/timeline", params={"at": utcnow().isoformat()})
        assert never.status_code == 404 and "nothing has served" in never.json()["detail"]
        assert (await client.get(url, headers={"Authorization": ""})).status_code == 401


class Bridge(httpx.AsyncBaseTransport):
    """Hands the CLI's requests (made in its own event loop, in a thread) to an app running in the test's loop."""

    def __init__(self, apps: dict[str, httpx.AsyncBaseTransport], loop: asyncio.AbstractEventLoop):
        self.apps, self.loop = apps, loop

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        async def there() -> httpx.Response:
            response = await self.apps[request.url.host].handle_async_request(request)
            return httpx.Response(response.status_code, headers=response.headers, content=await response.aread())

        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(there(), self.loop))


async def run_cli(monkeypatch, deployer_app, catalog: list[dict], *args: str):  # type: ignore[no-untyped-def]
    """`modelgate *args` against the in-process deployer, and a registrar whose catalog is `catalog`."""
    def answer(request: httpx.Request) -> httpx.Response:  # GET /v1/versions?group=&stage=&stage_status=
        query = request.url.params
        found = [v for v in catalog if v["model_version_id"].startswith(f"{query['group']}/")
                 and v["stages"].get(query["stage"]) == query["stage_status"]] if request.url.path == "/v1/versions" else []
        return httpx.Response(200, json={"items": found, "limit": 1000, "offset": 0, "next_offset": None})

    registrar = httpx.MockTransport(answer)
    for name in ("registrar", "deployer"):
        monkeypatch.setenv(f"MODELGATE_{name.upper()}_URL", f"http://{name}")
    monkeypatch.setattr(common, "transport", Bridge({"deployer": deployer_app, "registrar": registrar}, asyncio.get_running_loop()))
    env = {"COLUMNS": "250", "MODELGATE_TOKEN": bearer(LEE)["Authorization"].removeprefix("Bearer ")}
    result: list = []
    thread = threading.Thread(target=lambda: result.append(CliRunner().invoke(cli, list(args), env=env)))
    thread.start()
    await eventually(lambda: asyncio.sleep(0, result=bool(result)), timeout=30)
    thread.join()
    return result[0]


def catalog_of(group: str, deployed: int) -> list[dict]:
    return [{"model_version_id": f"{group}/{v}", "version": v, "stages": {"prod": "Deployed" if v == deployed else "Approved"}}
            for v in (1, 2)]  # what the registrar's catalog holds


async def test_verify_reports_a_pointer_changed_behind_modelgates_back(database_url, localstack_endpoint, group, monkeypatch):
    async with running_deployer(database_url, localstack_endpoint) as (client, runtime, wiring):
        await approve(runtime, wiring, group, 1)
        await approve(runtime, wiring, group, 2)
        await serving(client, group, 2)
        deployer_app = client._transport
        report = (await client.get("/v1/drift", params={"group": group})).json()
        assert report["drifted"] == 0 and [s["disagreements"] for s in report["stages"]] == [[]]
        agreed = await run_cli(monkeypatch, deployer_app, catalog_of(group, 2), "verify", group)
        assert agreed.exit_code == 0, agreed.output
        assert "all 1 stages agree" in agreed.output

        pointer = json.dumps({"model_version_id": f"{group}/1", "version": 1, "artifact_uri": "s3://b/model.bin",
                              "deployed_at": utcnow().isoformat()})
        boto_client("ssm", localstack_endpoint).put_parameter(Name=parameter_name(group, "prod"), Value=pointer,
                                                              Type="String", Overwrite=True)
        report = (await client.get("/v1/drift", params={"group": group, "stage": "prod"})).json()
        [stage] = report["stages"]
        assert report["drifted"] == 1 and stage["drifted"]
        expected = f"the Parameter Store pointer names {group}/1, the deployer's live record {group}/2 ({parameter_name(group, 'prod')})"
        assert stage["disagreements"] == [expected]
        drifted = await run_cli(monkeypatch, deployer_app, catalog_of(group, 2), "verify", group, "prod")
        assert drifted.exit_code == ExitCode.DRIFT, drifted.output
        assert f"{group} prod: the Parameter Store pointer names {group}/1" in drifted.output and "1 of 1 stages drift" in drifted.output
        as_json = await run_cli(monkeypatch, deployer_app, catalog_of(group, 1), "verify", group, "--json")
        [checked] = json.loads(as_json.stdout)
        assert as_json.exit_code == ExitCode.DRIFT
        assert [v["model_version_id"] for v in checked["views"]] == [f"{group}/2", f"{group}/1", f"{group}/1"]
        assert len(checked["disagreements"]) == 2 and "the registrar's catalog names" in checked["disagreements"][1]

        with structlog.testing.capture_logs() as logs:
            await DriftWorker(runtime, runtime.aws["ssm"], {}, every=60).check()
        [line] = [e for e in logs if e["event"] == "stage_drift" and e["group"] == group]
        assert line["log_level"] == "warning" and (line["live_model_version_id"], line["pointer_model_version_id"]) == (f"{group}/2", f"{group}/1")
        labels = {"group": group, "stage": "prod"}
        assert REGISTRY.get_sample_value("modelgate_stage_drift", labels) == 1
        assert REGISTRY.get_sample_value("modelgate_stage_drift_found_total", labels) == 1
        metrics = (await client.get("/metrics")).text
        assert f'modelgate_stage_drift{{group="{group}",stage="prod"}} 1.0' in metrics


async def test_live_prints_what_serves_now_and_what_served_then(database_url, localstack_endpoint, group, monkeypatch):
    async with running_deployer(database_url, localstack_endpoint) as (client, runtime, wiring):
        before = utcnow()
        for version in (1, 2):
            await approve(runtime, wiring, group, version)
            await serving(client, group, version)
        [_, first] = (await client.get(f"/v1/groups/{group}/stages/prod/timeline")).json()["items"]
        now = await run_cli(monkeypatch, client._transport, [], "live", group, "prod")
        assert now.exit_code == 0, now.output
        assert f"{group} prod serves {group}/2 since" in now.output and "approved by policy" in now.output
        assert now.output.count(f"{group}/") >= 3  # the line, then both periods in the table
        then = await run_cli(monkeypatch, client._transport, [], "live", group, "prod", "--at", first["from"], "--json")
        assert then.exit_code == 0 and json.loads(then.stdout)["items"][0]["deployment_id"] == first["deployment_id"]
        never = await run_cli(monkeypatch, client._transport, [], "live", group, "prod", "--at", before.isoformat())
        assert never.exit_code == ExitCode.NOT_FOUND and "nothing served" in never.output
        naive = await run_cli(monkeypatch, client._transport, [], "live", group, "prod", "--at", "2026-01-01T00:00:00")
        assert naive.exit_code == 2 and "no offset" in naive.output
