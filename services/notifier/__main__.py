import asyncio

from services.notifier.service import spec
from services.notifier.settings import NotifierSettings
from shared.service import serve

settings = NotifierSettings()
asyncio.run(serve(spec(settings), settings))
