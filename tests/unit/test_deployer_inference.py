"""The local inference server: the artifact formats it loads, and what POST /invocations answers.

XGBoost's own format and skops load without running code; a pickle is served only when its group opted in
(allow_pickle); a skops file holding a type skops does not trust is refused.
"""

from __future__ import annotations

import functools
import io
import tarfile
from pathlib import Path

import joblib
import numpy as np
import pytest
import skops.io
import xgboost
from fastapi.testclient import TestClient
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from services.inference.api import build_api
from services.inference.model import BadArtifact, fetch_artifact, load_model
from services.inference.settings import InferenceSettings


def training_data(flip: bool = False) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(400, 3))
    y = (x[:, 0] > 0).astype(int)
    return x, (1 - y) if flip else y


def client_for(path, allow_pickle: bool = False) -> TestClient:  # type: ignore[no-untyped-def]
    settings = InferenceSettings(model_uri=str(path), model_version_id="fraud/1", deployment_id="d1")
    return TestClient(build_api(load_model(path, allow_pickle=allow_pickle), settings))


def fitted_pipeline():  # type: ignore[no-untyped-def]
    x, y = training_data()
    return make_pipeline(StandardScaler(), LogisticRegression()).fit(x, y)


@pytest.fixture
def sklearn_pipeline(tmp_path) -> Path:
    path = tmp_path / "model.skops"
    skops.io.dump(fitted_pipeline(), path)
    return path


@pytest.fixture
def xgboost_classifier():  # type: ignore[no-untyped-def]
    x, y = training_data()
    return xgboost.XGBClassifier(n_estimators=10, max_depth=2).fit(x, y)


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


@pytest.mark.parametrize("name", ["model.ubj", "model.json"])
def test_an_xgboost_model_in_its_own_format_loads_and_predicts(xgboost_classifier, tmp_path, name):
    xgboost_classifier.save_model(tmp_path / name)
    client = client_for(tmp_path / name)
    body = client.post("/invocations", json=[[3.0, 0, 0], [-3.0, 0, 0]]).json()
    assert body["predictions"] == [1, 0] and body["classes"] == [0, 1]
    expected = xgboost_classifier.predict_proba(np.array([[3.0, 0, 0], [-3.0, 0, 0]]))
    assert np.allclose(body["probabilities"], expected, atol=1e-6)
    assert client.get("/metadata").json()["kind"] == "xgboost-booster"


def test_a_native_xgboost_regressor_answers_values(tmp_path):
    x, _ = training_data()
    xgboost.XGBRegressor(n_estimators=5).fit(x, x[:, 0]).save_model(tmp_path / "reg.ubj")
    body = client_for(tmp_path / "reg.ubj").post("/invocations", json=[[3.0, 0, 0]]).json()
    assert "probabilities" not in body and body["classes"] is None and body["predictions"][0] > 1


def test_a_pickle_is_refused_without_the_opt_in_saying_how_to_opt_in(tmp_path, xgboost_classifier):
    joblib.dump(fitted_pipeline(), tmp_path / "model.joblib")
    with pytest.raises(BadArtifact, match=r"loading it would run code from it.*MODELGATE_PICKLE_GROUPS=<group>"):
        load_model(tmp_path / "model.joblib")
    (tmp_path / "model.bin").write_bytes(joblib_bytes(fitted_pipeline()))
    with pytest.raises(BadArtifact, match="not a known format, so read as a pickle"):
        load_model(tmp_path / "model.bin")


def test_pickles_are_served_with_the_opt_in(tmp_path, xgboost_classifier):
    joblib.dump(fitted_pipeline(), tmp_path / "model.joblib")
    joblib.dump(xgboost_classifier, tmp_path / "xgb.joblib")
    joblib.dump(xgboost_classifier.get_booster(), tmp_path / "booster.pkl")
    for name in ("model.joblib", "xgb.joblib", "booster.pkl"):
        body = client_for(tmp_path / name, allow_pickle=True).post("/invocations", json=[[3.0, 0, 0], [-3.0, 0, 0]]).json()
        assert body["predictions"] == [1, 0], name
        assert len(body["probabilities"][0]) == 2


def test_a_skops_file_with_an_untrusted_type_is_refused(tmp_path, xgboost_classifier):
    skops.io.dump(xgboost_classifier, tmp_path / "xgb.skops")
    with pytest.raises(BadArtifact, match=r"types skops does not trust, refused: .*xgboost.sklearn.XGBClassifier"):
        load_model(tmp_path / "xgb.skops")
    sneaky = make_pipeline(FunctionTransformer(eval), LogisticRegression())
    skops.io.dump(sneaky, tmp_path / "eval.skops")
    with pytest.raises(BadArtifact, match="builtins.eval"):
        load_model(tmp_path / "eval.skops")


