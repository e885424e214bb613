"""The artifact check every registration route makes: an `s3://` artifact URI must name an existing object."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from botocore.exceptions import BotoCoreError, ClientError
from fastapi import HTTPException


async def check_artifact(s3: Any, uri: str) -> None:
    """422 when an `s3://` URI is malformed or its object is missing, 503 when S3 does not answer."""
    parsed = urlparse(uri)
    if parsed.scheme != "s3":
        return
    if not parsed.netloc or not parsed.path.strip("/"):
        raise HTTPException(422, f"artifact_uri {uri!r} is not s3://<bucket>/<key>")
    try:
        await s3.head_object(Bucket=parsed.netloc, Key=parsed.path.lstrip("/"))
    except ClientError:
        raise HTTPException(422, f"artifact {uri} does not exist; upload it first (modelgate register --file)") from None
    except BotoCoreError as exc:  # S3 unreachable or timing out: nothing is written, the client may retry
        raise HTTPException(503, f"S3 did not answer ({type(exc).__name__}); try again shortly") from None
