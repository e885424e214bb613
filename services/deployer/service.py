from functools import partial

from services.deployer.api import build_api
from services.deployer.deploy import on_approval_decided
from services.deployer.settings import DeployerSettings
from shared.service import ServiceSpec


def spec(settings: DeployerSettings) -> ServiceSpec:
    return ServiceSpec(
        name="deployer",
        build_handlers=lambda runtime: {
            "ApprovalDecided": partial(on_approval_decided, ssm=runtime.aws["ssm"], targets=settings.targets)
        },
        build_api=build_api,
        aws_services=("ssm", "s3"),
    )
