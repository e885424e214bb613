"""A training script that registers its model with modelgate and waits until dev serves it.

    make up                                              # LocalStack and the four services
    .venv/bin/python examples/train_and_register.py      # train, log to Comet (offline), register, wait

It trains the demo's fraud model (XGBoost on synthetic card transactions), logs the run to a Comet
OfflineExperiment (no Comet account needed; `comet upload` sends it later), then registers the model file
with its metrics, parameters and the experiment's key as lineage, and waits until the dev stage serves it.
On a CI runner, pass --idempotency-key "$CI_JOB_ID" so that a retried job registers once.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

import modelgate
from modelgate.fraud import data, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--group", default="fraud-detector", help="model group (created on first use)")
    parser.add_argument("--rows", type=int, default=50_000, help="synthetic transactions to train on")
    parser.add_argument("--idempotency-key", help="retrying with the same key registers once (e.g. $CI_JOB_ID)")
    parser.add_argument("--timeout", type=float, default=180, help="seconds to wait for dev")
    args = parser.parse_args()

    prepared = data.preprocess(data.generate(rows=args.rows))
    run = train.train("xgb-gbtree", train.RUNS["xgb-gbtree"], prepared)
    print(f"trained {run.name}: validation auc {run.validation.auc:.4f}")

    with tempfile.TemporaryDirectory() as folder:
        experiment_key = log_to_comet(run, Path(folder))
        model = Path(folder) / "model.ubj"
        model.write_bytes(run.to_ubj())

        with modelgate.Client() as mg:
            version = mg.register(
                args.group,
                file=model,
                metrics=run.validation.metrics(),
                params=run.params,
                framework="xgboost",
                description=f"{run.name} on {args.rows:,} synthetic transactions",
                lineage={"experiment_key": experiment_key},
                idempotency_key=args.idempotency_key,
            )
            print(f"registered {version.model_version_id} ({version.artifact_digest})")
            try:
                mg.wait(version.group, version.version, "dev", timeout=args.timeout,
                        progress=lambda status: print(f"  dev: {status}"))
            except modelgate.WaitFailed as exc:
                raise SystemExit(f"not deployed: {exc}") from None
            live = mg.live(version.group, "dev")
            print(f"dev serves {live.model_version_id} at {live.endpoint_url or 'its Parameter Store pointer'}")


def log_to_comet(run: train.Run, folder: Path) -> str:
    """Logs the run to a Comet OfflineExperiment in `folder`; its experiment key."""
    import comet_ml

    logging.getLogger("comet_ml").setLevel(logging.ERROR)
    experiment = comet_ml.OfflineExperiment(offline_directory=str(folder), project_name="fraud-detection",
                                            log_env_details=False, log_git_metadata=False, log_code=False,
                                            auto_output_logging=False, display_summary_level=0)
    experiment.log_parameters(run.params)
    experiment.log_metrics(run.validation.metrics())
    experiment.end()
    return experiment.get_key()


if __name__ == "__main__":
    main()
