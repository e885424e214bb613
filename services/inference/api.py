"""The inference server's HTTP API: health, what is served, and predictions.

Every malformed request gets a 4xx saying what to fix, never a 500: a body that is not JSON, CSV that is not
UTF-8, a short row, the wrong number of features, an empty body, values that are not numbers or that the
model refuses (NaN or infinity for most scikit-learn models) are 400; a body over `max_body_bytes` (6 MiB by
default, SageMaker's payload cap) is 413, refused from its Content-Length or while it streams in.
"""

from __future__ import annotations

import json
import os
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse

from services.inference.model import BadInput, LoadedModel, PipelineModel, rows_from_csv, rows_from_json
from services.inference.settings import InferenceSettings


def build_api(model: LoadedModel | PipelineModel, settings: InferenceSettings) -> FastAPI:
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
    async def invocations(request: Request) -> Any:
        try:
            body = await _body(request, settings.max_body_bytes)
        except TooLarge as exc:
            return JSONResponse({"detail": str(exc)}, status_code=413)
        try:
            if request.headers.get("content-type", "").startswith("text/csv"):
                try:
                    text = body.decode()
                except UnicodeDecodeError as exc:
                    raise BadInput(f"the CSV is not UTF-8 (byte {exc.start}): send it encoded as UTF-8") from None
                rows = rows_from_csv(text, model.feature_names)
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


class TooLarge(Exception):
    pass


async def _body(request: Request, limit: int) -> bytes:
    """The request body, refused (TooLarge) as soon as it is known to be over `limit` bytes: from its
    Content-Length, or while it streams in (chunked uploads say no length)."""
    what = f"send at most {limit:,} bytes per request (split the rows into several requests)"
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"the body is {int(declared):,} bytes: {what}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"the body is over {limit:,} bytes: {what}")
        chunks.append(chunk)
    return b"".join(chunks)
