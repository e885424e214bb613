import asyncio
import sys

from services.approver.policy import PolicyError
from services.approver.service import spec
from services.approver.settings import ApproverSettings
from shared.service import serve

settings = ApproverSettings()
try:
    service = spec(settings)
except PolicyError as exc:
    sys.exit(str(exc))
asyncio.run(serve(service, settings))
