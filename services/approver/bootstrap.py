"""The approver's composition root: what it is made of, built once, used alike by __main__ and the tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import structlog
from sqlalchemy.exc import IntegrityError
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt

from services.approver import auth, handlers
from services.approver.approvals import Urls
from services.approver.auth import ApproverAuthenticator
from services.approver.context import Approver
from services.approver.expiry import ExpiryWorker
from services.approver.links import LinkSigner, load_or_create_key
from services.approver.policy import load_policy
from services.approver.routes import approvals, audit, links, policy, principals
from services.approver.settings import ApproverSettings
from services.console import console_router
from shared.oidc import OidcVerifier
from shared.runtime import Runtime, Wiring
from shared.secrets import service_key
from shared.topology import SAGEMAKER_BRIDGE_PRINCIPAL
from shared.wiring import inject

log = structlog.get_logger()

#: Event type -> its handler.
HANDLERS = {
    "ModelRegistered": handlers.on_model_registered,
    "Deployed": handlers.on_deployed,
    "DeploymentSuperseded": handlers.on_deployment_superseded,
}

#: What the approver serves: its API, one router per resource, and the console under /console.
ROUTERS = [approvals.router, links.router, policy.router, audit.router, principals.router, console_router]


async def bootstrap(runtime: Runtime[ApproverSettings]) -> Wiring:
    settings = runtime.settings
    approver = Approver(runtime, load_policy(settings.policy_file), Urls(settings.public_url, settings.console_url))
    secrets = runtime.aws["secretsmanager"]
    approver.signer = LinkSigner(await load_or_create_key(secrets, settings.hmac_secret_name))
    approver.pepper = await load_or_create_key(secrets, settings.token_pepper_secret_name, "Pepper of modelgate token digests")
    await first_admin(runtime, approver.pepper)
    if runtime.settings.sagemaker_bridge:
        await bridge_principal(runtime)
    authenticator = ApproverAuthenticator(runtime.sessionmaker, approver.pepper, settings, oidc_verifier(settings))
    return Wiring(
        handlers=inject(HANDLERS, policy=approver.policy, urls=approver.urls),
        routers=ROUTERS,
        workers=[ExpiryWorker(runtime.uow, approver.policy, approver.urls, settings.expiry_check_seconds)],
        context=approver,
        authenticator=authenticator,
        service_key=await service_key(runtime),
        title="modelgate approver",
        description="Approval requests per stage, authenticated decisions, decision links, principals and the audit trail.",
        on_stop=authenticator.aclose,
    )


def oidc_verifier(settings: ApproverSettings) -> OidcVerifier | None:
    if not settings.oidc_issuer:
        return None
    return OidcVerifier(settings.oidc_issuer, settings.oidc_audience, settings.oidc_jwks_url)


async def bridge_principal(runtime: Runtime[ApproverSettings]) -> None:
    """The SageMaker bridge's service principal, whose name the registrar's bridged registrations carry
    (registered_by): reserved for it, so no person can be `sagemaker-bridge` (docs/sagemaker.md)."""
    async for attempt in AsyncRetrying(stop=stop_after_attempt(3), retry=retry_if_exception_type(IntegrityError), reraise=True):
        with attempt:
            async with runtime.uow() as uow:
                if await auth.ensure_service_principal(uow, SAGEMAKER_BRIDGE_PRINCIPAL, "MODELGATE_SAGEMAKER_BRIDGE"):
                    await uow.commit()


async def first_admin(runtime: Runtime[ApproverSettings], pepper: bytes) -> None:
    """On the very first start, the admin principal, its token written to MODELGATE_ADMIN_TOKEN_FILE (replicas
    starting together race: one creates it, the others find it)."""
    settings = runtime.settings
    if settings.admin_token_file == "none" and not settings.admin_token_secret_name:
        return
    async for attempt in AsyncRetrying(stop=stop_after_attempt(3), retry=retry_if_exception_type(IntegrityError), reraise=True):
        with attempt:
            async with runtime.uow() as uow:
                token = await auth.ensure_admin(uow, pepper)
                await uow.commit()
    if token and settings.admin_token_secret_name:
        await store_secret(runtime.aws["secretsmanager"], settings.admin_token_secret_name, token)
    elif token:
        auth.write_token_file(Path(settings.admin_token_file), token)


async def store_secret(secretsmanager: Any, name: str, value: str) -> None:
    """Puts `value` in the secret `name`, creating the secret when it does not exist yet."""
    try:
        await secretsmanager.put_secret_value(SecretId=name, SecretString=value)
    except secretsmanager.exceptions.ResourceNotFoundException:
        await secretsmanager.create_secret(Name=name, SecretString=value, Description="The modelgate admin's first token")
    log.info("admin_token_stored", secret=name)
