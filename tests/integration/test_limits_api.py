"""Bad input and limits over HTTP, on SQLite and PostgreSQL (issue 16): every request a careless or hostile
client makes gets a 4xx naming the limit, never a 500; every list pages; the audit export has every row."""

from __future__ import annotations

import csv
import io
import json
import os
import uuid
import zipfile
from contextlib import asynccontextmanager

import httpx
import pytest
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import async_sessionmaker

from services.approver.models import AuditEntry
from services.deployer.bootstrap import bootstrap as deployer_bootstrap
from services.deployer.models import Deployment
from services.deployer.settings import DeployerSettings
from services.notifier.bootstrap import bootstrap as notifier_bootstrap
from services.notifier.models import Delivery
from services.notifier.settings import NotifierSettings
from shared.app import build_app
from shared.db import OutboxRow, make_engine
from shared.events import parse_event
from shared.limits import LIMITS
from shared.migrations import prepare_database
from shared.runtime import Runtime
from tests.inprocess import FakeSsm
from tests.integration.test_approver_harness import Approver, bearer
from tests.integration.test_registrar_api import post_version, registrar_client, registration
from tests.principals import ADMIN, StaticAuthenticator
from tests.principals import bearer as static_bearer


@pytest.fixture
async def api(database_url):
    async with registrar_client(database_url) as client:
        yield client


def nested(depth: int) -> dict:
    value: dict = {}
    for _ in range(depth - 1):
        value = {"x": value}
    return value


async def test_a_400_digit_metric_is_a_422_not_a_500(api):
    answer = await api.post("/v1/groups/fraud/versions", json=registration(metrics={"auc": 10**400}))
    assert answer.status_code == 422 and "too large for a float" in answer.json()["detail"], answer.text


@pytest.mark.parametrize("offset", ["1e20", str(10**20), "-1"])
async def test_an_absurd_offset_is_a_422(api, offset):
    for path in ("/v1/versions", "/v1/groups", "/v1/groups/fraud/versions"):
        answer = await api.get(path, params={"offset": offset})
        assert answer.status_code in (404, 422) if path.endswith("fraud/versions") else answer.status_code == 422
        assert answer.status_code == 422 or "does not exist" in answer.text, (path, answer.text)


async def test_searches_with_too_many_terms_are_a_422_naming_the_limit(api):
    await post_version(api, "fraud", description="weekly retrain")
    many = " ".join(f"w{i}" for i in range(1100))
    for params in ({"q": many}, [("tag", f"k{i}") for i in range(1100)], [("metric", f"m{i}>0") for i in range(1100)],
                   {"q": " ".join(f"w{i}" for i in range(LIMITS.max_search_terms + 1))}):
        answer = await api.get("/v1/versions", params=params)
        assert answer.status_code == 422, answer.text
        assert "MODELGATE_MAX_" in answer.json()["detail"] and "docs/limits.md" in answer.json()["detail"]
    at_the_limit = " ".join(f"w{i}" for i in range(LIMITS.max_search_terms))
    assert (await api.get("/v1/versions", params={"q": at_the_limit})).status_code == 200


async def test_lineage_too_deep_is_refused_and_what_is_accepted_the_approver_can_read(api):
    too_deep = await api.post("/v1/groups/fraud/versions", json=registration(lineage=nested(256)))
    assert too_deep.status_code == 422 and "MODELGATE_MAX_JSON_DEPTH" in too_deep.json()["detail"], too_deep.text
    assert (await api.post("/v1/groups/fraud/versions",
                           json=registration(params=nested(LIMITS.max_json_depth + 1)))).status_code == 422
    deepest = {"experiment_key": "k", "comet": nested(LIMITS.max_json_depth - 1)}
    await post_version(api, "fraud", lineage=deepest, metadata=nested(LIMITS.max_json_depth))
    async with api.runtime.sessionmaker() as session:
        [row] = (await session.execute(OutboxRow.__table__.select())).all()
    event = parse_event(row.body)  # what the approver's consumer does with it
    assert event.payload.lineage["experiment_key"] == "k"


