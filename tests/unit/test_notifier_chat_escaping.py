"""Chat text is escaped as Slack's formatting rules ask: what users wrote shows as text, never as a mention,
a link or a command."""

from __future__ import annotations

import json

import httpx

from services.notifier.channels import WebhookChannel
from services.notifier.messages import render
from services.notifier.routing import Recipient
from shared.events import ApprovalRequested, ApprovalRequestedPayload
from tests.factories import approval_decided, ref


def requested(registered_by: str, summary: str) -> ApprovalRequested:
    return ApprovalRequested(
        producer="approver", correlation_id="fraud/1",
        payload=ApprovalRequestedPayload(
            **ref(), approval_id="a1", stage="test", registered_by=registered_by, artifact_uri="s3://b/model.bin",
            policy_rule="test: 1 approver", required_approvals=1, checks=[], model_card_summary=summary,
        ),
    )


async def posted_text(event) -> str:
    sent: list[dict] = []

    def hook(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        return httpx.Response(200)

    async with httpx.AsyncClient(transport=httpx.MockTransport(hook)) as http:
        await WebhookChannel(http).send(event, render(event), Recipient("webhook", "http://hook/x", ("team",)), "k")
    return sent[0]["text"]


async def test_mentions_and_links_users_wrote_reach_the_chat_as_text():
    text = await posted_text(requested("<!channel> ana", "fast & accurate: <http://evil.example|the docs>"))
    assert "<" not in text and ">" not in text
    assert "&lt;!channel&gt; ana" in text
    assert "fast &amp; accurate: &lt;http://evil.example|the docs&gt;" in text


async def test_a_comment_with_a_mention_is_escaped_and_plain_text_is_left_alone():
    decided = approval_decided(decision="Rejected")
    decided = decided.model_copy(update={"payload": decided.payload.model_copy(update={"comment": "ask <@U123> & <!here>"})})
    text = await posted_text(decided)
    assert "ask &lt;@U123&gt; &amp; &lt;!here&gt;" in text
    assert render(decided).text.count("<!here>") == 1  # email and SNS carry it unchanged
