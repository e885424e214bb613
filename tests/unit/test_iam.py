"""infra/cloudformation.yaml: cfn-lint clean, least-privilege IAM, and in step with the code.

The template is read with cfn-lint's own YAML loader, which understands the short tags (!Ref, !Sub,
!GetAtt, !If) and turns them into their long forms. Each IAM statement's resources are rendered as
short symbols (`RegistrarQueue.Arn`, `EventsTopic`, or the Fn::Sub text), so the expected policies
below read like the template itself. Statements under !If count with their condition true: a role is
checked for the most it can ever be granted.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections import defaultdict
from functools import cache
from typing import Any

import pytest
from cfnlint.decode import cfn_yaml

from modelgate import runenv
from shared import infra
from shared.settings import REPO_ROOT, ServiceSettings
from shared.topology import CONSUMES, DEFAULT_PORTS, SERVICES, filter_policy
from tests.unit.test_dockerfiles import tool

TEMPLATE = REPO_ROOT / "infra" / "cloudformation.yaml"

# Who publishes on the events topic (PRODUCT.md, "Shape"): the notifier emits nothing.
EMITS = {"registrar": True, "approver": True, "deployer": True, "notifier": False}

POINTERS = "arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:parameter/modelgate/*"
ARTIFACT_OBJECTS = "${ArtifactBucket.Arn}/*"
SAGEMAKER = [
    f"arn:${{AWS::Partition}}:sagemaker:${{AWS::Region}}:${{AWS::AccountId}}:{kind}/${{Namespace}}-*"
    for kind in ("model", "endpoint-config", "endpoint")
]
# The only actions allowed on Resource "*": AWS offers no resource-level permission for them.
NO_RESOURCE_LEVEL = {"ecr:GetAuthorizationToken", "ecs:RegisterTaskDefinition", "ecs:DescribeTaskDefinition"}


def C(service: str) -> str:
    return service.capitalize()


def expected_grants(service: str) -> dict[str, set[str]]:
    """action -> resources: everything the service's task role may do, and nothing more."""
    queue, dlq = f"{C(service)}Queue.Arn", f"{C(service)}DeadLetterQueue.Arn"
    grants: dict[str, set[str]] = {
        "sqs:GetQueueUrl": {queue, dlq},
        "sqs:ReceiveMessage": {queue},
        "sqs:DeleteMessage": {queue},
        "sqs:ChangeMessageVisibility": {queue},
        "sqs:SendMessage": {dlq},  # a message that fails for good goes to the DLQ with its reason
    }
    if EMITS[service]:
        grants["sns:Publish"] = {"EventsTopic"}
    if service == "registrar":
        grants |= {
            "s3:GetObject": {ARTIFACT_OBJECTS},
            "s3:PutObject": {ARTIFACT_OBJECTS},
            "s3:ListBucket": {"ArtifactBucket.Arn"},
        }
    if service == "approver":
        grants |= {"secretsmanager:GetSecretValue": {"ApproverHmacSecret"}, "ssm:GetParameter": {POINTERS}}
    if service == "deployer":
        grants |= {
            "ssm:GetParameter": {POINTERS},
            "ssm:PutParameter": {POINTERS},
            "s3:GetObject": {ARTIFACT_OBJECTS},
            **{
                f"sagemaker:{action}": set(SAGEMAKER)
                for action in (
                    "CreateModel",
                    "DescribeModel",
                    "CreateEndpointConfig",
                    "DescribeEndpointConfig",
                    "CreateEndpoint",
                    "UpdateEndpoint",
                    "DescribeEndpoint",
                    "AddTags",
                )
            },
            "ecs:RegisterTaskDefinition": {"*"},
            "ecs:DescribeTaskDefinition": {"*"},
            "ecs:UpdateService": {
                "arn:${AWS::Partition}:ecs:${AWS::Region}:${AWS::AccountId}:service/${ServingEcsClusterName}/*"
            },
            "ecs:DescribeServices": {
                "arn:${AWS::Partition}:ecs:${AWS::Region}:${AWS::AccountId}:service/${ServingEcsClusterName}/*"
            },
            "iam:PassRole": {"SageMakerExecutionRoleArn", "ServingTaskRoleArns"},
        }
    if service == "notifier":
        grants |= {
            "sns:Publish": {"NotificationsTopic"},
            "ses:SendEmail": {
                "arn:${AWS::Partition}:ses:${AWS::Region}:${AWS::AccountId}:identity/${NotificationEmailIdentity}"
            },
            "ses:SendRawEmail": {
                "arn:${AWS::Partition}:ses:${AWS::Region}:${AWS::AccountId}:identity/${NotificationEmailIdentity}"
            },
        }
    return grants


