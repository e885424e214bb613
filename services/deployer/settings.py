from pydantic import Field

from shared.settings import ServiceSettings


class DeployerSettings(ServiceSettings):
    service: str = "deployer"
    targets: dict[str, str] = Field(
        default_factory=dict, description='JSON {"<stage>": "<target>"}; a stage not listed uses parameter-store.'
    )
