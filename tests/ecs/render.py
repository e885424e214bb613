"""The ECS task definitions of infra/cloudformation.yaml, rendered into containers that run locally.

Pure functions, no AWS and no Docker: `Template(load(), parameters, stack)` evaluates the template's
intrinsic functions (Ref, Fn::Sub, Fn::GetAtt, Fn::If, Fn::Join, ... and the Conditions) against the
parameter values and a `Stack` of what is deployed: the physical ids of the bus resources (LocalStack's
CloudFormation stack), the ARNs of the secrets created in LocalStack, and the local stand-ins' names for
what LocalStack's free edition lacks (the load balancer's DNS name, the database's endpoint). Then:

- `task_containers(template)`: each task definition's container (image, command, user, environment,
  secrets as references, ports, health check, stop timeout) exactly as the template says;
- `secret_resources(template)`: the Secrets Manager secrets the template defines outside the bus (names,
  generated or literal values), which the harness creates in LocalStack;
- `listeners(template)`: the load balancer's port -> (container, port), from the listeners, target groups
  and ECS services;
- `compose_service(container, secrets)`: one container as a docker compose service, its `Secrets:`
  resolved into environment variables as ECS injects them, and only what LocalStack needs added
  (LOCALSTACK_ONLY: its endpoint and fake keys; on AWS the SDK's endpoints and the task role's
  credentials stand in their place).

Anything a rendered field refers to that the stack does not know fails with the name of what is missing:
a task definition that starts to depend on something new shows up here, not on AWS.
"""

from __future__ import annotations

import json
import re
import secrets as random_secrets
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

#: The environment the renderer adds for LocalStack, and nothing else differs from the task definitions.
LOCALSTACK_ONLY = {
    "AWS_ENDPOINT_URL": "http://localstack:4566",
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
}

NO_VALUE = object()  # Ref AWS::NoValue: the property or list item disappears
DYNAMIC_REFERENCE = re.compile(r"\{\{resolve:secretsmanager:(.+?):SecretString:([^:}]*)(?::[^}]*)?\}\}")


class Unresolved(LookupError):
    """The template refers to something the local stack does not provide."""


@dataclass
class Stack:
    """What is deployed: physical ids (what Ref returns) and attributes (what Fn::GetAtt returns)."""

    refs: dict[str, Any] = field(default_factory=dict)  # logical id -> Ref value
    attributes: dict[str, Any] = field(default_factory=dict)  # "Logical.Attr" -> value
    pseudo: dict[str, Any] = field(default_factory=dict)  # AWS::Region, AWS::AccountId, ...
    #: resolves a {{resolve:secretsmanager:<id>:SecretString:<key>}} dynamic reference; None: leave it
    dynamic: Callable[[str, str], str] | None = None


@dataclass(frozen=True)
class SecretRef:
    """A container's `Secrets:` entry: where ECS reads the value from at start."""

    arn: str  # the secret's ARN (or an SSM parameter's ARN / name)
    json_key: str = ""
    version_stage: str = ""
    version_id: str = ""

    @classmethod
    def parse(cls, value_from: str) -> SecretRef:
        """ValueFrom: a secret ARN, optionally `:json-key:version-stage:version-id`, or an SSM parameter."""
        if value_from.startswith("arn:") and ":secretsmanager:" in value_from:
            parts = value_from.split(":")
            if len(parts) < 7:
                raise ValueError(f"not a Secrets Manager ARN: {value_from}")
            rest = parts[7:] + ["", "", ""]
            return cls(":".join(parts[:7]), rest[0], rest[1], rest[2])
        return cls(value_from)

    @property
    def is_ssm(self) -> bool:
        return ":secretsmanager:" not in self.arn


@dataclass(frozen=True)
class HealthCheck:
    command: list[str]
    interval: int = 30
    timeout: int = 5
    retries: int = 3
    start_period: int = 0


@dataclass(frozen=True)
class TaskContainer:
    task: str  # the task definition's logical id, e.g. RegistrarTaskDefinition
    family: str
    name: str  # the container's Name
    image: str
    command: list[str] | None
    user: str | None
    environment: dict[str, str]
    secrets: dict[str, SecretRef]
    ports: list[int]
    health_check: HealthCheck | None
    stop_timeout: int | None
    essential: bool


