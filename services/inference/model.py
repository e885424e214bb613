"""Loading a model artifact and predicting with it.

Supported artifacts (SUPPORTED_FORMATS), chosen by the file's name:
- `.ubj` or `.json`: an XGBoost model in XGBoost's own format (`Booster.save_model` or
  `XGBClassifier.save_model`); binary:logistic and multi:softprob answer probabilities, then labels;
- `.skops`: a scikit-learn estimator or Pipeline written by `skops.io.dump`; only types skops trusts by
  default (scikit-learn, numpy, scipy) are loaded, a file holding any other type is refused;
- a .tar.gz (SageMaker's model.tar.gz layout) holding one such file.
Neither format runs code when it is loaded.

Pickles (`.joblib`, `.pkl`, `.pickle`, or a file of any other name, read with `joblib.load`) run code from
the file when they are loaded: they are served only with `allow_pickle` (the deployer sets it for the model
groups in MODELGATE_PICKLE_GROUPS); without it they are refused, saying how to save the model safely or opt in.

An inference pipeline (`load_pipeline`) is several such artifacts run in order: each step but the last
transforms the rows (a scikit-learn transformer such as a StandardScaler, saved with skops: its `transform`
output is the next step's input), the last one predicts; each file is checked against its digest first.

`fetch_artifact` takes `s3://` URIs only, unless local paths are allowed (MODELGATE_ALLOW_LOCAL_ARTIFACTS,
development only).
"""

from __future__ import annotations

import json
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from shared.pins import file_digest

SUPPORTED_FORMATS = (
    "an XGBoost model in its own format (.ubj or .json, from save_model), a scikit-learn estimator or Pipeline "
    "saved with skops.io.dump (.skops), or a .tar.gz holding one; pickles (.joblib/.pkl/.pickle) only for model "
    "groups opted in with MODELGATE_PICKLE_GROUPS on the deployer"
)
XGBOOST_SUFFIXES = (".ubj", ".json")
SKOPS_SUFFIXES = (".skops",)
PICKLE_SUFFIXES = (".joblib", ".pkl", ".pickle")
MODEL_SUFFIXES = XGBOOST_SUFFIXES + SKOPS_SUFFIXES + PICKLE_SUFFIXES
PROBABILISTIC_OBJECTIVES = ("binary:logistic", "multi:softprob")
LOCAL_SWITCH = "MODELGATE_ALLOW_LOCAL_ARTIFACTS=true"


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
        if self.kind == "xgboost-booster":
            return _booster_classes(self.estimator)
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
        try:
            if self.kind == "xgboost-booster":
                return self._predict_booster(rows)
            answer: dict[str, Any] = {"predictions": np.asarray(self.estimator.predict(rows)).tolist()}
            if hasattr(self.estimator, "predict_proba"):
                answer["probabilities"] = np.asarray(self.estimator.predict_proba(rows)).tolist()
        except ValueError as exc:  # e.g. NaN or infinity, which most scikit-learn models refuse
            raise BadInput(f"the model refused these rows: {str(exc)[:300]}; send finite numbers") from None
        return answer

    def _predict_booster(self, rows: np.ndarray) -> dict[str, Any]:
        import xgboost

        raw = np.asarray(self.estimator.predict(xgboost.DMatrix(rows, feature_names=self.feature_names)))
        if _booster_objective(self.estimator) not in PROBABILISTIC_OBJECTIVES:  # a regressor: values
            return {"predictions": raw.tolist()}
        if raw.ndim == 1:  # binary:logistic: the probability of class 1
            return {"predictions": (raw >= 0.5).astype(int).tolist(), "probabilities": np.column_stack([1 - raw, raw]).tolist()}
        return {"predictions": raw.argmax(axis=1).tolist(), "probabilities": raw.tolist()}


    def transform(self, rows: np.ndarray) -> np.ndarray:
        """The rows transformed, for the next step of a pipeline."""
        try:
            return np.asarray(self.estimator.transform(rows), dtype=float)
        except ValueError as exc:
            raise BadInput(f"the {type(self.estimator).__name__} step refused these rows: {str(exc)[:300]}; send finite numbers") from None


