"""The registrar's HTTP API on SQLite and on PostgreSQL: groups, registration, search, history, bad input."""

from __future__ import annotations

import asyncio
import uuid
from contextlib import asynccontextmanager

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import async_sessionmaker

from services.registrar.bootstrap import bootstrap
from services.registrar.comet_writeback import CometWriteback
from services.registrar.models import ModelVersion
from services.registrar.settings import RegistrarSettings
from shared.app import build_app
from shared.aws import AwsClients
from shared.db import OutboxRow, make_engine
from shared.events import Deployed, DeployedPayload, utcnow
from shared.infra import boto_client
from shared.migrations import prepare_database
from shared.runtime import Runtime
from tests.factories import approval_decided, ref
from tests.principals import ANA, CI, StaticAuthenticator, bearer


@asynccontextmanager
async def registrar_client(database_url: str, aws=None, **settings):
    engine = make_engine(database_url)
    await prepare_database(engine, "registrar")
    runtime = Runtime(
        settings=RegistrarSettings(database_url=database_url, check_artifacts=aws is not None, **settings),
        engine=engine,
        sessionmaker=async_sessionmaker(engine, expire_on_commit=False),
        aws=aws or {},
        publisher=None,  # events stay in the outbox: the relay is tested with the bus
    )
    wiring = await bootstrap(runtime, comet=CometWriteback(None, None), authenticator=StaticAuthenticator())
    transport = httpx.ASGITransport(app=build_app(runtime, wiring))
    async with httpx.AsyncClient(transport=transport, base_url="http://registrar", headers=bearer(ANA)) as client:
        client.runtime = runtime
        client.handlers = wiring.handlers
        yield client
    await engine.dispose()


@pytest.fixture
async def api(database_url):
    async with registrar_client(database_url) as client:
        yield client


def registration(**fields) -> dict:
    return {"artifact_uri": "s3://modelgate-artifacts/fraud/model.bin", "registered_by": "ana@example.com", **fields}


async def post_version(api, group: str, expect: int = 201, headers=None, **fields) -> dict:
    response = await api.post(f"/v1/groups/{group}/versions", json=registration(**fields), headers=headers)
    assert response.status_code == expect, response.text
    return response.json()


async def deliver(api, event) -> None:
    async with api.runtime.uow() as uow:
        await api.handlers[event.event_type](event, uow)
        await uow.commit()


def deployed(group: str, version: int, stage: str):
    return Deployed(
        producer="deployer",
        correlation_id=f"{group}/{version}",
        payload=DeployedPayload(
            **ref(group, version), deployment_id=uuid.uuid4().hex, stage=stage, target="parameter-store",
            artifact_uri="s3://models/fraud.bin", parameter_name=f"/modelgate/{group}/{stage}/current", deployed_at=utcnow(),
        ),
    )


async def test_a_registered_version_reads_back_with_card_lineage_and_status(api):
    full = registration(
        framework="xgboost",
        source="comet",
        description="October retrain",
        metrics={"auc": 0.93, "recall": 0.81},
        params={"max_depth": 6},
        tags={"team": "risk"},
        metadata={"git_sha": "abc123"},
        model_card={"summary": "fraud scores", "intended_use": "review queue", "limitations": "no business accounts",
                    "training_data": "tx v3", "evaluation": "holdout auc 0.93", "risk_rating": "Medium"},
        lineage={"experiment_key": "4f1c", "datasets": [{"name": "tx", "version": "3", "aliases": ["preprocessed"], "uri": "s3://dl/tx/3"}]},
    )
    created = await api.post("/v1/groups/fraud/versions", json=full)
    assert created.status_code == 201
    assert created.json()["version"] == 1 and created.json()["model_version_id"] == "fraud/1"
    record = (await api.get("/v1/groups/fraud/versions/1")).json()
    for field in ("framework", "source", "description", "metrics", "params", "tags", "metadata", "model_card"):
        assert record[field] == full[field], field
    assert record["lineage"]["datasets"][0] == full["lineage"]["datasets"][0]
    assert record["lineage"]["experiment_key"] == "4f1c"
    assert record["approval_status"] == "PendingManualApproval" and record["stages"] == {}


