"""The approver's composition root: what it is made of, built once, used alike by __main__ and the tests."""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt

from services.approver import auth, handlers
from services.approver.approvals import Urls
from services.approver.context import Approver
from services.approver.expiry import ExpiryWorker
from services.approver.links import LinkSigner, load_or_create_key
from services.approver.policy import load_policy
from services.approver.routes import approvals, audit, links, policy
from services.approver.settings import ApproverSettings
from services.console import console_router
from shared.runtime import Runtime, Wiring
from shared.wiring import inject

#: Event type -> its handler.
HANDLERS = {
    "ModelRegistered": handlers.on_model_registered,
    "Deployed": handlers.on_deployed,
}

#: What the approver serves: its API, one router per resource, and the console under /console.
ROUTERS = [approvals.router, links.router, policy.router, audit.router, console_router]


async def bootstrap(runtime: Runtime[ApproverSettings]) -> Wiring:
    settings = runtime.settings
    approver = Approver(runtime, load_policy(settings.policy_file), Urls(settings.public_url, settings.console_url))
    await seed_approvers(runtime)
    key = await load_or_create_key(runtime.aws["secretsmanager"], settings.hmac_secret_name)
    approver.signer = LinkSigner(key)
    return Wiring(
        handlers=inject(HANDLERS, policy=approver.policy, urls=approver.urls),
        routers=ROUTERS,
        workers=[ExpiryWorker(runtime.uow, approver.policy, approver.urls, settings.expiry_check_seconds)],
        context=approver,
        title="modelgate approver",
        description="Approval requests per stage, authenticated decisions, decision links and the audit trail.",
    )


async def seed_approvers(runtime: Runtime[ApproverSettings]) -> None:
    """Bootstrap approvers from the environment (replicas starting together may race to add the same one)."""
    async for attempt in AsyncRetrying(stop=stop_after_attempt(3), retry=retry_if_exception_type(IntegrityError), reraise=True):
        with attempt:
            async with runtime.uow() as uow:
                await auth.seed(uow, runtime.settings.approver_tokens, runtime.settings.approver_groups)
                await uow.commit()