@cache
def template() -> dict[str, Any]:
    return cfn_yaml.load(str(TEMPLATE))


def resources() -> dict[str, Any]:
    return template()["Resources"]


def symbol(value: Any) -> str:
    """A template expression as a short, readable string."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and len(value) == 1:
        ((key, arg),) = value.items()
        if key == "Ref":
            return str(arg)
        if key == "Fn::GetAtt":
            return ".".join(arg) if isinstance(arg, list) else str(arg)
        if key == "Fn::Sub" and isinstance(arg, str):
            return arg
    raise AssertionError(f"unexpected expression in a policy: {value!r}")


def branches(node: Any) -> list[Any]:
    """Every value an item can take: both sides of Fn::If, AWS::NoValue dropped."""
    if isinstance(node, dict) and list(node) == ["Fn::If"]:
        return [v for side in node["Fn::If"][1:] for v in branches(side)]
    if node == {"Ref": "AWS::NoValue"}:
        return []
    return [node]


def as_list(value: Any) -> list[Any]:
    return [v for item in (value if isinstance(value, list) else [value]) for v in branches(item)]


def statements(role: str) -> list[dict[str, Any]]:
    found = []
    for policy in resources()[role]["Properties"].get("Policies", []):
        for statement in policy["PolicyDocument"]["Statement"]:
            found.extend(branches(statement))
    return found


def grants(role: str) -> dict[str, set[str]]:
    result: dict[str, set[str]] = defaultdict(set)
    for statement in statements(role):
        for action in as_list(statement["Action"]):
            result[action] |= {symbol(r) for r in as_list(statement["Resource"])}
    return dict(result)


# ---- lint ------------------------------------------------------------------------------------------


def test_cfn_lint_clean() -> None:
    done = subprocess.run([tool("cfn-lint"), str(TEMPLATE)], check=False, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


# ---- IAM: least privilege --------------------------------------------------------------------------


@pytest.mark.parametrize("service", SERVICES)
def test_task_role_grants_exactly_what_the_service_needs(service: str) -> None:
    assert grants(f"{C(service)}TaskRole") == expected_grants(service)


@pytest.mark.parametrize("service", SERVICES)
def test_task_role_statements_are_narrow(service: str) -> None:
    for statement in statements(f"{C(service)}TaskRole"):
        assert statement["Effect"] == "Allow"
        assert not {"NotAction", "NotResource", "NotPrincipal"} & set(statement), statement
        for action in as_list(statement["Action"]):
            assert re.fullmatch(r"[a-z0-9-]+:[A-Za-z]+", action), f"no wildcard actions: {action}"
            if "*" in {symbol(r) for r in as_list(statement["Resource"])}:
                assert action in NO_RESOURCE_LEVEL, f"{action} on every resource"
        if "iam:PassRole" in as_list(statement["Action"]):
            assert "iam:PassedToService" in statement["Condition"]["StringEquals"], (
                "PassRole only to a named service"
            )


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_touches_no_other_services_queue(service: str) -> None:
    touched = {r for resources_ in grants(f"{C(service)}TaskRole").values() for r in resources_}
    for other in SERVICES:
        if other != service:
            assert not {f"{C(other)}Queue.Arn", f"{C(other)}DeadLetterQueue.Arn"} & touched


def test_only_the_deployer_writes_deployment_pointers() -> None:
    writers = {s for s in SERVICES if "ssm:PutParameter" in grants(f"{C(s)}TaskRole")}
    assert writers == {"deployer"}
    assert grants("DeployerTaskRole")["ssm:PutParameter"] == {POINTERS}


def test_only_emitting_services_publish_events() -> None:
    publishers = {s for s in SERVICES if "EventsTopic" in grants(f"{C(s)}TaskRole").get("sns:Publish", set())}
    assert publishers == {s for s, emits in EMITS.items() if emits}


@pytest.mark.parametrize("role", [f"{C(s)}TaskRole" for s in SERVICES] + ["ExecutionRole"])
def test_roles_are_assumable_by_ecs_tasks_of_this_account_only(role: str) -> None:
    (trust,) = resources()[role]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "ecs-tasks.amazonaws.com"}
    assert trust["Action"] == "sts:AssumeRole"
    assert trust["Condition"]["StringEquals"]["aws:SourceAccount"] == {"Ref": "AWS::AccountId"}
    assert "ManagedPolicyArns" not in resources()[role]["Properties"], "inline, reviewed policies only"


def test_execution_role_pulls_images_writes_logs_and_reads_only_the_injected_secrets() -> None:
    assert grants("ExecutionRole") == {
        "ecr:GetAuthorizationToken": {"*"},
        "ecr:BatchCheckLayerAvailability": {
            "arn:${AWS::Partition}:ecr:${AWS::Region}:${AWS::AccountId}:repository/${EcrRepositoryPrefix}/*"
        },
        "ecr:BatchGetImage": {
            "arn:${AWS::Partition}:ecr:${AWS::Region}:${AWS::AccountId}:repository/${EcrRepositoryPrefix}/*"
        },
        "ecr:GetDownloadUrlForLayer": {
            "arn:${AWS::Partition}:ecr:${AWS::Region}:${AWS::AccountId}:repository/${EcrRepositoryPrefix}/*"
        },
        "logs:CreateLogStream": {"InitLogGroup.Arn", *(f"{C(s)}LogGroup.Arn" for s in SERVICES)},
        "logs:PutLogEvents": {"InitLogGroup.Arn", *(f"{C(s)}LogGroup.Arn" for s in SERVICES)},
        "secretsmanager:GetSecretValue": {
            "DatabaseMasterSecret",
            "DatabaseMasterSecretArn",
            "ApproverTokensSecret",
            "NotifierWebhookSecretArn",
            *(f"{C(s)}DatabaseSecret" for s in SERVICES),
            *(f"{C(s)}DatabaseUrlSecret" for s in SERVICES),
        },
    }


def test_the_least_privilege_check_catches_a_broader_policy() -> None:
    """Guards the tests above: a wildcard, or another service's queue, must not pass."""
    role = json.loads(json.dumps(resources()["NotifierTaskRole"]))
    role["Properties"]["Policies"][0]["PolicyDocument"]["Statement"].append(
        {
            "Effect": "Allow",
            "Action": "sqs:ReceiveMessage",
            "Resource": {"Fn::GetAtt": ["DeployerQueue", "Arn"]},
        }
    )
    resources()["BrokenRole"] = role
    try:
        assert grants("BrokenRole") != expected_grants("notifier")
    finally:
        del resources()["BrokenRole"]


