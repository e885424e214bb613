"""Drift (services/deployer/drift.py): what disagrees with the deployer's live record, what is only unknown,
and the periodic check's warning line and gauge. The deployer on an SQLite file, its pointer in FakeSsm."""

from __future__ import annotations

import asyncio

import pytest
import structlog.testing
from prometheus_client import REGISTRY
from sqlalchemy.ext.asyncio import async_sessionmaker

from services.deployer.drift import DriftWorker, check_stages, compare
from services.deployer.schemas import DriftView
from services.deployer.targets import DeploySpec, Serving
from shared.db import create_tables, make_engine
from shared.runtime import Runtime
from tests.factories import approval_decided
from tests.helpers import eventually
from tests.unit.test_deployer import Deployer, FakeTarget


def view(source: str, version: str | None, deployment: str | None = None, error: str | None = None) -> DriftView:
    return DriftView(source=source, model_version_id=version, deployment_id=deployment, error=error)  # type: ignore[arg-type]


def test_views_that_agree_with_the_live_record_are_no_drift():
    checked = compare("fraud", "prod", [view("live", "fraud/3", "d3"), view("pointer", "fraud/3", "d3"),
                                         view("target", "fraud/3"), view("registrar", "fraud/3")])
    assert checked.disagreements == [] and not checked.drifted


def test_each_view_naming_another_version_or_deployment_is_a_disagreement():
    checked = compare("fraud", "prod", [view("live", "fraud/3", "d3"), view("pointer", "fraud/2", "d2"),
                                         view("target", "fraud/3", "d9"), view("registrar", "fraud/1, fraud/3")])
    assert checked.drifted and checked.disagreements == [
        "the Parameter Store pointer names fraud/2, the deployer's live record fraud/3",
        "the target names fraud/3 as deployment d9, the deployer's live record as d3",
        "the registrar's catalog names fraud/1, fraud/3, the deployer's live record fraud/3",
    ]
    gone = compare("fraud", "prod", [view("live", "fraud/3", "d3"), view("pointer", None)])
    assert gone.disagreements == ["the Parameter Store pointer names nothing, the deployer's live record fraud/3"]


def test_a_view_that_could_not_be_read_is_unknown_and_a_deployment_under_way_is_not_drift():
    unknown = compare("fraud", "prod", [view("live", "fraud/3"), view("target", None, error="AccessDenied")])
    assert unknown.disagreements == [] and not unknown.drifted
    settling = compare("fraud", "prod", [view("live", "fraud/3"), view("target", "fraud/4")], deploying=True)
    assert settling.disagreements and not settling.drifted and settling.deploying


class ServingTarget(FakeTarget):
    """Says it serves `serves` (a model_version_id), whatever was deployed."""

    serves: str | None = None

    async def serving(self, spec: DeploySpec, endpoint_url: str | None) -> Serving:
        return Serving(self.serves or spec.model_version_id, None, f"asked at {endpoint_url}")


@pytest.fixture
async def deployer(tmp_path):
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path}/deployer.db")
    await create_tables(engine)
    yield Deployer(async_sessionmaker(engine, expire_on_commit=False), ServingTarget())
    await engine.dispose()


async def test_the_stages_views_are_read_from_the_record_the_pointer_and_the_target(deployer):
    await deployer.deliver(approval_decided(version=1, approval_id="a1"))
    async with deployer.sessionmaker() as session:
        [agreed] = await check_stages(session, deployer.ssm, deployer.targets)
    assert [(v.source, v.model_version_id) for v in agreed.views] == [("live", "fraud/1"), ("pointer", "fraud/1"), ("target", "fraud/1")]
    assert not agreed.drifted
    deployer.target.serves = "fraud/0"  # someone pointed the server at another model
    async with deployer.sessionmaker() as session:
        [moved] = await check_stages(session, deployer.ssm, deployer.targets, group="fraud", stage="dev")
        assert await check_stages(session, deployer.ssm, deployer.targets, group="other") == []
    assert moved.drifted and moved.disagreements[0].startswith("the target names fraud/0, the deployer's live record fraud/1")


async def test_the_periodic_check_logs_stage_drift_and_sets_the_gauge(deployer):
    await deployer.deliver(approval_decided(version=1, approval_id="a1"))
    deployer.ssm.parameters["/modelgate/fraud/dev/current"] = "not a pointer"
    runtime = Runtime(settings=None, engine=None, sessionmaker=deployer.sessionmaker, aws={})  # type: ignore[arg-type]
    labels = {"group": "fraud", "stage": "dev"}
    found_before = REGISTRY.get_sample_value("modelgate_stage_drift_found_total", labels) or 0
    stop = asyncio.Event()
    with structlog.testing.capture_logs() as logs:
        running = asyncio.create_task(DriftWorker(runtime, deployer.ssm, deployer.targets, every=0.05).run(stop))
        await eventually(lambda: asyncio.sleep(0, result=any(e["event"] == "stage_drift" for e in logs)), timeout=10)
        stop.set()
        await asyncio.wait_for(running, timeout=5)
    line = next(e for e in logs if e["event"] == "stage_drift")
    assert line["log_level"] == "warning" and line["live_model_version_id"] == "fraud/1" and line["pointer_model_version_id"] is None
    assert "the Parameter Store pointer names nothing" in line["disagreements"][0]
    assert REGISTRY.get_sample_value("modelgate_stage_drift", labels) == 1
    assert REGISTRY.get_sample_value("modelgate_stage_drift_found_total", labels) > found_before


def test_the_console_group_page_shows_each_stages_timeline():
    from services.console.router import templates

    period = {"from": "2026-12-01T10:00:00+00:00", "to": None, "version": 2, "model_version_id": "fraud/2",
              "kind": "rollback", "requested_by": "ops", "approvers": [], "deployment_id": "d2d2d2d2-0000"}
    older = {**period, "to": period["from"], "from": "2026-11-30T09:00:00+00:00", "kind": "rollout",
             "requested_by": "lee, rita", "approvers": ["lee", "rita"], "deployment_id": "d1d1d1d1-0000"}
    html = templates.get_template("group.html").render(
        me=None, group="fraud", versions=[], stages=["dev", "prod"], live={}, deployments=[],
        timelines={"dev": [], "prod": [period, older]}, periods=5)
    prod = html.split('id="timeline-prod"')[1].split("</table>")[0]
    assert "2026-12-01 10:00:00" in prod and "serving" in prod and "rolled back by ops" in prod
    assert "2026-11-30 09:00:00" in prod and "lee, rita" in prod and "rollout" in prod
    assert "Nothing has served dev yet." in html


async def test_a_check_reads_ten_pointers_per_parameter_store_call(deployer):
    """Many stages cost Parameter Store a tenth of the calls: GetParameters, ten names at a time."""
    calls = []
    get_parameters = deployer.ssm.get_parameters

    async def counted(Names, **kwargs):
        calls.append(len(Names))
        return await get_parameters(Names=Names, **kwargs)

    deployer.ssm.get_parameters = counted
    for version in range(1, 24):
        await deployer.deliver(approval_decided(version=version, approval_id=f"a{version}", group=f"g{version:02d}"))
    deployer.ssm.parameters.pop("/modelgate/g23/dev/current")  # its pointer was deleted by someone
    async with deployer.sessionmaker() as session:
        checked = await check_stages(session, deployer.ssm, deployer.targets)
    assert calls == [10, 10, 3] and len(checked) == 23
    assert [c.group for c in checked if c.drifted] == ["g23"]
    assert next(v for v in checked[-1].views if v.source == "pointer").detail == "/modelgate/g23/dev/current does not exist"
