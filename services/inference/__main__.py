"""The local inference server: loads one model version's artifact and answers POST /invocations.

    MODELGATE_MODEL_URI=s3://bucket/fraud/model.joblib python -m services.inference

The deployer's `local` target runs one of these per stage, handing it the file it fetched and checked
(MODELGATE_MODEL_FILE) with the digest pinned at registration (MODELGATE_MODEL_DIGEST); the server reads no
S3 then. The same server fits a SageMaker or ECS container (GET /ping, POST /invocations on
MODELGATE_HTTP_PORT, 8080 by default), where it fetches MODELGATE_MODEL_URI itself (exactly
MODELGATE_MODEL_S3_VERSION_ID, when set). Either way a file whose digest is not MODELGATE_MODEL_DIGEST is
refused before it is loaded: the server exits with status 2 and says why.
"""
import json
import sys
import tempfile
from functools import partial
from pathlib import Path

import structlog
import uvicorn

from services.inference.api import build_api
from services.inference.model import (
    BadArtifact,
    LoadedModel,
    PipelineModel,
    check_digest,
    fetch_artifact,
    load_model,
    load_pipeline,
)
from services.inference.settings import InferenceSettings
from shared.infra import boto_client
from shared.logging import configure_logging

settings = InferenceSettings()
configure_logging("inference", settings.log_level, settings.log_format)
log = structlog.get_logger()
try:
    if settings.pipeline:  # an inference pipeline: the deployer fetched (and checked) every step's file
        model: LoadedModel | PipelineModel = load_pipeline(json.loads(settings.pipeline), allow_pickle=settings.allow_pickle)
    else:
        with tempfile.TemporaryDirectory() as folder:
            s3 = partial(boto_client, "s3", settings.aws_endpoint_url, settings.aws_region)
            path = Path(settings.model_file) if settings.model_file else fetch_artifact(
                settings.model_uri, Path(folder), s3, settings.model_s3_version_id, settings.allow_local_artifacts)
            check_digest(path, settings.model_digest)
            model = load_model(path, allow_pickle=settings.allow_pickle)
except BadArtifact as exc:
    log.error("model_not_loaded", model_uri=settings.model_uri, reason=str(exc))
    print(f"cannot serve {settings.model_uri}: {exc}", file=sys.stderr)
    sys.exit(2)
log.info("model_loaded", model_uri=settings.model_uri, model_version_id=settings.model_version_id,
         model_digest=settings.model_digest, **model.describe())
uvicorn.run(build_api(model, settings), host=settings.http_host, port=settings.http_port, log_config=None)
