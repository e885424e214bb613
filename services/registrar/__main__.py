import asyncio

from services.registrar.service import spec
from services.registrar.settings import RegistrarSettings
from shared.service import serve

settings = RegistrarSettings()
asyncio.run(serve(spec(settings), settings))
