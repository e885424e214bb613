"""Pinning a registration's artifact: its SHA-256 digest and S3 VersionId, recorded with the version.

Promises: an `s3://` artifact is pinned before anything is written (its digest from S3's full-object
SHA-256 checksum when it has one, else from its bytes, streamed; see shared/pins.py); a pin that cannot be
taken is a 4xx saying what to fix (or 503 when S3 does not answer), and nothing is registered. Other URIs
are not pinned (None): the deployer serves them unchecked, with a warning.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import BotoCoreError, ClientError, ParamValidationError
from fastapi import HTTPException

from shared.pins import Pin, pin_object, s3_location

MISSING = frozenset({"404", "NoSuchKey", "NotFound", "NoSuchBucket"})


async def pin_artifact(s3: Any, uri: str) -> Pin | None:
    location = s3_location(uri)
    if location is None:
        return None
    try:
        return await pin_object(s3, *location)
    except ParamValidationError:  # not a name S3 could have (the client refused it before asking)
        raise HTTPException(422, f"artifact_uri {uri!r} is not s3://<bucket>/<key> with a valid bucket name and key") from None
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "error")
        if code in MISSING:
            raise HTTPException(422, f"artifact {uri} does not exist; upload it first (modelgate register --file)") from None
        raise HTTPException(
            422,
            f"artifact {uri} cannot be read to record its digest ({code}); upload it first "
            "(modelgate register --file), and let the registrar read it (s3:GetObject, s3:GetObjectVersion)",
        ) from None
    except BotoCoreError as exc:  # S3 unreachable or timing out: nothing is written, the client may retry
        raise HTTPException(503, f"S3 did not answer ({type(exc).__name__}); try again shortly") from None
