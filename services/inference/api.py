"""The inference server's HTTP API: health, what is served, and predictions."""

from __future__ import annotations

import json
import os
from typing import Any

from fastapi import FastAPI, HTTPException, Request

from services.inference.model import BadInput, LoadedModel, rows_from_csv, rows_from_json
from services.inference.settings import InferenceSettings


def build_api(model: LoadedModel, settings: InferenceSettings) -> FastAPI:
    app = FastAPI(title="modelgate inference", version="0.1.0", description=f"Serves {settings.model_version_id}.")
    identity = {
        "model_version_id": settings.model_version_id,
        "deployment_id": settings.deployment_id,
        "model_uri": settings.model_uri,
        "model_digest": settings.model_digest,
    }

    @app.get("/healthz", summary="The model is loaded and the server answers")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "pid": os.getpid(), **identity}

    @app.get("/ping", summary="SageMaker's health check")
    async def ping() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metadata", summary="What is served: version, estimator, features, classes")
    async def metadata() -> dict[str, Any]:
        return {**identity, **model.describe()}

    @app.post(
        "/invocations",
        summary="Predict for rows sent as JSON or CSV",
        description=(
            'JSON: {"instances": [[v1, v2, ...], ...]} or rows of {"feature": value}; CSV (Content-Type: text/csv): '
            "one row per line, optionally a header of feature names. Answers labels (`predictions`) and, for "
            "classifiers, class `probabilities`."
        ),
    )
    async def invocations(request: Request) -> dict[str, Any]:
        body = await request.body()
        try:
            if request.headers.get("content-type", "").startswith("text/csv"):
                rows = rows_from_csv(body.decode(), model.feature_names)
            else:
                try:
                    parsed = json.loads(body)
                except ValueError:
                    raise BadInput("the body is not JSON: send JSON rows, or CSV with Content-Type: text/csv") from None
                rows = rows_from_json(parsed, model.feature_names)
            answer = model.predict(rows)
        except BadInput as exc:
            raise HTTPException(400, str(exc)) from None
        return {**identity, "classes": model.classes, **answer}

    return app
