"""Online Comet ingest and write-back through comet_ml.API, against tests/fakes/comet_server.py.

The fake stands in for Comet's cloud, which is unreachable here: it implements the REST endpoints comet_ml
calls for these operations and records every request, so the tests check what comet_ml actually sent.
The write-back's check of a registry version's source experiment reads `registry-model/item/details`
(Model.get_details, its `experimentKey`), which the fake already served: no endpoint was added for it.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator

os.environ.setdefault("COMET_ERROR_TRACKING_ENABLE", "false")  # before anything imports comet_ml

import pytest

from services.registrar.comet import CometFetchError, fetch_online, fetch_online_async
from services.registrar.comet_writeback import CometWriteback, CometWritebackError, CometWritebackRefused
from shared.lineage import LINEAGE_ASSET
from tests.fakes.comet_server import FakeComet

pytestmark = pytest.mark.timeout(60)

WRITES = ("write/registry-model/item/status", "write/registry-model/item/stage")


@pytest.fixture
def comet(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeComet]:
    """The stand-in Comet on a free port, seeded with one experiment, its registry model and a dataset."""
    real_getaddrinfo = socket.getaddrinfo

    def loopback_only(host: str, *args: object, **kwargs: object) -> list[object]:
        assert host in ("127.0.0.1", "localhost"), f"comet_ml tried to reach {host}"
        return real_getaddrinfo(host, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "getaddrinfo", loopback_only)
    with FakeComet() as fake:
        monkeypatch.setenv("COMET_URL_OVERRIDE", fake.url)
        monkeypatch.setenv("COMET_API_KEY", fake.api_key)
        monkeypatch.setenv("COMET_WORKSPACE", "acme")
        fake.add_experiment(
            "exp1",
            "acme",
            "fraud-detection",
            name="xgb-lr0.15",
            params={"objective": "binary:logistic", "num_round": 100, "learning_rate": 0.15},
            metrics={"auc": 0.94, "logloss": 0.1},
            others={"team": "risk"},
        )
        fake.add_remote_model(
            "exp1", "fraud-xgb", "s3://modelgate-artifacts/fraud/model.json", {"framework": "xgboost"}
        )
        fake.add_asset(
            "exp1",
            "confusion-matrix.json",
            json.dumps({"labels": ["Normal", "Fraud"], "matrix": [[2, 1], [0, 2]]}).encode(),
            "confusion-matrix",
        )
        fake.add_asset(
            "exp1", "roc-curve", json.dumps({"x": [0, 1], "y": [0, 1], "name": "roc-curve"}).encode(), "curve"
        )
        lineage = [
            {"name": "creditcard-transactions", "version": "1.0.0", "aliases": ["raw"]},
            {"name": "local-only", "version": "3", "uri": "file:///tmp/x.csv"},
        ]
        fake.add_asset("exp1", LINEAGE_ASSET, json.dumps(lineage).encode())
        fake.add_artifact(
            "acme",
            "creditcard-transactions",
            "1.0.0",
            ["raw", "latest"],
            {"rows": 20000},
            remote_uri="s3://modelgate-data/raw/transactions.csv",
        )
        fake.add_registry_version("acme", "fraud-xgb", "1.0.0", "exp1", "fraud-xgb")
        yield fake
        assert fake.unknown == [], f"comet_ml called endpoints the fake lacks: {fake.unknown}"


async def test_fetch_online_by_experiment_key(comet: FakeComet) -> None:
    reg = await fetch_online_async("acme", "fraud-detection", experiment_key="exp1")
    assert (reg.experiment_key, reg.experiment_name, reg.project, reg.workspace) == (
        "exp1",
        "xgb-lr0.15",
        "fraud-detection",
        "acme",
    )
    assert reg.params == {"objective": "binary:logistic", "num_round": 100, "learning_rate": 0.15}
    assert reg.metrics == {"auc": 0.94, "logloss": 0.1}
    assert reg.others == {"team": "risk"}
    assert (reg.model.name, reg.model.uri, reg.model.metadata) == (
        "fraud-xgb",
        "s3://modelgate-artifacts/fraud/model.json",
        {"framework": "xgboost"},
    )
    plots = {a.type: a.data for a in reg.assets if a.data is not None}
    assert plots["confusion-matrix"]["labels"] == ["Normal", "Fraud"] and plots["curve"]["y"] == [0, 1]
    # the first dataset is a Comet artifact (aliases, metadata and URI come from Comet); the second is not
    assert [d.model_dump() for d in reg.datasets] == [
        {
            "name": "creditcard-transactions",
            "version": "1.0.0",
            "aliases": ["latest", "raw"],
            "uri": "s3://modelgate-data/raw/transactions.csv",
            "metadata": {"rows": 20000},
        },
        {"name": "local-only", "version": "3", "aliases": [], "uri": "file:///tmp/x.csv", "metadata": {}},
    ]
    assert comet.calls("experiment/metadata")[0].params == {"experimentKey": "exp1"}


def test_fetch_online_through_the_registry(comet: FakeComet) -> None:
    comet.add_experiment("exp2", "acme", "fraud-detection", name="xgb-lr0.3", metrics={"auc": 0.95})
    comet.add_remote_model("exp2", "fraud-xgb", "s3://modelgate-artifacts/fraud/model-2.json", {})
    comet.add_registry_version("acme", "fraud-xgb", "1.1.0", "exp2", "fraud-xgb")

    latest = fetch_online("acme", "fraud-detection", registry_model="fraud-xgb")
    assert (latest.experiment_key, latest.registry_version, latest.model.uri) == (
        "exp2",
        "1.1.0",
        "s3://modelgate-artifacts/fraud/model-2.json",
    )
    older = fetch_online("acme", "fraud-detection", registry_model="fraud-xgb", version="1.0.0")
    assert (older.experiment_key, older.registry_model, older.registry_version) == (
        "exp1",
        "fraud-xgb",
        "1.0.0",
    )
    with pytest.raises(CometFetchError, match="no version '9.9.9'"):
        fetch_online("acme", "fraud-detection", registry_model="fraud-xgb", version="9.9.9")


def test_fetch_online_with_explicit_server_and_key(comet: FakeComet, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COMET_URL_OVERRIDE")
    monkeypatch.delenv("COMET_API_KEY")
    reg = fetch_online("acme", "fraud-detection", "exp1", api_key=comet.api_key, server_url=comet.url)
    assert reg.experiment_key == "exp1"
    assert "COMET_URL_OVERRIDE" not in os.environ  # put back as it was


def test_fetch_online_by_experiment_name(comet: FakeComet) -> None:
    assert fetch_online("acme", "fraud-detection", experiment_key="xgb-lr0.15").experiment_key == "exp1"
    assert comet.calls("experiments")[0].params["projectName"] == "fraud-detection"


def test_fetch_online_errors(comet: FakeComet) -> None:
    with pytest.raises(CometFetchError, match="no experiment 'nope'"):
        fetch_online("acme", "fraud-detection", experiment_key="nope")
    comet.add_experiment("bare", "acme", "fraud-detection")
    with pytest.raises(CometFetchError, match="no model logged"):
        fetch_online("acme", "fraud-detection", experiment_key="bare")
    with pytest.raises(ValueError, match="experiment_key or registry_model"):
        fetch_online("acme", "fraud-detection")


async def test_writeback_reflects_decisions_and_deployments(comet: FakeComet) -> None:
    writeback = CometWriteback.from_env()
    assert writeback.enabled
    exp1 = {"experiment_key": "exp1"}  # the experiment fraud-xgb 1.0.0 comes from
    assert await writeback.on_approval_decided("fraud-xgb", "1.0.0", "dev", "approve", **exp1) == ["tag:dev-approved"]
    assert await writeback.on_deployed("fraud-xgb", "1.0.0", "dev", **exp1) == ["tag:dev", "status:Development"]
    assert await writeback.on_approval_decided("fraud-xgb", "1.0.0", "prod", "Rejected", **exp1) == [
        "tag:prod-rejected"
    ]

    item = comet.version_item("acme", "fraud-xgb", "1.0.0")
    assert (item["status"], item["tags"]) == ("Development", ["dev-approved", "dev", "prod-rejected"])
    status_posts = comet.calls("write/registry-model/item/status")
    assert [(r.method, r.body) for r in status_posts] == [
        ("POST", {"status": "Development", "modelItemId": item["registryModelItemId"]})
    ]
    assert [r.params["stage"] for r in comet.calls("write/registry-model/item/stage")] == [
        "dev-approved",
        "dev",
        "prod-rejected",
    ]

    writes_before = sum(len(comet.calls(p)) for p in WRITES)
    assert await writeback.on_deployed("fraud-xgb", "1.0.0", "dev", **exp1) == []  # a redelivered event
    assert sum(len(comet.calls(p)) for p in WRITES) == writes_before

    assert await writeback.on_deployed("fraud-xgb", "1.0.0", "prod", **exp1) == ["tag:prod", "status:Production"]
    assert comet.version_item("acme", "fraud-xgb", "1.0.0")["status"] == "Production"


async def test_writeback_unknown_version_raises(comet: FakeComet) -> None:
    with pytest.raises(CometWritebackError, match="fraud-xgb 7.0.0"):
        await CometWriteback.from_env().on_deployed("fraud-xgb", "7.0.0", "dev", experiment_key="exp1")


async def test_writeback_refuses_a_registry_version_from_another_experiment(comet: FakeComet) -> None:
    writeback = CometWriteback.from_env()
    for expected in ("exp-of-another-team", None):
        with pytest.raises(CometWritebackRefused, match="not written"):
            await writeback.on_deployed("fraud-xgb", "1.0.0", "prod", experiment_key=expected)
    assert [len(comet.calls(p)) for p in WRITES] == [0, 0]
    assert comet.calls("registry-model/item/details")[0].params["version"] == "1.0.0"  # read, never written


async def test_writeback_does_nothing_when_not_configured(
    comet: FakeComet, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("COMET_API_KEY")
    writeback = CometWriteback.from_env()
    assert not writeback.enabled
    assert await writeback.on_deployed("fraud-xgb", "1.0.0", "prod", experiment_key="exp1") == []
    assert comet.requests == []


async def test_the_registrar_reflects_decisions_and_deployments_of_a_comet_registry_version(comet: FakeComet, tmp_path) -> None:
    """fraud/1 is imported from fraud-xgb 1.0.0 by the registrar (fetch_online, then the link the route makes):
    written back. mallory/1's lineage names another team's registry model, credit-xgb 2.0.0: never touched."""
    from sqlalchemy import select
    from sqlalchemy.ext.asyncio import async_sessionmaker

    from services.registrar.bootstrap import bootstrap
    from services.registrar.catalog import Registration, register
    from services.registrar.models import CometWritebackRow, WritebackStatus
    from services.registrar.routes.comet import to_registration
    from services.registrar.settings import RegistrarSettings
    from services.registrar.writebacks import link_comet_import
    from shared.db import UnitOfWork, make_engine
    from shared.migrations import prepare_database
    from shared.runtime import Runtime
    from tests.factories import approval_decided, sample_events

    comet.add_experiment("exp9", "acme", "credit-scoring", name="credit-team-model")
    theirs = comet.add_registry_version("acme", "credit-xgb", "2.0.0", "exp9", "credit-xgb", tags=["champion"])
    url = f"sqlite+aiosqlite:///{tmp_path}/registrar.db"
    engine = make_engine(url)
    await prepare_database(engine, "registrar")
    sessionmaker = async_sessionmaker(engine, expire_on_commit=False)
    imported = await fetch_online_async("acme", "fraud-detection", registry_model="fraud-xgb", version="1.0.0")
    squatting = {"comet": {"registry_model": "credit-xgb", "registry_version": "2.0.0", "experiment_key": "exp9"}}
    async with UnitOfWork(sessionmaker) as uow:
        version = await register(uow, "fraud", to_registration(imported, "ana"))
        link_comet_import(uow.session, version, imported, "acme", "ana")
        await register(uow, "manual", Registration(artifact_uri="s3://b/m", registered_by="ana"))
        await register(uow, "mallory", Registration(artifact_uri="s3://b/m", registered_by="mallory", source="comet",
                                                    lineage=squatting))
        await uow.commit()
    runtime = Runtime(settings=RegistrarSettings(database_url=url), engine=engine, sessionmaker=sessionmaker, aws={})
    wiring = await bootstrap(runtime, comet=CometWriteback.from_env())
    handlers, [worker] = wiring.handlers, wiring.workers
    deployed = next(e for e in sample_events() if e.event_type == "Deployed")  # fraud/1 in dev
    events = (approval_decided(), deployed, approval_decided(group="manual"), approval_decided(group="mallory"))
    for event in events:
        async with UnitOfWork(sessionmaker) as uow:
            await handlers[event.event_type](event, uow)
            await uow.commit()
    assert comet.calls("write/registry-model/item/stage") == []  # Comet is called after commit, by the worker
    assert worker.wake.is_set()
    while await worker.run_once():
        pass
    item = comet.version_item("acme", "fraud-xgb", "1.0.0")
    assert (item["status"], item["tags"]) == ("Development", ["dev-approved", "dev"])
    assert len(comet.calls("write/registry-model/item/stage")) == 2  # nothing for the manual or mallory's version
    assert (theirs["status"], theirs["tags"]) == ("None", ["champion"])
    assert all(r.params.get("modelName") != "credit-xgb" for r in comet.requests)  # not even read
    async with sessionmaker() as session:
        rows = {r.model_version_id: r for r in await session.scalars(select(CometWritebackRow))}
    assert {k: r.status for k, r in rows.items()} == {"fraud/1": WritebackStatus.DONE, "mallory/1": WritebackStatus.SKIPPED}
    assert "lineage names Comet registry model credit-xgb 2.0.0" in rows["mallory/1"].last_error
    await engine.dispose()
