"""Training and evaluating XGBoost fraud classifiers on the preprocessed transactions.

Hyperparameters use the names of SageMaker's built-in XGBoost (num_round, eta as learning_rate, ...);
the model is XGBoost's scikit-learn API (XGBClassifier), saved in XGBoost's own binary format (UBJSON,
`save_model`), which runs no code when it is loaded: what the deployer's `local` inference server loads
(services/inference/model.py) without a pickle opt-in.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import (
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)
from xgboost import XGBClassifier

from modelgate.fraud.data import Prepared

BASE = {"objective": "binary:logistic", "num_round": 100, "eval_metric": "auc", "learning_rate": 0.15}
RUNS: dict[str, dict[str, Any]] = {
    "xgb-gbtree": {**BASE, "booster": "gbtree", "max_depth": 6},
    "xgb-gblinear": {**BASE, "booster": "gblinear"},
}
THRESHOLD = 0.5


@dataclass
class Evaluation:
    """Scores of a model on one labelled set, at THRESHOLD."""

    auc: float
    precision: float
    recall: float
    f1: float
    confusion: list[list[int]]  # rows: actual Normal, Fraud; columns: predicted Normal, Fraud
    roc: tuple[list[float], list[float]]  # false positive rates, true positive rates

    def metrics(self) -> dict[str, float]:
        return {"auc": self.auc, "precision": self.precision, "recall": self.recall, "f1": self.f1}


@dataclass
class Run:
    name: str
    params: dict[str, Any]
    model: XGBClassifier
    validation: Evaluation
    auc_by_round: list[float]  # validation AUC after each boosting round
    seconds: float

    def to_ubj(self) -> bytes:
        """The model in XGBoost's own binary format (a `.ubj` file): loading it runs no code, unlike a pickle."""
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "model.ubj"
            self.model.save_model(path)
            return path.read_bytes()


def evaluate(y_true: np.ndarray, p_fraud: np.ndarray) -> Evaluation:
    predicted = (p_fraud >= THRESHOLD).astype(int)
    fpr, tpr, _ = roc_curve(y_true, p_fraud)
    return Evaluation(
        auc=float(roc_auc_score(y_true, p_fraud)),
        precision=float(precision_score(y_true, predicted, zero_division=0)),
        recall=float(recall_score(y_true, predicted, zero_division=0)),
        f1=float(f1_score(y_true, predicted, zero_division=0)),
        confusion=confusion_matrix(y_true, predicted, labels=[0, 1]).tolist(),
        roc=(np.round(fpr, 5).tolist(), np.round(tpr, 5).tolist()),
    )


def train(name: str, params: dict[str, Any], data: Prepared, seed: int = 7) -> Run:
    """Fits on the training split, watching AUC on the validation split; evaluates on validation."""
    started = time.monotonic()
    options = {k: v for k, v in params.items() if k != "num_round"}
    model = XGBClassifier(n_estimators=params["num_round"], n_jobs=1, random_state=seed, **options)
    X_train, y_train = data.splits["train"]
    X_val, y_val = data.splits["validation"]
    model.fit(X_train, y_train, eval_set=[(X_val, y_val)], verbose=False)
    return Run(
        name=name,
        params=params,
        model=model,
        validation=evaluate(y_val, model.predict_proba(X_val)[:, 1]),
        auc_by_round=[float(v) for v in model.evals_result()["validation_0"]["auc"]],
        seconds=time.monotonic() - started,
    )


def best(runs: list[Run]) -> Run:
    """The run to register: the highest validation AUC."""
    return max(runs, key=lambda run: run.validation.auc)
