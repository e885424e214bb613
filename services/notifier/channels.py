"""The channels a message goes out on: the log, a Slack-compatible webhook, SES email, the SNS topic.

Each `send` raises on failure; notify.py retries and records the outcome.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

import httpx
import structlog

from services.notifier.messages import Message, chat_text
from services.notifier.routing import Recipient
from shared.events import Envelope

log = structlog.get_logger()


class Channel(Protocol):
    async def send(self, event: Envelope, message: Message, recipient: Recipient, key: str) -> None: ...


class LogChannel:
    async def send(self, event: Envelope, message: Message, recipient: Recipient, key: str) -> None:
        log.info("notification", subject=message.subject, body=message.body, audiences=list(recipient.audiences))


class WebhookChannel:
    """POST {"text", "event_id", "event_type", ...} to the URL; the Idempotency-Key lets a receiver drop repeats.
    `text` is escaped as Slack's formatting rules ask (services.notifier.messages.chat_text)."""

    def __init__(self, http: httpx.AsyncClient):
        self.http = http

    async def send(self, event: Envelope, message: Message, recipient: Recipient, key: str) -> None:
        response = await self.http.post(
            recipient.address,
            json={
                "text": chat_text(message.text),
                "event_id": event.event_id,
                "event_type": event.event_type,
                "model_version_id": event.correlation_id,
                "stage": getattr(event.payload, "stage", None),
            },
            headers={"Idempotency-Key": key},
        )
        response.raise_for_status()


class EmailChannel:
    """SES v1 SendEmail from a verified identity, one mail per address."""

    def __init__(self, ses: Any, sender: str):
        self.ses = ses
        self.sender = sender

    async def send(self, event: Envelope, message: Message, recipient: Recipient, key: str) -> None:
        await self.ses.send_email(
            Source=self.sender,
            Destination={"ToAddresses": [recipient.address]},
            Message={"Subject": {"Data": message.subject}, "Body": {"Text": {"Data": message.body}}},
        )


class SnsChannel:
    """The notifications topic, with attributes subscribers filter on (event_type, audiences, group, stage)."""

    def __init__(self, sns: Any, topic_arn: str):
        self.sns = sns
        self.topic_arn = topic_arn

    async def send(self, event: Envelope, message: Message, recipient: Recipient, key: str) -> None:
        attributes = {
            "event_type": {"DataType": "String", "StringValue": event.event_type},
            "group": {"DataType": "String", "StringValue": event.payload.group},
        }
        if recipient.audiences:
            attributes["audiences"] = {"DataType": "String.Array", "StringValue": json.dumps(list(recipient.audiences))}
        if stage := getattr(event.payload, "stage", None):
            attributes["stage"] = {"DataType": "String", "StringValue": stage}
        await self.sns.publish(
            TopicArn=self.topic_arn, Subject=message.subject[:100], Message=message.text, MessageAttributes=attributes
        )
