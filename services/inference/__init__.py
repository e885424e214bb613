"""The local inference server: loads one model version's artifact from S3 and answers POST /invocations.

    MODELGATE_MODEL_URI=s3://bucket/fraud/model.joblib python -m services.inference

The deployer's `local` target runs one of these per stage; the same server fits a SageMaker or ECS
container (GET /ping, POST /invocations on MODELGATE_HTTP_PORT, 8080 by default).
"""
