from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class InferenceSettings(BaseSettings):
    """Env vars are `MODELGATE_<FIELD>`; the model is pinned by MODELGATE_MODEL_URI."""

    model_config = SettingsConfigDict(env_prefix="MODELGATE_", extra="ignore")

    model_uri: str = Field(description="s3://bucket/key of the artifact to serve (a local path only with allow_local_artifacts).")
    model_version_id: str = Field("", description='"<group>/<version>" of the artifact, reported in answers.')
    deployment_id: str = Field("", description="The deployer's deployment this server belongs to.")
    allow_local_artifacts: bool = Field(False, description="Development only: serve a file:// URI or a local path.")
    allow_pickle: bool = Field(False, description="Serve a pickle (joblib) artifact, which runs code when loaded; "
                               "the deployer sets it for the groups in MODELGATE_PICKLE_GROUPS.")
    model_file: str | None = Field(None, description="A local file to serve, already fetched (and checked) by the deployer; then no S3 is read.")
    pipeline: str | None = Field(None, description="An inference pipeline, set by the deployer: JSON [{name, uri, file, digest}], "
                                 "its steps in order (the last one the model, MODELGATE_MODEL_FILE); each file is checked, then loaded.")
    model_digest: str | None = Field(None, description="sha256:<hex> the artifact must have: anything else is refused, not loaded.")
    model_s3_version_id: str | None = Field(None, description="The S3 VersionId of MODELGATE_MODEL_URI to fetch (default: its latest).")
    max_body_bytes: int = Field(6 * 1024 * 1024, ge=1, description="Largest POST /invocations body (SageMaker caps payloads at 6 MB); larger is 413.")
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    log_level: str = "INFO"
    log_format: str = "json"
    aws_endpoint_url: str | None = Field(None, validation_alias="AWS_ENDPOINT_URL")
    aws_region: str = Field("us-east-1", validation_alias=AliasChoices("AWS_REGION", "AWS_DEFAULT_REGION"))
