import asyncio

from services.approver.service import spec
from services.approver.settings import ApproverSettings
from shared.service import serve

settings = ApproverSettings()
asyncio.run(serve(spec(settings), settings))
