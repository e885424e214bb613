"""tests/ecs/render.py: the template's task definitions as containers, with no Docker and no AWS.

The boot test (tests/ecs, `make test-ecs`) runs what this renders; here the rendering itself: every
intrinsic function resolved against parameters and a stack, Secrets kept as references until the
harness resolves them, only LocalStack's endpoint and keys added, and a clear error for anything the
local stack does not provide.
"""

from __future__ import annotations

import json

import pytest

from modelgate import runenv
from shared.topology import DEFAULT_PORTS, SERVICES
from tests.ecs import render
from tests.ecs.boot import PARAMETERS, bus_template_module, is_bus, local_image

ACCOUNT = "000000000000"


def arn(logical_id: str) -> str:
    return f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:{logical_id}-AbCdEf"


@pytest.fixture(scope="module")
def template() -> dict:
    return bus_template_module().load()


def stack(template: dict, **attributes: str) -> render.Stack:
    refs = {name: arn(name) for name, r in template["Resources"].items() if r["Type"].startswith("AWS::SecretsManager")}
    return render.Stack(
        refs=refs,
        attributes=attributes or {"LoadBalancer.DNSName": "lb.example", "Database.Endpoint.Address": "db.example",
                                  "Database.Endpoint.Port": "5432"},
        pseudo={"AWS::Region": "eu-west-1", "AWS::AccountId": ACCOUNT},
    )


def containers(template: dict, **parameters: str) -> dict[str, render.TaskContainer]:
    tpl = render.Template(template, {"Namespace": "acme", **PARAMETERS, **parameters}, stack(template))
    return {c.name: c for c in render.task_containers(tpl)}


def test_each_service_task_is_rendered_as_the_template_says(template: dict) -> None:
    rendered = containers(template)
    assert set(rendered) == {*SERVICES, "db-init"}
    for service in SERVICES:
        c = rendered[service]
        assert c.family == f"acme-{service}"
        assert c.image == f"{ACCOUNT}.dkr.ecr.eu-west-1.amazonaws.com/modelgate/{service}:local"
        assert local_image(c.image) == f"modelgate/{service}:local"  # the tag the compose stack builds
        assert c.command == runenv.service_command(service)
        assert c.user == "10001" and c.ports == [DEFAULT_PORTS[service]] and c.stop_timeout == 30
        assert c.environment["MODELGATE_NAMESPACE"] == "acme"
        assert c.environment["AWS_DEFAULT_REGION"] == "eu-west-1"
        assert c.environment["MODELGATE_APPROVER_URL"] == "http://lb.example:8082"
        assert c.environment["MODELGATE_PUBLIC_URL"] == f"http://lb.example:{DEFAULT_PORTS[service]}"
        assert c.secrets == {"MODELGATE_DATABASE_URL": render.SecretRef(arn(f"{service.capitalize()}DatabaseUrlSecret"))}
        assert c.health_check and c.health_check.command[0] == "CMD" and "/healthz" in c.health_check.command[-1]
        assert (c.health_check.interval, c.health_check.retries, c.health_check.start_period) == (15, 3, 60)
        assert not set(render.LOCALSTACK_ONLY) & set(c.environment)


def test_the_init_task_reads_the_attached_master_secret_and_one_key_of_each_login(template: dict) -> None:
    init = containers(template)["db-init"]
    assert init.command[:2] == ["python", "-c"] and init.health_check is None
    assert init.environment == {"SERVICES": ",".join(SERVICES)}
    assert init.secrets["MASTER_SECRET"] == render.SecretRef(arn("DatabaseSecretAttachment"))
    assert init.secrets["REGISTRAR_PASSWORD"] == render.SecretRef(arn("RegistrarDatabaseSecret"), "password")


def test_conditions_add_and_remove_variables(template: dict) -> None:
    plain = containers(template)
    assert "MODELGATE_OIDC_ISSUER" not in plain["approver"].environment
    assert "MODELGATE_WEBHOOK_URL" not in plain["notifier"].secrets
    webhook = arn("Webhook")
    chosen = containers(template, OidcIssuer="https://login.example.com", NotifierWebhookSecretArn=webhook,
                        DatabaseMasterSecretArn=arn("Existing"))
    assert chosen["approver"].environment["MODELGATE_OIDC_ISSUER"] == "https://login.example.com"
    assert chosen["notifier"].secrets["MODELGATE_WEBHOOK_URL"] == render.SecretRef(webhook)
    assert chosen["db-init"].secrets["MASTER_SECRET"] == render.SecretRef(arn("Existing"))  # an existing server


