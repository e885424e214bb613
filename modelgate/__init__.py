"""modelgate: the CLI (`modelgate --help`) and the Python SDK for training scripts and pipelines.

    import modelgate

    with modelgate.Client() as mg:
        v = mg.register("fraud-detector", file="model.ubj", metrics={"auc": 0.95})
        mg.wait(v.group, v.version, "dev")

See docs/sdk.md. The public surface is what `__all__` names (pinned by tests/unit/test_sdk_surface.py).
"""

from modelgate.errors import (
    ApiError,
    Conflict,
    Forbidden,
    Invalid,
    ModelgateError,
    NotFound,
    ServerError,
    Unauthorized,
    Unreachable,
    WaitFailed,
    WaitTimeout,
)
from modelgate.models import Approval, Deployment, GateCode, GateVerdict, HistoryEntry, Period, Version
from modelgate.sdk import AsyncClient, Client

__all__ = [
    "ApiError", "Approval", "AsyncClient", "Client", "Conflict", "Deployment", "Forbidden", "GateCode", "GateVerdict",
    "HistoryEntry", "Invalid", "ModelgateError", "NotFound", "Period", "ServerError", "Unauthorized", "Unreachable",
    "Version",
    "WaitFailed", "WaitTimeout",
]