async def test_stage_status_and_history_follow_the_journey_in_order(api):
    await post_version(api, "fraud")
    await deliver(api, approval_decided("fraud", 1, "dev", "Approved"))
    await deliver(api, deployed("fraud", 1, "dev"))
    record = (await api.get("/v1/groups/fraud/versions/1")).json()
    assert record["stages"] == {"dev": "Deployed"} and record["approval_status"] == "Approved"
    history = (await api.get("/v1/groups/fraud/versions/1/history")).json()
    assert [e["event_type"] for e in history] == ["ModelRegistered", "ApprovalDecided", "Deployed"]
    assert (await api.get("/v1/groups/fraud/versions/2/history")).status_code == 404


async def test_a_version_superseded_for_a_later_stage_keeps_its_approval_and_shows_the_newer_one(api):
    await post_version(api, "fraud")
    await deliver(api, approval_decided("fraud", 1, "dev", "Approved"))
    await deliver(api, deployed("fraud", 1, "dev"))
    rejected = approval_decided("fraud", 1, "test", "Rejected", approval_id="a2")
    await deliver(api, rejected.model_copy(update={"payload": rejected.payload.model_copy(update={"superseded_by": "fraud/2"})}))
    record = (await api.get("/v1/groups/fraud/versions/1")).json()
    assert record["stages"] == {"dev": "Deployed", "test": "Superseded"} and record["approval_status"] == "Approved"
    assert record["stage_details"]["test"]["superseded_by"] == "fraud/2"


async def test_after_a_rollback_the_version_rolled_back_from_no_longer_reads_deployed(api):
    await post_version(api, "fraud")
    await post_version(api, "fraud")
    await deliver(api, deployed("fraud", 1, "prod"))
    newer = deployed("fraud", 2, "prod")
    await deliver(api, newer.model_copy(update={"payload": newer.payload.model_copy(
        update={"previous_model_version_id": "fraud/1", "previous_version": 1})}))
    back = deployed("fraud", 1, "prod")
    await deliver(api, back.model_copy(update={"payload": back.payload.model_copy(
        update={"rollback": True, "previous_model_version_id": "fraud/2", "previous_version": 2})}))
    assert (await api.get("/v1/groups/fraud/versions/1")).json()["stages"] == {"prod": "Deployed"}
    record = (await api.get("/v1/groups/fraud/versions/2")).json()
    assert record["stages"] == {"prod": "RolledBack"} and record["stage_details"]["prod"]["replaced_by"] == "fraud/1"


async def test_groups_are_created_listed_read_and_changed(api):
    created = await api.post("/v1/groups", json={"name": "churn", "description": "Churn risk", "tags": {"team": "crm"}, "owners": ["lee"]})
    assert created.status_code == 201 and created.json()["latest_version"] == 0
    again = await api.post("/v1/groups", json={"name": "churn"})
    assert again.status_code == 409 and "already exists" in again.json()["detail"]
    await post_version(api, "fraud")  # created on first registration
    changed = await api.patch("/v1/groups/churn", json={"owners": ["lee", "kim"]})
    assert changed.json()["owners"] == ["lee", "kim"] and changed.json()["description"] == "Churn risk"
    assert (await api.get("/v1/groups/fraud")).json()["latest_version"] == 1
    names = [g["name"] for g in (await api.get("/v1/groups")).json()["items"]]
    assert names == ["churn", "fraud"]
    assert [g["name"] for g in (await api.get("/v1/groups", params={"q": "risk"})).json()["items"]] == ["churn"]
    assert [g["name"] for g in (await api.get("/v1/groups", params={"owner": "kim"})).json()["items"]] == ["churn"]
    missing = await api.patch("/v1/groups/nope", json={"description": "x"})
    assert missing.status_code == 404 and "create it first" in missing.json()["detail"]
    bad = await api.post("/v1/groups", json={"name": "has space"})
    assert bad.status_code == 422 and "letters, digits" in bad.json()["detail"]


async def test_unknown_group_is_refused_when_auto_create_is_off(database_url):
    async with registrar_client(database_url, auto_create_groups=False) as api:
        refused = await api.post("/v1/groups/fraud/versions", json=registration())
        assert refused.status_code == 404 and "POST /v1/groups" in refused.json()["detail"]
        assert (await api.get("/v1/groups/fraud")).status_code == 404
        await api.post("/v1/groups", json={"name": "fraud"})
        assert (await post_version(api, "fraud"))["version"] == 1


