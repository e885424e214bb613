"""`modelgate demo`'s fraud-detection story, end to end: the four services as real processes on LocalStack,
in a fresh namespace on free ports, started and stopped by the demo itself."""

from __future__ import annotations

import uuid

import httpx
import pytest

from modelgate import stack as stack_mod
from modelgate.demo import GROUP, run_demo
from modelgate.stack import Stack
from shared.infra import boto_client
from shared.topology import SERVICES, parameter_name
from tests.e2e.conftest import free_port

pytestmark = pytest.mark.timeout(600)


def test_the_fraud_story_completes_and_stops_everything_it_started(localstack_endpoint, tmp_path) -> None:
    stack = Stack(
        namespace=f"demo{uuid.uuid4().hex[:8]}",
        endpoint=localstack_endpoint,
        run_dir=tmp_path,
        ports={service: free_port() for service in SERVICES},
    )

    group = f"{GROUP}-{uuid.uuid4().hex[:6]}"  # Parameter Store pointers are per group, not per namespace

    result = run_demo(stack, group=group)

    for service in SERVICES:  # readable failures: the tail of each service's log
        print(f"--- {service} log (tail) ---\n{stack.logfile(service).read_text()[-2000:]}")
    assert result, "the story did not complete"
    assert set(result.runs) == {"xgb-gbtree", "xgb-gblinear"}
    assert result.model_version_id == f"{group}/1"
    assert result.runs["xgb-gbtree"]["auc"] > result.runs["xgb-gblinear"]["auc"]  # the better one registered
    assert result.test_metrics["auc"] >= 0.9  # scored through the deployed endpoint
    assert result.test_metrics["precision"] >= 0.5 and result.test_metrics["recall"] >= 0.5
    assert result.pending_approval_id
    # dev by policy, test by one approver, prod by two distinct approvers, none of them the registrant
    assert result.stages == {"test": "Deployed", "prod": "Deployed"}
    assert result.approvals == {"test": ["lee"], "prod": ["kim", "raj"]}
    announced = {(n["event_type"], stage) for n in result.notifications for stage in ("dev", "test", "prod")
                 if stage in n["subject"]}
    assert {("Deployed", "dev"), ("Deployed", "test"), ("Deployed", "prod")} <= announced
    token_file = stack.admin_token_file()
    assert token_file.stat().st_mode & 0o777 == 0o600

    pointer = boto_client("ssm", localstack_endpoint).get_parameter(Name=parameter_name(group, "dev"))
    assert f'"{result.model_version_id}"' in pointer["Parameter"]["Value"]
    # everything the demo started is stopped: the services and the inference server
    assert all(stack_mod.running_pid(stack, service) is None for service in SERVICES)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{result.endpoint_url}/healthz", timeout=5)
