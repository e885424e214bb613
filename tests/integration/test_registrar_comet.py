"""Registering from Comet through the registrar's HTTP API: a real registrar process on LocalStack.

Offline: archives written by a real comet_ml.OfflineExperiment, uploaded to
POST /v1/groups/{group}/versions/comet-archive. Online: POST /v1/groups/{group}/versions/comet, with the
registrar's COMET_URL_OVERRIDE pointing at tests/fakes/comet_server.py, which stands in for Comet's cloud
(unreachable here) and fails the test when comet_ml calls an endpoint it does not implement.
"""

from __future__ import annotations

import io
import json
import os
import socket
import sqlite3
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("COMET_ERROR_TRACKING_ENABLE", "false")  # before anything imports comet_ml

import httpx
import pytest

from modelgate import stack as stack_mod
from modelgate.stack import Stack
from services.registrar.comet import import_comet
from shared.infra import boto_client, provision
from shared.lineage import LINEAGE_ASSET, log_dataset_lineage
from tests.fakes.comet_server import FakeComet

pytestmark = pytest.mark.timeout(120)

DATASETS = [
    {
        "name": "creditcard-transactions",
        "version": "1.0.0",
        "aliases": ["raw"],
        "uri": "s3://modelgate-data/raw/transactions.csv",
        "metadata": {"rows": 200000, "fraud_rate": 0.0017},
    },
    {
        "name": "creditcard-transactions",
        "version": "2.0.0",
        "aliases": ["preprocessed"],
        "uri": "s3://modelgate-data/preprocessed/",
        "metadata": {"scaler": "StandardScaler", "dropped_columns": ["Time"]},
    },
]
PARAMS = {"objective": "binary:logistic", "num_round": 100, "eval_metric": "auc", "learning_rate": 0.15, "booster": "gbtree"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Registrar:
    """One registrar process in its own namespace, with an HTTP client and the namespace's bucket."""

    def __init__(self, stack: Stack, comet: FakeComet, token: str):
        self.stack = stack
        self.comet = comet
        self.http = httpx.Client(base_url=stack.url("registrar"), timeout=30, headers={"Authorization": f"Bearer {token}"})
        self.bucket = f"{stack.namespace}-artifacts"
        self.s3 = boto_client("s3", stack.endpoint)

    def model_in_s3(self, name: str) -> str:
        key = f"models/{name}-{uuid.uuid4().hex[:6]}/model.joblib"
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=b"a model")
        return f"s3://{self.bucket}/{key}"

    def upload(self, group: str, archive: bytes, **form: str) -> httpx.Response:
        files = {"archive": ("experiment.zip", archive, "application/zip")}
        return self.http.post(
            f"/v1/groups/{group}/versions/comet-archive",
            files=files,
            data=form,
        )

    def nothing_registered(self, group: str) -> bool:
        return self.http.get(f"/v1/groups/{group}").status_code == 404


@pytest.fixture(scope="module")
def registrar(localstack_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registrar]:
    run_dir = tmp_path_factory.mktemp("registrar")
    with FakeComet() as comet:
        stack = Stack(
            namespace=f"tc{uuid.uuid4().hex[:8]}",
            endpoint=localstack_endpoint,
            run_dir=run_dir,
            ports={"registrar": _free_port(), "approver": _free_port()},  # the approver verifies the registrar's callers
            database_urls={s: f"sqlite+aiosqlite:///{run_dir}/{s}.db" for s in ("registrar", "approver")},
            extra_env={
                "COMET_URL_OVERRIDE": comet.url,
                "COMET_API_KEY": comet.api_key,
                "MODELGATE_POLL_WAIT_SECONDS": "1",
            },
        )
        provision(stack.namespace, endpoint_url=stack.endpoint)
        for service in ("approver", "registrar"):
            stack_mod.start_service(stack, service)
        try:
            for service in ("approver", "registrar"):
                stack_mod.wait_ready(stack, service)
            admin = {"Authorization": f"Bearer {stack.admin_token()}"}
            ana = httpx.post(f"{stack.url('approver')}/v1/principals", headers=admin, timeout=10,
                             json={"name": "ana@example.com", "roles": ["registrant"], "teams": ["fraud"]})
            yield Registrar(stack, comet, ana.json()["token"])
        finally:
            for service in ("registrar", "approver"):
                stack_mod.stop_service(stack, service)
            print(stack.logfile("registrar").read_text()[-3000:])
        assert comet.unknown == [], f"comet_ml called endpoints the fake lacks: {comet.unknown}"


