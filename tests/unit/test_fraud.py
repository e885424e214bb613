"""The demo's ML parts on a small dataset: generation, preprocessing, training, and offline Comet logging
that the registrar's archive parser reads back, with the network closed."""

from __future__ import annotations

import io
import os
from pathlib import Path

os.environ.setdefault("COMET_ERROR_TRACKING_ENABLE", "false")  # before anything imports comet_ml

import numpy as np
import pytest

from modelgate.fraud import data, tracking, train
from services.inference.model import load_model
from services.registrar.comet import DatasetVersion, parse_offline_archive
from services.registrar.routes.comet import plots, to_registration
from tests.unit.test_comet_offline import close_network

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def raw() -> data.Table:
    return data.generate(rows=20_000, seed=3)


@pytest.fixture(scope="module")
def prepared(raw: data.Table) -> data.Prepared:
    return data.preprocess(raw, seed=3)


def test_generated_transactions_look_like_the_public_set(raw: data.Table) -> None:
    assert raw.columns == ["Time", *(f"V{i}" for i in range(1, 29)), "Amount", "Class"]
    distinct = np.unique(raw.values, axis=0)
    assert len(distinct) == 20_000 and raw.rows == 20_080  # 0.4% duplicated rows
    assert int(distinct[:, -1].sum()) == 34  # exactly 0.17% fraud
    assert np.all(np.diff(raw.values[:, 0]) >= 0)  # Time only grows
    header, first = raw.to_csv().decode().splitlines()[:2]
    assert header.split(",") == raw.columns and len(first.split(",")) == 31
    assert np.array_equal(data.generate(rows=20_000, seed=3).values, raw.values)  # reproducible


def test_preprocessing_removes_duplicates_drops_time_splits_and_scales(prepared: data.Prepared) -> None:
    assert prepared.duplicates_removed == 80
    assert prepared.features == [*(f"V{i}" for i in range(1, 29)), "Amount"]
    assert prepared.sizes() == {"train": 14_000, "validation": 3_000, "test": 3_000}
    assert sum(prepared.frauds().values()) == 34 and min(prepared.frauds().values()) >= 5  # stratified
    X_train, _ = prepared.splits["train"]
    assert np.allclose(X_train.mean(axis=0), 0, atol=1e-3) and np.allclose(X_train.std(axis=0), 1, atol=1e-2)
    with np.load(io.BytesIO(prepared.to_npz())) as saved:
        assert saved["X_test"].shape == (3_000, 29) and list(saved["features"]) == prepared.features


def test_trees_beat_the_linear_booster_and_the_run_logs_offline(
    prepared: data.Prepared, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = [train.train(name, params, prepared) for name, params in train.RUNS.items()]
    assert train.best(runs).params["booster"] == "gbtree"
    gbtree = train.best(runs)
    assert gbtree.validation.auc > 0.9 and len(gbtree.auc_by_round) == 100
    assert sum(map(sum, gbtree.validation.confusion)) == 3_000

    attempts = close_network(monkeypatch)
    uploaded: dict[str, bytes] = {}

    def upload(key: str) -> str:
        uploaded[key] = gbtree.to_ubj()
        return f"s3://bucket/models/{key}/model.ubj"

    datasets = [DatasetVersion(name="creditcard-transactions", version="1.0.0", aliases=["raw"], uri="s3://b/raw.csv")]
    key, archive = tracking.log_offline(gbtree, datasets, upload, tmp_path)
    assert attempts == [], f"the offline experiment reached for the network: {attempts}"

    reg = parse_offline_archive(archive)
    assert (reg.experiment_key, reg.experiment_name, list(uploaded)) == (key, "xgb-gbtree", [key])
    assert reg.model.uri == f"s3://bucket/models/{key}/model.ubj" and reg.model.metadata["framework"] == "xgboost"
    assert reg.model.metadata["format"] == "xgboost-ubj"
    (tmp_path / "model.ubj").write_bytes(uploaded[key])  # what the inference server loads, with no pickle opt-in
    X_val, _ = prepared.splits["validation"]
    served = load_model(tmp_path / "model.ubj").predict(X_val[:500].astype(float))
    assert np.allclose(np.asarray(served["probabilities"])[:, 1], gbtree.model.predict_proba(X_val[:500])[:, 1], atol=1e-6)
    assert reg.params == gbtree.params
    assert reg.metrics["auc"] == pytest.approx(gbtree.validation.auc)
    assert reg.datasets == datasets
    drawn = {p["kind"]: p for p in plots(reg)}
    assert drawn["confusion_matrix"]["labels"] == ["Normal", "Fraud"]
    assert drawn["confusion_matrix"]["matrix"] == gbtree.validation.confusion
    assert (drawn["curve"]["name"], drawn["curve"]["x"]) == ("roc-curve", gbtree.validation.roc[0])
    body = to_registration(reg, "ana@example.com", model_card={"summary": "fraud scores"})
    assert body.source == "comet" and body.model_card.custom_details["plots"] == plots(reg)
