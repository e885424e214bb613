import asyncio

from services.deployer.bootstrap import bootstrap
from services.deployer.settings import DeployerSettings
from shared.service import serve

settings = DeployerSettings()
asyncio.run(serve(settings, bootstrap, aws_services=settings.aws_services))
