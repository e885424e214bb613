import asyncio
from functools import partial

from services.deployer.api import build_api
from services.deployer.deploy import DeployOptions, on_approval_decided
from services.deployer.resume import resume_deployments
from services.deployer.settings import DeployerSettings
from services.deployer.targets import Target, build_targets
from shared.service import Runtime, ServiceSpec


def spec(settings: DeployerSettings) -> ServiceSpec:
    options = DeployOptions(settings.deploy_attempts, settings.deploy_retry_seconds, settings.lease_seconds)

    def targets(runtime: Runtime) -> dict[str, Target]:
        if "targets" not in runtime.state:
            runtime.state["targets"] = build_targets(settings, runtime.aws)
            runtime.state["wake"] = asyncio.Event()  # set by a rollback request: resume at once
        return runtime.state["targets"]

    async def resume(runtime: Runtime, stop: asyncio.Event) -> None:
        await resume_deployments(
            runtime, stop, runtime.aws["ssm"], targets(runtime), options, runtime.state["wake"], settings.resume_seconds
        )

    async def close(runtime: Runtime) -> None:
        for target in {id(t): t for t in targets(runtime).values()}.values():
            await target.close()

    return ServiceSpec(
        name="deployer",
        build_handlers=lambda runtime: {
            "ApprovalDecided": partial(on_approval_decided, ssm=runtime.aws["ssm"], targets=targets(runtime), options=options)
        },
        build_api=lambda runtime: build_api(runtime, targets(runtime)),
        aws_services=settings.aws_services,
        background=(resume,),
        on_stop=close,
    )
