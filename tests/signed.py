"""Tests that put events on the bus themselves sign them as their producer would, with the producer's own key
read from LocalStack's Secrets Manager (a test holds the emulator's root credentials; a service's role would
hold only its own key). The key is made and its public key listed on first use, as the producer does at start.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiobotocore.session import get_session

from shared.events import Envelope
from shared.signing import Signer, producer_signer
from shared.topology import OWNER


def signer_of(endpoint: str, namespace: str, service: str) -> Signer:
    """The signer `service` itself uses in `namespace` (its key created and published when missing)."""

    async def make() -> Signer:
        session = get_session()
        options: dict[str, Any] = {"endpoint_url": endpoint, "region_name": "us-east-1",
                                   "aws_access_key_id": "test", "aws_secret_access_key": "test"}
        async with session.create_client("secretsmanager", **options) as secrets, \
                session.create_client("ssm", **options) as ssm:
            return await producer_signer(secrets, ssm, namespace, service)

    return asyncio.run(make())


def signed(endpoint: str, namespace: str, event: Envelope) -> str:
    """`event`'s JSON as its owner would publish it: signed with the owner's key."""
    return signer_of(endpoint, namespace, OWNER[event.event_type]).sign(event.model_dump_json())
