from services.registrar.api import build_api
from services.registrar.comet_writeback import CometWriteback
from services.registrar.handlers import build_handlers
from services.registrar.settings import RegistrarSettings
from shared.service import ServiceSpec


def spec(settings: RegistrarSettings) -> ServiceSpec:
    comet = CometWriteback.from_env()  # does nothing unless COMET_API_KEY and COMET_WORKSPACE are set
    return ServiceSpec(
        name="registrar", build_handlers=lambda runtime: build_handlers(comet), build_api=build_api, aws_services=("s3",)
    )
