"""Tests that put events on the bus themselves sign them as their producer would, with the producer's own key
read from LocalStack's Secrets Manager (a test holds the emulator's root credentials; a service's role would
hold only its own key). The key is made and its public key listed on first use, as the producer does at start.
"""

from __future__ import annotations

import asyncio
import json
from contextlib import AsyncExitStack
from dataclasses import dataclass

from aiobotocore.session import get_session

from shared.events import Envelope
from shared.signing import Signer, producer_signer
from shared.topology import EMITS, OWNER


@dataclass
class Owners:
    """Signs each event with its owner's key: what the producers together would publish."""

    signers: dict[str, Signer]

    def sign(self, body: str) -> str:
        return self.signers[OWNER[json.loads(body)["event_type"]]].sign(body)

    def signed(self, event: Envelope) -> str:
        return self.sign(event.model_dump_json())


async def owners(endpoint: str, namespace: str) -> Owners:
    """Every producer's signer in `namespace` (keys created and published when missing)."""
    options = {"endpoint_url": endpoint, "region_name": "us-east-1",
               "aws_access_key_id": "test", "aws_secret_access_key": "test"}
    async with AsyncExitStack() as stack:
        session = get_session()
        secrets = await stack.enter_async_context(session.create_client("secretsmanager", **options))
        ssm = await stack.enter_async_context(session.create_client("ssm", **options))
        return Owners({s: await producer_signer(secrets, ssm, namespace, s) for s, types in EMITS.items() if types})


def signed(endpoint: str, namespace: str, event: Envelope) -> str:
    """`event`'s JSON as its owner would publish it (for tests without an event loop)."""
    return asyncio.run(owners(endpoint, namespace)).signed(event)
