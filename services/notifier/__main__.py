"""The notifier: tells people about approval requests, decisions and deployments, once per channel."""
import asyncio

from services.notifier.bootstrap import bootstrap
from services.notifier.settings import NotifierSettings
from shared.service import serve

settings = NotifierSettings()
asyncio.run(serve(settings, bootstrap, aws_services=("secretsmanager", "ses") if settings.email_sender else ("secretsmanager",)))
