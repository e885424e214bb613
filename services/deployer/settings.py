from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import NoDecode

from shared.settings import REPO_ROOT, ServiceSettings, name_list

TargetName = Literal["parameter-store", "local", "sagemaker", "ecs"]
ACCOUNT_ID = r"^\d{12}$"
ROLE_ARN = r"^arn:aws[a-z-]*:iam::(\d{12}):role/[A-Za-z0-9_+=,.@/-]+$"


class StageTarget(BaseModel):
    """A stage's target, and the AWS account it lives in: the deployer's own (no `account`), or another one,
    reached through `role_arn`, a role that account trusts the deployer to assume (with `external_id`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    target: TargetName = "parameter-store"
    account: str | None = Field(None, pattern=ACCOUNT_ID, description="The 12-digit account of the stage's pointer and target.")
    role_arn: str | None = Field(None, pattern=ROLE_ARN, description="The role in `account` the deployer assumes (STS AssumeRole).")
    external_id: str | None = Field(None, min_length=2, max_length=1224, description="The ExternalId the role's trust policy requires.")
    execution_role_arn: str | None = Field(None, pattern=ROLE_ARN, description="Target sagemaker in another account: the "
                                           "models' execution role there (default MODELGATE_SAGEMAKER_ROLE_ARN).")

    @model_validator(mode="after")
    def _role_in_its_account(self) -> "StageTarget":
        if bool(self.account) != bool(self.role_arn):
            raise ValueError("a stage in another account needs both `account` and `role_arn` (the role that account trusts)")
        if self.role_arn and self.role_arn.split(":")[4] != self.account:
            raise ValueError(f"role_arn {self.role_arn} is not in account {self.account}: name a role of the stage's account")
        if self.external_id and not self.role_arn:
            raise ValueError("external_id is for the role of another account: give `account` and `role_arn` too")
        return self


class DeployerSettings(ServiceSettings):
    service: str = "deployer"
    targets: dict[str, TargetName | StageTarget] = Field(
        default_factory=dict,
        description='JSON {"<stage>": "parameter-store" | "local" | "sagemaker" | "ecs"}, or for a stage in another AWS '
        'account {"<stage>": {"target": ..., "account": "222222222222", "role_arn": "arn:aws:iam::222222222222:role/..", '
        '"external_id": ".."}}; unlisted stages: parameter-store, in the deployer\'s own account.',
    )
    assume_role_seconds: int = Field(3600, ge=900, le=43200, description="Lifetime asked for the credentials of a stage's "
                                     "role in another account; they are assumed again shortly (10-15 min) before they expire.")
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

    def stage_target(self, stage: str) -> StageTarget:
        """Where `stage` deploys: its target kind and account (its plain-string form: the deployer's own account)."""
        found = self.targets.get(stage, "parameter-store")
        return found if isinstance(found, StageTarget) else StageTarget(target=found)

    @property
    def target_kinds(self) -> set[str]:
        return {self.stage_target(stage).target for stage in self.targets}

    @property
    def other_accounts(self) -> dict[str, StageTarget]:
        """account -> how it is reached; one role per account (two stages naming different roles of one
        account are refused)."""
        found: dict[str, StageTarget] = {}
        for stage in self.targets:
            t = self.stage_target(stage)
            if t.account is None:
                continue
            seen = found.setdefault(t.account, t)
            if (seen.role_arn, seen.external_id) != (t.role_arn, t.external_id):
                raise ValueError(f"account {t.account} is reached through two roles ({seen.role_arn}, {t.role_arn}): use one per account")
        return found

    @model_validator(mode="after")
    def _target_settings(self) -> "DeployerSettings":
        used = self.target_kinds
        self.other_accounts  # noqa: B018 (validates: one role per account)
        if "sagemaker" in used and not (self.sagemaker_role_arn and self.sagemaker_image_uri):
            raise ValueError("target sagemaker needs MODELGATE_SAGEMAKER_ROLE_ARN and MODELGATE_SAGEMAKER_IMAGE_URI")
        if "ecs" in used and not self.ecs_cluster:
            raise ValueError("target ecs needs MODELGATE_ECS_CLUSTER")
        return self

    @property
    def aws_services(self) -> tuple[str, ...]:
        used = self.target_kinds
        sts = ("sts",) if self.other_accounts else ()  # to assume the roles of stages in other accounts
        return ("ssm", "secretsmanager", "s3") + tuple(s for s in ("sagemaker", "ecs") if s in used) + sts
