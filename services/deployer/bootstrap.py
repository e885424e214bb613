"""The deployer's composition root: what it is made of, built once, used alike by __main__ and the tests."""

from __future__ import annotations

from contextlib import AsyncExitStack

from services.deployer import deploy
from services.deployer.accounts import open_accounts
from services.deployer.context import Deployer
from services.deployer.drift import DriftWorker
from services.deployer.routes import deployments, drift, rollback, rollouts, timeline
from services.deployer.settings import DeployerSettings
from services.deployer.targets import build_targets
from services.deployer.worker import DeploymentWorker
from shared.identity import Authenticator, closer, introspecting
from shared.runtime import Runtime, Wiring, stop_all
from shared.secrets import service_key
from shared.wiring import inject

#: Event type -> its handler. The handler only records a deployment; the DeploymentWorker runs it.
HANDLERS = {
    "ApprovalDecided": deploy.on_approval_decided,
}


async def bootstrap(runtime: Runtime[DeployerSettings], authenticator: Authenticator | None = None) -> Wiring:
    """The deployer's wiring; `authenticator` defaults to asking the approver (shared.identity)."""
    settings = runtime.settings
    authenticator = authenticator or introspecting(settings, await service_key(runtime))
    options = deploy.DeployOptions(settings.deploy_attempts, settings.deploy_retry_seconds, settings.lease_seconds)
    stack = AsyncExitStack()
    accounts = await open_accounts(settings, runtime.aws["sts"], stack) if settings.other_accounts else {}
    deployer = Deployer(runtime, runtime.aws["ssm"], build_targets(settings, runtime.aws, accounts), options,
                        accounts=accounts, stack=stack)
    drift_check = [DriftWorker(runtime, deployer.ssm, deployer.targets, settings.drift_check_seconds)] \
        if settings.drift_check_seconds > 0 else []
    return Wiring(
        handlers=inject(HANDLERS, targets=deployer.targets, wake=deployer.wake),
        routers=[deployments.router, rollback.router, rollouts.router, timeline.router, drift.router],
        workers=[DeploymentWorker(runtime, deployer.ssm, deployer.targets, options, deployer.wake, settings.resume_seconds,
                                  s3=runtime.aws["s3"] if "s3" in runtime.aws else None),  # noqa: SIM401 (AwsClients has no .get)
                 *drift_check],
        context=deployer,
        title="modelgate deployer",
        description="Deployments per stage, rollouts, and rollback.",
        authenticator=authenticator,
        on_stop=stop_all(deployer.close, closer(authenticator)),
    )