@pytest.mark.parametrize(
    "fields, says",
    [
        ({"metrics": {"auc": "high"}}, "metrics: Value error, metric 'auc' must be a number"),
        ({"metrics": [0.9]}, "metrics: Input should be a valid dictionary"),
        ({"registered_by": ""}, "registered_by: String should have at least 1 character"),
        ({"model_card": {"risk_rating": "Huge"}}, "model_card.risk_rating: Input should be"),
        ({"metric": {"auc": 0.9}}, "metric: Extra inputs are not permitted"),
    ],
)
async def test_a_bad_registration_gets_422_saying_what_to_fix_and_writes_nothing(api, fields, says):
    response = await api.post("/v1/groups/fraud/versions", json=registration(**fields))
    assert response.status_code == 422 and says in response.json()["detail"], response.text
    assert (await api.get("/v1/groups/fraud")).status_code == 404


@pytest.mark.parametrize(
    "artifact_uri, says",
    [
        ("file:///tmp/model.joblib", "is a local path"),
        ("/tmp/model.joblib", "is a local path"),
        ("model.joblib", "is a local path"),
        ("https://example.com/model.joblib", "has scheme 'https'"),
        ("s3://someone-elses-bucket/model.joblib", "is in bucket 'someone-elses-bucket', which is not allowed"),
        ("s3://bad!bucket/k", "is not s3://<bucket>/<key> with a valid bucket name"),
        ("s3://modelgate-artifacts/", "is not s3://<bucket>/<key>"),
        ("s3://[oops/k", "is not a URI"),
    ],
)
async def test_an_artifact_outside_the_allowed_buckets_is_refused_saying_what_is_allowed(api, artifact_uri, says):
    response = await api.post("/v1/groups/fraud/versions", json=registration(artifact_uri=artifact_uri))
    detail = response.json()["detail"]
    assert response.status_code == 422 and says in detail, response.text
    assert "allowed: s3://<bucket>/<key> in bucket(s) modelgate-artifacts (MODELGATE_ARTIFACT_BUCKETS)" in detail
    assert "MODELGATE_ALLOW_LOCAL_ARTIFACTS=true" in detail
    assert (await api.get("/v1/groups/fraud")).status_code == 404


async def test_the_development_switch_allows_local_paths_and_the_buckets_setting_other_buckets(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path}/r.db"
    async with registrar_client(url, allow_local_artifacts=True, artifact_buckets="team-models, shared-models") as api:
        assert (await post_version(api, "fraud", artifact_uri=str(tmp_path / "model.ubj")))["version"] == 1
        assert (await post_version(api, "fraud", artifact_uri=f"file://{tmp_path}/model.ubj"))["version"] == 2
        assert (await post_version(api, "fraud", artifact_uri="s3://shared-models/fraud/model.ubj"))["version"] == 3
        refused = await api.post("/v1/groups/fraud/versions", json=registration())  # the default bucket is no longer listed
        assert refused.status_code == 422 and "bucket(s) team-models, shared-models" in refused.json()["detail"]


async def test_a_malformed_s3_uri_is_422_even_when_s3_is_asked(localstack_endpoint, namespace, tmp_path):
    settings = RegistrarSettings(aws_endpoint_url=localstack_endpoint, namespace=namespace, database_url="sqlite+aiosqlite://")
    async with AwsClients(settings, ("s3",)) as aws, registrar_client(f"sqlite+aiosqlite:///{tmp_path}/r.db", aws=aws,
                                                                      namespace=namespace) as api:
        response = await api.post("/v1/groups/fraud/versions", json=registration(artifact_uri="s3://bad!bucket/k"))
        assert response.status_code == 422, response.text


async def test_an_idempotency_key_makes_a_retry_return_the_same_version(api):
    key = {"Idempotency-Key": uuid.uuid4().hex}
    first = await post_version(api, "fraud", headers=key, metrics={"auc": 0.9})
    retry = await post_version(api, "fraud", headers=key, metrics={"auc": 0.9})
    assert retry == first
    different = await api.post("/v1/groups/fraud/versions", json=registration(metrics={"auc": 0.5}), headers=key)
    assert different.status_code == 409 and "already used for a different registration" in different.json()["detail"]
    concurrent = {"Idempotency-Key": uuid.uuid4().hex}
    racing = await asyncio.gather(*(post_version(api, "fraud", headers=concurrent) for _ in range(4)))
    assert {r["version"] for r in racing} == {2}
    assert [v["version"] for v in (await api.get("/v1/groups/fraud/versions")).json()] == [1, 2]
    async with api.runtime.sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(OutboxRow)) == 2


