"""The decision-link key in LocalStack's Secrets Manager: created on first start, the same ever after."""

from __future__ import annotations

import asyncio

from services.approver.links import LinkSigner, load_or_create_key
from services.approver.settings import ApproverSettings
from shared.aws import AwsClients


async def test_the_key_is_created_once_in_secrets_manager_and_shared_by_replicas(localstack_endpoint, namespace, tmp_path):
    settings = ApproverSettings(
        namespace=namespace, aws_endpoint_url=localstack_endpoint, database_url=f"sqlite+aiosqlite:///{tmp_path}/a.db"
    )
    assert settings.hmac_secret_name == f"{namespace}/approver/hmac-key"
    async with AwsClients(settings, ("secretsmanager",)) as clients:
        secrets = clients["secretsmanager"]
        try:
            keys = await asyncio.gather(*(load_or_create_key(secrets, settings.hmac_secret_name) for _ in range(3)))
            assert len(set(keys)) == 1 and len(keys[0]) == 64
            assert await load_or_create_key(secrets, settings.hmac_secret_name) == keys[0]
            stored = await secrets.get_secret_value(SecretId=settings.hmac_secret_name)
            assert stored["SecretString"].encode() == keys[0]
            token, _ = LinkSigner(keys[0]).issue("a1", "kim", settings.link_ttl)
            assert LinkSigner(await load_or_create_key(secrets, settings.hmac_secret_name)).verify(token, "a1").approver == "kim"
        finally:
            await secrets.delete_secret(SecretId=settings.hmac_secret_name, ForceDeleteWithoutRecovery=True)
