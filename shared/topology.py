"""Who consumes which events: the one table the bus provisioning, the services and the AWS template follow."""

CONSUMES: dict[str, tuple[str, ...]] = {
    "registrar": ("ApprovalRequested", "ApprovalDecided", "Deployed", "DeploymentFailed"),
    "approver": ("ModelRegistered", "Deployed"),
    "deployer": ("ApprovalDecided",),
    "notifier": ("ApprovalRequested", "ApprovalDecided", "Deployed", "DeploymentFailed"),
}

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
