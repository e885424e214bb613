"""Who consumes which events: the one table the bus provisioning, the services and the AWS template follow."""

CONSUMES: dict[str, tuple[str, ...]] = {
    "registrar": (
        "ApprovalRequested", "ApprovalDecided", "Deployed", "DeploymentFailed", "DeploymentStarted", "DeploymentSuperseded",
        "RolloutStepped", "RolloutPromoted", "RolloutRolledBack",
    ),
    "approver": ("ModelRegistered", "Deployed", "DeploymentSuperseded"),
    "deployer": ("ApprovalDecided",),
    "notifier": ("ModelRegistered", "ApprovalRequested", "ApprovalDecided", "DeploymentStarted", "DeploymentSuperseded",
                 "Deployed", "DeploymentFailed", "RolloutStepped", "RolloutPromoted", "RolloutRolledBack"),
}

EMITS: dict[str, tuple[str, ...]] = {  # only the producer that owns an event type may emit it (signed, checked)
    "registrar": ("ModelRegistered",),
    "approver": ("ApprovalRequested", "ApprovalDecided"),
    "deployer": ("Deployed", "DeploymentFailed", "DeploymentStarted", "DeploymentSuperseded", "RolloutStepped",
                 "RolloutPromoted", "RolloutRolledBack"),
    "notifier": (),
}
OWNER: dict[str, str] = {event_type: service for service, types in EMITS.items() for event_type in types}

SERVICES = tuple(CONSUMES)
DEFAULT_PORTS = {"registrar": 8081, "approver": 8082, "deployer": 8083, "notifier": 8084}


def topic_name(namespace: str) -> str:
    return f"{namespace}-events"


def notifications_topic_name(namespace: str) -> str:
    """Where the notifier publishes notifications for people (email/SMS subscribers), not events."""
    return f"{namespace}-notifications"


def queue_name(namespace: str, service: str) -> str:
    return f"{namespace}-{service}"


def dlq_name(namespace: str, service: str) -> str:
    return f"{namespace}-{service}-dlq"


def bucket_name(namespace: str) -> str:
    return f"{namespace}-artifacts"


def filter_policy(service: str) -> dict[str, list[str]]:
    return {"event_type": list(CONSUMES[service])}


def parameter_name(group: str, stage: str) -> str:
    """The Parameter Store pointer to what is live in a stage (fixed public contract)."""
    return f"/modelgate/{group}/{stage}/current"


def signing_key_secret_name(namespace: str, service: str) -> str:
    """The Secrets Manager secret holding a producer's private signing key (readable by that producer alone)."""
    return f"{namespace}/{service}/signing-key"


def signing_keys_parameter(namespace: str, service: str) -> str:
    """The Parameter Store parameter listing a producer's public keys by key id (readable by every consumer).
    Outside `/modelgate/`, which holds the stage pointers the deployer may write."""
    return f"/modelgate-signing/{namespace}/{service}"
