from functools import partial

from sqlalchemy.exc import IntegrityError
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt

from services.approver import auth
from services.approver.api import build_api
from services.approver.approvals import Urls
from services.approver.expiry import expiry_loop
from services.approver.handlers import build_handlers
from services.approver.links import LinkSigner, load_or_create_key
from services.approver.policy import load_policy
from services.approver.settings import ApproverSettings
from shared.service import Runtime, ServiceSpec


def spec(settings: ApproverSettings) -> ServiceSpec:
    policy = load_policy(settings.policy_file)
    urls = Urls(settings.public_url, settings.console_url)

    async def prepare(runtime: Runtime) -> None:
        """Bootstrap approvers from the environment, and the decision-link key from Secrets Manager."""
        async for attempt in AsyncRetrying(  # replicas starting together may race to add the same approver
            stop=stop_after_attempt(3), retry=retry_if_exception_type(IntegrityError), reraise=True
        ):
            with attempt:
                async with runtime.uow() as uow:
                    await auth.seed(uow, settings.approver_tokens, settings.approver_groups)
                    await uow.commit()
        key = await load_or_create_key(runtime.aws["secretsmanager"], settings.hmac_secret_name)
        runtime.state["links"] = LinkSigner(key)

    return ServiceSpec(
        name="approver",
        build_handlers=lambda runtime: build_handlers(policy, urls),
        build_api=lambda runtime: build_api(runtime, policy, urls),
        aws_services=("secretsmanager",),
        background=(partial(expiry_loop, policy=policy, urls=urls),),
        on_start=prepare,
    )
