"""SageMaker and ECS resource names per group and stage: deterministic, valid, and distinct (targets/base.py)."""

from __future__ import annotations

import random
import string
import uuid

import pytest

from services.deployer.targets import DeployError, DeploySpec, EcsTarget, SageMakerTarget
from services.deployer.targets.base import SAGEMAKER_NAME


def target(namespace: str = "mg") -> SageMakerTarget:
    return SageMakerTarget(client=None, namespace=namespace, region="us-east-1", role_arn="r", image_uri="i")


def spec(group: str, stage: str = "prod", version: int = 1) -> DeploySpec:
    return DeploySpec(str(uuid.uuid4()), group, stage, version, f"{group}/{version}", "s3://b/m")


def valid(name: str) -> bool:
    return len(name) <= 63 and SAGEMAKER_NAME.fullmatch(name) is not None


def test_a_name_is_a_readable_slug_of_group_and_stage_with_a_hash_and_never_changes() -> None:
    name = target().endpoint_name(spec("fraud_detector"))
    assert name.startswith("mg-fraud-detector-prod-") and len(name.rsplit("-", 1)[1]) == 8
    assert target().endpoint_name(spec("fraud_detector")) == name  # deterministic: the same on every deployer


def test_groups_differing_only_in_punctuation_or_case_get_distinct_endpoints() -> None:
    groups = ["fraud_detector", "fraud.detector", "fraud-detector", "Fraud-Detector", "fraud--detector"]
    names = {target().endpoint_name(spec(g)) for g in groups}
    assert len(names) == len(groups) and all(valid(n) for n in names)


def test_long_groups_sharing_a_60_character_prefix_get_distinct_endpoints_and_configs() -> None:
    prefix = "credit-card-fraud-detector-for-the-european-retail-banking-u"
    assert len(prefix) == 60
    first, second = spec(prefix + "nit-a"), spec(prefix + "nit-b")
    assert target().endpoint_name(first) != target().endpoint_name(second)
    same_deployment = DeploySpec(first.deployment_id, second.group, "prod", 1, "x/1", "s3://b/m")
    assert target().config_name(first) != target().config_name(same_deployment)
    assert all(valid(n) for n in (target().endpoint_name(first), target().config_name(first)))


def test_the_same_group_in_two_stages_gets_two_endpoints() -> None:
    assert target().endpoint_name(spec("fraud", "dev")) != target().endpoint_name(spec("fraud", "prod"))
    # a group and stage whose joined slug is the same ("a-b" + "c" vs "a" + "b-c") still differ
    assert target().endpoint_name(spec("a-b", "c")) != target().endpoint_name(spec("a", "b-c"))


def test_names_always_match_sagemakers_rule_over_many_odd_groups_and_stages() -> None:
    rng = random.Random(20261202)
    alphabet = string.ascii_letters + string.digits + "._-"
    seen: dict[str, tuple[str, str]] = {}
    for _ in range(2000):
        group = rng.choice(string.ascii_letters + string.digits) + "".join(
            rng.choice(alphabet) for _ in range(rng.randint(0, 199)))
        stage = rng.choice(["dev", "prod", "-", "x" * 40, "eu.prod_2", "Ünïcode"])
        version = rng.choice([1, 42, 10**9])
        for namespace in ("mg", "modelgate", "team-a-prod-eu-west-1", "a" * 32):
            t, s = target(namespace), spec(group, stage, version)
            endpoint, config = t.endpoint_name(s), t.config_name(s)
            assert valid(endpoint) and valid(config), (endpoint, config)
            assert endpoint.startswith(f"{namespace}-") and config.startswith(f"{namespace}-")  # IAM: <ns>-*
            assert seen.setdefault(endpoint, (group, stage)) == (group, stage), endpoint


def test_a_namespace_that_names_cannot_hold_is_refused_when_the_target_is_made() -> None:
    with pytest.raises(ValueError, match="MODELGATE_NAMESPACE"):
        target("my_namespace")
    with pytest.raises(ValueError, match="shorten MODELGATE_NAMESPACE"):
        target("n" * 50)
    longest = target("n" * 32)  # what infra/cloudformation.yaml's Namespace allows
    assert valid(longest.config_name(spec("fraud", version=10**10 - 1)))


def test_ecs_service_names_refuse_what_ecs_cannot_hold_and_offer_the_unique_name() -> None:
    plain = EcsTarget(None, "serving", "{namespace}-{group}-{stage}", "mg")
    assert plain.service_name(spec("fraud_detector")) == "mg-fraud_detector-prod"  # unchanged for valid names
    with pytest.raises(DeployError, match=r"use '\{name\}'"):
        plain.service_name(spec("fraud.detector"))
    unique = EcsTarget(None, "serving", "{name}", "mg", endpoint_template="http://{name}.serving.internal")
    assert unique.service_name(spec("fraud.detector")) == target().endpoint_name(spec("fraud.detector"))
    assert unique.service_name(spec("fraud.detector")) != unique.service_name(spec("fraud_detector"))
