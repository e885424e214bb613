"""infra/target-account.yaml: the role a target account trusts modelgate's deployer with: cfn-lint clean,
assumable by the registry's deployer task role alone and only with the external id, granting the pointers
of that account and (when asked for) its targets, nothing more; the registry's deployer may assume only the
roles its stack names."""

from __future__ import annotations

import subprocess
from collections import defaultdict
from functools import cache
from typing import Any

from cfnlint.decode import cfn_yaml

from shared.settings import REPO_ROOT
from tests.unit.test_dockerfiles import tool
from tests.unit.test_iam import SAGEMAKER, as_list, branches, symbol
from tests.unit.test_iam import resources as registry_resources

TEMPLATE = REPO_ROOT / "infra" / "target-account.yaml"
POINTERS = "arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:parameter/modelgate/*"
SERVICES = "arn:${AWS::Partition}:ecs:${AWS::Region}:${AWS::AccountId}:service/${ServingEcsClusterName}/*"


@cache
def role() -> dict[str, Any]:
    return cfn_yaml.load(str(TEMPLATE))["Resources"]["DeployerRole"]["Properties"]


def grants() -> dict[str, set[str]]:
    result: dict[str, set[str]] = defaultdict(set)
    for policy in role()["Policies"]:
        for statement in (s for item in policy["PolicyDocument"]["Statement"] for s in branches(item)):
            for action in as_list(statement["Action"]):
                result[action] |= {symbol(r) for r in as_list(statement["Resource"])}
    return dict(result)


def test_cfn_lint_clean() -> None:
    done = subprocess.run([tool("cfn-lint"), str(TEMPLATE)], check=False, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_only_the_registry_deployer_may_assume_the_role_and_only_with_the_external_id() -> None:
    [trust] = role()["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Effect"] == "Allow" and trust["Action"] == "sts:AssumeRole"
    assert trust["Principal"] == {"AWS": {"Fn::Sub": "arn:${AWS::Partition}:iam::${RegistryAccountId}:role/${RegistryNamespace}-deployer-task"}}
    assert trust["Condition"] == {"StringEquals": {"sts:ExternalId": {"Ref": "ExternalId"}}}
    assert role()["MaxSessionDuration"] >= 3600  # MODELGATE_ASSUME_ROLE_SECONDS' default


def test_the_role_grants_this_accounts_pointers_and_its_targets_nothing_more() -> None:
    namespaced = [arn.replace("${Namespace}", "${RegistryNamespace}") for arn in SAGEMAKER]
    sagemaker = {f"sagemaker:{a}": set(namespaced) for a in (
        "CreateModel", "DescribeModel", "CreateEndpointConfig", "DescribeEndpointConfig", "CreateEndpoint",
        "UpdateEndpoint", "DescribeEndpoint", "AddTags")}
    assert grants() == {
        "ssm:GetParameter": {POINTERS},
        "ssm:PutParameter": {POINTERS},
        **sagemaker,
        "ecs:RegisterTaskDefinition": {"*"},
        "ecs:DescribeTaskDefinition": {"*"},
        "ecs:UpdateService": {SERVICES},
        "ecs:DescribeServices": {SERVICES},
        "iam:PassRole": {"SageMakerExecutionRoleArn", "ServingTaskRoleArns"},
    }


def test_the_role_is_only_the_target_accounts_stages_never_the_registrys_bus_or_secrets() -> None:
    actions = set(grants())
    assert not any(a.startswith(("sqs:", "sns:", "secretsmanager:", "s3:", "sts:")) for a in actions)


def test_the_registry_deployer_may_assume_only_the_roles_its_stack_names() -> None:
    statements = [s for p in registry_resources()["DeployerTaskRole"]["Properties"]["Policies"]
                  for item in p["PolicyDocument"]["Statement"] for s in branches(item)]
    assuming = [s for s in statements if "sts:AssumeRole" in as_list(s["Action"])]
    assert [symbol(r) for s in assuming for r in as_list(s["Resource"])] == ["TargetAccountRoleArns"]
