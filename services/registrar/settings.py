from pydantic import Field

from shared.settings import ServiceSettings


class RegistrarSettings(ServiceSettings):
    service: str = "registrar"
    auto_create_groups: bool = Field(True, description="Create a model group on its first registration.")
    check_artifacts: bool = Field(True, description="Refuse s3:// artifact URIs whose object does not exist.")
