"""The rollout traffic router: one process in front of the live and the new inference servers of a stage.

    MODELGATE_ROUTER_ROUTES='{"live": {...}, "candidate": {...}, "mode": "split", "share": 10}' \
        python -m services.inference.router

Promises:
- `POST /invocations` is answered by one backend: in `split` mode the candidate answers `share` % of the
  requests (drawn at random) and the live version the rest; in `shadow` mode the live version answers every
  request and `share` % are also sent to the candidate, whose answers are recorded and never returned.
  Requests the candidate answers in split mode are also sent to the live version (answer discarded), so the
  two versions can be compared on the same rows.
- Every answer carries `X-Request-Id` (the caller's, or a new uuid) and `X-Model-Version-Id` (who answered).
  A backend that cannot be reached is a 502 and counts as an error of that version.
- `POST /feedback` takes outcomes by request id (`{"request_id": ..., "label": 1}`, or `{"outcomes": [...]}`);
  they label every answer given to that request (served or mirrored), for delayed-label metrics.
- `GET /stats`: per version (requests, errors, latency percentiles, score histogram, labelled metrics) and
  how often the two versions disagreed on the same request. Counts run from the router's start.
- `PUT /routes` sets the routes (idempotent: the deployer writes the desired routes from its persisted
  state); `GET /routes` reads them. The router keeps no state on disk: a restarted router starts its counts
  again from zero.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import math
import os
import random
import time
import uuid
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from services.inference.settings import RouterSettings

#: Edges of the score histogram: 10 equal bins over [0, 1] (scores are the positive class's probability).
SCORE_EDGES = [i / 10 for i in range(11)]
FORWARDED = ("content-type", "accept")


class Backend(BaseModel):
    url: str
    model_version_id: str


class Routes(BaseModel):
    """Where requests go. `share`: the candidate's share (%) in split mode, the mirrored share in shadow mode."""

    live: Backend | None = None
    candidate: Backend | None = None
    mode: Literal["split", "shadow"] = "split"
    share: float = Field(0.0, ge=0, le=100)


class Outcome(BaseModel):
    request_id: str
    label: float | list[float]


class Feedback(BaseModel):
    outcomes: list[Outcome] = []
    request_id: str | None = None
    label: float | list[float] | None = None


@dataclass
class VersionStats:
    role: str
    requests: int = 0
    errors: int = 0
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=10_000))
    score_counts: list[int] = field(default_factory=lambda: [0] * (len(SCORE_EDGES) - 1))
    labelled: list[tuple[float, float, float]] = field(default_factory=list)  # (score, prediction, label)

    def record(self, latency_ms: float, ok: bool, scores: list[float]) -> None:
        self.requests += 1
        self.errors += 0 if ok else 1
        self.latencies_ms.append(latency_ms)
        for score in scores:
            index = min(max(bisect.bisect_right(SCORE_EDGES, score) - 1, 0), len(self.score_counts) - 1)
            self.score_counts[index] += 1

    def summary(self) -> dict[str, Any]:
        return {
            "role": self.role, "requests": self.requests, "errors": self.errors,
            "error_rate": self.errors / self.requests if self.requests else None,
            "latency_ms": {f"p{q}": percentile(list(self.latencies_ms), q) for q in (50, 95, 99)},
            "scores": {"edges": SCORE_EDGES, "counts": list(self.score_counts)},
            "labelled": len(self.labelled), **label_metrics(self.labelled),
        }


@dataclass
class Answer:
    """What one version answered to one request: its scores and labels, for feedback and comparison."""

    version: str
    scores: list[float]
    predictions: list[float]


