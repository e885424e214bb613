import asyncio

from services.deployer.service import spec
from services.deployer.settings import DeployerSettings
from shared.service import serve

settings = DeployerSettings()
asyncio.run(serve(spec(settings), settings))
