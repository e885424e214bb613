"""The SDK against the four real services: the README's training-script example, and a pipeline's calls."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import modelgate
from modelgate import GateCode

EXAMPLE = Path(__file__).parents[2] / "examples" / "train_and_register.py"


def environment(stack, who: str) -> dict[str, str]:
    return {**{f"MODELGATE_{s.upper()}_URL": stack.url(s) for s in stack.ports}, "MODELGATE_NAMESPACE": stack.namespace,
            "AWS_ENDPOINT_URL": stack.endpoint, "MODELGATE_TOKEN": stack.tokens[who]}


@pytest.fixture
def as_(system, monkeypatch):
    """`as_(name)`: an SDK client configured from the environment, as a script finds it, for that principal."""

    def client(who: str) -> modelgate.Client:
        for name, value in environment(system, who).items():
            monkeypatch.setenv(name, value)
        return modelgate.Client()

    return client


def test_the_readme_training_script_registers_and_waits_until_dev_serves_it(system, as_):
    done = subprocess.run([sys.executable, str(EXAMPLE), "--group", "fraud-sdk", "--rows", "20000"],
                          env={**os.environ, **environment(system, "ana")}, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "registered fraud-sdk/1 (sha256:" in done.stdout and "dev: Deployed" in done.stdout
    with as_("ana") as mg:
        version = mg.version("fraud-sdk", 1)
        assert version.status("dev") == "Deployed" and version.framework == "xgboost"
        assert version.lineage["experiment_key"] and version.metrics["auc"] > 0.9
        assert mg.live("fraud-sdk", "dev").model_version_id == "fraud-sdk/1"
        assert [e.event_type for e in mg.history("fraud-sdk", 1)][:4] == [
            "ModelRegistered", "ApprovalDecided", "DeploymentStarted", "Deployed"]
        (period,) = mg.timeline("fraud-sdk", "dev")
        assert period.model_version_id == "fraud-sdk/1" and period.live and period.served_to is None
        assert mg.live("fraud-sdk", "dev", at=datetime.now(UTC)).model_version_id == "fraud-sdk/1"
        with pytest.raises(modelgate.NotFound):
            mg.live("fraud-sdk", "dev", at=period.served_from - timedelta(seconds=1))


def test_a_pipeline_registers_gates_approves_and_rolls_back_through_the_sdk(system, as_, tmp_path):
    model = tmp_path / "model.bin"
    model.write_bytes(os.urandom(10_000))
    with as_("ana") as mg:
        first = mg.register("churn-sdk", file=model, metrics={"auc": 0.93}, idempotency_key="job-1")
        again = mg.register("churn-sdk", file=model, metrics={"auc": 0.93}, idempotency_key="job-1")
        assert again.model_version_id == first.model_version_id == "churn-sdk/1"  # a retried job registers once
        mg.wait("churn-sdk", 1, "dev", timeout=60)
        second = mg.register("churn-sdk", uri=first.artifact_uri, metrics={"auc": 0.95})
        mg.wait("churn-sdk", second.version, "dev", timeout=60)
        assert mg.gate("churn-sdk", "dev").open  # the latest version
        waiting = mg.gate("churn-sdk", "test", 1)
        assert waiting.code is GateCode.PENDING and "waiting for approval for test" in waiting.reason
        assert [v.version for v in mg.versions("churn-sdk", page_size=1)] == [2, 1]  # newest first, page by page
        with pytest.raises(modelgate.Forbidden, match="cannot approve"):
            mg.approve(mg.approvals(model_version_id="churn-sdk/1", stage="test")[0].approval_id)
    with as_("lee") as mg:
        request = mg.approvals(model_version_id="churn-sdk/1", stage="test")[0]
        assert mg.approve(request.approval_id, "fine on the holdout").status == "Approved"
        mg.wait("churn-sdk", 1, "test", timeout=60)
        rollback = mg.rollback("churn-sdk", "dev", "precision alarm")
        assert rollback.model_version_id == "churn-sdk/1" and rollback.rollback
        with pytest.raises(modelgate.NotFound):
            mg.version("churn-sdk", 99)
