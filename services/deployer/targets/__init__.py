"""Deployment targets, one per stage (MODELGATE_TARGETS): parameter-store, local, sagemaker, ecs."""

from __future__ import annotations

from typing import Any

from services.deployer.settings import DeployerSettings
from services.deployer.targets.base import DeployError, DeploySpec, ParameterStoreTarget, Serving, Target
from services.deployer.targets.ecs import EcsTarget
from services.deployer.targets.local import LocalTarget
from services.deployer.targets.routing import RoutedLocalTarget
from services.deployer.targets.sagemaker import SageMakerTarget

__all__ = ["DeployError", "DeploySpec", "EcsTarget", "LocalTarget", "ParameterStoreTarget", "SageMakerTarget", "Serving", "Target", "build_targets"]


def build_targets(settings: DeployerSettings, aws: Any) -> dict[str, Target]:
    """One target object per stage named in settings.targets (stages that share a kind share the object)."""
    made: dict[str, Target] = {}
    for kind in set(settings.targets.values()):
        if kind == "local":
            assert settings.local_run_dir is not None
            made[kind] = RoutedLocalTarget(settings.local_run_dir, settings.local_host, settings.local_start_timeout_seconds,
                                     settings.local_stop_on_exit, aws["s3"] if "s3" in aws else None,  # noqa: SIM401
                                     pickle_groups=frozenset(settings.pickle_groups),
                                     allow_local_artifacts=settings.allow_local_artifacts)
        elif kind == "sagemaker":
            made[kind] = SageMakerTarget(
                aws["sagemaker"], settings.namespace, settings.aws_region, settings.sagemaker_role_arn,
                settings.sagemaker_image_uri, settings.sagemaker_instance_type, settings.sagemaker_instance_count,
                settings.sagemaker_wait_seconds, settings.sagemaker_poll_seconds,
            )
        elif kind == "ecs":
            made[kind] = EcsTarget(
                aws["ecs"], settings.ecs_cluster, settings.ecs_service, settings.namespace, settings.ecs_container,
                settings.ecs_endpoint_url, settings.ecs_wait_seconds, settings.ecs_poll_seconds,
            )
        else:
            made[kind] = ParameterStoreTarget()
    return {stage: made[kind] for stage, kind in settings.targets.items()}
