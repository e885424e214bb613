import asyncio

from services.registrar.bootstrap import bootstrap
from services.registrar.settings import RegistrarSettings
from shared.service import serve

settings = RegistrarSettings()
asyncio.run(serve(settings, bootstrap, aws_services=("s3", "secretsmanager")))