def test_a_model_tar_gz_holding_a_safe_file_loads_and_one_holding_a_pickle_needs_the_opt_in(sklearn_pipeline, tmp_path):
    archive = tmp_path / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(sklearn_pipeline, arcname="model.skops")
    assert client_for(archive).post("/invocations", json={"instances": [[3.0, 0, 0]]}).json()["predictions"] == [1]
    joblib.dump(fitted_pipeline(), tmp_path / "model.joblib")
    pickled = tmp_path / "pickled.tar.gz"
    with tarfile.open(pickled, "w:gz") as tar:
        tar.add(tmp_path / "model.joblib", arcname="model.joblib")
    with pytest.raises(BadArtifact, match="MODELGATE_PICKLE_GROUPS"):
        load_model(pickled)
    assert client_for(pickled, allow_pickle=True).post("/invocations", json=[[3.0, 0, 0]]).json()["predictions"] == [1]


def test_rows_that_do_not_fit_the_model_get_a_400_saying_what_to_fix(sklearn_pipeline):
    client = client_for(sklearn_pipeline)
    too_short = client.post("/invocations", json={"instances": [[1.0, 2.0]]})
    assert too_short.status_code == 400 and "needs 3 values" in too_short.json()["detail"]
    not_numbers = client.post("/invocations", json={"instances": [["a", "b", "c"]]})
    assert not_numbers.status_code == 400 and "number" in not_numbers.json()["detail"]
    not_json = client.post("/invocations", content=b"{nope")
    assert not_json.status_code == 400 and "text/csv" in not_json.json()["detail"]


def test_an_artifact_that_is_not_a_model_is_refused_with_the_supported_formats(tmp_path):
    for name in ("model.ubj", "model.json", "model.skops"):
        (tmp_path / name).write_bytes(b"model bytes")
        with pytest.raises(BadArtifact, match=r"is not an? (XGBoost model|skops file).*supported: an XGBoost model"):
            load_model(tmp_path / name)
    (tmp_path / "model.joblib").write_bytes(b"model bytes")
    with pytest.raises(BadArtifact, match="not a joblib model"):
        load_model(tmp_path / "model.joblib", allow_pickle=True)
    skops.io.dump(StandardScaler().fit([[1.0], [2.0]]), tmp_path / "scaler.skops")
    with pytest.raises(BadArtifact, match="cannot predict"):
        load_model(tmp_path / "scaler.skops")


@pytest.mark.parametrize("uri", ["/tmp/model.ubj", "file:///tmp/model.ubj", "https://example.com/model.ubj"])
def test_the_server_refuses_anything_but_s3_unless_local_paths_are_allowed(uri, tmp_path):
    with pytest.raises(BadArtifact, match="serve artifacts from s3://bucket/key"):
        fetch_artifact(uri, tmp_path, s3=None)


def test_the_development_switch_lets_the_server_load_a_local_path(sklearn_pipeline, tmp_path):
    assert fetch_artifact(str(sklearn_pipeline), tmp_path, s3=None, allow_local=True) == sklearn_pipeline
    assert fetch_artifact(f"file://{sklearn_pipeline}", tmp_path, s3=None, allow_local=True) == sklearn_pipeline


def test_health_says_which_deployment_is_served(sklearn_pipeline):
    body = client_for(sklearn_pipeline).get("/healthz").json()
    assert body["status"] == "ok" and body["deployment_id"] == "d1"


def joblib_bytes(value) -> bytes:  # type: ignore[no-untyped-def]
    buffer = io.BytesIO()
    joblib.dump(value, buffer)
    return buffer.getvalue()


@functools.cache
def model_bytes(flip: bool = False) -> bytes:
    """A small fitted scikit-learn model as skops bytes, to upload as `*.skops` (used by the integration and
    e2e tests too); the same bytes on every call (a skops file holds its time of writing)."""
    x, y = training_data(flip)
    return skops.io.dumps(LogisticRegression().fit(x, y))


def pickled_model_bytes() -> bytes:
    """The same model as a joblib pickle, served only for groups opted in to pickles."""
    x, y = training_data()
    return joblib_bytes(LogisticRegression().fit(x, y))


def test_a_pipeline_runs_its_steps_in_order_and_refuses_a_step_that_cannot_transform_or_changed(tmp_path):
    from services.inference.model import load_pipeline
    from shared.pins import file_digest

    x, y = training_data()
    scaler = StandardScaler().fit(x * 1000)
    model = LogisticRegression().fit(scaler.transform(x * 1000), y)
    (tmp_path / "scaler.skops").write_bytes(skops.io.dumps(scaler))
    (tmp_path / "model.skops").write_bytes(skops.io.dumps(model))
    steps = [{"name": n, "file": str(tmp_path / f"{n}.skops"), "digest": file_digest(tmp_path / f"{n}.skops")}
             for n in ("scaler", "model")]
    pipeline = load_pipeline(steps)
    rows = x[:5] * 1000
    assert pipeline.predict(rows)["predictions"] == model.predict(scaler.transform(rows)).tolist()
    assert [s["name"] for s in pipeline.describe()["steps"]] == ["scaler", "model"] and pipeline.classes == [0, 1]
    with pytest.raises(BadArtifact, match="cannot transform rows"):
        load_pipeline([steps[1], steps[1] | {"name": "again"}])
    with pytest.raises(BadArtifact, match="artifact changed since approval"):
        load_pipeline([steps[0] | {"digest": "sha256:" + "0" * 64}, steps[1]])
