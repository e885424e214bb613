"""infra/cloudformation.yaml: cfn-lint clean, least-privilege IAM, and in step with the code.

The template is read with cfn-lint's own YAML loader, which understands the short tags (!Ref, !Sub,
!GetAtt, !If) and turns them into their long forms. Each IAM statement's resources are rendered as
short symbols (`RegistrarQueue.Arn`, `EventsTopic`, or the Fn::Sub text), so the expected policies
below read like the template itself. Statements under !If count with their condition true: a role is
checked for the most it can ever be granted.

The containers' environment is checked against modelgate/runenv.py and docker-compose.yml (everything but
LOCAL_ONLY_VARIABLES), and each service's settings class is loaded from it, with the template's defaults and
with every option set (a small evaluator of !Ref, !If, !Sub stands in for CloudFormation).
"""

from __future__ import annotations

import importlib
import json
import os
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
from tests.unit.test_compose import services as compose_services
from tests.unit.test_dockerfiles import tool

TEMPLATE = REPO_ROOT / "infra" / "cloudformation.yaml"

# Who publishes on the events topic (PRODUCT.md, "Shape"): the notifier emits nothing.
EMITS = {"registrar": True, "approver": True, "deployer": True, "notifier": False}

POINTERS = "arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:parameter/modelgate/*"
PUBLIC_KEYS = "arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:parameter/modelgate-signing/${Namespace}"
ARTIFACT_OBJECTS = "${ArtifactBucket.Arn}/*"
SAGEMAKER = [
    f"arn:${{AWS::Partition}}:sagemaker:${{AWS::Region}}:${{AWS::AccountId}}:{kind}/${{Namespace}}-*"
    for kind in ("model", "endpoint-config", "endpoint")
]
MODEL_PACKAGES = "arn:${AWS::Partition}:sagemaker:${AWS::Region}:${AWS::AccountId}:model-package/*"
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
        # the key shown to the approver when verifying a caller's credential (shared/secrets.py)
        "secretsmanager:GetSecretValue": {"ServiceKeySecret"},
        "ssm:GetParameter": {f"{PUBLIC_KEYS}/*"},  # every producer's public keys, to verify each event
        # the body of a dead letter too large for the DLQ (claim check, shared/bus.py)
        "s3:PutObject": {f"${{ArtifactBucket.Arn}}/dead-letters/${{Namespace}}-{service}/*"},
    }
    if EMITS[service]:  # its own signing key, and the one parameter listing its public keys
        grants["sns:Publish"] = {"EventsTopic"}
        grants["secretsmanager:GetSecretValue"] = {"ServiceKeySecret", f"{C(service)}SigningKeySecret"}
        grants["ssm:GetParameter"] = {f"{PUBLIC_KEYS}/*", f"{PUBLIC_KEYS}/{service}"}
        grants["ssm:PutParameter"] = {f"{PUBLIC_KEYS}/{service}"}
    if service == "registrar":
        bridge, bridge_dlq = "RegistrarSageMakerQueue.Arn", "RegistrarSageMakerDeadLetterQueue.Arn"
        grants |= {
            "s3:GetObject": {ARTIFACT_OBJECTS},
            "s3:GetObjectVersion": {ARTIFACT_OBJECTS},  # the pinned version's digest (shared/pins.py)
            "s3:PutObject": {ARTIFACT_OBJECTS, *grants["s3:PutObject"]},
            "s3:ListBucket": {"ArtifactBucket.Arn"},
            # the SageMaker bridge (SageMakerBridge=true): its own queue and DLQ, and the packages
            "sqs:GetQueueUrl": {queue, dlq, bridge, bridge_dlq},
            "sqs:ReceiveMessage": {queue, bridge},
            "sqs:DeleteMessage": {queue, bridge},
            "sqs:ChangeMessageVisibility": {queue, bridge},
            "sqs:SendMessage": {dlq, bridge_dlq},
            "sagemaker:DescribeModelPackage": {MODEL_PACKAGES},
            "sagemaker:UpdateModelPackage": {MODEL_PACKAGES},
        }
    if service == "approver":
        grants |= {
            # the decision-link key, the token pepper, and the admin token it writes on its first start
            "secretsmanager:GetSecretValue": {"ApproverHmacSecret", "TokenPepperSecret", "AdminTokenSecret", "ServiceKeySecret",
                                              "ApproverSigningKeySecret"},
            "secretsmanager:PutSecretValue": {"AdminTokenSecret"},
            "ssm:GetParameter": {POINTERS, *grants["ssm:GetParameter"]},
        }
    if service == "deployer":
        grants |= {
            "ssm:GetParameter": {POINTERS, *grants["ssm:GetParameter"]},
            "ssm:PutParameter": {POINTERS, *grants["ssm:PutParameter"]},
            "s3:GetObject": {ARTIFACT_OBJECTS},
            "s3:GetObjectVersion": {ARTIFACT_OBJECTS},  # checks and serves exactly the pinned version
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
            # stages in other accounts: only the roles named (infra/target-account.yaml makes them)
            "sts:AssumeRole": {"TargetAccountRoleArns"},
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
    writers = {s for s in SERVICES if POINTERS in grants(f"{C(s)}TaskRole").get("ssm:PutParameter", set())}
    assert writers == {"deployer"}
    assert grants("DeployerTaskRole")["ssm:PutParameter"] == {POINTERS, f"{PUBLIC_KEYS}/deployer"}


def test_each_producer_lists_only_its_own_public_keys() -> None:
    """The pointers' pattern /modelgate/* does not reach /modelgate-signing/...: no role writes another's keys."""
    for service in SERVICES:
        written = grants(f"{C(service)}TaskRole").get("ssm:PutParameter", set()) - {POINTERS}
        assert written == ({f"{PUBLIC_KEYS}/{service}"} if EMITS[service] else set())
    assert not POINTERS.rstrip("*").endswith("modelgate-")


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
    allow, deny = resources()[f"{C(service)}QueuePolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert allow["Principal"] == {"Service": "sns.amazonaws.com"}
    assert allow["Action"] == "sqs:SendMessage"
    assert allow["Condition"] == {"ArnEquals": {"aws:SourceArn": {"Ref": "EventsTopic"}}}
    # whatever a role's own policy grants: only the topic (or the operators' redrive role) sends
    assert (deny["Effect"], deny["Principal"], deny["Action"]) == ("Deny", "*", "sqs:SendMessage")
    assert deny["Resource"] == {"Fn::GetAtt": [f"{C(service)}Queue", "Arn"]}
    assert deny["Condition"]["ArnNotEquals"] == {"aws:SourceArn": {"Ref": "EventsTopic"}}
    assert deny["Condition"]["ArnNotLike"] == {"aws:PrincipalArn": {
        "Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:role/${Namespace}-operator*"}}


def test_only_the_sagemaker_rule_may_send_to_the_bridge_queue() -> None:
    """EventBridge (events.amazonaws.com), for the bridge's rule alone, as shared/infra.py provisions it."""
    allow, deny = resources()["RegistrarSageMakerQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"]
    rule = {"Fn::GetAtt": ["SageMakerModelPackageRule", "Arn"]}
    assert allow["Principal"] == {"Service": "events.amazonaws.com"} and allow["Action"] == "sqs:SendMessage"
    assert allow["Resource"] == {"Fn::GetAtt": ["RegistrarSageMakerQueue", "Arn"]}
    assert allow["Condition"] == {"ArnEquals": {"aws:SourceArn": rule}}
    assert (deny["Effect"], deny["Principal"], deny["Action"]) == ("Deny", "*", "sqs:SendMessage")
    assert deny["Condition"]["ArnNotEquals"] == {"aws:SourceArn": rule}
    provisioned = json.loads(infra.allow_rule("arn:queue", "arn:rule"))["Statement"]
    assert [(s["Principal"], s["Action"], s["Condition"]) for s in provisioned] == [
        ({"Service": "events.amazonaws.com"}, "sqs:SendMessage", {"ArnEquals": {"aws:SourceArn": "arn:rule"}})]


@pytest.mark.parametrize("groups", [[], ["fraud", "credit"]], ids=["any-group", "groups"])
def test_the_sagemaker_rule_matches_what_topology_says(groups: list[str]) -> None:
    from shared import topology

    rule = resources()["SageMakerModelPackageRule"]
    assert rule["Condition"] == "HasSageMakerBridge"
    params = parameters(SageMakerBridge="true", SageMakerBridgeGroups=",".join(groups))
    pattern = resolve(rule["Properties"]["EventPattern"], params)
    assert pattern == topology.sagemaker_event_pattern(groups)
    assert resolve(rule["Properties"]["Name"], params) == topology.sagemaker_rule_name(params["Namespace"])
    (target,) = rule["Properties"]["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": ["RegistrarSageMakerQueue", "Arn"]}
    queue = resources()["RegistrarSageMakerQueue"]["Properties"]
    dlq = resources()["RegistrarSageMakerDeadLetterQueue"]["Properties"]
    assert resolve(queue["QueueName"], params) == topology.sagemaker_queue_name(params["Namespace"])
    assert resolve(dlq["QueueName"], params) == topology.sagemaker_dlq_name(params["Namespace"])
    assert queue["VisibilityTimeout"] == infra.VISIBILITY_TIMEOUT and dlq["MessageRetentionPeriod"] == infra.DLQ_RETENTION


@pytest.mark.parametrize("service", [s for s in SERVICES if EMITS[s]])
def test_each_producer_alone_reads_its_signing_key(service: str) -> None:
    from shared.topology import signing_key_secret_name

    secret = resources()[f"{C(service)}SigningKeySecret"]
    assert secret["Properties"]["Name"]["Fn::Sub"].replace("${Namespace}", "ns") == signing_key_secret_name("ns", service)
    assert secret["Metadata"] == {"modelgate": "bus"}, "LocalStack gets it too"
    readers = {other for other in SERVICES
               if f"{C(service)}SigningKeySecret" in grants(f"{C(other)}TaskRole").get("secretsmanager:GetSecretValue", set())}
    assert readers == {service}


def test_topic_and_bucket_names_follow_topology() -> None:
    assert resources()["EventsTopic"]["Properties"]["TopicName"] == {"Fn::Sub": "${Namespace}-events"}
    assert resources()["ArtifactBucket"]["Properties"]["BucketName"] == {"Fn::Sub": "${Namespace}-artifacts"}
    # Versioned, like shared.infra's: an overwritten artifact keeps the version a registration pinned.
    assert resources()["ArtifactBucket"]["Properties"]["VersioningConfiguration"] == {"Status": "Enabled"}
    assert resources()["ApproverHmacSecret"]["Properties"]["Name"] == {
        "Fn::Sub": "${Namespace}/approver/hmac-key"
    }


def test_approver_secrets_are_the_names_its_settings_default_to() -> None:
    """The approver reads its pepper and writes the admin token by name (shared/settings.py defaults)."""
    from services.approver.settings import ApproverSettings

    ns = "ns"
    settings = ApproverSettings(namespace=ns, database_url="sqlite+aiosqlite:///:memory:")
    pepper = resources()["TokenPepperSecret"]["Properties"]
    assert pepper["Name"] == {"Fn::Sub": "${Namespace}/approver/token-pepper"}
    assert pepper["Name"]["Fn::Sub"].replace("${Namespace}", ns) == settings.token_pepper_secret_name
    assert (
        pepper["GenerateSecretString"]
        == resources()["ApproverHmacSecret"]["Properties"]["GenerateSecretString"]
    )
    assert resources()["TokenPepperSecret"]["Metadata"] == {"modelgate": "bus"}, "LocalStack gets it too"
    service_key = resources()["ServiceKeySecret"]["Properties"]
    assert service_key["Name"] == {"Fn::Sub": "${Namespace}/internal/service-key"}
    assert ServiceSettings(namespace="ns", service="registrar").service_key_secret_name == "ns/internal/service-key"
    admin = resources()["AdminTokenSecret"]["Properties"]
    assert admin["Name"] == {"Fn::Sub": "${Namespace}/approver/admin-token"}
    assert isinstance(admin["SecretString"], str) and "GenerateSecretString" not in admin, "a placeholder"
    env = environment("approver")
    assert env["MODELGATE_ADMIN_TOKEN_FILE"] == "none"
    assert env["MODELGATE_ADMIN_TOKEN_SECRET_NAME"] == admin["Name"]
    assert not {"MODELGATE_APPROVER_TOKENS", "MODELGATE_APPROVER_GROUPS"} & (set(env) | secrets("approver"))
    assert "ApproverGroups" not in template()["Parameters"]


@pytest.mark.parametrize("service", SERVICES)
def test_every_service_verifies_credentials_with_the_approver_behind_the_load_balancer(service: str) -> None:
    env = environment(service)
    assert env["MODELGATE_APPROVER_URL"] == lb_url("approver")
    assert env["MODELGATE_TRUST_FORWARDED_HEADERS"] == "true"


# ---- ECS: the containers run what `make up` runs ------------------------------------------------------


def container(service: str) -> dict[str, Any]:
    (definition,) = resources()[f"{C(service)}TaskDefinition"]["Properties"]["ContainerDefinitions"]
    return definition


def environment(service: str) -> dict[str, Any]:
    """name -> value of the container's plain variables, those under Fn::If included (either branch)."""
    return {e["Name"]: e["Value"] for e in as_list(container(service)["Environment"])}


def secrets(service: str) -> set[str]:
    return {s["Name"] for s in as_list(container(service).get("Secrets", []))}


#: What `make up` and docker-compose.yml set that the task definitions must not: LocalStack's endpoint and
#: fake keys (on AWS the SDK's own endpoints and the task role's credentials).
LOCAL_ONLY_VARIABLES = {"AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}


@pytest.mark.parametrize("service", SERVICES)
def test_task_definition_runs_the_service_like_make_up(service: str) -> None:
    definition = container(service)
    assert definition["Command"] == runenv.service_command(service)
    assert definition["PortMappings"] == [{"ContainerPort": DEFAULT_PORTS[service], "Protocol": "tcp"}]
    env = environment(service)
    for key, value in runenv.service_env(service, endpoint=runenv.LOCAL_ENDPOINT).items():
        if key in LOCAL_ONLY_VARIABLES:
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
    env = environment(service)
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


@pytest.mark.parametrize("service", SERVICES)
def test_task_definition_sets_every_variable_the_container_gets_in_compose(service: str) -> None:
    """Compose gives each container runenv's environment plus the container-network extras (the approver's
    sibling URLs, ...): the task definition sets each of them too, but for LOCAL_ONLY_VARIABLES."""
    in_compose = set(compose_services()[service]["environment"])
    on_aws = set(environment(service)) | secrets(service)
    assert in_compose - LOCAL_ONLY_VARIABLES - on_aws == set(), (
        "compose sets it, the task definition does not"
    )
    assert not LOCAL_ONLY_VARIABLES & on_aws


def settings_class(service: str) -> type[ServiceSettings]:
    return getattr(importlib.import_module(f"services.{service}.settings"), f"{C(service)}Settings")


def lb_url(service: str) -> dict[str, str]:
    return {"Fn::Sub": f"http://${{LoadBalancer.DNSName}}:{DEFAULT_PORTS[service]}"}


@pytest.mark.parametrize("service", SERVICES)
def test_sibling_urls_are_the_load_balancers_listeners(service: str) -> None:
    """A service reads another's URL (a settings field, or the console's MODELGATE_<SERVICE>_URL): it gets
    that service's listener on the load balancer, as MODELGATE_PUBLIC_URL is its own."""
    env = environment(service)
    assert env["MODELGATE_PUBLIC_URL"] == lb_url(service)
    fields = {f"{other}_url" for other in SERVICES} & set(settings_class(service).model_fields)
    assert {f"MODELGATE_{f.upper()}" for f in fields} <= set(env), "a sibling URL setting is not set"
    for other in SERVICES:
        if f"MODELGATE_{other.upper()}_URL" in env:
            assert env[f"MODELGATE_{other.upper()}_URL"] == lb_url(other)


# ---- the services' settings load from what the task definitions give them ----------------------------

NO_VALUE = object()
#: Stand-ins for what CloudFormation knows only at deploy time.
DEPLOY_TIME = {
    "AWS::Region": "eu-west-1",
    "AWS::AccountId": "123456789012",
    "LoadBalancer.DNSName": "lb.example",
}


def resolve(node: Any, params: dict[str, Any]) -> Any:
    """Evaluates the few intrinsic functions the containers' environment and the rules use."""
    if isinstance(node, list):
        return [v for v in (resolve(item, params) for item in node) if v is not NO_VALUE]
    if not isinstance(node, dict):
        return node
    if len(node) == 1:
        ((key, arg),) = node.items()
        if key == "Ref":
            return NO_VALUE if arg == "AWS::NoValue" else DEPLOY_TIME.get(arg, params.get(arg))
        if key == "Fn::If":
            condition = resolve(template()["Conditions"][arg[0]], params)
            return resolve(arg[1] if condition else arg[2], params)
        if key == "Fn::Sub" and isinstance(arg, str):
            return re.sub(r"\$\{([^}]+)\}", lambda m: str(DEPLOY_TIME.get(m[1], params.get(m[1]))), arg)
        if key == "Fn::Equals":
            return resolve(arg[0], params) == resolve(arg[1], params)
        if key == "Fn::Not":
            return not resolve(arg[0], params)
        if key == "Fn::Join":
            return arg[0].join(resolve(arg[1], params))
    resolved = {k: resolve(v, params) for k, v in node.items()}
    return {k: v for k, v in resolved.items() if v is not NO_VALUE}  # a property set to AWS::NoValue is absent


def parameters(**overrides: str) -> dict[str, Any]:
    values = {name: str(spec.get("Default", "")) for name, spec in template()["Parameters"].items()}
    values |= overrides
    for name, spec in template()["Parameters"].items():
        if spec["Type"] == "CommaDelimitedList":
            values[name] = values[name].split(",")
    return values


def aws_environment(service: str, params: dict[str, Any]) -> dict[str, str]:
    """The container's environment as ECS would start it; injected secrets get plausible values."""
    env = {e["Name"]: str(e["Value"]) for e in resolve(container(service)["Environment"], params)}
    for secret in resolve(container(service).get("Secrets", []), params):
        env[secret["Name"]] = "{}"  # a webhook URL or a database URL just below
    if "MODELGATE_WEBHOOK_URL" in env:
        env["MODELGATE_WEBHOOK_URL"] = "https://hooks.example/x"
    env["MODELGATE_DATABASE_URL"] = "postgresql+asyncpg://user:password@db:5432/x"
    return env


ALL_OPTIONS = {
    "DeployTargets": '{"test": "ecs", "prod": "sagemaker"}',
    "SageMakerExecutionRoleArn": "arn:aws:iam::123456789012:role/sagemaker-models",
    "SageMakerImageUri": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/serving:1",
    "SageMakerInstanceType": "ml.c5.xlarge",
    "SageMakerInstanceCount": "2",
    "ServingEcsClusterName": "serving",
    "ServingEcsServiceName": "serve-{group}-{stage}",
    "ServingEcsContainerName": "model",
    "ServingEcsEndpointUrl": "https://{group}-{stage}.models.example.com",
    "ServingTaskRoleArns": "arn:aws:iam::123456789012:role/serve-task,arn:aws:iam::123456789012:role/serve-exec",
    "TargetAccountRoleArns": "arn:aws:iam::222222222222:role/modelgate-deployer",
    "NotificationEmailIdentity": "modelgate@example.com",
    "NotifierWebhookSecretArn": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:modelgate-webhook",
    "OidcIssuer": "https://login.example.com/realms/acme",
    "OidcAudience": "modelgate-prod",
    "OidcJwksUrl": "https://login.example.com/realms/acme/protocol/openid-connect/certs",
    "SageMakerBridge": "true",
    "SageMakerBridgeGroups": "fraud-detector,credit",
}


@pytest.mark.parametrize("options", [{}, ALL_OPTIONS], ids=["defaults", "all-options"])
@pytest.mark.parametrize("service", SERVICES)
def test_service_settings_load_from_the_task_definition(
    service: str, options: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in list(os.environ):
        if key.startswith(("MODELGATE_", "AWS_")):
            monkeypatch.delenv(key)
    for key, value in aws_environment(service, parameters(**options)).items():
        monkeypatch.setenv(key, value)
    settings: Any = settings_class(service)()  # validation included: the deployer's target checks
    assert settings.aws_region == "eu-west-1" and settings.public_url.startswith("http://lb.example:")
    assert settings.approver_url == "http://lb.example:8082" and settings.trust_forwarded_headers is True
    if service == "approver":
        assert settings.console_url == "http://lb.example:8082/console"
        assert (settings.admin_token_file, settings.admin_token_secret_name) == (
            "none",
            "modelgate/approver/admin-token",
        )
        assert settings.token_pepper_secret_name == "modelgate/approver/token-pepper"
        assert settings.oidc_audience == options.get("OidcAudience", "modelgate")
        assert settings.oidc_issuer == options.get("OidcIssuer", "")
        assert settings.oidc_jwks_url == options.get("OidcJwksUrl", "")
    if service in ("registrar", "approver"):
        assert settings.sagemaker_bridge is bool(options)
    if service == "registrar":
        assert settings.sagemaker_groups == (["fraud-detector", "credit"] if options else [])
    if service == "notifier":
        assert settings.deployer_url == "http://lb.example:8083"
        assert settings.email_sender == (options.get("NotificationEmailIdentity") or None)
        assert (settings.webhook_url is not None) == bool(options)
    if service == "deployer" and options:
        assert settings.targets == {"test": "ecs", "prod": "sagemaker"}
        assert (settings.sagemaker_role_arn, settings.sagemaker_image_uri) == (
            options["SageMakerExecutionRoleArn"],
            options["SageMakerImageUri"],
        )
        assert (settings.sagemaker_instance_type, settings.sagemaker_instance_count) == ("ml.c5.xlarge", 2)
        assert (
            settings.ecs_cluster,
            settings.ecs_service,
            settings.ecs_container,
            settings.ecs_endpoint_url,
        ) == (
            "serving",
            "serve-{group}-{stage}",
            "model",
            options["ServingEcsEndpointUrl"],
        )
    if service == "deployer" and not options:
        defaults = settings_class("deployer").model_fields
        assert settings.targets == {} and settings.ecs_container is None and settings.ecs_endpoint_url is None
        assert settings.ecs_service == defaults["ecs_service"].default
        assert settings.sagemaker_instance_type == defaults["sagemaker_instance_type"].default


def rules_broken(**options: str) -> list[str]:
    params = parameters(**options)
    return [
        name
        for name, rule in template().get("Rules", {}).items()
        if resolve(rule.get("RuleCondition", True), params)
        and not all(resolve(a["Assert"], params) for a in rule["Assertions"])
    ]


def test_a_sagemaker_role_without_a_serving_image_is_refused_before_deploying() -> None:
    assert rules_broken() == [] and rules_broken(**ALL_OPTIONS) == []
    assert rules_broken(SageMakerExecutionRoleArn=ALL_OPTIONS["SageMakerExecutionRoleArn"]) == [
        "SageMakerNeedsAnImage"
    ]


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
