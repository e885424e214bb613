"""Deployment targets, one per stage (MODELGATE_TARGETS): parameter-store, local, sagemaker, ecs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from services.deployer.settings import DeployerSettings
from services.deployer.targets.base import (
    DeployError,
    DeploySpec,
    InAccount,
    ParameterStoreTarget,
    Serving,
    Target,
)
from services.deployer.targets.ecs import EcsTarget
from services.deployer.targets.local import LocalTarget
from services.deployer.targets.routing import RoutedLocalTarget
from services.deployer.targets.sagemaker import SageMakerTarget

__all__ = ["DeployError", "DeploySpec", "EcsTarget", "InAccount", "LocalTarget", "ParameterStoreTarget", "SageMakerTarget", "Serving", "Target", "build_targets"]


def build_targets(settings: DeployerSettings, aws: Any, accounts: Mapping[str, Any] | None = None) -> dict[str, Target]:
    """One target object per stage named in settings.targets (stages that share a kind and an account share
    the object). A stage in another account gets its target wrapped in InAccount, built with that account's
    clients (`accounts`: account -> services.deployer.accounts.AccountClients); `local` runs here either way."""
    home = {kind: _build(settings, aws, kind) for kind in settings.target_kinds}
    made: dict[tuple[str, str | None], Target] = {}
    for stage in settings.targets:
        place = settings.stage_target(stage)
        key = (place.target, place.account)
        if key not in made:
            if place.account is None:
                made[key] = home[place.target]
            else:
                clients = (accounts or {})[place.account]
                inner = home[place.target] if place.target in ("local", "parameter-store") else _build(settings, clients, place.target, place.execution_role_arn)
                made[key] = InAccount(inner, place.account, clients["ssm"])
    return {stage: made[(settings.stage_target(stage).target, settings.stage_target(stage).account)] for stage in settings.targets}


def _build(settings: DeployerSettings, aws: Any, kind: str, execution_role_arn: str | None = None) -> Target:
    if kind == "local":
        assert settings.local_run_dir is not None
        return RoutedLocalTarget(settings.local_run_dir, settings.local_host, settings.local_start_timeout_seconds,
                           settings.local_stop_on_exit, aws["s3"] if "s3" in aws else None,  # noqa: SIM401
                           pickle_groups=frozenset(settings.pickle_groups),
                           allow_local_artifacts=settings.allow_local_artifacts)
    if kind == "sagemaker":
        return SageMakerTarget(
            aws["sagemaker"], settings.namespace, settings.aws_region, execution_role_arn or settings.sagemaker_role_arn,
            settings.sagemaker_image_uri, settings.sagemaker_instance_type, settings.sagemaker_instance_count,
            settings.sagemaker_wait_seconds, settings.sagemaker_poll_seconds,
        )
    if kind == "ecs":
        return EcsTarget(
            aws["ecs"], settings.ecs_cluster, settings.ecs_service, settings.namespace, settings.ecs_container,
            settings.ecs_endpoint_url, settings.ecs_wait_seconds, settings.ecs_poll_seconds,
        )
    return ParameterStoreTarget()