# ---- the bus agrees with shared/topology.py and shared/infra.py --------------------------------------


def test_every_consumer_has_a_queue_dlq_and_filtered_subscription() -> None:
    subscribed = {
        r["Properties"]["Endpoint"]["Fn::GetAtt"][0]
        for r in resources().values()
        if r["Type"] == "AWS::SNS::Subscription"
    }
    assert subscribed == {f"{C(s)}Queue" for s in CONSUMES}


@pytest.mark.parametrize("service", SERVICES)
def test_queue_names_and_settings_follow_topology_and_infra(service: str) -> None:
    queue = resources()[f"{C(service)}Queue"]["Properties"]
    dlq = resources()[f"{C(service)}DeadLetterQueue"]["Properties"]
    assert queue["QueueName"] == {"Fn::Sub": f"${{Namespace}}-{service}"}
    assert dlq["QueueName"] == {"Fn::Sub": f"${{Namespace}}-{service}-dlq"}
    assert queue["VisibilityTimeout"] == infra.VISIBILITY_TIMEOUT
    assert dlq["MessageRetentionPeriod"] == infra.DLQ_RETENTION
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {
        "Fn::GetAtt": [f"{C(service)}DeadLetterQueue", "Arn"]
    }
    assert queue["RedrivePolicy"]["maxReceiveCount"] == {"Ref": "MaxReceiveCount"}
    assert (
        template()["Parameters"]["MaxReceiveCount"]["Default"]
        == ServiceSettings.model_fields["max_receive_count"].default
    )


@pytest.mark.parametrize("service", SERVICES)
def test_subscription_filters_what_topology_says(service: str) -> None:
    subscription = resources()[f"{C(service)}Subscription"]["Properties"]
    assert subscription["TopicArn"] == {"Ref": "EventsTopic"}
    assert subscription["Protocol"] == "sqs"
    assert subscription["RawMessageDelivery"] is True
    assert subscription["FilterPolicyScope"] == "MessageAttributes"
    assert subscription["FilterPolicy"] == filter_policy(service)