@dataclass(frozen=True)
class SecretResource:
    logical_id: str
    name: str
    generated: bool  # GenerateSecretString; else a literal SecretString (maybe with dynamic references)


class Template:
    """A template with its parameter values and a stack to evaluate it against."""

    def __init__(self, template: dict[str, Any], parameters: Mapping[str, Any], stack: Stack) -> None:
        self.template = template
        self.stack = stack
        self.parameters = dict(parameters)
        unknown = set(self.parameters) - set(template.get("Parameters", {}))
        if unknown:
            raise ValueError(f"the template has no parameters {sorted(unknown)}")
        self._conditions: dict[str, bool] = {}

    @property
    def resources(self) -> dict[str, Any]:
        return self.template["Resources"]

    def parameter(self, name: str) -> Any:
        spec = self.template.get("Parameters", {})[name]
        if name in self.parameters:
            value = self.parameters[name]
        elif "Default" in spec:
            value = spec["Default"]
        else:
            raise Unresolved(f"parameter {name} has no default: give it a value")
        if (spec["Type"] == "CommaDelimitedList" or spec["Type"].startswith("List<")) and isinstance(value, str):
            return value.split(",") if value else [""]
        return str(value) if not isinstance(value, list) else value

    def condition(self, name: str) -> bool:
        if name not in self._conditions:
            self._conditions[name] = bool(self.evaluate(self.template["Conditions"][name]))
        return self._conditions[name]

    def exists(self, logical_id: str) -> bool:
        """False for a resource whose Condition is false."""
        condition = self.resources[logical_id].get("Condition")
        return condition is None or self.condition(condition)

    def ref(self, name: str) -> Any:
        if name == "AWS::NoValue":
            return NO_VALUE
        if name.startswith("AWS::"):
            if name not in self.stack.pseudo:
                raise Unresolved(f"pseudo parameter {name} is not set")
            return self.stack.pseudo[name]
        if name in self.template.get("Parameters", {}):
            return self.parameter(name)
        if name in self.stack.refs:
            return self.stack.refs[name]
        if name in self.resources:
            raise Unresolved(f"resource {name} ({self.resources[name]['Type']}) is not deployed locally")
        raise Unresolved(f"{name} is neither a parameter nor a resource of the template")

    def get_att(self, logical_id: str, attribute: str) -> Any:
        key = f"{logical_id}.{attribute}"
        if key in self.stack.attributes:
            return self.stack.attributes[key]
        raise Unresolved(f"{key} ({self.resources.get(logical_id, {}).get('Type', '?')}) is not deployed locally")

    def evaluate(self, node: Any) -> Any:
        """The value of a piece of template; NO_VALUE where AWS::NoValue removes it."""
        if isinstance(node, list):
            return [v for v in (self.evaluate(item) for item in node) if v is not NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            (key, value), = node.items()
            function = getattr(self, "_" + key.replace("::", "_").replace("Fn_", "fn_"), None)
            if key == "Ref" or key == "Condition" or key.startswith("Fn::"):
                if function is None:
                    raise ValueError(f"{key} is not supported by the renderer")
                return function(value)
        return {k: v for k, v in ((k, self.evaluate(v)) for k, v in node.items()) if v is not NO_VALUE}

    # ---- intrinsic functions ----

    def _Ref(self, name: str) -> Any:
        return self.ref(name)

    def _Condition(self, name: str) -> bool:
        return self.condition(name)

    def _fn_GetAtt(self, value: Any) -> Any:
        logical_id, attribute = value if isinstance(value, list) else value.split(".", 1)
        return self.get_att(logical_id, attribute)

    def _fn_Sub(self, value: Any) -> str:
        text, variables = (value, {}) if isinstance(value, str) else (value[0], self.evaluate(value[1]))

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in variables:
                return str(variables[name])
            if "." in name and not name.startswith("AWS::"):
                return str(self.get_att(*name.split(".", 1)))
            return str(self.ref(name))

        return re.sub(r"\$\{([^}]+)\}", replace, text)

    def _fn_If(self, value: list[Any]) -> Any:
        name, when_true, when_false = value
        return self.evaluate(when_true if self.condition(name) else when_false)

    def _fn_Equals(self, value: list[Any]) -> bool:
        left, right = (self.evaluate(v) for v in value)
        return str(left) == str(right)

    def _fn_Not(self, value: list[Any]) -> bool:
        return not self.evaluate(value[0])

    def _fn_And(self, value: list[Any]) -> bool:
        return all(self.evaluate(v) for v in value)

    def _fn_Or(self, value: list[Any]) -> bool:
        return any(self.evaluate(v) for v in value)

    def _fn_Join(self, value: list[Any]) -> str:
        separator, items = value
        return str(separator).join(str(i) for i in self.evaluate(items))

    def _fn_Select(self, value: list[Any]) -> Any:
        index, items = value
        return self.evaluate(items)[int(self.evaluate(index))]

    def _fn_Split(self, value: list[Any]) -> list[str]:
        separator, text = value
        return str(self.evaluate(text)).split(separator)


# ---- what the template asks for -----------------------------------------------------------------------


def task_containers(template: Template) -> list[TaskContainer]:
    """Every container of every ECS task definition (whose Condition holds), in template order."""
    found = []
    for logical_id, resource in template.resources.items():
        if resource["Type"] != "AWS::ECS::TaskDefinition" or not template.exists(logical_id):
            continue
        properties = resource["Properties"]
        family = template.evaluate(properties["Family"])
        for definition in properties["ContainerDefinitions"]:
            found.append(_container(template, logical_id, family, definition))
    return found


def _container(template: Template, task: str, family: str, definition: dict[str, Any]) -> TaskContainer:
    ev = template.evaluate
    environment = {e["Name"]: str(e["Value"]) for e in ev(definition.get("Environment", []))}
    secrets = {s["Name"]: SecretRef.parse(str(s["ValueFrom"])) for s in ev(definition.get("Secrets", []))}
    check = definition.get("HealthCheck")
    health = (
        HealthCheck(
            command=[str(c) for c in ev(check["Command"])],
            interval=int(check.get("Interval", 30)),
            timeout=int(check.get("Timeout", 5)),
            retries=int(check.get("Retries", 3)),
            start_period=int(check.get("StartPeriod", 0)),
        )
        if check
        else None
    )
    return TaskContainer(
        task=task,
        family=family,
        name=ev(definition["Name"]),
        image=ev(definition["Image"]),
        command=[str(c) for c in ev(definition["Command"])] if "Command" in definition else None,
        user=str(ev(definition["User"])) if "User" in definition else None,
        environment=environment,
        secrets=secrets,
        ports=[int(p["ContainerPort"]) for p in ev(definition.get("PortMappings", []))],
        health_check=health,
        stop_timeout=int(definition["StopTimeout"]) if "StopTimeout" in definition else None,
        essential=bool(definition.get("Essential", True)),
    )


def secret_resources(template: Template, *, only: Callable[[str, dict[str, Any]], bool]) -> list[SecretResource]:
    """The AWS::SecretsManager::Secret resources `only(logical_id, resource)` picks (whose Condition holds).

    Generated ones first: a literal SecretString may refer to a generated one ({{resolve:...}}), so create
    them in this order, each value from `secret_value` once the earlier ones' ARNs are in the stack.
    """
    picked = [
        (logical_id, resource)
        for logical_id, resource in template.resources.items()
        if resource["Type"] == "AWS::SecretsManager::Secret" and only(logical_id, resource) and template.exists(logical_id)
    ]
    picked.sort(key=lambda item: "SecretString" in item[1]["Properties"])
    return [
        SecretResource(
            logical_id=logical_id,
            name=template.evaluate(resource["Properties"]["Name"]),
            generated="SecretString" not in resource["Properties"],
        )
        for logical_id, resource in picked
    ]


def secret_value(template: Template, secret: SecretResource) -> str:
    """The SecretString to store: generated as GenerateSecretString says, or the template's own value with its
    dynamic references resolved (the stack's `dynamic` callback)."""
    properties = template.resources[secret.logical_id]["Properties"]
    if "SecretString" in properties:
        text = str(template.evaluate(properties["SecretString"]))
        if template.stack.dynamic is not None:
            text = DYNAMIC_REFERENCE.sub(lambda m: template.stack.dynamic(m.group(1), m.group(2)), text)  # type: ignore[misc]
        return text
    return generate_secret_string(properties.get("GenerateSecretString") or {})


def generate_secret_string(spec: dict[str, Any]) -> str:
    """GenerateSecretString: a random password, alone or under GenerateStringKey in SecretStringTemplate."""
    alphabet = string.ascii_letters + string.digits
    if not spec.get("ExcludePunctuation"):
        alphabet += "!#$%&()*+,-.:;<=>?[]^_{|}~"
    alphabet = "".join(c for c in alphabet if c not in spec.get("ExcludeCharacters", ""))
    password = "".join(random_secrets.choice(alphabet) for _ in range(int(spec.get("PasswordLength", 32))))
    if "SecretStringTemplate" in spec:
        value = json.loads(spec["SecretStringTemplate"])
        value[spec["GenerateStringKey"]] = password
        return json.dumps(value)
    return password


def listeners(template: Template) -> dict[int, tuple[str, int]]:
    """Load balancer port -> (container name, container port), through target groups and ECS services."""
    by_target_group: dict[str, tuple[str, int]] = {}
    for logical_id, resource in template.resources.items():
        if resource["Type"] == "AWS::ECS::Service" and template.exists(logical_id):
            for balanced in resource["Properties"].get("LoadBalancers", []):
                group = balanced["TargetGroupArn"]["Ref"]
                by_target_group[group] = (balanced["ContainerName"], int(balanced["ContainerPort"]))
    found = {}
    for logical_id, resource in template.resources.items():
        if resource["Type"] == "AWS::ElasticLoadBalancingV2::Listener" and template.exists(logical_id):
            properties = resource["Properties"]
            (action,) = [a for a in properties["DefaultActions"] if a["Type"] == "forward"]
            found[int(properties["Port"])] = by_target_group[action["TargetGroupArn"]["Ref"]]
    return found


# ---- containers as compose services -------------------------------------------------------------------


def compose_service(
    container: TaskContainer,
    secrets: Mapping[str, str],
    *,
    image: str | None = None,
    networks: Mapping[str, Any] | None = None,
    localstack: Mapping[str, str] = LOCALSTACK_ONLY,
) -> dict[str, Any]:
    """A docker compose service running `container` as ECS would: `secrets` are its Secrets' resolved
    values (name -> value), injected as environment variables; LOCALSTACK_ONLY is added on top."""
    missing = set(container.secrets) - set(secrets)
    if missing:
        raise Unresolved(f"{container.name}: no value for the secrets {sorted(missing)}")
    overlap = (set(container.environment) | set(container.secrets)) & set(localstack)
    if overlap:
        raise ValueError(f"{container.name} sets {sorted(overlap)} itself: the task definition must not")
    service: dict[str, Any] = {
        "image": image or container.image,
        "environment": {**container.environment, **{k: secrets[k] for k in container.secrets}, **localstack},
        "restart": "no",  # ECS replaces a failed task; here a failure must stay visible
    }
    if container.command is not None:
        service["command"] = container.command
    if container.user is not None:
        service["user"] = container.user
    if container.stop_timeout is not None:
        service["stop_grace_period"] = f"{container.stop_timeout}s"
    if container.health_check is not None:
        check = container.health_check
        service["healthcheck"] = {
            "test": check.command,
            "interval": f"{check.interval}s",
            "timeout": f"{check.timeout}s",
            "retries": check.retries,
            "start_period": f"{check.start_period}s",
        }
    if networks is not None:
        service["networks"] = dict(networks)
    return service


def escape_for_compose(service: dict[str, Any]) -> dict[str, Any]:
    """Compose interpolates `$` in a file's values: double each so a secret's `$` stays a `$`."""
    if isinstance(service, dict):
        return {k: escape_for_compose(v) for k, v in service.items()}  # type: ignore[return-value]
    if isinstance(service, list):
        return [escape_for_compose(v) for v in service]  # type: ignore[return-value]
    if isinstance(service, str):
        return service.replace("$", "$$")  # type: ignore[return-value]
    return service