async def test_an_idempotency_key_is_the_callers_own_another_principal_cannot_squat_or_replay_it(api):
    """The same key from two principals: two registrations. A replay only ever answers the one who sent it."""
    key = {"Idempotency-Key": "ci-job-1234"}  # e.g. $CI_JOB_ID, which anyone can guess
    squatted = await post_version(api, "fraud", headers=key, metrics={"auc": 0.5})  # ana, first
    body = {"artifact_uri": "s3://modelgate-artifacts/fraud/model.bin", "metrics": {"auc": 0.9}}
    as_ci = {**key, **bearer(CI)}
    first = await api.post("/v1/groups/fraud/versions", json=body, headers=as_ci)
    assert first.status_code == 201, first.text
    assert first.json()["version"] == 2 and first.json()["registered_by"] == "ci-fraud"
    retry = await api.post("/v1/groups/fraud/versions", json=body, headers=as_ci)
    assert retry.status_code == 201 and retry.json() == first.json()
    different = await api.post("/v1/groups/fraud/versions", json={**body, "metrics": {"auc": 0.1}}, headers=as_ci)
    assert different.status_code == 409 and "already used" in different.json()["detail"]
    assert await post_version(api, "fraud", headers=key, metrics={"auc": 0.5}) == squatted  # ana's own replay
    assert [v["registered_by"] for v in (await api.get("/v1/groups/fraud/versions")).json()] == ["ana@example.com", "ci-fraud"]


async def seed_catalog(api) -> None:
    """fraud 1..4 and churn 1..2, with metrics, tags, descriptions and stages."""
    await api.post("/v1/groups", json={"name": "churn", "description": "Customer churn propensity"})
    for auc, team in ((0.81, "risk"), (0.95, "risk"), (0.70, "ops"), (0.91, "risk")):
        await post_version(api, "fraud", metrics={"auc": auc}, tags={"team": team}, description=f"fraud model auc {auc}")
    for auc in (0.88, 0.97):
        await post_version(api, "churn", metrics={"auc": auc, "f1": 0.5}, tags={"team": "crm", "champion": "yes"})
    await deliver(api, approval_decided("fraud", 2, "dev", "Approved"))
    await deliver(api, deployed("fraud", 2, "dev"))
    await deliver(api, approval_decided("fraud", 3, "dev", "Rejected", approval_id="a3"))
    await deliver(api, approval_decided("churn", 2, "dev", "Approved", approval_id="a4"))


async def found(api, **params) -> list[str]:
    response = await api.get("/v1/versions", params=params)
    assert response.status_code == 200, response.text
    return [v["model_version_id"] for v in response.json()["items"]]


async def test_search_filters_combine(api):
    await seed_catalog(api)
    assert await found(api, group="fraud") == ["fraud/4", "fraud/3", "fraud/2", "fraud/1"]  # newest first
    assert await found(api, metric="auc>=0.9") == ["churn/2", "fraud/4", "fraud/2"]
    assert await found(api, metric=["auc>0.8", "auc<0.9"]) == ["churn/1", "fraud/1"]
    assert await found(api, tag="team=risk", metric="auc>=0.9") == ["fraud/4", "fraud/2"]
    assert await found(api, tag="champion") == ["churn/2", "churn/1"]
    assert await found(api, status="Approved") == ["churn/2", "fraud/2"]
    assert await found(api, status="Rejected") == ["fraud/3"]
    assert await found(api, stage="dev", stage_status="Deployed") == ["fraud/2"]
    assert await found(api, stage="dev") == ["churn/2", "fraud/3", "fraud/2"]
    assert await found(api, q="CHURN") == ["churn/2", "churn/1"]  # the group's name
    assert await found(api, q="fraud mod auc 0.7") == ["fraud/3"]  # words of the description, or their beginnings
    assert await found(api, q="100%") == []
    assert await found(api, registered_by="nobody") == []


async def test_search_finds_the_same_whether_it_starts_from_the_indexes_or_reads_newest_first(api, monkeypatch):
    from services.registrar import search

    await seed_catalog(api)
    searches = [{"metric": ["auc>0.8", "auc<0.9"]}, {"tag": "team=risk", "metric": "auc>=0.9"}, {"q": "fraud mod"},
                {"stage": "dev", "status": "Approved"}, {"tag": "champion", "group": "churn"}]
    from_indexes = [await found(api, **params) for params in searches]
    monkeypatch.setattr(search, "FEW", 3)  # no filter alone is few: the small ones are intersected first
    assert [await found(api, **params) for params in searches] == from_indexes
    monkeypatch.setattr(search, "SMALL", 0)  # no filter counts as small: read newest first, check each
    assert [await found(api, **params) for params in searches] == from_indexes
    assert from_indexes[0] == ["churn/1", "fraud/1"]


