"""Signed, expiring, single-use decision links: one approver, one approval request, one decision.

A link's token is `<claims>.<signature>`, both base64url: the claims (approval id, approver, expiry, a
random nonce) signed with HMAC-SHA256 under a key held in Secrets Manager as `<namespace>/approver/hmac-key`
(created on first start if absent), never in code, configuration or logs.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import structlog
from sqlalchemy import select

from services.approver.models import UsedLink
from shared.db import UnitOfWork
from shared.errors import Refused
from shared.events import utcnow
from shared.secrets import load_or_create_key

__all__ = ["load_or_create_key"]  # kept here too: the approver's keys were first made here

log = structlog.get_logger()


@dataclass(frozen=True)
class LinkClaims:
    approval_id: str
    approver: str
    expires_at: datetime
    nonce: str


class LinkSigner:
    def __init__(self, key: bytes):
        if len(key) < 32:
            raise ValueError("the decision-link key must be at least 32 bytes")
        self._key = key

    def issue(self, approval_id: str, approver: str, ttl: timedelta, now: datetime | None = None) -> tuple[str, LinkClaims]:
        expires_at = (now or utcnow()) + ttl
        claims = LinkClaims(approval_id, approver, expires_at.replace(microsecond=0), secrets.token_urlsafe(16))
        body = _b64(json.dumps({"a": approval_id, "u": approver, "e": int(expires_at.timestamp()), "n": claims.nonce}).encode())
        return f"{body}.{_b64(self._sign(body))}", claims

    def verify(self, token: str, approval_id: str, now: datetime | None = None) -> LinkClaims:
        """The link's claims; refused (401) when forged or damaged, for another request, or expired."""
        claims = self.read(token)
        check(claims, approval_id, now)
        return claims

    def read(self, token: str) -> LinkClaims:
        """The claims of a link this key signed; refused (401) when forged or damaged."""
        body, _, signature = token.partition(".")
        try:
            if not hmac.compare_digest(_unb64(signature), self._sign(body)):
                raise ValueError("bad signature")
            data: dict[str, Any] = json.loads(_unb64(body))
            return LinkClaims(data["a"], data["u"], datetime.fromtimestamp(data["e"], UTC), data["n"])
        except (ValueError, KeyError, TypeError, OverflowError, OSError):
            raise Refused(401, "this decision link is not valid: it was altered, cut short, or not issued here") from None

    def _sign(self, body: str) -> bytes:
        return hmac.new(self._key, body.encode(), hashlib.sha256).digest()


def check(claims: LinkClaims, approval_id: str, now: datetime | None = None) -> None:
    """Refused (401) when the link is for another request, or has expired."""
    if claims.approval_id != approval_id:
        raise Refused(401, "this decision link is for another approval request")
    if (now or utcnow()) >= claims.expires_at:
        raise Refused(401, f"this decision link expired at {claims.expires_at.isoformat()}; ask for a new one")


async def consume(uow: UnitOfWork, claims: LinkClaims) -> None:
    """Marks the link used, in the transaction of the decision it carries; refused (401) if used before."""
    used = await uow.session.scalar(select(UsedLink).where(UsedLink.nonce == claims.nonce))
    if used is not None:
        raise Refused(401, f"this decision link was already used at {used.used_at.isoformat()}; each link decides once")
    uow.session.add(UsedLink(nonce=claims.nonce, approval_id=claims.approval_id, approver=claims.approver))


def link_url(public_url: str, approval_id: str, token: str) -> str:
    return f"{public_url}/v1/approvals/{approval_id}/decision-link?token={quote(token)}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