class Router:
    def __init__(self, routes: Routes, settings: RouterSettings):
        self.routes = routes
        self.settings = settings
        self.stats: dict[str, VersionStats] = {}
        self.answers: OrderedDict[str, list[Answer]] = OrderedDict()
        self.comparisons = 0
        self.disagreements = 0
        self.http = httpx.AsyncClient(timeout=settings.timeout_seconds)
        self.background: set[asyncio.Task[None]] = set()

    def _stats(self, backend: Backend, role: str) -> VersionStats:
        stats = self.stats.get(backend.model_version_id)
        if stats is None:
            stats = self.stats[backend.model_version_id] = VersionStats(role, latencies_ms=deque(maxlen=self.settings.latency_window))
        stats.role = role
        return stats

    def choose(self) -> tuple[Backend, Backend | None, str]:
        """Who answers, who gets a copy (answer discarded), and the answering role."""
        r = self.routes
        if r.live is None and r.candidate is None:
            raise HTTPException(503, "the router has no routes yet: the deployer sets them (PUT /routes)")
        if r.live is None:
            return r.candidate, None, "candidate"  # type: ignore[return-value]
        if r.candidate is None:
            return r.live, None, "live"
        drawn = random.random() * 100 < r.share
        if r.mode == "shadow":
            return r.live, r.candidate if drawn else None, "live"
        return (r.candidate, r.live, "candidate") if drawn else (r.live, None, "live")

    async def call(self, backend: Backend, role: str, body: bytes, headers: dict[str, str], request_id: str) -> httpx.Response | None:
        started = time.perf_counter()
        try:
            response = await self.http.post(f"{backend.url}/invocations", content=body, headers=headers)
        except httpx.HTTPError:
            self._stats(backend, role).record((time.perf_counter() - started) * 1000, False, [])
            return None
        latency = (time.perf_counter() - started) * 1000
        answer = parse_answer(backend.model_version_id, response)
        self._stats(backend, role).record(latency, response.status_code < 500, answer.scores if answer else [])
        if answer is not None:
            self._remember(request_id, answer)
        return response

    def _remember(self, request_id: str, answer: Answer) -> None:
        answers = self.answers.setdefault(request_id, [])
        answers.append(answer)
        self.answers.move_to_end(request_id)
        while len(self.answers) > self.settings.remember_requests:
            self.answers.popitem(last=False)
        if len(answers) == 2 and answers[0].version != answers[1].version:
            self.comparisons += 1
            self.disagreements += answers[0].predictions != answers[1].predictions

    def mirror(self, backend: Backend, role: str, body: bytes, headers: dict[str, str], request_id: str) -> None:
        task = asyncio.create_task(self._quiet_call(backend, role, body, headers, request_id))
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def _quiet_call(self, backend: Backend, role: str, body: bytes, headers: dict[str, str], request_id: str) -> None:
        await self.call(backend, role, body, headers, request_id)

    def feedback(self, outcomes: list[Outcome]) -> tuple[int, list[str]]:
        labelled, unknown = 0, []
        for outcome in outcomes:
            answers = self.answers.get(outcome.request_id)
            if not answers:
                unknown.append(outcome.request_id)
                continue
            for answer in answers:
                labels = outcome.label if isinstance(outcome.label, list) else [outcome.label] * len(answer.predictions)
                stats = self.stats.get(answer.version)
                if stats is None:
                    continue
                stats.labelled.extend(zip(answer.scores or answer.predictions, answer.predictions, labels, strict=False))
            labelled += 1
        return labelled, unknown

    def summary(self) -> dict[str, Any]:
        return {
            "routes": self.routes.model_dump(),
            "versions": {version: stats.summary() for version, stats in self.stats.items()},
            "comparisons": self.comparisons,
            "disagreements": self.disagreements,
            "disagreement_rate": self.disagreements / self.comparisons if self.comparisons else None,
        }


def parse_answer(version: str, response: httpx.Response) -> Answer | None:
    """The positive class's probability of each row (or the label, without probabilities), and the labels."""
    if response.status_code != 200:
        return None
    try:
        body = response.json()
        predictions = [float(p) for p in body.get("predictions", [])]
        probabilities = body.get("probabilities")
        scores = [float(row[-1]) for row in probabilities] if probabilities else [p for p in predictions if 0 <= p <= 1]
    except (ValueError, TypeError, KeyError, IndexError):
        return None
    return Answer(version, scores, predictions)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))  # nearest rank
    return ordered[rank]


