"""Keys kept in Secrets Manager: made once (by whichever process asks first), then read by every start.

`service_key` is the key the registrar, deployer and notifier present to the approver when they verify a
caller's credential, so that the approver counts failed attempts against the caller's address rather than
theirs (shared.identity, shared.http.source_address).
"""

from __future__ import annotations

import secrets
from typing import Any

import structlog

log = structlog.get_logger()


async def load_or_create_key(secretsmanager: Any, secret_name: str,
                             description: str = "HMAC key of the modelgate approver's decision links") -> bytes:
    """A secret key from Secrets Manager; a new random one is stored there first if there is none."""
    try:
        return await _read(secretsmanager, secret_name)
    except secretsmanager.exceptions.ResourceNotFoundException:
        pass
    try:
        await secretsmanager.create_secret(
            Name=secret_name,
            Description=description,
            SecretString=secrets.token_hex(32),
        )
        log.info("secret_key_created", name=secret_name)
    except secretsmanager.exceptions.ResourceExistsException:  # another replica created it first
        pass
    return await _read(secretsmanager, secret_name)


async def _read(secretsmanager: Any, secret_name: str) -> bytes:
    return (await secretsmanager.get_secret_value(SecretId=secret_name))["SecretString"].encode()




async def service_key(runtime: Any) -> str | None:
    """The services' shared key (MODELGATE_SERVICE_KEY_SECRET_NAME); None where Secrets Manager is not wired."""
    if "secretsmanager" not in runtime.aws:
        return None
    key = await load_or_create_key(runtime.aws["secretsmanager"], runtime.settings.service_key_secret_name,
                                   "Key modelgate's services present to the approver when verifying credentials")
    return key.decode()
