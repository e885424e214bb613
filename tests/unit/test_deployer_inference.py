"""The local inference server: the artifact formats it loads, and what POST /invocations answers."""

from __future__ import annotations

import io
import tarfile

import joblib
import numpy as np
import pytest
import xgboost
from fastapi.testclient import TestClient
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from services.inference.api import build_api
from services.inference.model import BadArtifact, load_model
from services.inference.settings import InferenceSettings


def training_data(flip: bool = False) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(400, 3))
    y = (x[:, 0] > 0).astype(int)
    return x, (1 - y) if flip else y


def client_for(path) -> TestClient:  # type: ignore[no-untyped-def]
    settings = InferenceSettings(model_uri=str(path), model_version_id="fraud/1", deployment_id="d1")
    return TestClient(build_api(load_model(path), settings))


@pytest.fixture
def sklearn_pipeline(tmp_path):
    x, y = training_data()
    path = tmp_path / "model.joblib"
    joblib.dump(make_pipeline(StandardScaler(), LogisticRegression()).fit(x, y), path)
    return path


def test_a_scikit_learn_pipeline_answers_labels_and_probabilities_for_json_rows(sklearn_pipeline):
    answer = client_for(sklearn_pipeline).post("/invocations", json={"instances": [[3.0, 0, 0], [-3.0, 0, 0]]})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["predictions"] == [1, 0] and body["classes"] == [0, 1]
    assert body["probabilities"][0][1] > 0.9 and body["model_version_id"] == "fraud/1"


def test_csv_rows_get_the_same_answers_as_json(sklearn_pipeline):
    client = client_for(sklearn_pipeline)
    answer = client.post("/invocations", content="3,0,0\n-3,0,0\n", headers={"Content-Type": "text/csv"})
    assert answer.status_code == 200 and answer.json()["predictions"] == [1, 0]


def test_an_xgboost_classifier_and_a_native_booster_both_load(tmp_path):
    x, y = training_data()
    classifier = xgboost.XGBClassifier(n_estimators=10, max_depth=2).fit(x, y)
    joblib.dump(classifier, tmp_path / "xgb.joblib")
    joblib.dump(classifier.get_booster(), tmp_path / "booster.pkl")
    for name in ("xgb.joblib", "booster.pkl"):
        body = client_for(tmp_path / name).post("/invocations", json=[[3.0, 0, 0], [-3.0, 0, 0]]).json()
        assert body["predictions"] == [1, 0], name
        assert len(body["probabilities"][0]) == 2


def test_a_model_tar_gz_holding_a_joblib_file_loads(sklearn_pipeline, tmp_path):
    archive = tmp_path / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(sklearn_pipeline, arcname="model.joblib")
    assert client_for(archive).post("/invocations", json={"instances": [[3.0, 0, 0]]}).json()["predictions"] == [1]


def test_rows_that_do_not_fit_the_model_get_a_400_saying_what_to_fix(sklearn_pipeline):
    client = client_for(sklearn_pipeline)
    too_short = client.post("/invocations", json={"instances": [[1.0, 2.0]]})
    assert too_short.status_code == 400 and "needs 3 values" in too_short.json()["detail"]
    not_numbers = client.post("/invocations", json={"instances": [["a", "b", "c"]]})
    assert not_numbers.status_code == 400 and "number" in not_numbers.json()["detail"]
    not_json = client.post("/invocations", content=b"{nope")
    assert not_json.status_code == 400 and "text/csv" in not_json.json()["detail"]


def test_an_artifact_that_is_not_a_model_is_refused_with_the_supported_formats(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(b"model bytes")
    with pytest.raises(BadArtifact, match="joblib"):
        load_model(path)
    joblib.dump({"not": "a model"}, tmp_path / "dict.joblib")
    with pytest.raises(BadArtifact, match="cannot predict"):
        load_model(tmp_path / "dict.joblib")


def test_health_says_which_deployment_is_served(sklearn_pipeline):
    body = client_for(sklearn_pipeline).get("/healthz").json()
    assert body["status"] == "ok" and body["deployment_id"] == "d1"


def model_bytes(flip: bool = False) -> bytes:
    """A small fitted scikit-learn model as joblib bytes (used by the integration and e2e tests too)."""
    x, y = training_data(flip)
    buffer = io.BytesIO()
    joblib.dump(LogisticRegression().fit(x, y), buffer)
    return buffer.getvalue()
