"""Routes every service serves: /healthz (alive), /readyz (can do its job), /metrics (Prometheus)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

if TYPE_CHECKING:
    from shared.service import Runtime


def health_router(runtime: Runtime) -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get("/healthz", summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "service": runtime.settings.service}

    @router.get("/readyz", summary="Database, queue and topic are reachable, and AWS answers in time")
    async def readyz() -> JSONResponse:
        checks = {
            "database": await _database_ok(runtime),
            "queue": runtime.consumer_ok(),
            "outbox": runtime.relay_ok(),
            "aws": runtime.aws_ok(),
        }
        ready = all(checks.values())
        who = {"service": runtime.settings.service, "namespace": runtime.settings.namespace}
        return JSONResponse({"ready": ready, "checks": checks, **who}, status_code=200 if ready else 503)

    @router.get("/metrics", summary="Prometheus metrics")
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return router


async def _database_ok(runtime: Runtime) -> bool:
    try:
        async with runtime.sessionmaker() as session:
            await session.execute(text("SELECT 1"))
        return True
    except Exception:
        return False