@dataclass
class PipelineModel:
    """An inference pipeline served as one model: the rows go through each step in order (every step but the
    last transforms them), the last step predicts; what it answers is the last step's."""

    steps: list[tuple[str, LoadedModel]]
    kind: str = "pipeline"

    @property
    def estimator(self) -> Any:
        return self.steps[-1][1].estimator

    @property
    def feature_names(self) -> list[str] | None:
        return self.steps[0][1].feature_names

    @property
    def n_features(self) -> int | None:
        return self.steps[0][1].n_features

    @property
    def classes(self) -> list[Any] | None:
        return self.steps[-1][1].classes

    def describe(self) -> dict[str, Any]:
        return {**self.steps[-1][1].describe(), "kind": self.kind, "n_features": self.n_features,
                "feature_names": self.feature_names,
                "steps": [{"name": name, "kind": step.kind, "estimator": type(step.estimator).__name__} for name, step in self.steps]}

    def predict(self, rows: np.ndarray) -> dict[str, Any]:
        expected = self.n_features
        if expected is not None and rows.shape[1] != expected:
            raise BadInput(f"each row needs {expected} values (the pipeline's first step's features), got {rows.shape[1]}")
        for _name, step in self.steps[:-1]:
            rows = step.transform(rows)
        return self.steps[-1][1].predict(rows)


def load_pipeline(steps: list[dict[str, str]], allow_pickle: bool = False) -> PipelineModel:
    """Loads an inference pipeline's steps ({name, file, digest}, in order): each file checked against its
    digest, then loaded (load_model); every step but the last must be able to transform rows."""
    if not steps:
        raise BadArtifact("the pipeline has no steps")
    loaded = []
    for n, step in enumerate(steps):
        path = Path(step["file"])
        check_digest(path, step.get("digest"))
        before_the_model = n < len(steps) - 1
        model = load_model(path, allow_pickle=allow_pickle, transformer=before_the_model)
        if before_the_model and not hasattr(model.estimator, "transform"):
            raise BadArtifact(f"pipeline step {step['name']} ({type(model.estimator).__name__}) cannot transform rows for "
                              "the next step: every step but the last must be a transformer (e.g. a StandardScaler saved with skops)")
        loaded.append((step["name"], model))
    return PipelineModel(loaded)


def _booster_objective(booster: Any) -> str:
    return str(json.loads(booster.save_config())["learner"]["objective"]["name"])


def _booster_classes(booster: Any) -> list[int] | None:
    objective = _booster_objective(booster)
    if objective == "binary:logistic":
        return [0, 1]
    if objective == "multi:softprob":
        return list(range(int(json.loads(booster.save_config())["learner"]["learner_model_param"]["num_class"])))
    return None


def load_model(path: Path, allow_pickle: bool = False, transformer: bool = False) -> LoadedModel:
    """Loads a local artifact (see SUPPORTED_FORMATS); a pickle only with `allow_pickle`. With `transformer`
    (a pipeline's step before the model), an estimator that transforms rows without predicting is accepted."""
    suffix = path.suffix.lower()
    if suffix in XGBOOST_SUFFIXES:
        return _load_xgboost(path)
    if suffix in SKOPS_SUFFIXES:
        return _load_skops(path, transformer)
    if tarfile.is_tarfile(path):
        return _load_from_tar(path, allow_pickle, transformer)
    if not allow_pickle:
        raise BadArtifact(_pickle_refused(path.name))
    return _load_pickle(path, transformer)


def _pickle_refused(name: str) -> str:
    known = "a pickle (joblib) file" if name.lower().endswith(PICKLE_SUFFIXES) else "not a known format, so read as a pickle"
    return (
        f"{name} is {known}: loading it would run code from it, and this model group is not opted in to pickles. "
        "Save the model in a format that runs no code (XGBoost: model.save_model('model.ubj'); scikit-learn: "
        "skops.io.dump(model, 'model.skops')), or opt the group in with MODELGATE_PICKLE_GROUPS=<group> "
        f"on the deployer. Supported: {SUPPORTED_FORMATS}"
    )


def _load_xgboost(path: Path) -> LoadedModel:
    import xgboost

    booster = xgboost.Booster()
    try:
        booster.load_model(str(path))
    except xgboost.core.XGBoostError as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BadArtifact(f"{path.name} is not an XGBoost model ({first_line}); supported: {SUPPORTED_FORMATS}") from None
    return LoadedModel(booster, "xgboost-booster")


