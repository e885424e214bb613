from services.registrar.api import build_api
from services.registrar.handlers import HANDLERS
from services.registrar.settings import RegistrarSettings
from shared.service import ServiceSpec


def spec(settings: RegistrarSettings) -> ServiceSpec:
    return ServiceSpec(name="registrar", build_handlers=lambda runtime: HANDLERS, build_api=build_api, aws_services=("s3",))