async def test_search_sorts_and_pages(api):
    await seed_catalog(api)
    assert await found(api, sort="metrics.auc") == ["churn/2", "fraud/2", "fraud/4", "churn/1", "fraud/1", "fraud/3"]
    assert await found(api, sort="metrics.f1", order="asc") == ["churn/1", "churn/2"]  # only versions with f1
    assert await found(api, group="fraud", sort="version", order="asc") == ["fraud/1", "fraud/2", "fraud/3", "fraud/4"]
    pages, offset = [], 0
    while offset is not None:
        page = (await api.get("/v1/versions", params={"limit": 4, "offset": offset, "sort": "created_at", "order": "asc"})).json()
        pages.append([v["model_version_id"] for v in page["items"]])
        offset = page["next_offset"]
    assert pages == [["fraud/1", "fraud/2", "fraud/3", "fraud/4"], ["churn/1", "churn/2"]]
    listed = (await api.get("/v1/groups/fraud/versions", params={"limit": 2, "offset": 1})).json()
    assert [v["version"] for v in listed] == [2, 3]


@pytest.mark.parametrize(
    "params, says",
    [
        ({"metric": "auc>>0.9"}, "is not NAME OP NUMBER"),
        ({"metric": "auc>=high"}, "is not NAME OP NUMBER"),
        ({"sort": "auc"}, "cannot sort by 'auc'"),
        ({"tag": "=x"}, "has no key"),
        ({"q": "%%"}, "has no letters or digits"),
        ({"status": "Live"}, "query status: Input should be 'PendingManualApproval', 'Approved' or 'Rejected'"),
        ({"limit": 0}, "query limit: Input should be greater than or equal to 1"),
        ({"metrics": "auc>0.9"}, "query metrics: Extra inputs are not permitted"),
    ],
)
async def test_a_bad_search_gets_422_saying_what_to_fix(api, params, says):
    response = await api.get("/v1/versions", params=params)
    assert response.status_code == 422 and says in response.json()["detail"], response.text


async def test_unknown_versions_and_groups_are_404_with_a_reason(api):
    await post_version(api, "fraud")
    missing = await api.get("/v1/groups/fraud/versions/9")
    assert missing.status_code == 404 and missing.json()["detail"] == "no version 9 in model group 'fraud'"
    assert (await api.get("/v1/groups/nope/versions")).status_code == 404


async def test_openapi_documents_every_route_with_an_example(api):
    spec = (await api.get("/openapi.json")).json()
    assert {"/v1/groups", "/v1/groups/{group}", "/v1/groups/{group}/versions", "/v1/versions",
            "/v1/groups/{group}/versions/{version}", "/v1/groups/{group}/versions/{version}/history"} <= set(spec["paths"])
    example = spec["components"]["schemas"]["Registration"]["examples"][0]
    assert example["model_card"]["risk_rating"] == "Medium"
    assert (await api.get("/docs")).status_code == 200


async def test_an_artifact_that_is_not_in_s3_is_refused(localstack_endpoint, namespace, tmp_path):
    bucket = f"{namespace}-artifacts"
    s3 = boto_client("s3", localstack_endpoint)
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="fraud/model.bin", Body=b"model")
    settings = RegistrarSettings(aws_endpoint_url=localstack_endpoint, namespace=namespace, database_url="sqlite+aiosqlite://")
    try:
        async with AwsClients(settings, ("s3",)) as aws, registrar_client(f"sqlite+aiosqlite:///{tmp_path}/r.db", aws=aws, namespace=namespace) as api:
            missing = await api.post("/v1/groups/fraud/versions", json=registration(artifact_uri=f"s3://{bucket}/fraud/nope.bin"))
            assert missing.status_code == 422 and "does not exist; upload it first" in missing.json()["detail"]
            assert (await api.get("/v1/groups/fraud")).status_code == 404
            ok = await post_version(api, "fraud", artifact_uri=f"s3://{bucket}/fraud/model.bin")
            assert ok["version"] == 1
            async with api.runtime.sessionmaker() as session:
                assert await session.scalar(select(func.count()).select_from(ModelVersion)) == 1
    finally:
        s3.delete_object(Bucket=bucket, Key="fraud/model.bin")
        s3.delete_bucket(Bucket=bucket)