def _load_skops(path: Path, transformer: bool = False) -> LoadedModel:
    import skops.io
    from skops.io.exceptions import UntrustedTypesFoundException

    try:
        estimator = skops.io.load(path)  # trusted=None: only the types skops trusts by default
    except UntrustedTypesFoundException:
        untrusted = skops.io.get_untrusted_types(file=path)
        raise BadArtifact(
            f"{path.name} holds types skops does not trust, refused: {untrusted}. Save only scikit-learn, numpy and "
            "scipy objects with skops (an XGBoost model: its own format, model.save_model('model.ubj'))"
        ) from None
    except Exception as exc:
        raise BadArtifact(f"{path.name} is not a skops file ({type(exc).__name__}: {exc}); supported: {SUPPORTED_FORMATS}") from exc
    return _wrap(estimator, path.name, transformer)


def _load_pickle(path: Path, transformer: bool = False) -> LoadedModel:
    import joblib

    try:
        estimator = joblib.load(path)
    except Exception as exc:
        raise BadArtifact(f"{path.name} is not a joblib model ({exc}); supported: {SUPPORTED_FORMATS}") from exc
    return _wrap(estimator, path.name, transformer)


def _load_from_tar(path: Path, allow_pickle: bool, transformer: bool = False) -> LoadedModel:
    with tarfile.open(path) as archive, tempfile.TemporaryDirectory() as folder:
        members = [m for m in archive.getmembers() if m.isfile() and m.name.lower().endswith(MODEL_SUFFIXES)]
        if not members:
            raise BadArtifact(f"{path.name} holds no {'/'.join(MODEL_SUFFIXES)} file; supported: {SUPPORTED_FORMATS}")
        safe = [m for m in members if not m.name.lower().endswith(PICKLE_SUFFIXES)]
        chosen = (safe or members)[0]
        archive.extract(chosen, folder, filter="data")
        return load_model(Path(folder) / chosen.name, allow_pickle, transformer)


def _wrap(estimator: Any, name: str, transformer: bool = False) -> LoadedModel:
    try:
        import xgboost

        if isinstance(estimator, xgboost.Booster):
            return LoadedModel(estimator, "xgboost-booster")
    except ImportError:  # pragma: no cover - xgboost is a dependency
        pass
    if transformer and hasattr(estimator, "transform"):
        return LoadedModel(estimator, "sklearn")
    if not hasattr(estimator, "predict"):
        raise BadArtifact(f"{name} holds a {type(estimator).__name__}, which cannot predict; supported: {SUPPORTED_FORMATS}")
    return LoadedModel(estimator, "sklearn")


def refuse_local_artifact(uri: str, allow_local: bool) -> None:
    """BadArtifact unless `uri` is s3://, or a local path (file:// or bare) while the development switch is on."""
    scheme = urlparse(uri).scheme
    if scheme == "s3" or (allow_local and scheme in ("", "file")):
        return
    what = "a local path" if scheme in ("", "file") else f"a {scheme}:// URI"
    raise BadArtifact(f"artifact URI {uri} is {what}; serve artifacts from s3://bucket/key "
                      f"(local paths only for development, with {LOCAL_SWITCH} on the deployer)")


def fetch_artifact(uri: str, folder: Path, s3: Any, version_id: str | None = None, allow_local: bool = False) -> Path:
    """Downloads an s3:// artifact (exactly `version_id`, when given) into `folder`; a plain path is used as it
    is, with `allow_local` only. `s3` may be a callable making the client: it is called only for an s3:// URI."""
    refuse_local_artifact(uri, allow_local)
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
        short = next((n for n, row in enumerate(cells, start=2) if len(row) != len(header)), None)
        if short is not None:
            raise BadInput(f"CSV line {short} has {len(cells[short - 2])} values, the header {len(header)}: "
                           "send every row with a value per header column")
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
        matrix = np.asarray(rows, dtype=float)
    except (TypeError, ValueError):
        raise BadInput("every value must be a number") from None
    except OverflowError:
        raise BadInput("a value is too large for a float (over about 1.8e308): send finite numbers") from None
    if matrix.ndim != 2 or matrix.shape[1] == 0:
        raise BadInput("each row must be a flat, non-empty list of numbers")
    return matrix
