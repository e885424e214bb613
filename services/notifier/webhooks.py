"""Signed outbound webhooks: subscriptions other systems make to modelgate's events.

Promises:
- A subscription names a URL, a filter (event types, groups, stages; empty: all) and a secret
  (`whsec_<base64>`, shown once when made). Its URL is checked when made: https (http only with the
  development switch MODELGATE_WEBHOOK_ALLOW_PRIVATE), and no loopback, private, link-local or metadata
  address unless that switch is on; URLs are never logged (the delivery log shows host and digest).
- Each delivery follows the Standard Webhooks convention (https://www.standardwebhooks.com): headers
  `webhook-id` (the event id: the same on every retry and redelivery, so a receiver drops repeats),
  `webhook-timestamp` and `webhook-signature` (`v1,<base64 HMAC-SHA256 of "id.timestamp.body">`), the event
  envelope as the body. While a rotated secret's overlap lasts, both signatures are sent.
- A failed attempt is retried on SCHEDULE (up to a day), each attempt kept in the delivery log; a
  delivery can be sent again on demand.
- The `github-dispatch` preset sends `{"event_type": "modelgate.<EventType>", "client_payload": <envelope>}`
  with the subscription's `auth_token` as a bearer token (GitHub's repository_dispatch), so a Deployed(prod)
  starts a pipeline; signatures are sent too.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import secrets
import socket
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlparse

import httpx

from shared.events import Envelope

#: Waits before the 2nd, 3rd, ... attempt (Standard Webhooks' suggested schedule, trimmed to a day in all).
SCHEDULE = (timedelta(seconds=5), timedelta(minutes=5), timedelta(minutes=30), timedelta(hours=2),
            timedelta(hours=5), timedelta(hours=10))
PRESETS = ("standard", "github-dispatch")
SECRET_PREFIX = "whsec_"
METADATA_HOSTS = frozenset({"169.254.169.254", "fd00:ec2::254", "metadata.google.internal", "100.100.100.200"})


class BadWebhook(ValueError):
    """The URL or filter cannot be subscribed; the message says what to change (answered with 422)."""


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """`v1,<base64 HMAC-SHA256>` of "msg_id.timestamp.body" with the secret's key."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def check_url(url: str, allow_private: bool) -> None:
    """BadWebhook unless `url` is one modelgate may POST to (see the module's promises)."""
    if len(url) > 2000:
        raise BadWebhook("the URL is longer than 2,000 characters")
    parsed = urlparse(url)
    if parsed.scheme not in ("https", "http") or not parsed.hostname:
        raise BadWebhook(f"{_shown(url)} is not an http(s) URL")
    if parsed.scheme == "http" and not allow_private:
        raise BadWebhook("webhook URLs must be https (http only in development: MODELGATE_WEBHOOK_ALLOW_PRIVATE=true)")
    if parsed.username or parsed.password:
        raise BadWebhook("put credentials in auth_token, not in the URL")
    host = parsed.hostname.lower()
    if host in METADATA_HOSTS:
        raise BadWebhook(f"{host} is a cloud metadata address")
    if allow_private:
        return
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, parsed.port or 443, proto=socket.IPPROTO_TCP)}
    except OSError:
        raise BadWebhook(f"{host} does not resolve: check the URL") from None
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%")[0])
        if ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_reserved or ip.is_multicast or ip.is_unspecified:
            raise BadWebhook(f"{host} resolves to {ip}, a loopback, private or link-local address "
                             "(allowed only with MODELGATE_WEBHOOK_ALLOW_PRIVATE=true)")


def matches(event: Envelope, event_types: list[str], groups: list[str], stages: list[str]) -> bool:
    """Whether a subscription with these filters gets `event` (an empty filter lets everything through)."""
    stage = getattr(event.payload, "stage", None)
    return ((not event_types or event.event_type in event_types)
            and (not groups or getattr(event.payload, "group", None) in groups)
            and (not stages or stage in stages))


@dataclass(frozen=True)
class Target:
    """What one attempt needs of its subscription, copied out of the database row."""

    url: str
    preset: str
    secrets: tuple[str, ...]  # the current secret first, then a rotated one still in its overlap
    auth_token: str | None


def request(target: Target, msg_id: str, envelope_json: str, event_type: str) -> tuple[bytes, dict[str, str]]:
    """The body and headers of one delivery."""
    if target.preset == "github-dispatch":
        body = json.dumps({"event_type": f"modelgate.{event_type}", "client_payload": json.loads(envelope_json)}).encode()
    else:
        body = envelope_json.encode()
    timestamp = int(time.time())
    headers = {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(signature(s, msg_id, timestamp, body) for s in target.secrets),
        "user-agent": "modelgate-webhooks/1",
    }
    if target.auth_token:
        headers["authorization"] = f"Bearer {target.auth_token}"
    if target.preset == "github-dispatch":
        headers["accept"] = "application/vnd.github+json"
    return body, headers


async def attempt(http: httpx.AsyncClient, target: Target, msg_id: str, envelope_json: str, event_type: str
                  ) -> tuple[int | None, str | None]:
    """One POST: (status code, None) on a 2xx, else (status code or None, why), without the URL."""
    body, headers = request(target, msg_id, envelope_json, event_type)
    try:
        response = await http.post(target.url, content=body, headers=headers)
    except httpx.HTTPError as exc:
        return None, f"{type(exc).__name__}: the receiver did not answer"
    if 200 <= response.status_code < 300:
        return response.status_code, None
    return response.status_code, f"HTTP {response.status_code} from the receiver"


def _shown(url: str) -> str:
    parsed = urlparse(url)
    return f"{parsed.scheme}://{parsed.netloc}/…" if parsed.netloc else "the URL"


def shown_url(url: str) -> str:
    """A subscription URL as lists and logs show it: host and a digest, never the path (it may hold a token)."""
    return f"{_shown(url)}#{hashlib.sha256(url.encode()).hexdigest()[:12]}"


def ping(subscription_id: str) -> tuple[str, str]:
    """A test delivery's id and body: an envelope-shaped WebhookTest, so a receiver can check its code path."""
    from shared.events import new_id, utcnow

    event_id = new_id()
    body: dict[str, Any] = {"event_type": "WebhookTest", "event_id": event_id, "schema_version": 1,
                            "occurred_at": utcnow().isoformat(), "producer": "notifier",
                            "payload": {"subscription_id": subscription_id}}
    return event_id, json.dumps(body)
