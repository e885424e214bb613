"""The canonical way to run one service: its command and its environment.

`modelgate up` (and so `make up`) starts every service with exactly this; docker-compose.yml repeats it
for containers, and tests/unit/test_compose.py fails when the two drift apart. The only differences
compose is allowed (see COMPOSE_ONLY_VARIABLES) are the ones a container network needs:

- AWS_ENDPOINT_URL points at the `localstack` container instead of 127.0.0.1 (same scheme and port),
- MODELGATE_HTTP_HOST=0.0.0.0 so the port mapping reaches the server inside the container,
- MODELGATE_DATABASE_URL points each service at its own PostgreSQL database,
- MODELGATE_APPROVER_URL / MODELGATE_REGISTRAR_URL / MODELGATE_DEPLOYER_URL name sibling containers (`make up`
  sets them to loopback ports).
"""

from __future__ import annotations

from shared.topology import DEFAULT_PORTS, SERVICES

#: LocalStack as `make up` runs it (host mode, plain process).
LOCAL_ENDPOINT = "http://127.0.0.1:4566"
DEFAULT_NAMESPACE = "modelgate"
DEFAULT_REGION = "us-east-1"

#: argv of a service process; `{service}` is replaced by the service's name (see service_command).
SERVICE_COMMAND = ["python", "-m", "services.{service}"]
#: argv of the step that creates the topic, queues, DLQs, subscriptions and bucket (idempotent).
PROVISION_COMMAND = ["python", "-m", "shared.infra"]

#: Variables docker-compose.yml may set on top of service_env(), and nothing else.
COMPOSE_ONLY_VARIABLES = (
    "MODELGATE_DATABASE_URL",
    "MODELGATE_HTTP_HOST",
    "MODELGATE_APPROVER_URL",  # every service verifies credentials with the approver (GET /v1/me)
    "MODELGATE_REGISTRAR_URL",  # sibling services by container name (the approver's console calls them)
    "MODELGATE_DEPLOYER_URL",
)


def service_command(service: str) -> list[str]:
    """The argv that runs `service`, e.g. ["python", "-m", "services.registrar"]."""
    _check(service)
    return [part.format(service=service) for part in SERVICE_COMMAND]


def aws_env(*, endpoint: str, namespace: str = DEFAULT_NAMESPACE) -> dict[str, str]:
    """What any process talking to the local bus needs (LocalStack accepts any credentials)."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_DEFAULT_REGION": DEFAULT_REGION,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "MODELGATE_NAMESPACE": namespace,
    }


def service_env(
    service: str, *, endpoint: str, namespace: str = DEFAULT_NAMESPACE, database_url: str | None = None
) -> dict[str, str]:
    """The environment of one service process, on top of nothing else that modelgate reads.

    Without `database_url` the service uses its default embedded SQLite file.
    """
    _check(service)
    env = aws_env(endpoint=endpoint, namespace=namespace)
    env.update({"MODELGATE_HTTP_PORT": str(DEFAULT_PORTS[service]), "MODELGATE_LOG_LEVEL": "INFO"})
    if database_url:
        env["MODELGATE_DATABASE_URL"] = database_url
    return env


def provision_env(*, endpoint: str, namespace: str = DEFAULT_NAMESPACE) -> dict[str, str]:
    """The environment of PROVISION_COMMAND."""
    return aws_env(endpoint=endpoint, namespace=namespace)


def _check(service: str) -> None:
    if service not in SERVICES:
        raise ValueError(f"unknown service {service!r}; expected one of {', '.join(SERVICES)}")
