"""The journey against `docker compose up`, black-box: the four services, LocalStack and PostgreSQL in
containers, reached only through their published ports, with the CLI and the SDK a user has.

scripts/test-compose.sh (`make test-compose`) starts the stack and runs this file; the normal test run does
not collect it (tests/conftest.py). It needs the stack the script describes in the environment and fails,
never skips, without it:
  MODELGATE_COMPOSE_PROJECT   the compose project (docker compose -p), MODELGATE_COMPOSE_FILE its file
  MODELGATE_COMPOSE_VAR       the host directory mounted as the approver's var/ (its admin token file)
  MODELGATE_<SERVICE>_URL, AWS_ENDPOINT_URL: the published ports; MODELGATE_NAMESPACE: the stack's namespace.

Real principals: the admin token the approver wrote on its first start makes them with the CLI
(`modelgate principals add`); each then acts with its own token. The deployer container is killed (SIGKILL)
with a decision and a registration on its queue, and brought back: nothing is lost, every version ends
deployed exactly once per stage.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

import modelgate
from tests.helpers import wait_until

REQUIRED = ("MODELGATE_COMPOSE_PROJECT", "MODELGATE_COMPOSE_FILE", "MODELGATE_COMPOSE_VAR", "MODELGATE_REGISTRAR_URL",
            "MODELGATE_APPROVER_URL", "MODELGATE_DEPLOYER_URL", "AWS_ENDPOINT_URL")
WAIT = 240.0  # a killed deployer's message comes back after the queue's visibility timeout (60 s)


@pytest.fixture(scope="module")
def stack() -> dict[str, str]:
    missing = [name for name in REQUIRED if not os.environ.get(name)]
    if missing:
        pytest.fail(f"no compose stack described ({', '.join(missing)} unset): run bash scripts/test-compose.sh")
    return {name: os.environ[name] for name in REQUIRED}


def compose(stack: dict[str, str], *args: str) -> str:
    binary = Path(sys.executable).with_name("docker-compose")
    command = [str(binary) if binary.exists() else shutil.which("docker-compose") or "docker-compose",
               "-p", stack["MODELGATE_COMPOSE_PROJECT"], "-f", stack["MODELGATE_COMPOSE_FILE"], *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, f"{' '.join(command)}: {done.stdout}{done.stderr}"
    return done.stdout


def admin_token(stack: dict[str, str]) -> str:
    namespace = os.environ.get("MODELGATE_NAMESPACE", "modelgate")
    path = Path(stack["MODELGATE_COMPOSE_VAR"]) / f"{namespace}-admin.token"
    return wait_until(lambda: path.exists() and path.read_text().strip(), timeout=60)


def add_principal(admin: str, name: str, *options: str) -> str:
    """`modelgate principals add` as an admin would type it; returns the new principal's token."""
    cli = Path(sys.executable).with_name("modelgate")
    done = subprocess.run([str(cli), "principals", "add", name, *options, "--json"], capture_output=True, text=True,
                          env={**os.environ, "MODELGATE_TOKEN": admin}, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)["token"]


def pending(client: modelgate.Client, mvid: str, stage: str) -> modelgate.models.Approval | None:
    return next((a for a in client.approvals("pending", model_version_id=mvid) if a.stage == stage), None)


def test_the_journey_through_the_containers_survives_a_killed_deployer(stack, tmp_path) -> None:
    admin = admin_token(stack)
    suffix = uuid.uuid4().hex[:6]
    team, group = f"fraud-{suffix}", f"compose-{suffix}"
    tokens = {
        "ana": add_principal(admin, f"ana-{suffix}", "--role", "registrant", "--team", team),
        "lee": add_principal(admin, f"lee-{suffix}", "--group", "ml-leads"),
        "kim": add_principal(admin, f"kim-{suffix}", "--group", "model-risk"),
        "sam": add_principal(admin, f"sam-{suffix}", "--group", "model-risk"),
    }
    ana, lee, kim, sam = (modelgate.Client(token=tokens[who]) for who in ("ana", "lee", "kim", "sam"))
    model = tmp_path / "model.bin"
    model.write_bytes(b"a model, in containers " + suffix.encode())

    first = ana.register(group, file=model, metrics={"auc": 0.93})
    assert first.registered_by == f"ana-{suffix}"
    ana.wait(group, first.version, "dev", timeout=WAIT)  # dev: approved by the policy, deployed

    test = wait_until(lambda: pending(lee, first.model_version_id, "test"), timeout=60)
    started = time.monotonic()
    compose(stack, "kill", "-s", "SIGKILL", "deployer")  # mid-flow: what follows waits on its queue
    assert lee.approve(test.approval_id, "holds on the holdout").status == "Approved"
    second = ana.register(group, file=model, metrics={"auc": 0.95})
    compose(stack, "up", "-d", "--wait", "deployer")  # as `docker compose up -d` after a crash
    print(f"deployer killed and back, healthy, in {time.monotonic() - started:.0f} s")

    ana.wait(group, first.version, "test", timeout=WAIT)
    ana.wait(group, second.version, "dev", timeout=WAIT)
    prod = wait_until(lambda: pending(kim, first.model_version_id, "prod"), timeout=60)
    assert kim.approve(prod.approval_id).status == "pending"  # one of two
    assert sam.approve(prod.approval_id).status == "Approved"
    ana.wait(group, first.version, "prod", timeout=WAIT)

    deployments = ana.deployments(group)
    done = {(d.version, d.stage): [x.status for x in deployments if (x.version, x.stage) == (d.version, d.stage)]
            for d in deployments}
    assert set(done) == {(first.version, "dev"), (first.version, "test"), (first.version, "prod"),
                         (second.version, "dev")}, done
    assert all(len(statuses) == 1 for statuses in done.values()), f"deployed more than once: {done}"
    assert all(statuses == ["Deployed"] for statuses in done.values()), done  # the live one is the pointer's
    assert {ana.live(group, stage).version for stage in ("test", "prod")} == {first.version}
    assert ana.live(group, "dev").version == second.version
    for client in (ana, lee, kim, sam):
        client.close()
