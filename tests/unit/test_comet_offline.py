"""Offline Comet ingest, on real archives written by comet_ml.OfflineExperiment, with the network closed."""

from __future__ import annotations

import io
import json
import os
import socket
import zipfile
from pathlib import Path

os.environ.setdefault("COMET_ERROR_TRACKING_ENABLE", "false")  # before anything imports comet_ml

import pytest

from services.registrar.comet import (
    LINEAGE_ASSET,
    CometArchiveError,
    CometRegistration,
    import_comet,
    log_dataset_lineage,
    parse_offline_archive,
)

pytestmark = pytest.mark.timeout(60)

DATASETS = [
    {
        "name": "creditcard-transactions",
        "version": "1.0.0",
        "aliases": ["raw"],
        "uri": "s3://modelgate-data/raw/transactions.csv",
        "metadata": {"rows": 20000, "fraud_rate": 0.0017},
    },
    {
        "name": "creditcard-transactions-preprocessed",
        "version": "1.0.0",
        "aliases": ["preprocessed"],
        "uri": "s3://modelgate-data/preprocessed/",
        "metadata": {"scaler": "StandardScaler", "split": [0.7, 0.15, 0.15]},
    },
]
PARAMS = {
    "objective": "binary:logistic",
    "num_round": 100,
    "eval_metric": "auc",
    "learning_rate": 0.15,
    "booster": "gbtree",
}


