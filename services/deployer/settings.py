from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import NoDecode

from shared.settings import REPO_ROOT, ServiceSettings, name_list

TargetName = Literal["parameter-store", "local", "sagemaker", "ecs"]


class DeployerSettings(ServiceSettings):
    service: str = "deployer"
    targets: dict[str, TargetName] = Field(
        default_factory=dict,
        description='JSON {"<stage>": "parameter-store" | "local" | "sagemaker" | "ecs"}; unlisted stages: parameter-store.',
    )
    deploy_attempts: int = Field(3, ge=1, description="Tries of a deployment before it is DeploymentFailed.")
    deploy_retry_seconds: float = Field(1.0, ge=0, description="Wait before the second try; doubles after each.")
    lease_seconds: float = Field(15.0, gt=0, description="How long a stage stays claimed by a deployer that stopped answering.")
    resume_seconds: float = Field(5.0, gt=0, description="How often unfinished deployments are looked for.")
    drift_check_seconds: float = Field(
        60.0, ge=0, description="How often each stage's pointer, live record and target are compared (drift: the "
        "modelgate_stage_drift gauge and a stage_drift warning); 0: never.")

    local_host: str = Field("127.0.0.1", description="Target local: where inference servers listen.")
    local_run_dir: Path | None = Field(None, description="Target local: servers' state and logs; default var/inference/<namespace>.")
    local_start_timeout_seconds: float = Field(60.0, description="Target local: time for a server to load its model.")
    local_stop_on_exit: bool = Field(True, description="Target local: stop the servers when the deployer stops.")
    pickle_groups: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Target local: model groups whose pickle (joblib) artifacts may be served; loading a pickle "
        "runs code from it (comma-separated or a JSON list; default none).",
    )
    allow_local_artifacts: bool = Field(
        False, description="Target local, development only: serve artifacts from file:// URIs and local paths."
    )

    sagemaker_role_arn: str = Field("", description="Target sagemaker: the execution role of the models.")
    sagemaker_image_uri: str = Field("", description="Target sagemaker: the serving image (ECR URI).")
    sagemaker_instance_type: str = "ml.m5.large"
    sagemaker_instance_count: int = 1
    sagemaker_wait_seconds: float = Field(1800.0, description="Target sagemaker: time for the endpoint to be InService.")
    sagemaker_poll_seconds: float = 15.0

    ecs_cluster: str = Field("", description="Target ecs: the cluster of the serving services.")
    ecs_service: str = Field("{namespace}-{group}-{stage}", description="Target ecs: the service's name (a template: {namespace}, {group}, {stage}, or {name}, collision-free; see docs/targets.md).")
    ecs_container: str | None = Field(None, description="Target ecs: the container to pin the model in; default the first.")
    ecs_endpoint_url: str | None = Field(None, description="Target ecs: the endpoint URL to announce (a template).")
    ecs_wait_seconds: float = Field(900.0, description="Target ecs: time for the rollout to complete; 0: do not wait.")
    ecs_poll_seconds: float = 10.0

    _lists = field_validator("pickle_groups", mode="before")(name_list)

    def model_post_init(self, context: object, /) -> None:
        super().model_post_init(context)
        if self.local_run_dir is None:
            self.local_run_dir = REPO_ROOT / "var" / "inference" / self.namespace

    @model_validator(mode="after")
    def _target_settings(self) -> "DeployerSettings":
        used = set(self.targets.values())
        if "sagemaker" in used and not (self.sagemaker_role_arn and self.sagemaker_image_uri):
            raise ValueError("target sagemaker needs MODELGATE_SAGEMAKER_ROLE_ARN and MODELGATE_SAGEMAKER_IMAGE_URI")
        if "ecs" in used and not self.ecs_cluster:
            raise ValueError("target ecs needs MODELGATE_ECS_CLUSTER")
        return self

    @property
    def aws_services(self) -> tuple[str, ...]:
        used = set(self.targets.values())
        return ("ssm", "secretsmanager", "s3") + tuple(s for s in ("sagemaker", "ecs") if s in used)
