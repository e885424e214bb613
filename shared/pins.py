"""Artifact pins: what was approved is what is served.

A pin is what the registrar records of an `s3://` artifact when the version is registered: the object's
SHA-256 digest, written `sha256:<hex>`, and its S3 VersionId (None in a bucket without versioning). The
deployer checks the pin before any target serves the artifact. This module promises:

- a digest is S3's own full-object SHA-256 checksum when the object has one (uploaded with
  `ChecksumAlgorithm="SHA256"`: S3 checked it against the bytes, so it is trustworthy), else it is computed
  here from the bytes, streamed in chunks, never the whole object in memory. A multipart upload's
  *composite* checksum (`<base64>-<parts>`) is a checksum of checksums, not the object's digest: never used;
- with a VersionId, exactly that version is read, whatever was written to the key since;
- bytes that differ from the pin, or a pinned version that is gone, raise ArtifactChanged, a permanent
  failure (retrying cannot bring the approved bytes back), whose message starts "artifact changed since
  approval" and says what was expected and what was found.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from botocore.exceptions import ClientError

PREFIX = "sha256:"
CHUNK = 1024 * 1024
GONE = {"404", "NoSuchKey", "NoSuchVersion", "405", "MethodNotAllowed"}  # 405: the version is a delete marker


@dataclass(frozen=True)
class Pin:
    digest: str  # sha256:<hex>
    version_id: str | None


class ArtifactChanged(Exception):
    """The artifact's bytes are not the approved ones (or the approved version is gone): do not serve it.

    What to do: register the artifact again as a new version (it will be approved on its own merits), or
    restore the approved bytes as a new object and register that."""


def s3_location(uri: str) -> tuple[str, str] | None:
    """(bucket, key) of an `s3://bucket/key` URI; None for any other URI."""
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc or not parsed.path.strip("/"):
        return None
    return parsed.netloc, parsed.path.lstrip("/")


def digest_of_checksum(head: dict[str, Any]) -> str | None:
    """The digest S3 keeps for the object (HeadObject with ChecksumMode=ENABLED), if it is a full-object one."""
    checksum = head.get("ChecksumSHA256")
    if not checksum or "-" in checksum or head.get("ChecksumType") == "COMPOSITE":
        return None
    return PREFIX + base64.b64decode(checksum).hex()


def file_digest(path: Path) -> str:
    """The digest of a local file, read in chunks."""
    sha = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            sha.update(chunk)
    return PREFIX + sha.hexdigest()


def _version(version_id: str | None) -> dict[str, str]:
    return {"VersionId": version_id} if version_id else {}


async def pin_object(s3: Any, bucket: str, key: str) -> Pin:
    """The pin of the object now at `bucket/key`: its version, and its digest (S3's checksum, else hashed)."""
    head = await s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    version_id = head.get("VersionId")
    digest = digest_of_checksum(head) or await hash_object(s3, bucket, key, version_id)
    return Pin(digest, version_id)


async def hash_object(s3: Any, bucket: str, key: str, version_id: str | None, into: Path | None = None) -> str:
    """Streams the object (that version, when given) through SHA-256; with `into`, also writes it there."""
    sha = hashlib.sha256()
    response = await s3.get_object(Bucket=bucket, Key=key, **_version(version_id))
    body = response["Body"]
    try:
        out = into.open("wb") if into is not None else None
        try:
            async for chunk in body.iter_chunks(CHUNK):
                sha.update(chunk)
                if out is not None:
                    out.write(chunk)
        finally:
            if out is not None:
                out.close()
    finally:
        body.close()
    return PREFIX + sha.hexdigest()


def changed(uri: str, version_id: str | None, expected: str, found: str) -> ArtifactChanged:
    where = f"{uri} (version {version_id})" if version_id else uri
    return ArtifactChanged(
        f"artifact changed since approval: {where} has digest {found}, expected {expected}; "
        "register the new bytes as a new version"
    )


def gone(uri: str, version_id: str | None, expected: str) -> ArtifactChanged:
    what = f"version {version_id} of {uri}" if version_id else uri
    return ArtifactChanged(
        f"artifact changed since approval: {what} is gone (expected digest {expected}); "
        "restore it or register the artifact again as a new version"
    )


def _is_gone(exc: ClientError) -> bool:
    error = exc.response.get("Error", {})
    status = str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
    return error.get("Code") in GONE or status in ("404", "405")


async def check_pin(s3: Any, uri: str, digest: str, version_id: str | None) -> None:
    """Raises ArtifactChanged unless the object (exactly `version_id`, when given) has `digest`.

    Cheap when S3 keeps the object's SHA-256 (a HeadObject); otherwise the bytes are streamed and hashed."""
    bucket, key = _location(uri)
    try:
        head = await s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED", **_version(version_id))
        found = digest_of_checksum(head) or await hash_object(s3, bucket, key, version_id)
    except ClientError as exc:
        if _is_gone(exc):
            raise gone(uri, version_id, digest) from None
        raise
    if found != digest:
        raise changed(uri, version_id, digest, found)


async def download_pinned(s3: Any, uri: str, digest: str | None, version_id: str | None, path: Path) -> str:
    """Writes the object (exactly `version_id`, when given) to `path` and returns its digest, computed from
    the bytes written; with `digest`, raises ArtifactChanged (and leaves no file) unless they match."""
    bucket, key = _location(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        found = await hash_object(s3, bucket, key, version_id, into=path)
    except ClientError as exc:
        path.unlink(missing_ok=True)
        if digest and _is_gone(exc):
            raise gone(uri, version_id, digest) from None
        raise
    if digest and found != digest:
        path.unlink(missing_ok=True)
        raise changed(uri, version_id, digest, found)
    return found


def _location(uri: str) -> tuple[str, str]:
    location = s3_location(uri)
    if location is None:
        raise ValueError(f"{uri} is not s3://<bucket>/<key>: only S3 artifacts are pinned")
    return location
