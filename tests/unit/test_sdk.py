"""The SDK (modelgate.Client / AsyncClient) against fake services: what a training script relies on.

The real stack is tested in tests/e2e/test_sdk.py; here the services are an httpx MockTransport."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

import modelgate
from modelgate import AsyncClient, Client, GateCode

FIELDS = {"artifact_uri": "s3://b/k", "registered_by": "ana", "source": "manual", "approval_status": "Approved",
          "created_at": "2026-01-01T00:00:00+00:00"}


def version(number: int, **stages: str) -> dict[str, Any]:
    return {"model_version_id": f"fraud/{number}", "group": "fraud", "version": number, **FIELDS, "stages": stages,
            "stage_details": {s: {"status": st} for s, st in stages.items()}, "a_field_added_later": 1}


class Fake:
    """Registrar and deployer answers; `statuses` are what successive GETs of fraud/1 say about dev."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.statuses = ["PendingApproval", "Approved", "Deploying", "Deployed"]
        self.failures = 0  # how many requests fail to connect first

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.failures:
            self.failures -= 1
            raise httpx.ConnectError("refused", request=request)
        path, method = request.url.path.removeprefix("/registrar").removeprefix("/deployer"), request.method
        if method == "POST" and path == "/v1/groups/fraud/versions":
            sent = json.loads(request.content)
            return httpx.Response(201, json={**version(1), "artifact_uri": sent["artifact_uri"], "metrics": sent["metrics"]})
        if path == "/v1/groups/fraud/versions/1":
            status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
            return httpx.Response(200, json=version(1, dev=status))
        if path == "/v1/versions":
            offset = int(request.url.params["offset"])
            items = [version(n) for n in range(offset + 1, min(offset + 2, 5) + 1)]
            return httpx.Response(200, json={"items": items, "limit": 2, "offset": offset,
                                             "next_offset": offset + 2 if offset + 2 < 5 else None})
        if path == "/v1/deployments":
            return httpx.Response(200, json=[{"deployment_id": "d1", "group": "fraud", "stage": "dev",
                                              "model_version_id": "fraud/1", "version": 1, "status": "Deployed",
                                              "live": True}])
        if path == "/v1/groups/fraud/versions/9":
            return httpx.Response(404, json={"detail": "no version 9 in model group 'fraud'"})
        if method == "POST" and path == "/v1/groups/fraud/stages/dev/rollback":
            return httpx.Response(409, json={"detail": "nothing was live in dev before fraud/1"})
        return httpx.Response(404, json={"detail": f"fake has no {method} {path}"})


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Fake:
    for name in ("registrar", "approver", "deployer", "notifier"):
        monkeypatch.delenv(f"MODELGATE_{name.upper()}_URL", raising=False)
    monkeypatch.setenv("MODELGATE_TOKEN", "t0ken")
    return Fake()


def client(fake: Fake, **options: Any) -> AsyncClient:
    return AsyncClient(url="http://gateway", transport=httpx.MockTransport(fake.handle), **options)


async def test_register_sends_the_version_with_a_key_that_makes_retries_safe(fake):
    fake.failures = 2  # the registrar is not reachable for a moment
    async with client(fake) as mg:
        registered = await mg.register("fraud", uri="s3://bucket/model.ubj", metrics={"auc": 0.95})
    assert isinstance(registered, modelgate.Version) and registered.artifact_uri == "s3://bucket/model.ubj"
    keys = {r.headers["Idempotency-Key"] for r in fake.requests}
    assert len(fake.requests) == 3 and len(keys) == 1 and keys.pop().startswith("sdk-")  # one key for all tries
    assert fake.requests[-1].headers["Authorization"] == "Bearer t0ken"
    assert str(fake.requests[-1].url) == "http://gateway/registrar/v1/groups/fraud/versions"


async def test_register_sends_an_inference_pipelines_steps_the_model_last(fake):
    async with client(fake) as mg:
        await mg.register("fraud", uri="s3://bucket/model.ubj",
                          containers=[{"name": "scaler", "artifact_uri": "s3://bucket/scaler.skops"}, {"name": "model"}])
    sent = json.loads(fake.requests[-1].content)
    assert sent["containers"] == [{"name": "scaler", "artifact_uri": "s3://bucket/scaler.skops"},
                                  {"name": "model", "artifact_uri": "s3://bucket/model.ubj"}]