async def test_strings_maps_and_counts_over_their_limits_are_422s_naming_the_limit(api):
    too_much = [
        {"description": "d" * (LIMITS.max_text_length + 1)},
        {"metrics": {f"m{i}": 0.5 for i in range(LIMITS.max_metrics + 1)}},
        {"tags": {f"t{i}": "v" for i in range(LIMITS.max_tags + 1)}},
        {"tags": {"team": "v" * (LIMITS.max_tag_value_length + 1)}},
        {"params": {f"p{i}": i for i in range(LIMITS.max_map_keys + 1)}},
        {"metadata": {"notes": "n" * (LIMITS.max_text_length + 1)}},
        {"model_card": {"summary": "s" * (LIMITS.max_text_length + 1)}},
        {"model_card": {"custom": ["x"] * (LIMITS.max_map_keys + 1)}},
        {"lineage": {"datasets": [{"name": f"d{i}"} for i in range(LIMITS.max_datasets + 1)]}},
    ]
    for fields in too_much:
        answer = await api.post("/v1/groups/fraud/versions", json=registration(**fields))
        assert answer.status_code == 422, (list(fields), answer.text)
        assert "docs/limits.md" in answer.json()["detail"], answer.text
    group = {"name": "g1", "owners": [f"o{i}" for i in range(LIMITS.max_owners + 1)]}
    answer = await api.post("/v1/groups", json=group)
    assert answer.status_code == 422 and "MODELGATE_MAX_OWNERS" in answer.text


