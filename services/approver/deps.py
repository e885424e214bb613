"""What the approver's routes take: the approver's parts (`ApproverDep`) and the caller (`CurrentPrincipal`,
from shared.http, verified by `auth.ApproverAuthenticator`).

Refusals of a decision are logged, and audited when we know who was refused (`refusal`), before
shared.http answers them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import structlog
from fastapi import Depends, Request

from services.approver import audit
from services.approver.context import Approver
from services.approver.models import ApprovalRequest
from shared.errors import Refused
from shared.http import context_of

log = structlog.get_logger()

ApproverDep = Annotated[Approver, Depends(context_of)]


def _forget(request: Request) -> Callable[[], None]:
    """What makes the approver's authenticator forget the credentials it remembers (after a change)."""
    return getattr(request.app.state.authenticator, "forget", lambda: None)  # type: ignore[no-any-return]


#: Register with `uow.after_commit(forget)` in a route that changes principals or credentials.
ForgetCredentials = Annotated[Callable[[], None], Depends(_forget)]


async def refusal(approver_ctx: Approver, refused: Refused, approval_id: str | None, approver: str | None, via: str) -> Refused:
    """Logs (and audits, when we know who) a refused decision; returns the refusal to raise."""
    log.warning("decision_refused", status=refused.status, reason=str(refused), approval_id=approval_id, approver=approver, via=via)
    if approver and refused.status in (401, 403):
        async with approver_ctx.runtime.uow() as uow:
            request = await uow.session.get(ApprovalRequest, approval_id) if approval_id else None
            audit.record(uow, "refused", approver, request, reason=str(refused), status=refused.status, via=via)
            await uow.commit()
    return refused
