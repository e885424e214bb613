"""The `modelgate` CLI against in-memory stand-ins of the services' HTTP APIs (no network).

What a script relies on is asserted here: exit codes, --json output, and messages that say what to do.
The same commands against the four real services: tests/e2e/test_cli.py.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest
import typer
from typer.testing import CliRunner

from modelgate.cli import app
from modelgate.commands import common
from modelgate.commands.common import ExitCode

runner = CliRunner()


def record(stages: dict[str, str], registered_by: str = "ana", **details: dict[str, Any]) -> dict[str, Any]:
    return {
        "model_version_id": "fraud/7", "group": "fraud", "version": 7, "artifact_uri": "s3://b/k",
        "registered_by": registered_by, "source": "manual", "framework": None, "description": "",
        "metrics": {"auc": 0.93}, "params": {}, "tags": {}, "metadata": {}, "model_card": {}, "lineage": {},
        "approval_status": "Approved", "stages": stages,
        "stage_details": {s: {"status": st, "at": "2026-01-01T00:00:00+00:00", **details.get(s, {})}
                          for s, st in stages.items()},
        "created_at": "2026-01-01T00:00:00+00:00",
    }


def approval(stage: str = "test", status: str = "pending") -> dict[str, Any]:
    return {
        "approval_id": "a-1", "model_version_id": "fraud/7", "group": "fraud", "version": 7, "stage": stage,
        "status": status, "policy_rule": f"{stage}: 1 approver from ml-leads", "required_approvals": 1,
        "approver_group": "ml-leads", "registered_by": "ana", "metrics": {"auc": 0.93},
        "created_at": "2026-01-01T00:00:00+00:00", "decided_at": None,
    }


class FakeServices:
    """Answers like the registrar, approver and deployer would; remembers every request."""

    def __init__(self) -> None:
        self.versions = [record({"dev": "Deployed", "test": "PendingApproval"})]
        self.approvals = [approval()]
        self.requests: list[httpx.Request] = []
        self.refuse: tuple[int, str] | None = None

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        service, path, method = request.url.host, request.url.path, request.method
        if self.refuse and method == "POST":
            return httpx.Response(self.refuse[0], json={"detail": self.refuse[1]})
        if service == "registrar" and method == "GET" and path == "/v1/groups/fraud/versions":
            return httpx.Response(200, json=self.versions)
        if service == "registrar" and method == "GET" and path.startswith("/v1/groups/fraud/versions/"):
            number = int(path.rsplit("/", 1)[1])
            found = [v for v in self.versions if v["version"] == number]
            return httpx.Response(200, json=found[0]) if found else httpx.Response(404, json={"detail": "no version"})
        if service == "registrar" and method == "GET" and path.startswith("/v1/groups/"):
            return httpx.Response(404, json={"detail": "model group 'x' does not exist; create it first"})
        if service == "registrar" and method == "POST":
            sent = json.loads(request.content) if request.headers["Content-Type"] == "application/json" else {}
            return httpx.Response(201, json={**record({}), **sent})
        if request.headers.get("Authorization") == "Bearer stolen":  # the services refuse an unknown token
            return httpx.Response(401, json={"detail": "unknown token: check it, or ask an administrator for a new one"})
        if service == "approver" and path == "/v1/approvals":
            query = dict(request.url.params)
            filters = {k: v for k, v in query.items() if k in ("stage", "group", "model_version_id")}
            return httpx.Response(200, json=[a for a in self.approvals if all(a[k] == v for k, v in filters.items())])
        if service == "approver" and path == "/v1/me":
            if request.headers["Authorization"] != "Bearer lee-token":
                return httpx.Response(401, json={"detail": "unknown approver token"})
            return httpx.Response(200, json={"name": "lee", "groups": ["ml-leads"]})
        if service == "approver" and method == "POST":
            decision = json.loads(request.content)["decision"]
            return httpx.Response(200, json={**approval(), "status": "Approved" if decision == "approve" else "Rejected"})
        if service == "approver" and path == "/v1/policy":
            return httpx.Response(200, json=[{"name": "dev"}, {"name": "test"}, {"name": "prod"}])
        if service == "deployer" and path == "/v1/deployments":
            return httpx.Response(200, json=[])
        return httpx.Response(404, json={"detail": f"fake has no {method} {path}"})


@pytest.fixture
def services(monkeypatch: pytest.MonkeyPatch) -> FakeServices:
    fake = FakeServices()
    for name in ("registrar", "approver", "deployer", "notifier"):
        monkeypatch.setenv(f"MODELGATE_{name.upper()}_URL", f"http://{name}")
    monkeypatch.delenv("MODELGATE_TOKEN", raising=False)
    monkeypatch.setenv("MODELGATE_NAMESPACE", f"cli-test-{uuid.uuid4().hex[:8]}")  # no local admin token file
    monkeypatch.setattr(common, "transport", httpx.MockTransport(fake.handle))
    return fake


def invoke(*args: str) -> Any:
    return runner.invoke(app, list(args), env={"COLUMNS": "200"})


def _commands(typer_app: typer.Typer, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [(*prefix, c.name or c.callback.__name__) for c in typer_app.registered_commands]  # type: ignore[union-attr]
    for group in typer_app.registered_groups:
        found += _commands(group.typer_instance, (*prefix, group.name))  # type: ignore[arg-type]
    return found


def test_every_command_product_md_names_exists_and_its_help_shows_examples():
    commands = {" ".join(c) for c in _commands(app)}
    assert commands >= {"up", "down", "demo", "register", "versions", "show", "approvals", "approve", "reject",
                        "promote", "rollback", "events tail", "dlq list", "dlq redrive", "gate"}
    for command in commands:
        result = invoke(*command.split(), "--help")
        assert result.exit_code == 0, command
        assert "Example" in result.stdout, f"'modelgate {command} --help' shows no example"


def test_shell_completion_is_offered():
    assert "--install-completion" in invoke("--help").stdout


@pytest.mark.parametrize(
    ("stage", "status", "details", "code", "says"),
    [
        ("dev", "Deployed", {}, ExitCode.OK, "is Deployed for dev"),
        ("dev", "Approved", {"decided_by": ["lee"]}, ExitCode.OK, "approved by lee"),
        ("dev", "PendingApproval", {}, ExitCode.GATE_PENDING, "waiting for approval"),
        ("dev", "Rejected", {"decided_by": ["kim"]}, ExitCode.GATE_REJECTED, "rejected for dev by kim"),
        ("test", "Superseded", {"superseded_by": "fraud/8"}, ExitCode.GATE_SUPERSEDED, "superseded for test by fraud/8"),
        ("dev", "Retired", {"replaced_by": "fraud/9"}, ExitCode.GATE_RETIRED, "until fraud/9 replaced it"),
        ("dev", "Deploying", {"decided_by": ["policy"]}, ExitCode.OK, "under way, not serving yet"),
        ("prod", "RolledBack", {"replaced_by": "fraud/6"}, ExitCode.GATE_REJECTED, "rolled back from prod to fraud/6"),
        ("dev", "DeploymentFailed", {"reason": "endpoint never healthy"}, ExitCode.GATE_DEPLOYMENT_FAILED,
         "endpoint never healthy"),
        ("prod", None, {}, ExitCode.GATE_NOT_REQUESTED, "not been put up for prod"),
    ],
)
def test_gate_exits_0_only_when_the_version_is_approved_for_the_stage(services, stage, status, details, code, says):
    services.versions = [record({stage: status} if status else {"dev": "Deployed"}, **{stage: details})]
    result = invoke("gate", "fraud", stage, "--version", "7")
    assert result.exit_code == code
    assert says in result.output


def test_gate_json_tells_a_script_why(services):
    result = invoke("gate", "fraud", "test", "--json")  # no --version: the latest
    assert result.exit_code == ExitCode.GATE_PENDING
    verdict = json.loads(result.stdout)
    assert verdict == {"model_version_id": "fraud/7", "stage": "test", "status": "PendingApproval", "approved": False,
                       "exit_code": 10, "reason": verdict["reason"]}


def test_gate_on_an_unknown_version_exits_not_found(services):
    result = invoke("gate", "fraud", "prod", "--version", "99")
    assert result.exit_code == ExitCode.NOT_FOUND and "no version" in result.stderr


def test_an_unreachable_service_says_to_run_make_up(monkeypatch):
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    monkeypatch.setattr(common, "transport", httpx.MockTransport(refuse))
    result = invoke("versions", "fraud")
    assert result.exit_code == ExitCode.UNREACHABLE
    assert "is modelgate up? run 'make up'" in result.stderr


def test_approve_sends_the_token_as_bearer_and_the_comment(services):
    result = invoke("approve", "a-1", "--token", "lee-token", "-c", "holds on holdout")
    assert result.exit_code == 0, result.output
    sent = services.requests[-1]
    assert sent.url.path == "/v1/approvals/a-1/decision"
    assert sent.headers["Authorization"] == "Bearer lee-token"
    assert json.loads(sent.content) == {"decision": "approve", "comment": "holds on holdout"}
    assert "is now Approved" in result.stdout


def test_the_token_can_come_from_the_environment(services, monkeypatch):
    monkeypatch.setenv("MODELGATE_TOKEN", "env-token")
    assert invoke("approve", "a-1").exit_code == 0
    assert services.requests[-1].headers["Authorization"] == "Bearer env-token"


def test_deciding_without_a_token_is_refused_before_any_call(services):
    result = invoke("approve", "a-1")
    assert result.exit_code == ExitCode.REFUSED and "MODELGATE_TOKEN" in result.stderr
    assert services.requests == []


def test_a_rejection_needs_a_comment(services):
    result = invoke("reject", "a-1", "--token", "lee-token")
    assert result.exit_code == ExitCode.USAGE and "--comment" in result.output
    assert services.requests == []
    assert invoke("reject", "a-1", "--token", "t", "-c", "recall dropped").exit_code == 0
    assert json.loads(services.requests[-1].content) == {"decision": "reject", "comment": "recall dropped"}


def test_a_refused_decision_shows_the_approvers_reason_and_exit_code(services):
    services.refuse = (403, "ana registered fraud/7 and cannot approve it")
    result = invoke("approve", "a-1", "--token", "ana-token")
    assert result.exit_code == ExitCode.REFUSED
    assert "ana registered fraud/7 and cannot approve it" in result.stderr
    services.refuse = (409, "approval request a-1 is already Approved")
    assert invoke("approve", "a-1", "--token", "lee-token").exit_code == ExitCode.INVALID


def test_promote_approves_the_pending_request_of_that_version(services):
    result = invoke("promote", "fraud", "7", "--token", "lee-token", "--no-wait", "--json")
    assert result.exit_code == 0, result.output
    assert services.requests[-1].url.path == "/v1/approvals/a-1/decision"
    assert json.loads(result.stdout)["approval"]["status"] == "Approved"


def test_promote_says_why_when_nothing_waits_for_that_stage(services):
    result = invoke("promote", "fraud", "7", "--to", "prod", "--token", "lee-token")
    assert result.exit_code == ExitCode.NOT_FOUND
    assert "no pending approval for prod" in result.stderr and "test=PendingApproval" in result.stderr


def test_versions_and_approvals_print_json_for_scripts(services):
    versions = invoke("versions", "fraud", "--json")
    assert versions.exit_code == 0 and json.loads(versions.stdout) == services.versions
    approvals = invoke("approvals", "--json", "--stage", "test")
    assert [a["approval_id"] for a in json.loads(approvals.stdout)] == ["a-1"]
    assert json.loads(invoke("approvals", "--json", "--stage", "prod").stdout) == []


def test_tables_for_people(services):
    result = invoke("approvals")
    assert result.exit_code == 0 and "a-1" in result.stdout and "modelgate approve" in result.stdout
    assert "PendingApproval" in invoke("versions", "fraud").stdout


def test_approvals_mine_lists_what_the_tokens_principal_may_vote_on(services):
    result = invoke("approvals", "--mine", "--token", "lee-token", "--json")
    assert result.exit_code == 0, result.output
    assert services.requests[-1].url.params["approver"] == "me"
    assert services.requests[-1].headers["Authorization"] == "Bearer lee-token"
    refused = invoke("approvals", "--mine", "--token", "stolen")
    assert refused.exit_code == ExitCode.REFUSED and "unknown token" in refused.stderr
    assert "modelgate principals add" in refused.stderr  # what to do next


def test_register_from_a_comet_archive_uploads_it_to_the_registrar(services, tmp_path):
    archive = tmp_path / "experiment.zip"
    archive.write_bytes(b"PK zip bytes")
    result = invoke("register", "fraud", "--comet-archive", str(archive), "-t", "team=risk", "--token", "ana-token")
    assert result.exit_code == 0, result.output
    sent = services.requests[-1]
    assert sent.url.path == "/v1/groups/fraud/versions/comet-archive"
    assert sent.headers["Content-Type"].startswith("multipart/form-data")
    assert b"PK zip bytes" in sent.content and b'name="registered_by"' not in sent.content  # the token names her
    assert sent.headers["Authorization"] == "Bearer ana-token"
    assert b'{"team": "risk"}' in sent.content


def test_register_from_comet_online_names_the_experiment(services):
    missing = invoke("register", "fraud", "--comet-experiment", "3f2c")
    assert missing.exit_code == ExitCode.USAGE and "--comet-workspace" in missing.output
    result = invoke("register", "fraud", "--comet-experiment", "3f2c", "--comet-workspace", "acme",
                    "--comet-project", "fraud")
    assert result.exit_code == 0, result.output
    sent = services.requests[-1]
    assert sent.url.path == "/v1/groups/fraud/versions/comet"
    assert json.loads(sent.content) == {"workspace": "acme", "project": "fraud", "experiment_key": "3f2c",
                                        "registry_model": None, "registry_version": None}


def test_register_sends_metrics_params_and_documents(services, tmp_path):
    card = tmp_path / "card.yaml"
    card.write_text("summary: Scores transactions\nrisk_rating: Medium\n")
    metadata = tmp_path / "plots.json"
    metadata.write_text(json.dumps({"plots": {"roc": {"fpr": [0, 1], "tpr": [0, 1]}}}))
    result = invoke("register", "fraud", "--artifact", "s3://b/k", "-m", "auc=0.93", "-p", "num_round=100",
                    "-p", "booster=gbtree", "-t", "team=risk", "--model-card", str(card), "--metadata", str(metadata),
                    "--idempotency-key", "job-42", "--json")
    assert result.exit_code == 0, result.output
    sent = services.requests[-1]
    body = json.loads(sent.content)
    assert sent.headers["Idempotency-Key"] == "job-42"
    assert body["metrics"] == {"auc": 0.93} and body["params"] == {"num_round": 100, "booster": "gbtree"}
    assert body["tags"] == {"team": "risk"} and "registered_by" not in body
    assert body["model_card"] == {"summary": "Scores transactions", "risk_rating": "Medium"}
    assert body["metadata"]["plots"]["roc"]["fpr"] == [0, 1]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--artifact", "s3://b/k", "-m", "auc=high"], "auc must be a number"),
        (["--artifact", "s3://b/k", "-m", "auc"], "NAME=VALUE"),
        ([], "exactly one of --file, --artifact, --comet-archive"),
        (["--artifact", "s3://b/k", "--comet-archive", __file__], "exactly one of"),
    ],
)
def test_a_bad_registration_is_refused_before_any_call(services, args, says):
    result = invoke("register", "fraud", *args)
    assert result.exit_code == ExitCode.USAGE and says in result.output
    assert services.requests == []


def test_a_registration_the_registrar_refuses_says_why(services):
    services.refuse = (422, "artifact s3://b/k does not exist; upload it first (modelgate register --file)")
    result = invoke("register", "fraud", "--artifact", "s3://b/k")
    assert result.exit_code == ExitCode.INVALID and "upload it first" in result.stderr


def test_events_tail_refuses_unknown_event_types():
    result = invoke("events", "tail", "--type", "ModelDeleted")
    assert result.exit_code == ExitCode.USAGE and "ModelRegistered" in result.output


@pytest.mark.parametrize(
    ("details", "says"),
    [
        ({"status": "Superseded", "superseded_by": "fraud/9"}, "superseded by fraud/9"),
        ({"status": "Retired", "replaced_by": "fraud/9"}, "replaced by fraud/9"),
        ({"status": "RolledBack", "replaced_by": "fraud/6"}, "rolled back to fraud/6"),
        ({"status": "Deploying", "target": "sagemaker"}, "deploying to sagemaker"),
        ({"status": "Deploying", "target": "local", "rollback": True}, "rolling back to local"),
        ({"status": "Approved", "decided_by": ["lee", "kim"]}, "lee, kim"),
    ],
)
def test_show_says_what_each_stage_status_means(details, says):
    from modelgate.commands.catalog import stage_note

    assert stage_note(details) == says
