"""Configuration from the environment (12-factor): one base class, one subclass per service."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared import topology

REPO_ROOT = Path(__file__).resolve().parent.parent


def name_list(value: object) -> object:
    """A list setting from the environment as `a,b` or a JSON list (`["a", "b"]`); other values pass through.
    Use as a `mode="before"` validator on a field annotated `Annotated[list[str], NoDecode]`."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("["):
        return json.loads(text)
    return [part.strip() for part in text.split(",") if part.strip()]


class ServiceSettings(BaseSettings):
    """Settings every service has. Env vars are `MODELGATE_<FIELD>` unless an alias says otherwise."""

    model_config = SettingsConfigDict(env_prefix="MODELGATE_", extra="ignore")

    service: str = ""
    namespace: str = Field("modelgate", description="Prefix of the topic, queue and bucket names.")
    aws_endpoint_url: str | None = Field(
        None, validation_alias="AWS_ENDPOINT_URL", description="LocalStack's URL locally; unset on AWS."
    )
    aws_region: str = Field("us-east-1", validation_alias=AliasChoices("AWS_REGION", "AWS_DEFAULT_REGION"))
    database_url: str = Field("", description="SQLAlchemy async URL; default: SQLite file var/<service>.db.")
    http_host: str = "127.0.0.1"
    http_port: int = 0
    log_level: str = "INFO"
    log_format: str = Field("json", description="json, or console for people.")
    public_url: str = Field("", description="How people reach this service; default http://<host>:<port>.")
    max_receive_count: int = Field(5, description="Receives before a failing message goes to the DLQ.")
    poll_wait_seconds: int = Field(20, description="SQS long-poll wait.")
    batch_size: int = Field(10, ge=1, le=10)
    max_in_flight_batches: int = Field(4, ge=1)
    drain_seconds: float = Field(25.0, description="How long SIGTERM waits for in-flight work.")
    outbox_poll_seconds: float = Field(1.0, description="Outbox relay's idle poll interval.")
    ledger_retention_days: float = Field(
        21, gt=0, description="Days the idempotency ledger remembers a handled event (at least 16: longer than any "
        "queue keeps a message, 14, and than the replay limit, 15: shared/retention.py).")
    outbox_retention_days: float = Field(7, gt=0, description="Days a published outbox row is kept before it is pruned (at least 1).")
    short_retention_for_benchmarks: bool = Field(
        False, description="Lets the two windows above be as short as a benchmark needs (bench/soak.py: minutes), "
        "below the floors that make forgetting safe: a redelivered event older than the ledger's window would be "
        "handled again. Never in production.")
    prune_interval_seconds: float = Field(3600, ge=1, description="How often the ledger and the outbox are pruned.")
    dlq_max_message_bytes: int = Field(262_144, ge=1024, le=1_048_576, description="The DLQ's MaximumMessageSize: a dead letter whose body and attributes are larger has its body put in S3 (claim check).")
    claim_check_bucket: str = Field("", description="Where dead letters too large for the DLQ keep their bodies (key dead-letters/<queue>/<event_id>); default: the namespace's bucket.")
    approver_url: str = Field("http://127.0.0.1:8082", description="The approver, which verifies credentials for the other services.")
    auth_cache_seconds: float = Field(30.0, ge=0, le=300, description="How long a verified credential is trusted before it is checked again (the delay a revocation takes outside the approver).")
    auth_failure_limit: int = Field(10, ge=1, description="Failed authentications per source address per window before 429.")
    auth_principal_failure_limit: int = Field(30, ge=1, description="Refusals (403) of one principal per window before 429.")
    auth_failure_window_seconds: float = Field(60.0, gt=0, description="The window of auth_failure_limit.")
    service_key_secret_name: str = Field("", description="Secrets Manager secret the services present to the approver; default <namespace>/internal/service-key.")
    trust_forwarded_headers: bool = Field(False, description="Behind a load balancer: take the source address and scheme from X-Forwarded-For / X-Forwarded-Proto.")

    def model_post_init(self, __context: object) -> None:
        if not self.short_retention_for_benchmarks:
            if self.ledger_retention_days < 16:
                raise ValueError(f"ledger_retention_days={self.ledger_retention_days:g} is shorter than a handled event "
                                 "can come back (14 days on a queue, 15 the replay limit): use 16 or more")
            if self.outbox_retention_days < 1:
                raise ValueError(f"outbox_retention_days={self.outbox_retention_days:g}: keep published rows a day or more")
        if not self.database_url:
            path = REPO_ROOT / "var" / f"{self.namespace}-{self.service}.db"
            path.parent.mkdir(parents=True, exist_ok=True)
            self.database_url = f"sqlite+aiosqlite:///{path}"
        if not self.http_port:
            self.http_port = topology.DEFAULT_PORTS[self.service]
        if not self.service_key_secret_name:
            self.service_key_secret_name = f"{self.namespace}/internal/service-key"
        if not self.public_url:
            self.public_url = f"http://{self.http_host}:{self.http_port}"
        if not self.claim_check_bucket:
            self.claim_check_bucket = self.bucket

    @property
    def topic_name(self) -> str:
        return topology.topic_name(self.namespace)

    @property
    def queue_name(self) -> str:
        return topology.queue_name(self.namespace, self.service)

    @property
    def dlq_name(self) -> str:
        return topology.dlq_name(self.namespace, self.service)

    @property
    def bucket(self) -> str:
        return topology.bucket_name(self.namespace)
