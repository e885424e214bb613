import asyncio
import sys

from services.approver.bootstrap import bootstrap
from services.approver.policy import PolicyError, load_policy
from services.approver.settings import ApproverSettings
from shared.service import serve

settings = ApproverSettings()
try:
    load_policy(settings.policy_file)  # a bad policy file stops the approver before it starts, saying what to fix
except PolicyError as exc:
    sys.exit(str(exc))
asyncio.run(serve(settings, bootstrap, aws_services=("secretsmanager",)))
