"""The SageMaker bridge inside the registrar, with SageMaker and S3 stood in for: one version per package
ARN even when deliveries race, nothing registered that DescribeModelPackage does not confirm, and
write-backs only for bridged versions, done by the write-back worker from the version's state (twice
changes nothing twice). On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import copy
import json
from typing import Any, Self

import pytest
from botocore.exceptions import ClientError
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import async_sessionmaker

from services.registrar.bootstrap import bootstrap
from services.registrar.catalog import Registration, register
from services.registrar.comet_writeback import CometWriteback
from services.registrar.models import CometWritebackRow, ModelVersion, SageMakerLink, WritebackStatus
from services.registrar.sagemaker_bridge import SageMakerBridge
from services.registrar.sagemaker_model import BadBridgeEvent
from services.registrar.settings import RegistrarSettings
from services.registrar.writebacks import CometWritebackWorker
from shared.db import make_engine
from shared.migrations import prepare_database
from shared.runtime import Runtime
from tests.factories import approval_decided
from tests.unit.test_sagemaker_translation import DESCRIBED, event

ARN = DESCRIBED["ModelPackageArn"]
PACKAGE = {**DESCRIBED, "ModelPackageGroupName": "fraud",
           "InferenceSpecification": {"Containers": [{"Image": "xgb:1", "ModelDataUrl": "s3://modelgate-artifacts/fraud/model.tar.gz"}]},
           "ModelMetrics": {"ModelQuality": {"Statistics": {"S3Uri": "s3://modelgate-artifacts/fraud/evaluation.json"}}}}


class FakeSageMaker:
    def __init__(self, packages: dict[str, dict[str, Any]]):
        self.packages, self.updates = copy.deepcopy(packages), []

    async def describe_model_package(self, ModelPackageName: str) -> dict[str, Any]:
        await asyncio.sleep(0)  # let a racing delivery interleave
        if ModelPackageName not in self.packages:
            raise ClientError({"Error": {"Code": "ValidationException", "Message": f"Model package {ModelPackageName} not found"}},
                              "DescribeModelPackage")
        return copy.deepcopy(self.packages[ModelPackageName])

    async def update_model_package(self, ModelPackageArn: str, **changes: Any) -> dict[str, Any]:
        self.updates.append(changes)
        self.packages[ModelPackageArn].update(changes)
        return {"ModelPackageArn": ModelPackageArn}


class Body:
    def __init__(self, data: bytes):
        self.data = data

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def read(self) -> bytes:
        return self.data


class FakeS3:
    async def get_object(self, Bucket: str, Key: str, Range: str) -> dict[str, Any]:
        report = {"binary_classification_metrics": {"auc": {"value": 0.91, "standard_deviation": "NaN"}}}
        return {"Body": Body(json.dumps(report).encode())}


async def _registrar(url: str, sagemaker: FakeSageMaker) -> tuple[Runtime, Any]:
    engine = make_engine(url)
    await prepare_database(engine, "registrar")
    settings = RegistrarSettings(database_url=url, sagemaker_bridge=True, check_artifacts=False)
    runtime = Runtime(settings=settings, engine=engine, sessionmaker=async_sessionmaker(engine, expire_on_commit=False),
                      aws={"sagemaker": sagemaker, "s3": FakeS3(), "sqs": None})
    return runtime, await bootstrap(runtime, comet=CometWriteback(None, None))


async def _count(runtime: Runtime, model: Any) -> int:
    async with runtime.sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(model)))


async def test_racing_and_repeated_deliveries_register_one_version_per_package(database_url) -> None:
    runtime, wiring = await _registrar(database_url, FakeSageMaker({ARN: PACKAGE}))
    bridge = next(w for w in wiring.workers if isinstance(w, SageMakerBridge))
    outcomes = await asyncio.gather(bridge.handle(event()), bridge.handle(event()), return_exceptions=True)
    outcomes.append(await bridge.handle(event()))
    assert sorted(o.split()[0] for o in outcomes) == ["known", "known", "registered"], outcomes
    assert await _count(runtime, ModelVersion) == 1 and await _count(runtime, SageMakerLink) == 1
    async with runtime.sessionmaker() as session:
        version = await session.get(ModelVersion, "fraud/1")
    assert (version.registered_by, version.source, version.metrics) == ("sagemaker-bridge", "sagemaker", {"auc": 0.91})
    assert version.lineage["sagemaker"]["model_package_version"] == 3
    await runtime.engine.dispose()


async def test_an_event_sagemaker_does_not_confirm_registers_nothing(database_url) -> None:
    runtime, wiring = await _registrar(database_url, FakeSageMaker({}))
    bridge = next(w for w in wiring.workers if isinstance(w, SageMakerBridge))
    with pytest.raises(BadBridgeEvent, match=r"^not confirmed: DescribeModelPackage\(arn:"):
        await bridge.handle(event())
    assert await _count(runtime, ModelVersion) == 0
    await runtime.engine.dispose()


async def test_decisions_of_bridged_versions_alone_are_written_back_once(database_url) -> None:
    sagemaker = FakeSageMaker({ARN: PACKAGE})
    runtime, wiring = await _registrar(database_url, sagemaker)
    bridge = next(w for w in wiring.workers if isinstance(w, SageMakerBridge))
    worker = next(w for w in wiring.workers if isinstance(w, CometWritebackWorker))
    await bridge.handle(event())  # fraud/1, from the package
    async with runtime.uow() as uow:  # fraud/2, registered by hand
        await register(uow, "fraud", Registration(artifact_uri="s3://modelgate-artifacts/x", registered_by="ana"))
        await uow.commit()
    for decided in (approval_decided(version=1), approval_decided(version=2), approval_decided(version=1)):
        async with runtime.uow() as uow:
            await wiring.handlers["ApprovalDecided"](decided, uow)
            await uow.commit()
    while await worker.run_once():
        pass
    async with runtime.sessionmaker() as session:
        rows = list(await session.scalars(select(CometWritebackRow)))
    assert [(r.target, r.model, r.status, r.model_version_id) for r in rows] == [
        ("sagemaker", ARN, WritebackStatus.DONE, "fraud/1")] * 2
    [update] = sagemaker.updates  # the second row found the package showing it already
    assert update["ModelApprovalStatus"] == "Approved"
    assert update["ModelLifeCycle"] == {"Stage": "dev", "StageStatus": "Approved",
                                        "StageDescription": "modelgate fraud/1: dev Approved"}
    assert update["ApprovalDescription"] == "modelgate fraud/1: dev Approved by policy"
    await runtime.engine.dispose()
