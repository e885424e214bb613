"""Signed events: every producer signs what it publishes; every consumer checks before anything else.

Promises:
- A producer signs with an Ed25519 key only it can read (Secrets Manager, `<namespace>/<service>/signing-key`)
  and signs only the event types it owns (shared.topology.EMITS); the Publisher signs every message it sends.
- Its public keys sit in Parameter Store (`/modelgate-signing/<namespace>/<service>`, key id -> key), which
  every consumer may read. A new private key adds its public key to that list at start-up and keeps the
  older ones, so keys rotate without downtime: events signed by the previous key still verify.
- `Verifier.check` refuses (raises `Forged`) an event that is not JSON, of an unknown type, produced by a
  service that does not own its type, unsigned, signed by a key that is not the claimed producer's, whose
  signature does not match the rest of the envelope, or older than the queues can hold (a replay). Only
  a key list that cannot be read right now raises `Unverifiable` (try again later).

What is signed: the envelope without `signature`, as canonical JSON (keys sorted, no whitespace, UTF-8).
The signature is `{"key_id": ..., "value": base64url(Ed25519 signature)}` inside the envelope.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from shared import topology
from shared.events import utcnow
from shared.secrets import load_or_create_key

log = structlog.get_logger()
MAX_KEYS = 5  # public keys kept per producer: the current one and the previous ones still in flight


class Forged(Exception):
    """The event is not what its producer signed, or not its producer's to emit; `reason` says which."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind  # a short label for /metrics: unsigned, not_owner, unknown_key, bad_signature, ...


class Unverifiable(Exception):
    """The producer's public keys cannot be read now (Parameter Store unreachable): try again later."""


def canonical(envelope: dict[str, Any]) -> bytes:
    """The bytes a signature covers: the envelope without `signature`, sorted keys, compact, UTF-8."""
    rest = {k: v for k, v in envelope.items() if k != "signature"}
    return json.dumps(rest, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def key_id(service: str, public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return f"{service}-{hashlib.sha256(raw).hexdigest()[:16]}"


def private_key_from_secret(secret: bytes) -> Ed25519PrivateKey:
    """The key a secret string stands for (its SHA-256 is the seed), so any random secret is a key."""
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(secret).digest())


@dataclass(frozen=True)
class Signer:
    """Signs the events of one producer, and refuses to sign what that producer does not own."""

    service: str
    private: Ed25519PrivateKey

    @property
    def key_id(self) -> str:
        return key_id(self.service, self.private.public_key())

    def sign(self, body: str) -> str:
        envelope = json.loads(body)
        event_type = envelope.get("event_type")
        if topology.OWNER.get(event_type) != self.service or envelope.get("producer") != self.service:
            raise ValueError(f"{self.service} may not sign a {event_type} produced by {envelope.get('producer')}")
        value = base64.urlsafe_b64encode(self.private.sign(canonical(envelope))).decode()
        envelope["signature"] = {"key_id": self.key_id, "value": value}
        return json.dumps(envelope, separators=(",", ":"), ensure_ascii=False)


@dataclass
class KeyRing:
    """Every producer's public keys by key id, read from Parameter Store when an unknown key id appears."""

    ssm: Any
    namespace: str
    min_refresh_seconds: float = 1.0
    keys: dict[str, dict[str, Ed25519PublicKey]] = field(default_factory=dict)
    _read_at: dict[str, float] = field(default_factory=dict)
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict)

    async def public_key(self, producer: str, kid: str) -> Ed25519PublicKey | None:
        """The key, or None when it is not the producer's (after reading the producer's list afresh)."""
        if (known := self.keys.get(producer, {}).get(kid)) is not None:
            return known
        async with self._locks.setdefault(producer, asyncio.Lock()):
            if (known := self.keys.get(producer, {}).get(kid)) is not None:
                return known
            if time.monotonic() - self._read_at.get(producer, -1e9) < self.min_refresh_seconds:
                raise Unverifiable(f"key {kid} of {producer} is not listed yet; read again shortly")
            self.keys[producer] = await self._read(producer)
            self._read_at[producer] = time.monotonic()
        return self.keys[producer].get(kid)

    async def _read(self, producer: str) -> dict[str, Ed25519PublicKey]:
        try:
            listed = await read_public_keys(self.ssm, topology.signing_keys_parameter(self.namespace, producer))
        except Exception as exc:
            raise Unverifiable(f"cannot read the public keys of {producer}: {exc}") from exc
        return {kid: Ed25519PublicKey.from_public_bytes(base64.b64decode(raw)) for kid, raw in listed.items()}


