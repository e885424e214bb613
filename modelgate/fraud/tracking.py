"""Logging a training run to Comet offline: an OfflineExperiment archive that modelgate registers from.

Nothing here reaches the network (see docs/comet.md, "Training scripts that must stay offline"): env
details, git, code, auto-logging and console capture are off, comet_ml's error tracking is off before it
is imported, and the model is logged as a remote model with sync_mode=False.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from modelgate.fraud.data import LABELS
from modelgate.fraud.train import Run
from services.registrar.comet import import_comet
from shared.lineage import DatasetVersion, log_dataset_lineage

PROJECT = "fraud-detection"
MODEL_NAME = "fraud-xgboost"


def log_offline(
    run: Run,
    datasets: list[DatasetVersion],
    upload_model: Callable[[str], str],
    directory: Path,
    project: str = PROJECT,
) -> tuple[str, Path]:
    """Logs `run` to an OfflineExperiment in `directory`: parameters, validation metrics (AUC per round too),
    the confusion matrix (Normal/Fraud), the ROC curve, the datasets' lineage and the model, uploaded by
    `upload_model(experiment_key) -> its URI`. Returns the experiment key and the archive's path."""
    comet_ml = import_comet()
    logging.getLogger("comet_ml").setLevel(logging.ERROR)  # its INFO and WARNING lines are about uploading
    directory.mkdir(parents=True, exist_ok=True)
    experiment = comet_ml.OfflineExperiment(
        offline_directory=str(directory),
        project_name=project,
        log_env_details=False,
        log_git_metadata=False,
        log_git_patch=False,
        log_code=False,
        parse_args=False,
        auto_param_logging=False,
        auto_metric_logging=False,
        auto_output_logging=False,
        display_summary_level=0,
    )
    try:
        key = experiment.get_key()
        experiment.set_name(run.name)
        experiment.add_tags(["fraud", run.params["booster"]])
        experiment.log_parameters(run.params)
        for step, auc in enumerate(run.auc_by_round):
            experiment.log_metric("validation_auc", auc, step=step)
        experiment.log_metrics(run.validation.metrics())
        experiment.log_metric("train_seconds", round(run.seconds, 2))
        experiment.log_confusion_matrix(
            matrix=run.validation.confusion, labels=LABELS, title="Confusion Matrix (validation)"
        )
        fpr, tpr = run.validation.roc
        experiment.log_curve("roc-curve", x=fpr, y=tpr)
        log_dataset_lineage(experiment, datasets)
        metadata: dict[str, Any] = {"framework": "xgboost", "format": "xgboost-ubj", "estimator": "XGBClassifier"}
        experiment.log_remote_model(MODEL_NAME, upload_model(key), metadata=metadata, sync_mode=False)
    finally:
        experiment.end()
    return key, directory / f"{key}.zip"
