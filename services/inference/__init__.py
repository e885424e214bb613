"""The local inference server: loads one model version's artifact from S3 and answers POST /invocations.

    MODELGATE_MODEL_URI=s3://bucket/fraud/model.ubj python -m services.inference

The deployer's `local` target runs one of these per stage; the same server fits a SageMaker or ECS
container (GET /ping, POST /invocations on MODELGATE_HTTP_PORT, 8080 by default). The formats it loads are
in services/inference/model.py: XGBoost's own format and skops load without running code; a pickle needs
MODELGATE_ALLOW_PICKLE=true (the deployer sets it for the groups in MODELGATE_PICKLE_GROUPS).
"""
