"""The SDK's exceptions: every failure is a ModelgateError whose message says what to fix.

    ModelgateError
    ├── Unreachable        nothing answered at the service's URL (is modelgate up? is MODELGATE_URL right?)
    ├── ApiError           the service answered an error status; `.status`, `.detail`
    │   ├── NotFound       404
    │   ├── Unauthorized   401: pass token= or set MODELGATE_TOKEN
    │   ├── Forbidden      403: this principal may not (role, team, own version)
    │   ├── Conflict       409: already decided, or an idempotency key reused for a different request
    │   ├── Invalid        400/413/422: which field and why
    │   └── ServerError    5xx: retry later
    ├── WaitFailed         wait(): the version reached an end state that is not the one waited for
    └── WaitTimeout        wait(): still not there after `timeout` seconds
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared.client import (
    ApiError,
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    ServerError,
    Unauthorized,
    Unreachable,
)
from shared.client import ServiceError as ModelgateError

if TYPE_CHECKING:
    from modelgate.models import Version


class WaitFailed(ModelgateError):
    """The version's status in the stage ended somewhere `wait()` cannot go on from (Rejected, ...)."""

    def __init__(self, version: Version, stage: str, until: str) -> None:
        status = version.status(stage)
        reason = (version.stage_details.get(stage) or {}).get("reason")
        super().__init__("registrar", f"{version.model_version_id} is {status} for {stage}, so it will not be {until}"
                         + (f": {reason}" if reason else "")
                         + f"; see 'modelgate show {version.group} {version.version}'")
        self.version, self.stage, self.status = version, stage, status


class WaitTimeout(ModelgateError):
    """`wait()` gave up; the journey may still get there."""

    def __init__(self, version: Version, stage: str, until: str, timeout: float) -> None:
        status = version.status(stage) or "not requested"
        super().__init__("registrar", f"{version.model_version_id} was not {until} in {stage} within {timeout:.0f}s "
                         f"(still {status}); wait longer, or follow it with 'modelgate show {version.group} {version.version}'")
        self.version, self.stage, self.status = version, stage, status


__all__ = ["ApiError", "Conflict", "Forbidden", "Invalid", "ModelgateError", "NotFound", "ServerError", "Unauthorized",
           "Unreachable", "WaitFailed", "WaitTimeout"]
