"""Loading a model artifact and predicting with it.

Supported artifacts (SUPPORTED_FORMATS): a file written by `joblib.dump` (any name, e.g. model.joblib or
model.pkl) holding
- a scikit-learn estimator or Pipeline (classifiers answer labels and probabilities, regressors values),
- an XGBoost model of its scikit-learn API (XGBClassifier, XGBRegressor),
- a native `xgboost.Booster` (binary:logistic or multi:softprob: probabilities, then labels);
or a .tar.gz (SageMaker's model.tar.gz layout) holding one such file.

joblib files are pickles: loading one runs code from it. Serve only artifacts from a bucket you trust.
"""

from __future__ import annotations

import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import joblib
import numpy as np

from shared.pins import file_digest

SUPPORTED_FORMATS = (
    "joblib/pickle file of a scikit-learn estimator or Pipeline, an XGBoost scikit-learn model "
    "(XGBClassifier/XGBRegressor) or an xgboost.Booster; or a .tar.gz holding one"
)
MODEL_SUFFIXES = (".joblib", ".pkl", ".pickle")


class BadArtifact(Exception):
    """The artifact cannot be served; the message says why and what is supported."""


class BadInput(ValueError):
    """The rows sent for prediction do not fit the model; the message says what to fix."""


@dataclass
class LoadedModel:
    estimator: Any
    kind: str  # "sklearn" | "xgboost-booster"

    @property
    def feature_names(self) -> list[str] | None:
        names = getattr(self.estimator, "feature_names_in_", None)
        if names is None and self.kind == "xgboost-booster":
            names = self.estimator.feature_names
        return [str(n) for n in names] if names is not None else None

    @property
    def n_features(self) -> int | None:
        if self.kind == "xgboost-booster":
            return int(self.estimator.num_features())
        n = getattr(self.estimator, "n_features_in_", None)
        return int(n) if n is not None else None

    @property
    def classes(self) -> list[Any] | None:
        classes = getattr(self.estimator, "classes_", None)
        return np.asarray(classes).tolist() if classes is not None else None

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "estimator": type(self.estimator).__name__,
            "n_features": self.n_features,
            "feature_names": self.feature_names,
            "classes": self.classes,
        }

    def predict(self, rows: np.ndarray) -> dict[str, Any]:
        """Labels (or values) for each row, and class probabilities when the model has them."""
        expected = self.n_features
        if expected is not None and rows.shape[1] != expected:
            raise BadInput(f"each row needs {expected} values (the model's features), got {rows.shape[1]}")
        if self.kind == "xgboost-booster":
            return self._predict_booster(rows)
        answer: dict[str, Any] = {"predictions": np.asarray(self.estimator.predict(rows)).tolist()}
        if hasattr(self.estimator, "predict_proba"):
            answer["probabilities"] = np.asarray(self.estimator.predict_proba(rows)).tolist()
        return answer

    def _predict_booster(self, rows: np.ndarray) -> dict[str, Any]:
        import xgboost

        raw = np.asarray(self.estimator.predict(xgboost.DMatrix(rows, feature_names=self.feature_names)))
        if raw.ndim == 1:  # binary:logistic: the probability of class 1
            return {"predictions": (raw >= 0.5).astype(int).tolist(), "probabilities": np.column_stack([1 - raw, raw]).tolist()}
        return {"predictions": raw.argmax(axis=1).tolist(), "probabilities": raw.tolist()}


def load_model(path: Path) -> LoadedModel:
    """Loads a local artifact (see SUPPORTED_FORMATS)."""
    if tarfile.is_tarfile(path):
        return _load_from_tar(path)
    try:
        estimator = joblib.load(path)
    except Exception as exc:
        raise BadArtifact(f"{path.name} is not a joblib model ({exc}); supported: {SUPPORTED_FORMATS}") from exc
    return _wrap(estimator, path.name)


def _load_from_tar(path: Path) -> LoadedModel:
    with tarfile.open(path) as archive, tempfile.TemporaryDirectory() as folder:
        members = [m for m in archive.getmembers() if m.isfile() and m.name.endswith(MODEL_SUFFIXES)]
        if not members:
            raise BadArtifact(f"{path.name} holds no {'/'.join(MODEL_SUFFIXES)} file; supported: {SUPPORTED_FORMATS}")
        archive.extract(members[0], folder, filter="data")
        return load_model(Path(folder) / members[0].name)