@dataclass
class Verifier:
    """Checks an event's signature and its producer's ownership of its type before anything else."""

    keyring: KeyRing
    max_age: timedelta = timedelta(days=15)  # longer than any queue keeps a message (14 days)

    async def check(self, body: str | bytes) -> None:
        envelope = _json_object(body)
        event_type, producer = envelope.get("event_type"), envelope.get("producer")
        owner = topology.OWNER.get(event_type) if isinstance(event_type, str) else None
        if owner is None:
            raise Forged("unknown_type", f"unknown event type {event_type!r}")
        if producer != owner:
            raise Forged("not_owner", f"{producer!r} may not emit {event_type}: only the {owner} does")
        signature = envelope.get("signature")
        if not isinstance(signature, dict) or not isinstance(signature.get("key_id"), str):
            raise Forged("unsigned", f"unsigned {event_type}: every event must carry its producer's signature")
        public = await self.keyring.public_key(owner, signature["key_id"])
        if public is None:
            raise Forged("unknown_key", f"{signature['key_id']!r} is not a signing key of the {owner}")
        try:
            public.verify(base64.urlsafe_b64decode(str(signature.get("value", ""))), canonical(envelope))
        except (InvalidSignature, ValueError):
            raise Forged("bad_signature", f"the signature does not match this {event_type} (changed after signing?)") from None
        self._check_age(envelope)

    def _check_age(self, envelope: dict[str, Any]) -> None:
        try:
            occurred = datetime.fromisoformat(str(envelope.get("occurred_at")).replace("Z", "+00:00"))
            old = utcnow() - occurred > self.max_age
        except (TypeError, ValueError):
            raise Forged("malformed", "occurred_at is not an ISO 8601 time with a zone") from None
        if old:
            raise Forged("too_old", f"occurred at {occurred.isoformat()}, older than {self.max_age.days} days: a replay")


def _json_object(body: str | bytes) -> dict[str, Any]:
    try:
        envelope = json.loads(body)
    except ValueError:
        raise Forged("malformed", "the message is not JSON") from None
    if not isinstance(envelope, dict):
        raise Forged("malformed", "the message is not a JSON object")
    return envelope


async def read_public_keys(ssm: Any, name: str) -> dict[str, str]:
    """Key id -> base64 public key listed in `name` ({} when the parameter does not exist yet)."""
    try:
        value = (await ssm.get_parameter(Name=name))["Parameter"]["Value"]
    except ssm.exceptions.ParameterNotFound:
        return {}
    keys = json.loads(value).get("keys", {})
    return {str(k): str(v) for k, v in keys.items()}


async def producer_signer(secretsmanager: Any, ssm: Any, namespace: str, service: str) -> Signer:
    """This producer's signer: its private key from Secrets Manager (made on first start where the AWS
    template did not make it), its public key listed in Parameter Store before anything is signed."""
    secret = await load_or_create_key(secretsmanager, topology.signing_key_secret_name(namespace, service),
                                      f"Private key that signs the modelgate {service}'s events")
    signer = Signer(service, private_key_from_secret(secret))
    await publish_public_key(ssm, topology.signing_keys_parameter(namespace, service), signer)
    return signer


async def publish_public_key(ssm: Any, name: str, signer: Signer) -> None:
    listed = await read_public_keys(ssm, name)
    if signer.key_id in listed:
        return
    raw = signer.private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    kept = dict(list(listed.items())[-(MAX_KEYS - 1):])  # the newest previous keys, oldest first
    kept[signer.key_id] = base64.b64encode(raw).decode()
    await ssm.put_parameter(Name=name, Value=json.dumps({"keys": kept}), Type="String", Overwrite=True,
                            Description=f"Public keys of the modelgate {signer.service}'s event signatures")
    log.info("signing_key_published", key_id=signer.key_id, parameter=name, keys=len(kept))
