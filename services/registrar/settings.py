from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from services.registrar.artifacts import BUCKET_NAME
from shared.settings import ServiceSettings, name_list


class RegistrarSettings(ServiceSettings):
    service: str = "registrar"
    auto_create_groups: bool = Field(True, description="Create a model group on its first registration.")
    check_artifacts: bool = Field(True, description="Refuse s3:// artifact URIs whose object does not exist.")
    artifact_buckets: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Buckets whose s3:// artifacts may be registered (comma-separated or a JSON list); "
        "default: <namespace>-artifacts, the bucket modelgate provisions.",
    )
    allow_local_artifacts: bool = Field(
        False, description="Development only: accept file:// URIs and local paths as artifacts."
    )

    comet_archive_max_members: int = Field(10_000, ge=1, description="Files a Comet archive upload may hold (413 beyond).")
    comet_archive_max_uncompressed_bytes: int = Field(512 * 1024 * 1024, ge=1, description="What a Comet archive may inflate to in all, as its zip directory declares (413 beyond, nothing inflated).")
    comet_archive_max_member_bytes: int = Field(64 * 1024 * 1024, ge=1, description="What each file read from a Comet archive (experiment.json, messages.json, plots, lineage) may inflate to (413 beyond).")

    sagemaker_bridge: bool = Field(
        False, description="Ingest SageMaker Model Registry packages (EventBridge 'SageMaker Model Package State "
        "Change' events on the <namespace>-registrar-sagemaker queue) and write decisions and deployments back "
        "to them (docs/sagemaker.md). Off by default.")
    sagemaker_groups: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Model package groups the SageMaker bridge may register (comma-separated "
        "or a JSON list); default: any group. A package of another group is dead-lettered with the reason.")
    sagemaker_writeback: bool = Field(
        True, description="With the SageMaker bridge on: reflect approval decisions and deployments on the package "
        "(UpdateModelPackage: ModelApprovalStatus, ModelLifeCycle, ApprovalDescription).")
    sagemaker_report_max_bytes: int = Field(
        1024 * 1024, ge=1024, description="The largest ModelMetrics report (S3 JSON) the bridge reads.")

    _lists = field_validator("artifact_buckets", "sagemaker_groups", mode="before")(name_list)

    @field_validator("artifact_buckets")
    @classmethod
    def _bucket_names(cls, buckets: list[str]) -> list[str]:
        bad = [b for b in buckets if not BUCKET_NAME.fullmatch(b)]
        if bad:
            raise ValueError(f"MODELGATE_ARTIFACT_BUCKETS: {bad} are not S3 bucket names (3-63 of a-z 0-9 . -)")
        return buckets

    def model_post_init(self, context: object, /) -> None:
        super().model_post_init(context)
        if not self.artifact_buckets:
            self.artifact_buckets = [self.bucket]
