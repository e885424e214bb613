"""AWS that accepts connections but does not answer (a stopped LocalStack): the service notices without
calling AWS itself, and forgets a call once it is cancelled. The whole outage, on real processes, is in
tests/e2e/test_chaos.py."""

from __future__ import annotations

import asyncio
import gc

import pytest

from shared.aws import AwsClients
from shared.settings import ServiceSettings
from tests.helpers import eventually


@pytest.fixture
async def silent_aws():
    """Accepts every connection, reads what is sent, never answers."""
    held: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        while await reader.read(65536):
            pass

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    for writer in held:
        writer.close()
    server.close()


async def test_a_call_aws_does_not_answer_is_overdue_after_its_limit_and_forgotten_once_cancelled(silent_aws):
    settings = ServiceSettings(service="approver", namespace="outage", aws_endpoint_url=silent_aws, poll_wait_seconds=1)
    async with AwsClients(settings, ("sqs",)) as clients:
        poll = asyncio.create_task(
            clients["sqs"].receive_message(QueueUrl=f"{silent_aws}/queue/outage", WaitTimeSeconds=1)
        )
        await asyncio.sleep(0.5)
        assert clients.overdue() == []  # a long poll may wait its WaitTimeSeconds, and 5 s more

        async def reported() -> list[str]:
            return clients.overdue()

        assert await eventually(reported, timeout=15) == ["ReceiveMessage"]
        poll.cancel()
        await asyncio.wait([poll])
        del poll
        gc.collect()
        assert clients.overdue() == []