def close_network(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Close the network: any DNS lookup or non-local connect is recorded and fails at once.

    An API key is set on purpose: with one, comet_ml would report errors to its tracker unless
    COMET_ERROR_TRACKING_ENABLE=false."""
    attempts: list[object] = []
    real_connect = socket.socket.connect

    def connect(sock: socket.socket, address: object) -> None:
        if sock.family == socket.AF_UNIX:
            return real_connect(sock, address)
        attempts.append(address)
        raise OSError("network closed in this test")

    def getaddrinfo(host: object, *args: object, **kwargs: object) -> list[object]:
        attempts.append(host)
        raise socket.gaierror("network closed in this test")

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setenv("COMET_API_KEY", "not-a-real-key")
    return attempts


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    return close_network(monkeypatch)


def write_archive(directory: Path, models: tuple[str, ...] = ("fraud-xgb",), lineage: bool = True) -> Path:
    """Run a real OfflineExperiment the way the demo's training script does; return its zip."""
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
        experiment.set_name("xgb-lr0.15")
        experiment.add_tag("fraud")
        experiment.log_other("team", "risk")
        experiment.log_parameters(PARAMS)
        for step in range(5):
            experiment.log_metric("auc", 0.90 + 0.01 * step, step=step)
            experiment.log_metric("logloss", 0.30 - 0.05 * step, step=step)
        experiment.log_confusion_matrix(
            y_true=[0, 0, 0, 1, 1], y_predicted=[0, 0, 1, 1, 1], labels=["Normal", "Fraud"]
        )
        experiment.log_curve("roc-curve", x=[0.0, 0.05, 1.0], y=[0.0, 0.92, 1.0])
        experiment.log_remote_asset("s3://modelgate-data/reports/eval.html", "eval.html")
        for name in models:
            # sync_mode=False: with the default, comet_ml lists the bucket through boto3 (a network call)
            experiment.log_remote_model(
                name,
                f"s3://modelgate-artifacts/{name}/model.json",
                metadata={"framework": "xgboost", "num_round": 100},
                sync_mode=False,
            )
        if lineage:
            log_dataset_lineage(experiment, DATASETS)
    finally:
        experiment.end()  # also when a step fails, so no experiment is left for atexit
    return directory / f"{experiment.get_key()}.zip"


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    with pytest.MonkeyPatch.context() as patch:
        attempts = close_network(patch)
        path = write_archive(tmp_path_factory.mktemp("comet"))
    assert attempts == [], f"OfflineExperiment reached for the network: {attempts}"
    return path


def test_parses_a_real_offline_archive(archive: Path) -> None:
    reg = parse_offline_archive(archive)
    assert reg.experiment_key == archive.stem
    assert (reg.experiment_name, reg.project, reg.workspace) == ("xgb-lr0.15", "fraud-detection", "acme")
    assert reg.tags == ["fraud"]
    assert reg.params == PARAMS  # auto-logged ones (curr_step) are left out
    assert reg.metrics == pytest.approx({"auc": 0.94, "logloss": 0.10})  # the last value logged
    assert reg.others == {"team": "risk"}
    assert reg.model.model_dump() == {
        "name": "fraud-xgb",
        "uri": "s3://modelgate-artifacts/fraud-xgb/model.json",
        "metadata": {"framework": "xgboost", "num_round": 100},
    }
    by_type = {a.type: a for a in reg.assets}
    assert by_type["confusion-matrix"].data["labels"] == ["Normal", "Fraud"]
    assert by_type["confusion-matrix"].data["matrix"] == [[2, 1], [0, 2]]
    assert by_type["curve"].name == "roc-curve" and by_type["curve"].data["y"] == [0.0, 0.92, 1.0]
    assert LINEAGE_ASSET in {a.name for a in reg.assets}
    assert [a.uri for a in reg.assets if a.name == "eval.html"] == ["s3://modelgate-data/reports/eval.html"]
    assert [d.model_dump() for d in reg.datasets] == DATASETS


def test_bytes_and_path_give_the_same_registration(archive: Path) -> None:
    assert parse_offline_archive(archive.read_bytes()) == parse_offline_archive(archive)


def test_registration_fields_fit_the_registrar_body(archive: Path) -> None:
    fields = parse_offline_archive(archive).registration_fields()
    assert fields["artifact_uri"] == "s3://modelgate-artifacts/fraud-xgb/model.json"
    assert fields["metrics"]["auc"] == pytest.approx(0.94)
    assert fields["lineage"]["comet"]["experiment_key"] == archive.stem
    assert [d["aliases"] for d in fields["lineage"]["datasets"]] == [["raw"], ["preprocessed"]]
    CometRegistration.model_validate_json(parse_offline_archive(archive).model_dump_json())  # round-trips


def test_not_a_zip() -> None:
    with pytest.raises(CometArchiveError, match="not a zip file"):
        parse_offline_archive(b"this is a CSV, not an archive")


def test_missing_experiment_json() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("messages.json", "")
    with pytest.raises(CometArchiveError, match="no experiment.json"):
        parse_offline_archive(buffer.getvalue())


def test_malformed_message() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("experiment.json", json.dumps({"offline_id": "abc"}))
        zf.writestr("messages.json", json.dumps({"type": "parameter_msg", "payload": {}}) + "\n")
    with pytest.raises(CometArchiveError, match="malformed messages.json entry"):
        parse_offline_archive(buffer.getvalue())


def test_no_model_logged(tmp_path: Path, no_network: list[object]) -> None:
    path = write_archive(tmp_path, models=(), lineage=False)
    with pytest.raises(CometArchiveError, match="no model logged: call experiment.log_remote_model"):
        parse_offline_archive(path)
    assert no_network == []


def test_several_models_need_a_name(tmp_path: Path, no_network: list[object]) -> None:
    path = write_archive(tmp_path, models=("fraud-xgb", "fraud-xgb-shadow"))
    with pytest.raises(CometArchiveError, match="several models"):
        parse_offline_archive(path)
    assert parse_offline_archive(path, model_name="fraud-xgb-shadow").model.name == "fraud-xgb-shadow"
    with pytest.raises(CometArchiveError, match="no model named 'other'"):
        parse_offline_archive(path, model_name="other")
    assert no_network == []


def test_malformed_lineage_asset(archive: Path) -> None:
    source = zipfile.ZipFile(archive)
    messages = [json.loads(line) for line in source.read("messages.json").decode().splitlines()]
    lineage_member = next(
        m["payload"]["file_path"]
        for m in messages
        if m["type"] == "file_upload" and m["payload"]["additional_params"]["fileName"] == LINEAGE_ASSET
    )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as target:
        for item in source.namelist():
            target.writestr(item, b'{"name": "not a list"}' if item == lineage_member else source.read(item))
    with pytest.raises(CometArchiveError, match=f"{LINEAGE_ASSET} in the archive is not a list"):
        parse_offline_archive(buffer.getvalue())
