"""The SageMaker Model Registry bridge, inbound: a worker of the registrar that consumes the bridge queue
(EventBridge's "SageMaker Model Package State Change" events) and registers new package versions.

Promises:
- The event is a hint, never the truth: the bridge reads the package with DescribeModelPackage and registers
  what that says (a forged event on a shared LocalStack, or a stale one, registers nothing it cannot confirm).
  A message that is not such an event, or whose package SageMaker does not know, is dead-lettered with the
  reason (`dlq_reason`, `modelgate dlq list`); so is a package of a group the bridge may not register
  (MODELGATE_SAGEMAKER_GROUPS), an unversioned one, or one without an artifact.
- One modelgate version per package ARN (`sagemaker_packages`, its primary key): SageMaker "may send
  multiple events per state change", in any order, and write-backs make more; a package already registered
  is acknowledged and changes nothing, and two registrars racing on it leave one version (the loser's
  transaction rolls back, giving its version number back).
- modelgate numbers its versions itself (1, 2, ... per group, as for every registration); the package's
  ModelPackageVersion and ARN are in `lineage.sagemaker`.
- Registrations go through the same path as the API's: the artifact policy and pin (digest and S3
  VersionId, services/registrar/pinning.py), then `catalog.register`, by the `sagemaker-bridge` principal
  (registered_by, and the ModelRegistered event's). A package still in progress is retried later (the
  message's visibility backs off) and dead-lettered after MODELGATE_MAX_RECEIVE_COUNT receives.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import structlog
from botocore.exceptions import BotoCoreError, ClientError
from fastapi import HTTPException
from sqlalchemy.exc import IntegrityError

from services.registrar.catalog import UnknownGroup, register
from services.registrar.models import SageMakerLink
from services.registrar.sagemaker_model import (
    BadBridgeEvent,
    MetricReport,
    SageMakerPackage,
    metrics_from_report,
    package_from_description,
    parse_state_change,
    to_registration,
)
from shared import metrics, topology
from shared.bus import dead_letter_attributes
from shared.pins import s3_location

log = structlog.get_logger()

#: DescribeModelPackage's answers that mean "no such package": the event is not confirmed.
NOT_FOUND = ("ValidationException", "ResourceNotFound", "ResourceNotFoundException")
IN_PROGRESS = {"Pending", "InProgress"}
METRIC_EVENT = "SageMakerModelPackageStateChange"  # its event_type label in modelgate_events_handled_total


class RetryLater(Exception):
    """Not now (SageMaker or S3 unreachable, the package still in progress): the message is received again."""


class SageMakerBridge:
    """Consumes the bridge queue; `run(stop)` loops until stop is set (see the module docstring)."""

    def __init__(self, registrar: Any, max_receive_count: int | None = None, wait_seconds: int | None = None):
        self.registrar = registrar
        settings = registrar.settings
        self.sqs, self.s3 = registrar.runtime.aws["sqs"], registrar.runtime.aws["s3"]
        self.sagemaker = registrar.runtime.aws["sagemaker"]
        self.max_receive_count = max_receive_count or settings.max_receive_count
        self.wait_seconds = settings.poll_wait_seconds if wait_seconds is None else wait_seconds
        self.allowed = set(settings.sagemaker_groups)
        self.queue_url = self.dlq_url = ""
        self.last_poll_ok = True

    async def run(self, stop: asyncio.Event) -> None:
        stopping = asyncio.create_task(stop.wait())
        try:
            await self._loop(stop, stopping)
        finally:
            stopping.cancel()

    async def _loop(self, stop: asyncio.Event, stopping: asyncio.Task[bool]) -> None:
        while not stop.is_set():
            try:
                if not self.queue_url:
                    await self._resolve()
                receive = asyncio.create_task(self._receive())
                await asyncio.wait({receive, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if not receive.done():  # stopping: what was not received stays in the queue
                    receive.cancel()
                    break
                for message in receive.result():  # received: handled to the end, even when stopping
                    await self._process(message)
                self.last_poll_ok = True
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 (AWS unreachable: back off, stay alive, report not-ready)
                self.last_poll_ok = False
                log.warning("sagemaker_bridge_poll_failed", error=str(exc))
                await asyncio.wait({stopping}, timeout=2)

    async def _resolve(self) -> None:
        settings = self.registrar.settings
        self.queue_url = (await self.sqs.get_queue_url(QueueName=topology.sagemaker_queue_name(settings.namespace)))["QueueUrl"]
        self.dlq_url = (await self.sqs.get_queue_url(QueueName=topology.sagemaker_dlq_name(settings.namespace)))["QueueUrl"]

    async def _receive(self) -> list[dict[str, Any]]:
        response = await self.sqs.receive_message(
            QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=self.wait_seconds,
            MessageAttributeNames=["All"], MessageSystemAttributeNames=["ApproximateReceiveCount"],
        )
        return response.get("Messages", [])

    async def run_once(self) -> int:
        """Receive one batch and handle each message; returns how many were received."""
        messages = await self._receive()
        for message in messages:
            await self._process(message)
        return len(messages)

    async def _process(self, message: dict[str, Any]) -> None:
        receives = int(message.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
        try:
            outcome = await self.handle(message["Body"])
        except BadBridgeEvent as exc:
            await self._dead_letter(message, str(exc))
            metrics.EVENTS_HANDLED.labels(METRIC_EVENT, "dead_lettered").inc()
        except RetryLater as exc:
            if receives >= self.max_receive_count:
                await self._dead_letter(message, f"not registered after {receives} tries: {exc}")
            else:
                log.warning("sagemaker_event_will_retry", receives=receives, reason=str(exc))
                await self._retry_later(message, receives)
                return
        except Exception as exc:
            if receives >= self.max_receive_count:
                await self._dead_letter(message, f"handler failed {receives} times: {exc!r}")
            else:
                log.exception("sagemaker_event_failed", receives=receives)
                await self._retry_later(message, receives)
                return
        else:
            log.info("sagemaker_event_handled", outcome=outcome)
            metrics.EVENTS_HANDLED.labels(METRIC_EVENT, "skipped" if outcome.startswith("not") else outcome.split()[0]).inc()
        await self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])

    async def _retry_later(self, message: dict[str, Any], receives: int) -> None:
        try:
            await self.sqs.change_message_visibility(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"],
                                                     VisibilityTimeout=min(2 ** (receives - 1), 60))
        except Exception as exc:  # noqa: BLE001 (not fatal: the message reappears after the queue's own timeout)
            log.warning("change_visibility_failed", error=str(exc))

    async def _dead_letter(self, message: dict[str, Any], reason: str) -> None:
        await self.sqs.send_message(QueueUrl=self.dlq_url, MessageBody=message["Body"],
                                    MessageAttributes=dead_letter_attributes(message, reason, self.queue_url))
        log.error("sagemaker_event_dead_lettered", reason=reason)

    # ------------------------------------------------------------ one event

    async def handle(self, body: str) -> str:
        """Register the package the event names, when it is new; returns what happened ("registered <id>",
        "known <id>", "not completed"). Raises BadBridgeEvent (dead-letter) or RetryLater."""
        event = parse_state_change(body)
        arn = event.detail.model_package_arn
        if (known := await self._known(arn)) is not None:
            return f"known {known}"
        package = await self._describe(arn)
        if package.status in IN_PROGRESS:
            raise RetryLater(f"{arn} is {package.status}; registered once it is Completed")
        if package.status != "Completed":
            log.warning("sagemaker_package_not_registered", arn=arn, status=package.status)
            return f"not completed ({package.status})"
        claimed = (event.detail.model_package_group_name, event.detail.model_package_version)
        if claimed != (package.group, package.version) and any(claimed):
            log.warning("sagemaker_event_disagrees", arn=arn, event_group=claimed[0], event_version=claimed[1],
                        group=package.group, version=package.version)
        if self.allowed and package.group not in self.allowed:
            raise BadBridgeEvent(f"refused: model package group {package.group!r} is not one the SageMaker bridge "
                                 f"may register (MODELGATE_SAGEMAKER_GROUPS: {', '.join(sorted(self.allowed))})")
        registration = to_registration(package, await self._metrics(package))
        try:
            pin = await self.registrar.check_artifact(registration.artifact_uri)
        except HTTPException as exc:
            if exc.status_code >= 500:
                raise RetryLater(str(exc.detail)) from None
            raise BadBridgeEvent(f"{arn}: {exc.detail}") from None
        return await self._register(package, registration, pin)

    async def _known(self, arn: str) -> str | None:
        async with self.registrar.runtime.sessionmaker() as session:
            link = await session.get(SageMakerLink, arn)
            return link.model_version_id if link is not None else None

    async def _describe(self, arn: str) -> SageMakerPackage:
        try:
            described = await self.sagemaker.describe_model_package(ModelPackageName=arn)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            if error.get("Code") in NOT_FOUND:
                raise BadBridgeEvent(f"not confirmed: DescribeModelPackage({arn}) says {error.get('Code')}: "
                                     f"{error.get('Message')}; nothing registered") from None
            raise RetryLater(f"DescribeModelPackage({arn}) failed: {error.get('Code')}: {error.get('Message')}") from None
        except BotoCoreError as exc:
            raise RetryLater(f"SageMaker did not answer DescribeModelPackage({arn}): {exc}") from None
        if described.get("ModelPackageArn") != arn:
            raise BadBridgeEvent(f"not confirmed: DescribeModelPackage({arn}) describes {described.get('ModelPackageArn')!r}")
        return package_from_description(described)

    async def _metrics(self, package: SageMakerPackage) -> dict[str, float]:
        metrics: dict[str, float] = {}
        for report in package.metric_reports:
            for name, value in metrics_from_report(await self._report(package, report)).items():
                metrics.setdefault(name, value)
        return metrics

    async def _report(self, package: SageMakerPackage, report: MetricReport) -> Any:
        location = s3_location(report.s3_uri)
        if location is None:
            raise BadBridgeEvent(f"{package.arn}: ModelMetrics {report.kind} S3Uri {report.s3_uri!r} is not s3://bucket/key")
        limit = self.registrar.settings.sagemaker_report_max_bytes
        try:
            got = await self.s3.get_object(Bucket=location[0], Key=location[1], Range=f"bytes=0-{limit}")
            async with got["Body"] as stream:
                data = await stream.read()
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            raise RetryLater(f"ModelMetrics {report.kind} report {report.s3_uri} cannot be read ({code}); "
                             "let the registrar read it (s3:GetObject)") from None
        except BotoCoreError as exc:
            raise RetryLater(f"S3 did not answer for {report.s3_uri}: {exc}") from None
        if len(data) > limit:
            raise BadBridgeEvent(f"{package.arn}: ModelMetrics {report.kind} report {report.s3_uri} is larger than "
                                 f"{limit:,} bytes (MODELGATE_SAGEMAKER_REPORT_MAX_BYTES)")
        try:
            return json.loads(data)
        except ValueError:
            log.warning("sagemaker_report_not_json", arn=package.arn, report=report.s3_uri)
            return {}

    async def _register(self, package: SageMakerPackage, registration: Any, pin: Any) -> str:
        settings = self.registrar.settings
        async with self.registrar.runtime.uow() as uow:
            try:
                version = await register(uow, package.group, registration, settings.auto_create_groups, pin=pin)
                uow.session.add(SageMakerLink(package_arn=package.arn, version=version, package_group=package.group,
                                              package_version=package.version))
                await uow.commit()
            except UnknownGroup as exc:
                raise BadBridgeEvent(f"{package.arn}: {exc} (MODELGATE_AUTO_CREATE_GROUPS is off)") from None
            except IntegrityError:  # a twin delivery, handled by another registrar meanwhile
                known = await self._known(package.arn)
                if known is None:
                    raise
                return f"known {known}"
        log.info("sagemaker_package_registered", arn=package.arn, model_version_id=version.id)
        return f"registered {version.id}"