async def test_register_needs_exactly_one_source(fake):
    async with client(fake) as mg:
        with pytest.raises(ValueError, match="exactly one of file="):
            await mg.register("fraud")
        with pytest.raises(FileNotFoundError, match="not a file"):
            await mg.register("fraud", file="/no/such/model.ubj")


async def test_wait_follows_the_stage_until_deployed_and_reports_each_status(fake):
    seen: list[str] = []
    async with client(fake) as mg:
        done = await mg.wait("fraud", 1, "dev", progress=seen.append, poll=0.01)
    assert done.status("dev") == "Deployed"
    assert seen == ["PendingApproval", "Approved", "Deploying", "Deployed"]


async def test_wait_raises_when_the_version_can_no_longer_get_there(fake):
    fake.statuses = ["PendingApproval", "Superseded"]
    async with client(fake) as mg:
        with pytest.raises(modelgate.WaitFailed, match="Superseded for dev, so it will not be Deployed") as failed:
            await mg.wait("fraud", 1, "dev", poll=0.01)
    assert failed.value.status == "Superseded"


async def test_wait_gives_up_after_its_timeout(fake):
    fake.statuses = ["PendingApproval"]
    async with client(fake) as mg:
        with pytest.raises(modelgate.WaitTimeout, match="still PendingApproval"):
            await mg.wait("fraud", 1, "dev", timeout=0.05, poll=0.01)


async def test_versions_iterates_over_every_page(fake):
    async with client(fake) as mg:
        numbers = [v.version async for v in mg.versions("fraud", page_size=2)]
    assert numbers == [1, 2, 3, 4, 5]
    assert [r.url.params["offset"] for r in fake.requests] == ["0", "2", "4"]


async def test_errors_are_typed_and_say_what_to_fix(fake):
    async with client(fake) as mg:
        with pytest.raises(modelgate.NotFound, match="no version 9"):
            await mg.version("fraud", 9)
        with pytest.raises(modelgate.Conflict, match="nothing was live"):
            await mg.rollback("fraud", "dev", "bad model")
    fake.failures = 10
    async with client(fake, retries=1) as mg:
        with pytest.raises(modelgate.Unreachable, match="is modelgate up"):
            await mg.version("fraud", 1)


async def test_a_request_that_is_not_safe_to_repeat_is_not_retried(fake):
    fake.failures = 1
    async with client(fake) as mg:
        with pytest.raises(modelgate.Unreachable):
            await mg.rollback("fraud", "dev")
    assert len(fake.requests) == 1


async def test_live_and_gate(fake):
    fake.statuses = ["Deployed"]
    async with client(fake) as mg:
        assert (await mg.live("fraud", "dev")).model_version_id == "fraud/1"
        with pytest.raises(modelgate.NotFound, match="nothing serves fraud in prod"):
            await mg.live("fraud", "prod")
        verdict = await mg.gate("fraud", "dev", 1)
        closed = await mg.gate("fraud", "prod", 1)
    assert verdict and verdict.code is GateCode.OPEN and "fraud/1 is Deployed for dev" in verdict.reason
    assert not closed and closed.code is GateCode.NOT_REQUESTED


def test_the_sync_client_has_the_same_methods_without_await(fake):
    with Client(url="http://gateway", transport=httpx.MockTransport(fake.handle)) as mg:
        assert [v.version for v in mg.versions("fraud", page_size=2)] == [1, 2, 3, 4, 5]
        assert mg.wait("fraud", 1, "dev", timeout=5).status("dev") == "Deployed"
    public = {n for n in dir(AsyncClient) if not n.startswith("_") and callable(getattr(AsyncClient, n))}
    assert public - {"aclose"} <= {n for n in dir(Client) if not n.startswith("_")}


def test_a_service_url_of_its_own_wins_over_the_gateway(monkeypatch):
    monkeypatch.setenv("MODELGATE_DEPLOYER_URL", "http://deployer.internal:8083/")
    mg = AsyncClient(url="http://gateway")
    assert mg.deployer.base_url == "http://deployer.internal:8083"
    assert mg.registrar.base_url == "http://gateway/registrar"