def write_archive(directory: Path, model_uri: str | None, lineage: bool = True) -> bytes:
    """An OfflineExperiment the way a training script logs one; returns the zip's bytes."""
    comet_ml = import_comet()
    experiment = comet_ml.OfflineExperiment(
        offline_directory=str(directory),
        project_name="fraud-detection",
        workspace="acme",
        log_env_details=False,
        log_git_metadata=False,
        log_git_patch=False,
        log_code=False,
        parse_args=False,
        display_summary_level=0,
    )
    try:
        experiment.set_name("xgb-gbtree")
        experiment.log_parameters(PARAMS)
        experiment.log_metrics({"auc": 0.97, "precision": 0.91, "recall": 0.83})
        experiment.log_confusion_matrix(matrix=[[29900, 4], [9, 41]], labels=["Normal", "Fraud"])
        experiment.log_curve("roc-curve", x=[0.0, 0.01, 0.2, 1.0], y=[0.0, 0.8, 0.95, 1.0])
        if model_uri:
            experiment.log_remote_model(
                "fraud-xgb", model_uri, metadata={"framework": "xgboost", "format": "joblib"}, sync_mode=False
            )
        if lineage:
            log_dataset_lineage(experiment, DATASETS)
    finally:
        experiment.end()
    return (directory / f"{experiment.get_key()}.zip").read_bytes()


def test_an_offline_archive_registers_a_version_with_its_lineage_and_plots(registrar: Registrar, tmp_path: Path) -> None:
    model_uri = registrar.model_in_s3("fraud-xgb")
    archive = write_archive(tmp_path, model_uri)
    group = f"fraud-{uuid.uuid4().hex[:6]}"

    created = registrar.upload(group, archive, model_card=json.dumps({"intended_use": "review queue"}))
    assert created.status_code == 201, created.text
    record = registrar.http.get(f"/v1/groups/{group}/versions/{created.json()['version']}").json()

    assert (record["source"], record["artifact_uri"], record["framework"]) == ("comet", model_uri, "xgboost")
    assert record["params"] == PARAMS
    assert record["metrics"] == pytest.approx({"auc": 0.97, "precision": 0.91, "recall": 0.83})
    lineage = record["lineage"]
    key = zipfile.ZipFile(io.BytesIO(archive)).read("experiment.json")
    assert lineage["experiment_key"] == json.loads(key)["offline_id"]
    assert lineage["comet"]["experiment_name"] == "xgb-gbtree"
    assert lineage["comet"]["model"] == {
        "name": "fraud-xgb",
        "uri": model_uri,
        "metadata": {"framework": "xgboost", "format": "joblib"},
    }
    assert [(d["name"], d["version"], d["aliases"], d["uri"], d["metadata"]) for d in lineage["datasets"]] == [
        (d["name"], d["version"], d["aliases"], d["uri"], d["metadata"]) for d in DATASETS
    ]
    assert LINEAGE_ASSET in {a["name"] for a in lineage["comet"]["assets"]}
    assert all("data" not in a for a in lineage["comet"]["assets"])  # plot data lives in the model card

    assert record["model_card"]["intended_use"] == "review queue"
    plots = {p["kind"]: p for p in record["model_card"]["custom_details"]["plots"]}
    assert plots["confusion_matrix"]["labels"] == ["Normal", "Fraud"]
    assert plots["confusion_matrix"]["matrix"] == [[29900, 4], [9, 41]]
    assert (plots["curve"]["name"], plots["curve"]["x"], plots["curve"]["y"]) == (
        "roc-curve",
        [0.0, 0.01, 0.2, 1.0],
        [0.0, 0.8, 0.95, 1.0],
    )
    history = registrar.http.get(f"/v1/groups/{group}/versions/1/history").json()
    assert [e["event_type"] for e in history] == ["ModelRegistered"]
    assert history[0]["payload"]["source"] == "comet"


def _zip(**members: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, text in members.items():
            zf.writestr(name.replace("_", "."), text)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("archive", "message"),
    [
        (b"transaction_id,amount\n1,9.99\n", "is not a zip file"),
        (_zip(messages_json=""), "has no experiment.json"),
        (_zip(experiment_json="{not json", messages_json=""), "malformed experiment.json or messages.json"),
    ],
    ids=["not-a-zip", "no-experiment-json", "malformed-json"],
)
def test_a_bad_archive_is_refused_and_nothing_is_registered(registrar: Registrar, archive: bytes, message: str) -> None:
    group = f"fraud-{uuid.uuid4().hex[:6]}"
    refused = registrar.upload(group, archive)
    assert refused.status_code == 422 and message in refused.json()["detail"], refused.text
    assert registrar.nothing_registered(group)