def label_metrics(labelled: list[tuple[float, float, float]]) -> dict[str, float | None]:
    """AUC (from the scores), recall, precision and accuracy (from the labels) over the labelled answers."""
    if not labelled:
        return {"auc": None, "recall": None, "precision": None, "accuracy": None}
    tp = sum(1 for _, p, y in labelled if p >= 0.5 and y >= 0.5)
    fp = sum(1 for _, p, y in labelled if p >= 0.5 > y)
    fn = sum(1 for _, p, y in labelled if p < 0.5 <= y)
    correct = sum(1 for _, p, y in labelled if (p >= 0.5) == (y >= 0.5))
    return {"auc": auc([(s, y >= 0.5) for s, _, y in labelled]), "recall": tp / (tp + fn) if tp + fn else None,
            "precision": tp / (tp + fp) if tp + fp else None, "accuracy": correct / len(labelled)}


def auc(scored: list[tuple[float, bool]]) -> float | None:
    """The area under the ROC curve (Mann-Whitney, ties counted half); None without both classes."""
    positives = sum(1 for _, y in scored if y)
    negatives = len(scored) - positives
    if not positives or not negatives:
        return None
    ranked = sorted(scored, key=lambda pair: pair[0])
    rank_sum, i = 0.0, 0
    while i < len(ranked):
        j = i
        while j < len(ranked) and ranked[j][0] == ranked[i][0]:
            j += 1
        mean_rank = (i + j + 1) / 2  # 1-based ranks i+1 .. j
        rank_sum += mean_rank * sum(1 for _, y in ranked[i:j] if y)
        i = j
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def build_router(router: Router) -> FastAPI:
    app = FastAPI(title="modelgate rollout router", version="0.1.0",
                  description="Splits or mirrors a stage's traffic between its live and its new version.")

    @app.get("/healthz", summary="The router answers")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "pid": os.getpid(), "deployment_id": router.settings.deployment_id}

    @app.get("/routes", response_model=Routes, summary="Where requests go now")
    async def get_routes() -> Routes:
        return router.routes

    @app.put("/routes", response_model=Routes, summary="Set where requests go (idempotent)")
    async def put_routes(routes: Routes) -> Routes:
        router.routes = routes
        return routes

    @app.get("/stats", summary="Per version: requests, errors, latency, scores, labelled metrics; disagreement")
    async def stats() -> dict[str, Any]:
        return router.summary()

    @app.post("/feedback", summary="Outcomes (labels) of earlier requests, by X-Request-Id")
    async def feedback(body: Feedback) -> dict[str, Any]:
        outcomes = list(body.outcomes)
        if body.request_id is not None and body.label is not None:
            outcomes.append(Outcome(request_id=body.request_id, label=body.label))
        if not outcomes:
            raise HTTPException(422, 'send {"request_id": "...", "label": 1} or {"outcomes": [...]}')
        labelled, unknown = router.feedback(outcomes)
        return {"labelled": labelled, "unknown": unknown}

    @app.post("/invocations", summary="Predict: answered by the live or the new version, as the routes say")
    async def invocations(request: Request) -> Response:
        body = await request.body()
        request_id = request.headers.get("x-request-id") or str(uuid.uuid4())
        headers = {k: v for k, v in request.headers.items() if k.lower() in FORWARDED} | {"X-Request-Id": request_id}
        serving, copy_to, role = router.choose()
        if copy_to is not None:
            router.mirror(copy_to, "live" if role == "candidate" else "candidate", body, headers, request_id)
        response = await router.call(serving, role, body, headers, request_id)
        ids = {"X-Request-Id": request_id, "X-Model-Version-Id": serving.model_version_id}
        if response is None:
            return JSONResponse({"detail": f"{serving.model_version_id} did not answer"}, status_code=502, headers=ids)
        return Response(response.content, status_code=response.status_code, headers=ids,
                        media_type=response.headers.get("content-type", "application/json"))

    return app


def main() -> None:
    import structlog
    import uvicorn

    from shared.logging import configure_logging

    settings = RouterSettings()
    configure_logging("router", settings.log_level, settings.log_format)
    routes = Routes.model_validate(json.loads(settings.routes or "{}"))
    structlog.get_logger().info("router_starting", port=settings.http_port, routes=routes.model_dump())
    uvicorn.run(build_router(Router(routes, settings)), host=settings.http_host, port=settings.http_port, log_config=None)


if __name__ == "__main__":
    main()