@pytest.mark.parametrize("service", SERVICES)
def test_only_the_events_topic_may_send_to_a_queue(service: str) -> None:
    (statement,) = resources()[f"{C(service)}QueuePolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert statement["Principal"] == {"Service": "sns.amazonaws.com"}
    assert statement["Action"] == "sqs:SendMessage"
    assert statement["Condition"] == {"ArnEquals": {"aws:SourceArn": {"Ref": "EventsTopic"}}}


def test_topic_and_bucket_names_follow_topology() -> None:
    assert resources()["EventsTopic"]["Properties"]["TopicName"] == {"Fn::Sub": "${Namespace}-events"}
    assert resources()["ArtifactBucket"]["Properties"]["BucketName"] == {"Fn::Sub": "${Namespace}-artifacts"}
    assert resources()["ApproverHmacSecret"]["Properties"]["Name"] == {
        "Fn::Sub": "${Namespace}/approver/hmac-key"
    }


# ---- ECS: the containers run what `make up` runs ------------------------------------------------------


def container(service: str) -> dict[str, Any]:
    (definition,) = resources()[f"{C(service)}TaskDefinition"]["Properties"]["ContainerDefinitions"]
    return definition


@pytest.mark.parametrize("service", SERVICES)
def test_task_definition_runs_the_service_like_make_up(service: str) -> None:
    definition = container(service)
    assert definition["Command"] == runenv.service_command(service)
    assert definition["PortMappings"] == [{"ContainerPort": DEFAULT_PORTS[service], "Protocol": "tcp"}]
    env = {e["Name"]: e["Value"] for e in definition["Environment"]}
    local_only = {
        "AWS_ENDPOINT_URL",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
    }  # LocalStack's, never on AWS
    for key, value in runenv.service_env(service, endpoint=runenv.LOCAL_ENDPOINT).items():
        if key in local_only:
            assert key not in env, f"{key} must not be set on AWS"
        elif key == "MODELGATE_NAMESPACE":
            assert env[key] == {"Ref": "Namespace"}
        elif key == "MODELGATE_LOG_LEVEL":
            assert env[key] == {"Ref": "LogLevel"}
        elif key == "AWS_DEFAULT_REGION":
            assert env[key] == {"Ref": "AWS::Region"}
        else:
            assert env[key] == value, key
    assert env["MODELGATE_HTTP_HOST"] == "0.0.0.0"
    assert definition["Secrets"][0]["Name"] == "MODELGATE_DATABASE_URL"
    assert resources()[f"{C(service)}TaskDefinition"]["Properties"]["TaskRoleArn"] == {
        "Fn::GetAtt": [f"{C(service)}TaskRole", "Arn"]
    }


@pytest.mark.parametrize("service", SERVICES)
def test_task_definition_health_check_and_graceful_stop(service: str) -> None:
    definition = container(service)
    drain = ServiceSettings.model_fields["drain_seconds"].default
    env = {e["Name"]: e["Value"] for e in definition["Environment"]}
    assert float(env["MODELGATE_DRAIN_SECONDS"]) == drain
    assert definition["StopTimeout"] >= drain + 5, "ECS must wait for the drain before SIGKILL"
    assert definition["StopTimeout"] <= 120, "Fargate's maximum"
    check = definition["HealthCheck"]["Command"]
    assert check[0] == "CMD" and "/healthz" in check[-1]
    assert definition["User"] == "10001"
    target_group = resources()[f"{C(service)}TargetGroup"]["Properties"]
    assert target_group["Port"] == DEFAULT_PORTS[service] and target_group["HealthCheckPath"] in (
        "/readyz",
        "/healthz",
    )


def test_database_init_task_creates_what_the_services_log_in_to() -> None:
    (init,) = resources()["DatabaseInitTaskDefinition"]["Properties"]["ContainerDefinitions"]
    env = {e["Name"]: e["Value"] for e in init["Environment"]}
    assert env["SERVICES"].split(",") == list(SERVICES)
    secrets = {s["Name"] for s in init["Secrets"]}
    assert {f"{s.upper()}_PASSWORD" for s in SERVICES} | {"MASTER_SECRET"} == secrets
    compile(init["Command"][2], "<db-init>", "exec")
    for service in SERVICES:
        url = resources()[f"{C(service)}DatabaseUrlSecret"]["Properties"]["SecretString"]["Fn::Sub"][0]
        assert url.startswith(f"postgresql+asyncpg://{service}:") and url.endswith(f"/{service}")