def test_what_the_local_stack_lacks_is_named(template: dict) -> None:
    tpl = render.Template(template, {"Namespace": "acme", **PARAMETERS},
                          stack(template, **{"Database.Endpoint.Address": "db"}))
    with pytest.raises(render.Unresolved, match=r"LoadBalancer\.DNSName"):
        render.task_containers(tpl)
    with pytest.raises(ValueError, match="no parameters"):
        render.Template(template, {"Nope": "x"}, stack(template))


def test_secrets_outside_the_bus_are_created_generated_first_with_their_references_resolved(template: dict) -> None:
    tpl = render.Template(template, {"Namespace": "acme", **PARAMETERS}, stack(template))
    made = render.secret_resources(tpl, only=lambda logical_id, resource: not is_bus(logical_id, resource))
    names = [s.name for s in made]
    assert "acme/database/master" in names and "acme/approver/hmac-key" not in names  # the bus has that one
    first_literal = next(i for i, s in enumerate(made) if not s.generated)
    assert all(not s.generated for s in made[first_literal:])
    master = json.loads(render.secret_value(tpl, made[names.index("acme/database/master")]))
    assert master["username"] == "modelgate" and len(master["password"]) == 32 and master["password"].isalnum()

    logins = {arn("RegistrarDatabaseSecret"): json.dumps({"username": "registrar", "password": "pw$1"})}
    tpl.stack.dynamic = lambda secret_id, key: json.loads(logins[secret_id])[key]
    url = render.secret_value(tpl, made[names.index("acme/registrar/database-url")])
    assert url == "postgresql+asyncpg://registrar:pw$1@db.example:5432/registrar"


def test_the_listeners_route_each_port_to_its_service(template: dict) -> None:
    tpl = render.Template(template, {"Namespace": "acme", **PARAMETERS}, stack(template))
    assert render.listeners(tpl) == {DEFAULT_PORTS[s]: (s, DEFAULT_PORTS[s]) for s in SERVICES}


def test_a_container_as_compose_service_gets_its_secrets_as_variables_and_only_localstack_added(template: dict) -> None:
    registrar = containers(template)["registrar"]
    service = render.compose_service(registrar, {"MODELGATE_DATABASE_URL": "postgresql+asyncpg://r:p$w@db/r"},
                                     image="modelgate/registrar:local")
    env = service["environment"]
    assert set(env) == set(registrar.environment) | {"MODELGATE_DATABASE_URL"} | set(render.LOCALSTACK_ONLY)
    assert env["AWS_ENDPOINT_URL"] == "http://localstack:4566"
    assert service["healthcheck"] == {"test": registrar.health_check.command, "interval": "15s", "timeout": "5s",
                                      "retries": 3, "start_period": "60s"}
    assert service["user"] == "10001" and service["stop_grace_period"] == "30s"
    assert render.escape_for_compose(service)["environment"]["MODELGATE_DATABASE_URL"].endswith("r:p$$w@db/r")
    with pytest.raises(render.Unresolved, match="MODELGATE_DATABASE_URL"):
        render.compose_service(registrar, {})


def test_a_task_definition_setting_localstacks_endpoint_is_refused(template: dict) -> None:
    registrar = containers(template)["registrar"]
    leaky = render.TaskContainer(**{**registrar.__dict__, "environment": {**registrar.environment,
                                                                            "AWS_ENDPOINT_URL": "http://x"}})
    with pytest.raises(ValueError, match="must not"):
        render.compose_service(leaky, {"MODELGATE_DATABASE_URL": "x"})


@pytest.mark.parametrize(
    ("value_from", "expected"),
    [
        (arn("S"), render.SecretRef(arn("S"))),
        (arn("S") + ":password::", render.SecretRef(arn("S"), "password")),
        (arn("S") + ":url:AWSPREVIOUS:", render.SecretRef(arn("S"), "url", "AWSPREVIOUS")),
        ("arn:aws:ssm:eu-west-1:1:parameter/x", render.SecretRef("arn:aws:ssm:eu-west-1:1:parameter/x")),
    ],
)
def test_value_from_is_parsed_as_ecs_reads_it(value_from: str, expected: render.SecretRef) -> None:
    assert render.SecretRef.parse(value_from) == expected
