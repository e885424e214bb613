"""Where artifacts may come from and which may be served as pickles: the settings that say it, read from the
environment, and what the local target hands its inference servers."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.deployer.settings import DeployerSettings
from services.deployer.targets import DeploySpec, LocalTarget
from services.registrar.settings import RegistrarSettings


def test_the_allowed_buckets_default_to_the_namespace_bucket_and_read_a_list_from_the_environment(monkeypatch):
    assert RegistrarSettings(database_url="x", namespace="acme").artifact_buckets == ["acme-artifacts"]
    assert RegistrarSettings(database_url="x").allow_local_artifacts is False
    monkeypatch.setenv("MODELGATE_ARTIFACT_BUCKETS", "team-models, shared-models")
    assert RegistrarSettings(database_url="x").artifact_buckets == ["team-models", "shared-models"]
    monkeypatch.setenv("MODELGATE_ARTIFACT_BUCKETS", '["team-models"]')
    assert RegistrarSettings(database_url="x").artifact_buckets == ["team-models"]


def test_a_bucket_setting_that_is_no_bucket_name_stops_the_registrar_saying_so():
    with pytest.raises(ValidationError, match=r"MODELGATE_ARTIFACT_BUCKETS: \['Team_Models'\] are not S3 bucket names"):
        RegistrarSettings(database_url="x", artifact_buckets="Team_Models")


def test_pickle_groups_are_none_by_default_and_read_from_the_environment(monkeypatch):
    assert DeployerSettings(database_url="x").pickle_groups == []
    monkeypatch.setenv("MODELGATE_PICKLE_GROUPS", "legacy-churn,fraud")
    monkeypatch.setenv("MODELGATE_ALLOW_LOCAL_ARTIFACTS", "true")
    settings = DeployerSettings(database_url="x")
    assert settings.pickle_groups == ["legacy-churn", "fraud"] and settings.allow_local_artifacts is True


def test_the_local_target_lets_a_server_load_a_pickle_only_for_an_opted_in_group(tmp_path):
    target = LocalTarget(tmp_path, pickle_groups=frozenset({"legacy-churn"}))
    legacy = DeploySpec("d1", "legacy-churn", "dev", 1, "legacy-churn/1", "s3://b/m.joblib")
    other = DeploySpec("d2", "fraud", "dev", 1, "fraud/1", "s3://b/m.joblib")
    assert target._loading_policy(legacy) == {"MODELGATE_ALLOW_PICKLE": "true", "MODELGATE_ALLOW_LOCAL_ARTIFACTS": "false"}
    assert target._loading_policy(other)["MODELGATE_ALLOW_PICKLE"] == "false"
