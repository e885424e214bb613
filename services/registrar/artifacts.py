"""The artifact checks every registration route makes (HTTP, Comet archive, Comet online).

Promises:
- `check_policy`: an artifact URI is `s3://<bucket>/<key>` with the bucket among the allowed ones
  (MODELGATE_ARTIFACT_BUCKETS, default `<namespace>-artifacts`); `file://` URIs and local paths only with the
  development switch MODELGATE_ALLOW_LOCAL_ARTIFACTS=true; anything else is a 422 saying what is allowed.
  It reads nothing, so it runs even when existence checks are off.
- `check_artifact`: an `s3://` URI must name an existing object.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from botocore.exceptions import BotoCoreError, ClientError, ParamValidationError
from fastapi import HTTPException

#: S3's rule for bucket names: 3-63 lowercase letters, digits, dots and hyphens, a letter or digit at each end.
BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
LOCAL_SWITCH = "MODELGATE_ALLOW_LOCAL_ARTIFACTS=true"


@dataclass(frozen=True)
class ArtifactPolicy:
    """Where registered artifacts may live."""

    buckets: tuple[str, ...]
    allow_local: bool = False

    def allowed(self) -> str:
        """What is allowed, in words, for error messages."""
        buckets = ", ".join(self.buckets) or "(none)"
        local = ("; local paths and file:// are allowed (development switch on)" if self.allow_local
                 else f"; local paths and file:// only for development, with {LOCAL_SWITCH}")
        return f"allowed: s3://<bucket>/<key> in bucket(s) {buckets} (MODELGATE_ARTIFACT_BUCKETS){local}"


def check_policy(uri: str, policy: ArtifactPolicy) -> None:
    """422 unless `uri` is in an allowed bucket (or a local path while the development switch is on)."""
    try:
        parsed = urlparse(uri)
    except ValueError:  # e.g. an unbalanced '[' in the host part
        raise HTTPException(422, f"artifact_uri {uri!r} is not a URI; {policy.allowed()}") from None
    if parsed.scheme in ("", "file"):
        if not policy.allow_local:
            raise HTTPException(422, f"artifact_uri {uri!r} is a local path: upload it first (`modelgate register "
                                     f"GROUP --file PATH` uploads it to the bucket); {policy.allowed()}")
        return
    if parsed.scheme != "s3":
        raise HTTPException(422, f"artifact_uri {uri!r} has scheme {parsed.scheme!r}; {policy.allowed()}")
    bucket, key = parsed.netloc, parsed.path.lstrip("/")
    if not BUCKET_NAME.fullmatch(bucket) or not key or parsed.query or parsed.fragment:
        raise HTTPException(422, f"artifact_uri {uri!r} is not s3://<bucket>/<key> with a valid bucket name; {policy.allowed()}")
    if bucket not in policy.buckets:
        raise HTTPException(422, f"artifact_uri {uri!r} is in bucket {bucket!r}, which is not allowed; {policy.allowed()}")


async def check_artifact(s3: Any, uri: str) -> None:
    """422 when an `s3://` URI is malformed or its object is missing, 503 when S3 does not answer."""
    parsed = urlparse(uri)
    if parsed.scheme != "s3":
        return
    if not parsed.netloc or not parsed.path.strip("/"):
        raise HTTPException(422, f"artifact_uri {uri!r} is not s3://<bucket>/<key>")
    try:
        await s3.head_object(Bucket=parsed.netloc, Key=parsed.path.lstrip("/"))
    except ParamValidationError:  # not a name S3 could have (the client refused it before asking)
        raise HTTPException(422, f"artifact_uri {uri!r} is not s3://<bucket>/<key> with a valid bucket name and key") from None
    except ClientError:
        raise HTTPException(422, f"artifact {uri} does not exist; upload it first (modelgate register --file)") from None
    except BotoCoreError as exc:  # S3 unreachable or timing out: nothing is written, the client may retry
        raise HTTPException(503, f"S3 did not answer ({type(exc).__name__}); try again shortly") from None
