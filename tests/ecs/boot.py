"""Boots the ECS task definitions of infra/cloudformation.yaml locally, in containers, as ECS would run them.

One docker compose project (its own network; LocalStack and the load balancer on free ports of 127.0.0.1):

1. `localstack` (the compose stack's LocalStack image) and, in it, the template's bus deployed by
   LocalStack's CloudFormation (infra/bus_template.py, as tests/integration/test_cloudformation_localstack.py);
2. the template's other Secrets Manager secrets created in LocalStack as CloudFormation would (generated
   passwords, SecretString with its {{resolve:...}} references), the RDS instance's stand-in `database`
   (the compose stack's PostgreSQL image, master login from the generated `<ns>/database/master`), and the
   secret attachment that adds its host and port to that secret;
3. the database init task (`<ns>-db-init`) run to completion, as `aws ecs run-task` does in
   docs/deploy-aws.md step 4;
4. the four service tasks, each a container with the task definition's image, command, user, environment,
   Secrets (resolved from LocalStack into environment variables, as ECS injects them), health check, stop
   timeout, CPU and memory, and a `loadbalancer` that forwards each listener port to its service as the
   template's listeners and target groups say.

Only LocalStack differs from AWS: the renderer adds AWS_ENDPOINT_URL and fake keys (render.LOCALSTACK_ONLY).
What ECS, IAM and the load balancer do beyond that (task roles, awslogs, target-group health checks, TLS)
is not emulated. Images: the template's ECR URI <account>.dkr.ecr.<region>.amazonaws.com/<prefix>/<service>:<tag>
runs as <prefix>/<service>:<tag> with EcrRepositoryPrefix=modelgate and ImageTag=local, the tags the compose
stack builds (docker compose build).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from shared import infra
from shared.settings import REPO_ROOT
from tests.ecs import render

STACK_TIMEOUT = 180
LOADBALANCER = "loadbalancer"  # the load balancer's DNS name in the network (LoadBalancer.DNSName)
DATABASE = "database"  # the RDS instance's endpoint address (Database.Endpoint.Address)
PARAMETERS = {"EcrRepositoryPrefix": "modelgate", "ImageTag": "local", "VpcId": "vpc-local",
              "SubnetIds": "subnet-a,subnet-b"}
LB_SCRIPT = Path(__file__).with_name("loadbalancer.py")


def bus_template_module() -> Any:
    spec = importlib.util.spec_from_file_location("bus_template", REPO_ROOT / "infra" / "bus_template.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def compose_binary() -> str:
    beside = Path(sys.executable).with_name("docker-compose")
    return str(beside) if beside.exists() else shutil.which("docker-compose") or "docker-compose"


def local_image(uri: str) -> str:
    """The template's ECR image URI as the local tag: the repository path and tag, without the registry."""
    registry, _, path = uri.partition("/")
    if not (registry.endswith(".amazonaws.com") and ".dkr.ecr." in registry):
        raise ValueError(f"{uri} is not an ECR image URI")
    return path


def images() -> set[str]:
    """The local images the task definitions run (their Image fields, as local_image names them)."""
    template = bus_template_module().load()
    tpl = render.Template(template, {"Namespace": "images", **PARAMETERS},
                          render.Stack(pseudo={"AWS::Region": "us-east-1", "AWS::AccountId": "000000000000"}))
    return {
        local_image(tpl.evaluate(definition["Image"]))
        for resource in template["Resources"].values() if resource["Type"] == "AWS::ECS::TaskDefinition"
        for definition in resource["Properties"]["ContainerDefinitions"]
    }


def is_bus(logical_id: str, resource: dict[str, Any]) -> bool:
    return (resource.get("Metadata") or {}).get("modelgate") == "bus"