def test_an_archive_without_a_model_or_with_a_missing_artifact_is_refused(registrar: Registrar, tmp_path: Path) -> None:
    group = f"fraud-{uuid.uuid4().hex[:6]}"
    no_model = registrar.upload(group, write_archive(tmp_path / "a", model_uri=None))
    assert no_model.status_code == 422
    assert "no model logged: call experiment.log_remote_model" in no_model.json()["detail"]

    missing = f"s3://{registrar.bucket}/models/never-uploaded/model.joblib"
    not_in_s3 = registrar.upload(group, write_archive(tmp_path / "b", model_uri=missing))
    assert not_in_s3.status_code == 422 and f"artifact {missing} does not exist" in not_in_s3.json()["detail"]

    for where, model_uri in (("d", "file:///tmp/model.ubj"), ("e", "s3://someone-elses-bucket/model.ubj")):
        outside = registrar.upload(group, write_archive(tmp_path / where, model_uri=model_uri))
        assert outside.status_code == 422, outside.text
        assert f"allowed: s3://<bucket>/<key> in bucket(s) {registrar.bucket}" in outside.json()["detail"]

    bad_form = registrar.upload(group, write_archive(tmp_path / "c", registrar.model_in_s3("m")), tags="[1, 2]")
    assert bad_form.status_code == 422 and "'tags' must be a JSON object" in bad_form.json()["detail"]
    assert registrar.nothing_registered(group)


def test_an_online_experiment_registers_through_comet_ml(registrar: Registrar) -> None:
    comet, model_uri = registrar.comet, registrar.model_in_s3("fraud-xgb")
    key = uuid.uuid4().hex
    comet.add_experiment(
        key, "acme", "fraud-detection", name="xgb-online", params={"num_round": 100}, metrics={"auc": 0.96}
    )
    comet.add_remote_model(key, "fraud-xgb", model_uri, {"framework": "xgboost"})
    comet.add_asset(
        key,
        "confusion-matrix.json",
        json.dumps({"labels": ["Normal", "Fraud"], "matrix": [[10, 1], [2, 5]]}).encode(),
        "confusion-matrix",
    )
    comet.add_asset(key, LINEAGE_ASSET, json.dumps(DATASETS[:1]).encode())
    comet.add_registry_version("acme", f"fraud-{key[:6]}", "1.0.0", key, "fraud-xgb")
    group = f"fraud-{uuid.uuid4().hex[:6]}"
    body = {"workspace": "acme", "project": "fraud-detection", "registered_by": "ana@example.com"}

    by_key = registrar.http.post(f"/v1/groups/{group}/versions/comet", json={**body, "experiment_key": key})
    assert by_key.status_code == 201, by_key.text
    record = by_key.json()
    assert (record["source"], record["artifact_uri"], record["metrics"]) == ("comet", model_uri, {"auc": 0.96})
    assert record["lineage"]["experiment_key"] == key
    assert record["lineage"]["datasets"][0]["aliases"] == ["raw"]
    assert record["model_card"]["custom_details"]["plots"][0]["matrix"] == [[10, 1], [2, 5]]

    by_registry = registrar.http.post(
        f"/v1/groups/{group}/versions/comet", json={**body, "registry_model": f"fraud-{key[:6]}"}
    )
    assert by_registry.status_code == 201, by_registry.text
    assert by_registry.json()["version"] == 2
    assert by_registry.json()["lineage"]["comet"]["registry_version"] == "1.0.0"
    # only the registry import is linked: the one Comet entry write-backs may change (services/registrar/writebacks.py)
    database = registrar.stack.database_urls["registrar"].split("///", 1)[1]
    with sqlite3.connect(database) as db:
        links = db.execute("SELECT model_version_id, workspace, registry_model, registry_version, experiment_key, linked_by"
                           " FROM comet_links WHERE model_version_id LIKE ?", (f"{group}/%",)).fetchall()
    assert links == [(f"{group}/2", "acme", f"fraud-{key[:6]}", "1.0.0", key, "ana@example.com")]


def test_an_online_request_that_cannot_be_served_says_why(registrar: Registrar) -> None:
    group = f"fraud-{uuid.uuid4().hex[:6]}"
    body = {"workspace": "acme", "project": "fraud-detection", "registered_by": "ana@example.com"}
    unknown = registrar.http.post(f"/v1/groups/{group}/versions/comet", json={**body, "experiment_key": "nope"})
    assert unknown.status_code == 422 and "no experiment 'nope'" in unknown.json()["detail"]
    both = registrar.http.post(
        f"/v1/groups/{group}/versions/comet", json={**body, "experiment_key": "k", "registry_model": "m"}
    )
    assert both.status_code == 422 and "exactly one of experiment_key or registry_model" in both.text
    assert registrar.nothing_registered(group)