async def test_a_body_over_the_limit_is_a_413_saying_which_limit(api):
    big = registration(description="x" * LIMITS.max_body_bytes)
    answer = await api.post("/v1/groups/fraud/versions", json=big)
    assert answer.status_code == 413 and "MODELGATE_MAX_BODY_BYTES" in answer.json()["detail"], answer.text

    async def chunks():  # no Content-Length: capped while it arrives
        yield b'{"artifact_uri": "s3://modelgate-artifacts/k", "description": "'
        for _ in range(LIMITS.max_body_bytes // 65536 + 2):
            yield b"x" * 65536
        yield b'"}'

    streamed = await api.post("/v1/groups/fraud/versions", content=chunks(), headers={"Content-Type": "application/json"})
    assert streamed.status_code == 413 and "MODELGATE_MAX_BODY_BYTES" in streamed.json()["detail"], streamed.text


async def test_a_bucket_s3_could_not_have_is_a_422_not_try_again(api):
    answer = await api.post("/v1/groups/fraud/versions", json=registration(artifact_uri="s3://bad!bucket/k"))
    assert answer.status_code == 422, answer.text


async def test_groups_list_a_page_at_a_time(api):
    prefix = uuid.uuid4().hex[:6]
    for i in range(5):
        assert (await api.post("/v1/groups", json={"name": f"{prefix}-{i}"})).status_code == 201
    seen, offset = [], 0
    while offset is not None:
        page = (await api.get("/v1/groups", params={"limit": 2, "offset": offset, "q": prefix})).json()
        assert len(page["items"]) <= 2
        seen += [g["name"] for g in page["items"]]
        offset = page["next_offset"]
    assert seen == [f"{prefix}-{i}" for i in range(5)]
    assert (await api.get("/v1/groups", params={"limit": LIMITS.max_page_size + 1})).status_code == 422


# ---------------------------------------------------------------- the approver

@pytest.fixture
async def approver(database_url):
    approver = await Approver.start(database_url)
    yield approver
    await approver.close()


async def test_the_audit_export_has_every_row_past_ten_thousand(approver):
    rows = [{"action": "test", "actor": "admin", "model_version_id": f"fraud/{i}", "details": {}} for i in range(10_050)]
    async with approver.uow() as uow:
        await uow.session.execute(insert(AuditEntry), rows)
        await uow.commit()
    async with approver.http() as client:
        client.headers.update(bearer("admin"))
        as_csv = await client.get("/v1/audit", params={"format": "csv"})
        as_json = await client.get("/v1/audit")
    assert as_csv.status_code == 200, as_csv.text
    exported = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert len(exported) >= 10_050 and exported[-1]["model_version_id"] == "fraud/10049"
    assert len(json.loads(as_json.text)) == len(exported)


async def test_approval_requests_list_a_page_at_a_time(approver):
    for version in (1, 2, 3):
        await approver.register("fraud", version)
        await approver.deployed("fraud", version, "dev")
    async with approver.http() as client:
        client.headers.update(bearer("admin"))
        everything = (await client.get("/v1/approvals", params={"status": "all"})).json()
        paged, offset = [], "0"
        while offset is not None:
            page = await client.get("/v1/approvals", params={"status": "all", "limit": 2, "offset": offset})
            assert len(page.json()) <= 2
            paged += page.json()
            offset = page.headers.get("x-next-offset")
        too_big = await client.get("/v1/approvals", params={"limit": LIMITS.max_page_size + 1})
    assert len(everything) >= 3 and [a["approval_id"] for a in paged] == [a["approval_id"] for a in everything]
    assert too_big.status_code == 422 and "MODELGATE_MAX_PAGE_SIZE" in too_big.text


# ---------------------------------------------------------------- the deployer and the notifier

@asynccontextmanager
async def service_client(database_url: str, service: str):
    engine = make_engine(database_url)
    await prepare_database(engine, service)
    settings, bootstrap = ((DeployerSettings, deployer_bootstrap) if service == "deployer"
                           else (NotifierSettings, notifier_bootstrap))
    runtime = Runtime(settings=settings(database_url=database_url), engine=engine,
                      sessionmaker=async_sessionmaker(engine, expire_on_commit=False), aws={"ssm": FakeSsm()})
    wiring = await bootstrap(runtime, authenticator=StaticAuthenticator())
    transport = httpx.ASGITransport(app=build_app(runtime, wiring))
    async with httpx.AsyncClient(transport=transport, base_url="http://svc", headers=static_bearer(ADMIN)) as client:
        client.runtime = runtime  # type: ignore[attr-defined]
        yield client
    if wiring.on_stop is not None:
        await wiring.on_stop()
    await engine.dispose()


def deployment(i: int) -> dict:
    return {"id": uuid.uuid4().hex, "group_name": "fraud", "stage": "dev", "model_version_id": f"fraud/{i}", "version": i,
            "artifact_uri": "s3://m/k", "target": "parameter-store", "status": "Deployed"}


def delivery(i: int) -> dict:
    return {"event_id": uuid.uuid4().hex, "event_type": "ModelRegistered", "correlation_id": f"fraud/{i}",
            "channel": "log", "recipient": "log", "status": "sent", "text": "t"}


@pytest.mark.parametrize(("service", "path", "table", "row"), [
    ("deployer", "/v1/deployments", Deployment, deployment), ("notifier", "/v1/deliveries", Delivery, delivery),
])
async def test_deployments_and_deliveries_list_a_page_at_a_time(database_url, service, path, table, row):
    async with service_client(database_url, service) as client:
        async with client.runtime.uow() as uow:
            await uow.session.execute(insert(table), [row(i) for i in range(5)])
            await uow.commit()
        pages, offset = [], "0"
        while offset is not None:
            answer = await client.get(path, params={"limit": 2, "offset": offset})
            assert answer.status_code == 200, answer.text
            pages.append(answer.json())
            offset = answer.headers.get("x-next-offset")
        assert [len(p) for p in pages] == [2, 2, 1]
        too_big = await client.get(path, params={"limit": LIMITS.max_page_size + 1})
        assert too_big.status_code == 422 and "MODELGATE_MAX_PAGE_SIZE" in too_big.text, too_big.text
        assert (await client.get(path, params={"offset": "1e20"})).status_code == 422


async def test_a_console_path_of_dots_is_a_404_not_a_500(approver):
    from tests.integration.test_approver_harness import TOKENS, URLS

    async with approver.http() as console:
        signed = await console.post("/console/login", data={"token": TOKENS["lee"], "next": "/console/approvals"},
                                    headers={"Origin": URLS.api})
        assert signed.status_code == 303, signed.text
        for path in ("/console/groups/%2E%2E", "/console/groups/%2E%2E/versions/1", "/console/groups/%2E"):
            answer = await console.get(path)
            assert answer.status_code == 404, (path, answer.status_code, answer.text[:300])


def comet_archive(experiment: object) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("experiment.json", json.dumps(experiment))
        z.writestr("messages.json", "")
    return out.getvalue()


async def test_an_archive_whose_experiment_json_is_a_list_is_a_422(api):
    files = {"archive": ("exp.zip", comet_archive([]), "application/zip")}
    answer = await api.post("/v1/groups/fraud/versions/comet-archive", files=files)
    assert answer.status_code == 422 and "experiment.json must be a JSON object" in answer.json()["detail"], answer.text


async def test_the_archive_upload_has_its_own_larger_limit_capped_while_it_arrives(api, monkeypatch):
    monkeypatch.setattr(LIMITS, "max_upload_bytes", 3 * LIMITS.max_body_bytes)
    padding = os.urandom(2 * LIMITS.max_body_bytes)  # over the JSON limit, under the upload limit
    files = {"archive": ("exp.zip", comet_archive([]), "application/zip"), "description": (None, "x"),
             "padding": ("pad.bin", padding, "application/octet-stream")}
    answer = await api.post("/v1/groups/fraud/versions/comet-archive", files=files)
    assert answer.status_code == 422, answer.text  # read, and refused for what it holds
    files["padding"] = ("pad.bin", padding * 2, "application/octet-stream")
    answer = await api.post("/v1/groups/fraud/versions/comet-archive", files=files)
    assert answer.status_code == 413 and "MODELGATE_MAX_UPLOAD_BYTES" in answer.json()["detail"], answer.text
