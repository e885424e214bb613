import sys
import tempfile
from pathlib import Path

import structlog
import uvicorn

from services.inference.api import build_api
from services.inference.model import BadArtifact, fetch_artifact, load_model
from services.inference.settings import InferenceSettings
from shared.infra import boto_client
from shared.logging import configure_logging

settings = InferenceSettings()
configure_logging("inference", settings.log_level, settings.log_format)
log = structlog.get_logger()
try:
    with tempfile.TemporaryDirectory() as folder:
        s3 = boto_client("s3", settings.aws_endpoint_url, settings.aws_region)
        path = fetch_artifact(settings.model_uri, Path(folder), s3, settings.allow_local_artifacts)
        model = load_model(path, allow_pickle=settings.allow_pickle)
except BadArtifact as exc:
    log.error("model_not_loaded", model_uri=settings.model_uri, reason=str(exc))
    print(f"cannot serve {settings.model_uri}: {exc}", file=sys.stderr)
    sys.exit(2)
log.info("model_loaded", model_uri=settings.model_uri, model_version_id=settings.model_version_id, **model.describe())
uvicorn.run(build_api(model, settings), host=settings.http_host, port=settings.http_port, log_config=None)
