"""The notifier's HTTP API: the delivery log."""

from __future__ import annotations

from datetime import datetime

from fastapi import FastAPI, Query
from pydantic import BaseModel
from sqlalchemy import select

from services.notifier.models import Delivery
from shared.service import Runtime


class DeliveryOut(BaseModel):
    event_id: str
    event_type: str
    correlation_id: str
    channel: str
    recipient: str
    status: str
    text: str
    error: str | None
    created_at: datetime


def build_api(runtime: Runtime) -> FastAPI:
    app = FastAPI(title="modelgate notifier", version="0.1.0", description="Notifications and their delivery log.")

    @app.get("/v1/deliveries", response_model=list[DeliveryOut], tags=["deliveries"])
    async def list_deliveries(correlation_id: str | None = Query(None)) -> list[DeliveryOut]:
        query = select(Delivery).order_by(Delivery.id)
        if correlation_id:
            query = query.where(Delivery.correlation_id == correlation_id)
        async with runtime.sessionmaker() as session:
            return [DeliveryOut.model_validate(d, from_attributes=True) for d in await session.scalars(query)]

    return app