@dataclass
class Boot:
    """One booted set of task definitions; `up()` runs steps 1-4, `down()` removes every container."""

    project: str
    namespace: str
    work: Path
    log: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    endpoint: str = ""  # LocalStack on the host
    urls: dict[str, str] = field(default_factory=dict)  # service -> its listener on the host
    containers: list[render.TaskContainer] = field(default_factory=list)
    init_output: str = ""
    services: dict[str, Any] = field(default_factory=dict)  # the compose file's services, so far
    from_compose: dict[str, Any] = field(default_factory=dict)  # docker-compose.yml's services

    # ---- compose ----

    @property
    def compose_file(self) -> Path:
        return self.work / "ecs-compose.yml"

    def compose(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [compose_binary(), "-p", self.project, "-f", str(self.compose_file), *args]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(command[3:])} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
        return done

    def write(self) -> None:
        document = {"name": self.project, "services": self.services}
        self.compose_file.write_text(yaml.safe_dump(document, sort_keys=False))

    def step(self, name: str, started: float) -> None:
        self.timings[name] = time.monotonic() - started

    # ---- the steps ----

    def up(self) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        begun = time.monotonic()
        self.start_localstack()
        template = bus_template_module().load()
        stack = self.deploy_bus(template)
        tpl = render.Template(template, {"Namespace": self.namespace, **PARAMETERS}, stack)
        self.create_secrets(tpl)
        self.start_database(tpl)
        self.containers = render.task_containers(tpl)
        self.run_init_task(tpl)
        self.start_services(tpl)
        self.step("total", begun)

    def start_localstack(self) -> None:
        started = time.monotonic()
        compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
        localstack = dict(compose["services"]["localstack"])
        localstack["ports"] = ["127.0.0.1::4566"]
        self.services["localstack"] = localstack
        self.from_compose = compose["services"]
        self.write()
        self.compose("up", "-d", "--wait", "localstack")
        port = self.compose("port", "localstack", "4566").stdout.strip().rsplit(":", 1)[1]
        self.endpoint = f"http://127.0.0.1:{port}"
        self.step("localstack", started)

    def client(self, service: str) -> Any:
        return infra.boto_client(service, self.endpoint, region="us-east-1")

    def deploy_bus(self, template: dict[str, Any]) -> render.Stack:
        """Step 1: the bus, by LocalStack's CloudFormation; its resources' physical ids for the renderer."""
        started = time.monotonic()
        module = bus_template_module()
        cfn = self.client("cloudformation")
        name = f"{self.namespace}-bus"
        cfn.create_stack(StackName=name, TemplateBody=json.dumps(module.bus_template(template)),
                         Parameters=[{"ParameterKey": "Namespace", "ParameterValue": self.namespace}])
        deadline = time.monotonic() + STACK_TIMEOUT
        while True:
            (found,) = cfn.describe_stacks(StackName=name)["Stacks"]
            if not found["StackStatus"].endswith("_IN_PROGRESS"):
                break
            assert time.monotonic() < deadline, f"stack {name} still {found['StackStatus']} after {STACK_TIMEOUT} s"
            time.sleep(1)
        assert found["StackStatus"] == "CREATE_COMPLETE", [
            f"{e['LogicalResourceId']}: {e.get('ResourceStatusReason')}"
            for e in cfn.describe_stack_events(StackName=name)["StackEvents"] if "FAILED" in e["ResourceStatus"]
        ]
        refs = {r["LogicalResourceId"]: r["PhysicalResourceId"]
                for r in cfn.describe_stack_resources(StackName=name)["StackResources"]}
        outputs = {o["OutputKey"]: o["OutputValue"] for o in found.get("Outputs", [])}
        for key, output in template["Outputs"].items():  # what the outputs say wins over physical ids
            if key in outputs and set(output["Value"]) == {"Ref"}:
                refs[output["Value"]["Ref"]] = outputs[key]
        account = self.client("sts").get_caller_identity()["Account"]
        self.step("bus stack", started)
        return render.Stack(
            refs=refs,
            attributes={"LoadBalancer.DNSName": LOADBALANCER, "Database.Endpoint.Address": DATABASE,
                        "Database.Endpoint.Port": "5432"},
            pseudo={"AWS::Region": "us-east-1", "AWS::AccountId": account, "AWS::StackName": self.namespace,
                    "AWS::Partition": "aws", "AWS::URLSuffix": "amazonaws.com"},
            dynamic=self.resolve_dynamic,
        )

    def resolve_dynamic(self, secret_id: str, key: str) -> str:
        value = self.client("secretsmanager").get_secret_value(SecretId=secret_id)["SecretString"]
        return str(json.loads(value)[key]) if key else value

    def create_secrets(self, tpl: render.Template) -> None:
        """Step 2: the template's secrets outside the bus, as CloudFormation would create them."""
        started = time.monotonic()
        secrets = self.client("secretsmanager")
        for secret in render.secret_resources(tpl, only=lambda logical_id, resource: not is_bus(logical_id, resource)):
            arn = secrets.create_secret(Name=secret.name, SecretString=render.secret_value(tpl, secret))["ARN"]
            tpl.stack.refs[secret.logical_id] = arn
        self.step("secrets", started)

    def start_database(self, tpl: render.Template) -> None:
        """The RDS instance's stand-in, its master login from the master secret; then the attachment."""
        started = time.monotonic()
        master_arn = tpl.stack.refs["DatabaseMasterSecret"]
        secrets = self.client("secretsmanager")
        master = json.loads(secrets.get_secret_value(SecretId=master_arn)["SecretString"])
        postgres = dict(self.from_compose["postgres"])
        postgres.pop("volumes", None)  # no init script: the template's init task makes the databases
        postgres["environment"] = {"POSTGRES_USER": master["username"], "POSTGRES_PASSWORD": master["password"],
                                   "POSTGRES_DB": "postgres"}
        postgres["healthcheck"] = {**postgres["healthcheck"],
                                   "test": ["CMD", "pg_isready", "-h", "127.0.0.1", "-U", master["username"],
                                            "-d", "postgres"]}
        self.services[DATABASE] = postgres
        self.write()
        self.compose("up", "-d", "--wait", DATABASE)
        # AWS::SecretsManager::SecretTargetAttachment: RDS's host, port and engine join the master secret.
        master.update(host=DATABASE, port=5432, engine="postgres", dbInstanceIdentifier=f"{self.namespace}-postgres")
        secrets.put_secret_value(SecretId=master_arn, SecretString=json.dumps(master))
        tpl.stack.refs["DatabaseSecretAttachment"] = master_arn
        tpl.stack.refs["Database"] = f"{self.namespace}-postgres"
        self.step("database", started)

    def resolve_secrets(self, container: render.TaskContainer) -> dict[str, str]:
        """The container's Secrets as ECS injects them: the value, or one JSON key of it."""
        values = {}
        for name, ref in container.secrets.items():
            if ref.is_ssm:
                values[name] = self.client("ssm").get_parameter(Name=ref.arn, WithDecryption=True)["Parameter"]["Value"]
                continue
            extra = {"VersionStage": ref.version_stage} if ref.version_stage else {}
            if ref.version_id:
                extra["VersionId"] = ref.version_id
            value = self.client("secretsmanager").get_secret_value(SecretId=ref.arn, **extra)["SecretString"]
            values[name] = str(json.loads(value)[ref.json_key]) if ref.json_key else value
        return values

    def service_for(self, container: render.TaskContainer, tpl: render.Template) -> dict[str, Any]:
        service = render.compose_service(container, self.resolve_secrets(container),
                                         image=local_image(container.image))
        properties = tpl.resources[container.task]["Properties"]
        service["mem_limit"] = f"{int(tpl.evaluate(properties['Memory']))}m"  # Fargate's task memory
        if os.environ.get("MODELGATE_ECS_CPU_LIMIT") == "1":  # its CPU too (0.25 vCPU: slow on a busy machine)
            service["cpus"] = int(tpl.evaluate(properties["Cpu"])) / 1024
        return render.escape_for_compose(service)  # a `$` in a secret stays a `$`

    def run_init_task(self, tpl: render.Template) -> None:
        """Step 3: the database init task, to completion (exit code 0), before the services start."""
        started = time.monotonic()
        (init,) = [c for c in self.containers if c.task == "DatabaseInitTaskDefinition"]
        self.services[init.name] = self.service_for(init, tpl)
        self.write()
        done = self.compose("run", "--rm", "--no-deps", "-T", init.name, timeout=300, check=False)
        self.init_output = done.stdout
        assert done.returncode == 0, f"the database init task failed ({done.returncode}):\n{done.stdout}{done.stderr}"
        self.step("db-init task", started)

    def start_services(self, tpl: render.Template) -> None:
        """Step 4: the service tasks and the load balancer; returns when every task's health check passes."""
        started = time.monotonic()
        services = [c for c in self.containers if c.task != "DatabaseInitTaskDefinition"]
        for container in services:
            self.services[container.name] = self.service_for(container, tpl)
        routes = render.listeners(tpl)
        image = self.services[services[0].name]["image"]
        self.services[LOADBALANCER] = {
            "image": image,
            "user": "10001",
            "command": ["python", "-c", LB_SCRIPT.read_text().replace("$", "$$")],
            "environment": {"LISTENERS": ",".join(f"{port}={name}:{target}" for port, (name, target) in routes.items())},
            "ports": [f"127.0.0.1::{port}" for port in routes],
            "healthcheck": {"disable": True},
            "restart": "no",
        }
        self.write()
        self.compose("up", "-d", "--wait", "--no-recreate", *[c.name for c in services], LOADBALANCER, timeout=600)
        for port, (name, _) in routes.items():
            host_port = self.compose("port", LOADBALANCER, str(port)).stdout.strip().rsplit(":", 1)[1]
            self.urls[name] = f"http://127.0.0.1:{host_port}"
        self.step("service tasks healthy", started)

    # ---- looking and tearing down ----

    def health(self) -> dict[str, str]:
        """Container name -> its health status (docker inspect), for every service task."""
        found = {}
        for container in self.containers:
            if container.task == "DatabaseInitTaskDefinition":
                continue
            ids = self.compose("ps", "-q", container.name).stdout.split()
            assert ids, f"no container for {container.name}"
            state = json.loads(subprocess.run(["docker", "inspect", ids[0]], capture_output=True, text=True,
                                              check=True).stdout)[0]["State"]
            found[container.name] = (state.get("Health") or {}).get("Status", "no health check")
        return found

    def logs(self, tail: int = 40) -> str:
        return self.compose("logs", "--no-color", "--tail", str(tail), check=False).stdout

    def down(self) -> None:
        if self.compose_file.exists():
            self.compose("down", "-v", "--remove-orphans", "--timeout", "10", timeout=300, check=False)
