import asyncio

from services.registrar.bootstrap import bootstrap
from services.registrar.settings import RegistrarSettings
from shared.service import serve

settings = RegistrarSettings()
bridge = ("sagemaker",) if settings.sagemaker_bridge else ()  # the SageMaker Model Registry bridge (docs/sagemaker.md)
asyncio.run(serve(settings, bootstrap, aws_services=("s3", "secretsmanager", *bridge)))
