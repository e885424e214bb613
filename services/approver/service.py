from services.approver.api import build_api
from services.approver.handlers import build_handlers
from services.approver.policy import load_policy
from services.approver.settings import ApproverSettings
from shared.service import ServiceSpec


def spec(settings: ApproverSettings) -> ServiceSpec:
    policy = load_policy(settings.policy_file)
    return ServiceSpec(
        name="approver",
        build_handlers=lambda runtime: build_handlers(policy, settings.public_url),
        build_api=build_api,
    )
