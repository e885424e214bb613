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


class RouterSettings(BaseSettings):
    """The rollout traffic router (python -m services.inference.router); env vars are `MODELGATE_ROUTER_<FIELD>`."""

    model_config = SettingsConfigDict(env_prefix="MODELGATE_ROUTER_", extra="ignore")

    routes: str = Field("{}", description="The first routes, as JSON (the same body as PUT /routes); the deployer "
                        "PUTs them again at every step, so a restarted router catches up.")
    deployment_id: str = Field("", description="The rollout's deployment, reported by /healthz.")
    http_host: str = "127.0.0.1"
    http_port: int = 8090
    timeout_seconds: float = Field(10.0, gt=0, description="How long a backend may take to answer.")
    remember_requests: int = Field(100_000, ge=1, description="How many answers are kept for POST /feedback.")
    latency_window: int = Field(10_000, ge=10, description="How many latencies per version the percentiles cover.")
    log_level: str = Field("INFO", validation_alias=AliasChoices("MODELGATE_LOG_LEVEL", "MODELGATE_ROUTER_LOG_LEVEL"))
    log_format: str = Field("json", validation_alias=AliasChoices("MODELGATE_LOG_FORMAT", "MODELGATE_ROUTER_LOG_FORMAT"))