def _wrap(estimator: Any, name: str) -> LoadedModel:
    try:
        import xgboost

        if isinstance(estimator, xgboost.Booster):
            return LoadedModel(estimator, "xgboost-booster")
    except ImportError:  # pragma: no cover - xgboost is a dependency
        pass
    if not hasattr(estimator, "predict"):
        raise BadArtifact(f"{name} holds a {type(estimator).__name__}, which cannot predict; supported: {SUPPORTED_FORMATS}")
    return LoadedModel(estimator, "sklearn")


def fetch_artifact(uri: str, folder: Path, s3: Any, version_id: str | None = None) -> Path:
    """Downloads an s3:// artifact (exactly `version_id`, when given) into `folder`; a plain path is used
    as it is. `s3` may be a callable making the client: it is called only for an s3:// URI."""
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        return Path(parsed.path if parsed.scheme else uri)
    if parsed.scheme != "s3":
        raise BadArtifact(f"artifact URI {uri} must be s3://bucket/key")
    target = folder / (Path(parsed.path).name or "model")
    client = s3() if callable(s3) else s3
    extra = {"VersionId": version_id} if version_id else None
    try:
        client.download_file(parsed.netloc, parsed.path.lstrip("/"), str(target), ExtraArgs=extra)
    except Exception as exc:
        raise BadArtifact(f"cannot download {uri}: {exc}") from exc
    return target


def check_digest(path: Path, expected: str | None) -> None:
    """Refuses (BadArtifact) a file whose SHA-256 digest is not `expected` (`sha256:<hex>`; None: no check)."""
    if expected is None:
        return
    try:
        found = file_digest(path)
    except OSError as exc:
        raise BadArtifact(f"cannot read {path}: {exc}") from exc
    if found != expected:
        raise BadArtifact(
            f"artifact changed since approval: {path.name} has digest {found}, expected {expected}; "
            "refusing to load it (deploy the version again, or register the new bytes as a new version)"
        )


def rows_from_json(body: Any, feature_names: list[str] | None) -> np.ndarray:
    """`{"instances": [[...], ...]}`, `{"instances": [{"name": value}, ...]}` or a bare list of rows."""
    instances = body.get("instances", body.get("inputs")) if isinstance(body, dict) else body
    if not isinstance(instances, list) or not instances:
        raise BadInput('send {"instances": [[value, ...], ...]} (a non-empty list of rows)')
    if all(isinstance(row, dict) for row in instances):
        if not feature_names:
            raise BadInput("this model has no feature names: send each row as a list of values")
        missing = sorted({name for row in instances for name in feature_names if name not in row})
        if missing:
            raise BadInput(f"rows lack feature(s) {missing[:10]}")
        instances = [[row[name] for name in feature_names] for row in instances]
    if not all(isinstance(row, list) for row in instances):
        raise BadInput("each row must be a list of numbers (or an object of feature name -> number)")
    return _matrix(instances)


def rows_from_csv(text: str, feature_names: list[str] | None) -> np.ndarray:
    """CSV rows of numbers; a first line of names is a header, matched to the model's feature names."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise BadInput("the CSV body is empty: send one row of numbers per line")
    cells = [[cell.strip() for cell in line.split(",")] for line in lines]
    if not _numeric(cells[0]):
        header, cells = cells[0], cells[1:]
        if not feature_names:
            raise BadInput("this model has no feature names: send the CSV without a header")
        unknown = [name for name in feature_names if name not in header]
        if unknown:
            raise BadInput(f"the CSV header lacks feature(s) {unknown[:10]}")
        order = [header.index(name) for name in feature_names]
        cells = [[row[i] for i in order] for row in cells]
    if not cells:
        raise BadInput("the CSV has a header but no rows")
    return _matrix(cells)


def _numeric(cells: list[str]) -> bool:
    try:
        [float(c) for c in cells]
    except ValueError:
        return False
    return True


def _matrix(rows: list[list[Any]]) -> np.ndarray:
    if len({len(row) for row in rows}) > 1:
        raise BadInput("every row must have the same number of values")
    try:
        return np.asarray(rows, dtype=float)
    except (TypeError, ValueError):
        raise BadInput("every value must be a number") from None
