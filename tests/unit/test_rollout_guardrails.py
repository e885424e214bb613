"""The guardrails' arithmetic (PSI, AUC, percentiles), their verdicts, and the router's split and mirror."""

from __future__ import annotations

import random

import httpx
import pytest
from fastapi import FastAPI

from services.deployer.guardrails import evaluate, psi
from services.inference.router import Router, Routes, auc, build_router, label_metrics, percentile
from services.inference.settings import RouterSettings
from shared.events import GuardrailSpec


def test_psi_is_zero_for_the_same_distribution_and_grows_with_the_shift():
    same = [10, 20, 40, 20, 10]
    assert psi(same, same) == pytest.approx(0.0)
    small, large = psi(same, [12, 22, 36, 20, 10]), psi(same, [40, 30, 20, 8, 2])
    assert 0 < small < 0.1 < 0.25 < large
    assert psi(same, [0, 0, 0, 0, 100]) > psi(same, [40, 30, 20, 8, 2])  # an empty bin stays finite
    assert psi([0] * 5, same) is None


def test_auc_recall_precision_and_percentiles():
    assert auc([(0.9, True), (0.8, True), (0.2, False), (0.1, False)]) == 1.0
    assert auc([(0.9, False), (0.1, True)]) == 0.0
    assert auc([(0.5, True), (0.5, False)]) == 0.5  # ties count half
    assert auc([(0.5, True)]) is None  # one class only
    metrics = label_metrics([(0.9, 1, 1), (0.8, 1, 0), (0.2, 0, 1), (0.1, 0, 0)])
    assert (metrics["recall"], metrics["precision"], metrics["accuracy"]) == (0.5, 0.5, 0.5)
    assert percentile(list(range(1, 101)), 99) == 99 and percentile([], 50) is None


def stats(live: dict, new: dict, disagreement: float | None = None) -> dict:
    return {"versions": {"g/1": live, "g/2": new}, "disagreement_rate": disagreement}


def version(requests: int = 100, errors: int = 0, p99: float = 50.0, counts: list[int] | None = None, **labels: float) -> dict:
    return {"requests": requests, "errors": errors, "error_rate": errors / requests if requests else None,
            "latency_ms": {"p99": p99}, "scores": {"counts": counts or [10, 20, 40, 20, 10]}, "labelled": 50, **labels}


def test_a_breach_names_the_guardrail_and_the_rule_absolute_or_relative_to_live():
    spec = GuardrailSpec(interval_seconds=1, rules={"error_rate": "<= 0.02", "latency_p99_ms": "<= live * 1.5", "psi": "<= 0.2",
                                                     "disagreement": "<= 0.1", "auc": ">= live - 0.01"}, min_requests=20, min_labels=20)
    healthy = evaluate(spec, stats(version(auc=0.9), version(p99=70, auc=0.895), disagreement=0.02), "g/1", "g/2")
    assert healthy.judged and healthy.breached == [] and healthy.values["psi"] == pytest.approx(0.0)
    sick = evaluate(spec, stats(version(auc=0.9), version(errors=5, p99=80, counts=[40, 30, 20, 8, 2], auc=0.85), 0.4), "g/1", "g/2")
    assert sick.breached == ["error_rate", "latency_p99_ms", "psi", "disagreement", "auc"]
    assert "latency_p99_ms=80 breaks '<= live * 1.5' (threshold 75)" in sick.reason


def test_too_few_requests_are_not_judged_and_break_nothing():
    spec = GuardrailSpec(interval_seconds=1, rules={"error_rate": "<= 0.02", "auc": ">= 0.8"}, min_requests=20, min_labels=60)
    early = evaluate(spec, stats(version(), version(requests=5, errors=5, auc=0.1)), "g/1", "g/2")
    assert not early.judged and early.breached == []
    labels_pending = evaluate(spec, stats(version(), version(auc=0.1)), "g/1", "g/2")  # 50 labels < 60
    assert labels_pending.judged and labels_pending.breached == []


def backend(name: str, fraud: bool) -> FastAPI:
    app = FastAPI()

    @app.post("/invocations")
    async def invocations() -> dict:
        p = 0.9 if fraud else 0.1
        return {"model_version_id": name, "predictions": [int(fraud)], "probabilities": [[1 - p, p]]}

    return app


@pytest.fixture
def router(monkeypatch) -> Router:  # type: ignore[no-untyped-def]
    apps = {"http://live": backend("g/1", True), "http://new": backend("g/2", False)}

    async def dispatch(request: httpx.Request) -> httpx.Response:
        app = apps[f"{request.url.scheme}://{request.url.host}"]
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app") as client:
            answer = await client.post(request.url.path, content=request.content)
        return httpx.Response(answer.status_code, content=answer.content, headers=answer.headers)

    routes = Routes.model_validate({"live": {"url": "http://live", "model_version_id": "g/1"},
                                    "candidate": {"url": "http://new", "model_version_id": "g/2"}, "mode": "shadow", "share": 100})
    r = Router(routes, RouterSettings())
    r.http = httpx.AsyncClient(transport=httpx.MockTransport(dispatch))
    random.seed(1)
    return r


async def test_the_shadow_never_answers_and_its_answers_are_compared_and_labelled(router):
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_router(router)), base_url="http://router") as client:
        answers = [await client.post("/invocations", json={"instances": [[1, 2, 3]]}) for _ in range(20)]
        for task in list(router.background):
            await task
        assert {a.json()["model_version_id"] for a in answers} == {"g/1"}
        assert len({a.headers["x-request-id"] for a in answers}) == 20
        feedback = await client.post("/feedback", json={"outcomes": [{"request_id": a.headers["x-request-id"], "label": 1} for a in answers]})
        assert feedback.json() == {"labelled": 20, "unknown": []}
        stats = (await client.get("/stats")).json()
    assert stats["comparisons"] == 20 and stats["disagreement_rate"] == 1.0
    new = stats["versions"]["g/2"]
    assert (new["role"], new["requests"], new["labelled"], new["recall"]) == ("candidate", 20, 20, 0.0)
    assert stats["versions"]["g/1"]["recall"] == 1.0


async def test_a_split_sends_the_candidate_its_share_and_copies_those_requests_to_live(router):
    router.routes = router.routes.model_copy(update={"mode": "split", "share": 30.0})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_router(router)), base_url="http://router") as client:
        answers = [await client.post("/invocations", json={"instances": [[1, 2, 3]]}) for _ in range(200)]
        for task in list(router.background):
            await task
    served_by_new = sum(a.headers["x-model-version-id"] == "g/2" for a in answers)
    assert 40 <= served_by_new <= 80  # about 30 %
    assert router.summary()["comparisons"] == served_by_new
