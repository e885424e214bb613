"""The inference server answers 4xx to every malformed request, never 500, and caps bodies at 6 MiB
(SageMaker's payload cap) from the Content-Length or while a chunked body streams in."""

from __future__ import annotations

import numpy as np
import pytest
import xgboost
from fastapi.testclient import TestClient

from services.inference.api import build_api
from services.inference.model import load_model
from services.inference.settings import InferenceSettings
from tests.unit.test_deployer_inference import sklearn_pipeline, training_data  # noqa: F401 (a fixture)

CSV = {"Content-Type": "text/csv"}


def client_for(path, **settings) -> TestClient:  # type: ignore[no-untyped-def]
    return TestClient(build_api(load_model(path), InferenceSettings(model_uri=str(path), **settings)))


@pytest.fixture
def named_pipeline(tmp_path):
    """A model that knows its feature names (a, b, c), so CSV may send a header."""
    x, y = training_data()
    booster = xgboost.train({"objective": "binary:logistic", "max_depth": 2},
                            xgboost.DMatrix(x, label=y, feature_names=["a", "b", "c"]), num_boost_round=5)
    path = tmp_path / "named.ubj"
    booster.save_model(path)
    return path


@pytest.mark.parametrize("body, headers, says", [
    (b'{"instances": [[NaN, 0, 0]]}', {}, "finite"),
    (b'{"instances": [[Infinity, 0, 0]]}', {}, "finite"),
    (b'{"instances": [[1e400, 0, 0]]}', {}, "finite"),
    (b'{"instances": [[' + b"9" * 400 + b', 0, 0]]}', {}, "too large for a float"),
    (b"nan,0,0\n", CSV, "finite"),
    ("3,0,\u00e9\n".encode("latin-1"), CSV, "not UTF-8"),
    (b"3,0,0\n1,2\n", CSV, "same number of values"),
    (b'{"instances": [[1.0, 2.0]]}', {}, "needs 3 values"),
    (b'{"instances": [[1.0, 2.0, 3.0, 4.0]]}', {}, "needs 3 values"),
    (b'{"instances": [[[1.0, 2.0, 3.0]]]}', {}, "flat"),
    (b'{"instances": [[]]}', {}, "non-empty"),
    (b"", {}, "not JSON"),
    (b"", CSV, "empty"),
])
def test_malformed_rows_get_a_400_saying_what_to_fix(sklearn_pipeline, body, headers, says):  # noqa: F811
    answer = client_for(sklearn_pipeline).post("/invocations", content=body, headers=headers)
    assert answer.status_code == 400, answer.text
    assert says in answer.json()["detail"]


def test_a_short_csv_row_under_a_header_is_a_400_naming_the_line(named_pipeline):
    client = client_for(named_pipeline)
    good = client.post("/invocations", content=b"c,b,a\n0,0,3\n", headers=CSV)
    assert good.status_code == 200 and good.json()["predictions"] == [1]
    short = client.post("/invocations", content=b"a,b,c\n3,0,0\n1,2\n", headers=CSV)
    assert short.status_code == 400 and "line 3 has 2 values" in short.json()["detail"]


def test_a_body_over_the_limit_is_413_whether_it_declares_its_length_or_streams(sklearn_pipeline):  # noqa: F811
    assert InferenceSettings(model_uri="s3://b/k").max_body_bytes == 6 * 1024 * 1024
    client = client_for(sklearn_pipeline, max_body_bytes=1000)
    declared = client.post("/invocations", content=b"1,2,3\n" * 200, headers=CSV)
    assert declared.status_code == 413 and "at most 1,000 bytes" in declared.json()["detail"]

    def chunks():
        for _ in range(100):
            yield b"1,2,3\n" * 10

    streamed = client.post("/invocations", content=chunks(), headers=CSV)
    assert streamed.status_code == 413 and "over 1,000 bytes" in streamed.json()["detail"]
    assert client.post("/invocations", content=b"1,2,3\n" * 100, headers=CSV).status_code == 200


def test_rows_the_model_accepts_still_predict(sklearn_pipeline):  # noqa: F811
    answer = client_for(sklearn_pipeline).post("/invocations", json={"instances": np.zeros((2, 3)).tolist()})
    assert answer.status_code == 200 and len(answer.json()["predictions"]) == 2
