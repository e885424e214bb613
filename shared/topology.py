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


# ---- the SageMaker Model Registry bridge (optional: MODELGATE_SAGEMAKER_BRIDGE, docs/sagemaker.md) ----------
#: The EventBridge event the bridge ingests, exactly as SageMaker names it.
SAGEMAKER_SOURCE = "aws.sagemaker"
SAGEMAKER_DETAIL_TYPE = "SageMaker Model Package State Change"
#: The service that consumes the bridge queue and the principal its registrations are made under.
SAGEMAKER_BRIDGE_SERVICE = "registrar"
SAGEMAKER_BRIDGE_PRINCIPAL = "sagemaker-bridge"


def sagemaker_queue_name(namespace: str) -> str:
    """The queue EventBridge sends SageMaker's model package events to (not the events topic's: these are
    AWS's events, unsigned, and only hints; services/registrar/sagemaker_bridge.py)."""
    return f"{namespace}-registrar-sagemaker"


def sagemaker_dlq_name(namespace: str) -> str:
    return f"{namespace}-registrar-sagemaker-dlq"


def sagemaker_rule_name(namespace: str) -> str:
    return f"{namespace}-sagemaker-model-packages"


def sagemaker_event_pattern(groups: list[str] | tuple[str, ...] = ()) -> dict[str, object]:
    """The EventBridge rule's pattern: SageMaker's model package state changes, of `groups` when given."""
    pattern: dict[str, object] = {"source": [SAGEMAKER_SOURCE], "detail-type": [SAGEMAKER_DETAIL_TYPE]}
    if groups:
        pattern["detail"] = {"ModelPackageGroupName": list(groups)}
    return pattern
