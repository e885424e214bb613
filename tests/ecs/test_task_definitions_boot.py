"""The ECS task definitions of infra/cloudformation.yaml boot: every task turns healthy, the journey passes.

tests/ecs/boot.py renders each task definition into a container on the images the compose stack builds,
against LocalStack with the template's bus deployed by its CloudFormation, PostgreSQL initialised by the
template's database init task, and the template's secrets injected as ECS injects them. Then, through the
load balancer's stand-in only: the admin token the approver stored in its secret, real principals,
register -> deployed to dev by the policy -> one approval -> deployed to test.

scripts/test-ecs.sh (`make test-ecs`) runs this file; the normal test run does not collect it
(tests/conftest.py). Without Docker or the images it fails, never skips.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import modelgate
from shared.topology import SERVICES, parameter_name
from tests.ecs.boot import Boot, images
from tests.helpers import wait_until

#: The boot (LocalStack, the bus stack, PostgreSQL, five tasks) counts in the first test's time: minutes on
#: a busy machine.
pytestmark = pytest.mark.timeout(1200)
WAIT = 180.0
PLACEHOLDER = "not yet written"  # AdminTokenSecret's SecretString until the approver's first start


@pytest.fixture(scope="module")
def boot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Boot]:
    if shutil.which("docker") is None or subprocess.run(["docker", "info"], capture_output=True, check=False).returncode != 0:
        pytest.fail("no Docker engine answers: run bash scripts/test-ecs.sh (it installs and starts one)")
    project = os.environ.get("MODELGATE_ECS_PROJECT") or f"mgecs{uuid.uuid4().hex[:8]}"
    booted = Boot(project=project, namespace=f"ecs{uuid.uuid4().hex[:8]}", work=tmp_path_factory.mktemp("ecs"))
    missing = [
        image for image in images()
        if subprocess.run(["docker", "image", "inspect", image], capture_output=True, check=False).returncode != 0
    ]
    if missing:
        pytest.fail(f"images {missing} are missing: build them first (docker compose build; scripts/test-ecs.sh does)")
    try:
        booted.up()
        yield booted
    except BaseException:
        print(booted.logs(60))
        raise
    finally:
        print("ECS boot timings (s):", {k: round(v, 1) for k, v in booted.timings.items()})
        booted.down()


def test_the_init_task_creates_every_service_database(boot: Boot) -> None:
    assert [line for line in boot.init_output.splitlines() if line.startswith("database ")] == [
        f"database {service}: ready" for service in SERVICES
    ]


def test_every_service_task_turns_healthy_by_its_own_health_check(boot: Boot) -> None:
    assert boot.health() == {service: "healthy" for service in SERVICES}
    for service in SERVICES:  # and answers through its listener on the load balancer
        assert httpx.get(f"{boot.urls[service]}/readyz", timeout=10).status_code == 200, service


def admin_token(boot: Boot) -> str:
    """The approver's first start stores the admin token in <ns>/approver/admin-token (docs/deploy-aws.md)."""
    secrets = boot.client("secretsmanager")

    def written() -> str | None:
        value = secrets.get_secret_value(SecretId=f"{boot.namespace}/approver/admin-token")["SecretString"]
        return None if value.startswith(PLACEHOLDER) else value

    return wait_until(written, timeout=60, interval=1)


def add_principal(boot: Boot, admin: str, name: str, **fields: list[str]) -> str:
    response = httpx.post(f"{boot.urls['approver']}/v1/principals", json={"name": name, **fields},
                          headers={"Authorization": f"Bearer {admin}"}, timeout=15)
    assert response.status_code == 201, response.text
    return response.json()["token"]


def test_the_journey_passes_through_the_tasks(boot: Boot, tmp_path: Path) -> None:
    admin = admin_token(boot)
    suffix = uuid.uuid4().hex[:6]
    group = f"ecs-{suffix}"
    tokens = {
        "ana": add_principal(boot, admin, f"ana-{suffix}", roles=["registrant"], teams=[f"ml-{suffix}"]),
        "lee": add_principal(boot, admin, f"lee-{suffix}", roles=["viewer"], groups=["ml-leads"]),
    }
    urls = {f"{service}_url": boot.urls[service] for service in SERVICES}
    ana, lee = (modelgate.Client(token=tokens[who], namespace=boot.namespace, aws_endpoint=boot.endpoint, **urls)
                for who in ("ana", "lee"))
    model = tmp_path / "model.bin"
    model.write_bytes(b"a model, on the task definitions " + suffix.encode())
    started = time.monotonic()

    version = ana.register(group, file=model, metrics={"auc": 0.93})
    assert version.registered_by == f"ana-{suffix}"
    ana.wait(group, version.version, "dev", timeout=WAIT)  # dev: approved by the policy, deployed

    def pending():  # type: ignore[no-untyped-def]
        found = lee.approvals("pending", model_version_id=version.model_version_id)
        return next((a for a in found if a.stage == "test"), None)

    approval = wait_until(pending, timeout=60, interval=0.5)
    assert lee.approve(approval.approval_id, "fine on the holdout").status == "Approved"
    ana.wait(group, version.version, "test", timeout=WAIT)
    assert ana.live(group, "test").version == version.version
    pointer = boot.client("ssm").get_parameter(Name=parameter_name(group, "test"))["Parameter"]["Value"]
    assert f"{group}/{version.version}" in pointer
    print(f"journey register -> dev -> approved -> test through the tasks in {time.monotonic() - started:.1f} s")
    for client in (ana, lee):
        client.close()
