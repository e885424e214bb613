"""Python clients of the services' HTTP APIs, used by the `modelgate` CLI and the web console.

One small class per service. Where each service is comes from `MODELGATE_<SERVICE>_URL`
(default http://127.0.0.1:8081..8084, where `make up` starts them); the credential sent with every call
from `token=`, else `MODELGATE_TOKEN`, else the file `make up` leaves (`var/<namespace>-admin.token`).
Every failure is a ServiceError: `Unreachable` when nothing answers, `ApiError` (with the service's own
message) for a 4xx/5xx.

    async with Clients() as mg:
        record = await mg.registrar.version("fraud", 7)
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Self
from urllib.parse import quote

import httpx
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from shared.settings import REPO_ROOT
from shared.topology import DEFAULT_PORTS


def token_file(namespace: str | None = None) -> Path:
    """Where `make up` writes the admin principal's token for `namespace` (MODELGATE_NAMESPACE)."""
    namespace = namespace or os.environ.get("MODELGATE_NAMESPACE", "modelgate")
    return REPO_ROOT / "var" / f"{namespace}-admin.token"


def find_token() -> str | None:
    """The credential to send: $MODELGATE_TOKEN, else the local admin token file, else None."""
    if os.environ.get("MODELGATE_TOKEN"):
        return os.environ["MODELGATE_TOKEN"].strip()
    path = token_file()
    return path.read_text().strip() if path.is_file() else None


def service_url(service: str, gateway: str | None = None) -> str:
    """Where `service` answers: $MODELGATE_<SERVICE>_URL, else `<gateway>/<service>` (the argument, else
    $MODELGATE_URL: one URL in front of all four services, each under its name), else its default port on
    127.0.0.1."""
    if own := os.environ.get(f"MODELGATE_{service.upper()}_URL"):
        return own.rstrip("/")
    if gateway := gateway or os.environ.get("MODELGATE_URL"):
        return f"{gateway.rstrip('/')}/{service}"
    return f"http://127.0.0.1:{DEFAULT_PORTS[service]}"


class ServiceError(Exception):
    """Talking to a service failed; the message says what to do."""

    def __init__(self, service: str, message: str):
        super().__init__(message)
        self.service = service


class Unreachable(ServiceError):
    pass


class ApiError(ServiceError):
    """The service answered with an error status; `detail` is its explanation."""

    def __init__(self, service: str, status: int, detail: str):
        super().__init__(service, f"{service} refused ({status}): {detail}")
        self.status = status
        self.detail = detail


class NotFound(ApiError):
    """404: no such group, version, approval or deployment."""


class Unauthorized(ApiError):
    """401: no credential, or one nobody issued (pass a token or set MODELGATE_TOKEN)."""


class Forbidden(ApiError):
    """403: the principal may not do this (role, team, or its own version)."""


class Conflict(ApiError):
    """409: the request conflicts with what is recorded (already decided, a different idempotent request)."""


class Invalid(ApiError):
    """400, 413 or 422: the request was refused as invalid; `detail` says which field and why."""


class ServerError(ApiError):
    """5xx: the service failed or a dependency did not answer; retrying later may succeed."""


def api_error(service: str, status: int, detail: str) -> ApiError:
    """The ApiError subclass for `status`, so callers can catch NotFound, Conflict, ... by type."""
    kind = {404: NotFound, 401: Unauthorized, 403: Forbidden, 409: Conflict}.get(status)
    if kind is None:
        kind = ServerError if status >= 500 else Invalid if status in (400, 413, 422) else ApiError
    return kind(service, status, detail)


def _part(value: object) -> str:
    """A path segment, quoted: a name can only ever be one segment (never `..`, never a `/` in it)."""
    text = str(value)
    if text in ("", ".", ".."):
        raise NotFound("modelgate", 404, f"{text!r} names nothing: a name has letters or digits")
    return quote(text, safe="")


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip() or response.reason_phrase
    detail = body.get("detail", body) if isinstance(body, dict) else body
    if isinstance(detail, list):  # FastAPI's validation errors: say which field and why
        return "; ".join(f"{'.'.join(str(p) for p in e.get('loc', [])[1:])}: {e.get('msg')}" for e in detail)
    return str(detail)


class ServiceClient:
    service = ""

    def __init__(self, base_url: str | None = None, *, transport: httpx.AsyncBaseTransport | None = None,
                 timeout: float = 15.0, token: str | None = None, retries: int = 0):
        self.base_url = (base_url or service_url(self.service)).rstrip("/")
        self.retries = retries
        token = token or find_token()
        headers = {"Authorization": f"Bearer {token}"} if token else None
        self._http = httpx.AsyncClient(base_url=self.base_url, transport=transport, timeout=timeout, headers=headers)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request; with `retries`, a safe one (GET, or a POST with an Idempotency-Key) is retried with
        backoff while the service cannot be reached."""
        safe = method == "GET" or "Idempotency-Key" in (kwargs.get("headers") or {})
        attempts = AsyncRetrying(
            stop=stop_after_attempt(1 + (self.retries if safe else 0)), wait=wait_exponential(multiplier=0.2, max=5),
            retry=retry_if_exception_type(Unreachable), reraise=True,
        )
        async for attempt in attempts:
            with attempt:
                return await self._once(method, path, **kwargs)
        raise AssertionError("unreachable: tenacity re-raises the last error")

    async def _once(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise Unreachable(
                self.service,
                f"cannot reach the {self.service} at {self.base_url} ({type(exc).__name__}); "
                f"is modelgate up? run 'make up' (or set MODELGATE_{self.service.upper()}_URL)",
            ) from None
        if response.status_code >= 400:
            raise api_error(self.service, response.status_code, _detail(response))
        return response

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self._send(method, path, **kwargs)
        return response.json() if response.content else None

    async def _every(self, path: str, params: dict[str, Any] | None = None) -> list[Any]:
        """Every row of a list route, following its pages (the X-Next-Offset header, shared/limits.py)."""
        rows: list[Any] = []
        offset: str | None = "0"
        while offset is not None:
            response = await self._send("GET", path, params={**(params or {}), "offset": offset})
            rows += response.json()
            offset = response.headers.get("x-next-offset")
        return rows


    async def set_aside(self) -> list[dict[str, Any]]:
        """The events this service's outbox set aside because the bus refused them for good."""
        return await self._call("GET", "/v1/outbox/set-aside")  # type: ignore[no-any-return]


class Registrar(ServiceClient):
    service = "registrar"

    async def register(self, group: str, body: dict[str, Any], idempotency_key: str | None = None) -> dict[str, Any]:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return await self._call("POST", f"/v1/groups/{_part(group)}/versions", json=body, headers=headers)

    async def groups(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        offset: int | None = 0
        while offset is not None:
            page = await self._call("GET", "/v1/groups", params={"limit": 1000, "offset": offset})
            found.extend(page["items"])
            offset = page["next_offset"]
        return found

    async def register_comet_archive(self, group: str, archive: Path, fields: dict[str, Any]) -> dict[str, Any]:
        """Registers from an OfflineExperiment zip, which the registrar reads (services/registrar/comet_api.py).
        `fields`: registered_by, and optionally model_name, framework, description, tags, model_card."""
        files = {"archive": (archive.name, archive.read_bytes(), "application/zip")}
        data = {k: v if isinstance(v, str) else json.dumps(v) for k, v in fields.items() if v not in (None, {}, "")}
        return await self._call("POST", f"/v1/groups/{_part(group)}/versions/comet-archive", files=files, data=data)

    async def register_from_comet(self, group: str, body: dict[str, Any]) -> dict[str, Any]:
        """Registers a Comet experiment (or registry model version) the registrar reads from Comet itself."""
        return await self._call("POST", f"/v1/groups/{_part(group)}/versions/comet", json=body)

    async def search(self, **params: Any) -> dict[str, Any]:
        """One page of GET /v1/versions: {items, limit, offset, next_offset}; params as the route takes them
        (group, q, metric, tag, stage, stage_status, sort, order, limit, offset)."""
        return await self._call("GET", "/v1/versions", params={k: v for k, v in params.items() if v is not None})

    async def versions(self, group: str) -> list[dict[str, Any]]:
        return await self._every(f"/v1/groups/{_part(group)}/versions")

    async def version(self, group: str, version: int) -> dict[str, Any]:
        return await self._call("GET", f"/v1/groups/{_part(group)}/versions/{_part(version)}")

    async def latest(self, group: str) -> dict[str, Any]:
        versions = await self.versions(group)
        if not versions:
            raise NotFound(self.service, 404, f"model group '{group}' has no versions")
        return max(versions, key=lambda v: v["version"])

    async def reading(self, group: str, stage: str, status: str) -> list[dict[str, Any]]:
        """The group's versions whose status in `stage` is `status` (e.g. the ones reading Deployed in prod)."""
        params = {"group": group, "stage": stage, "stage_status": status, "sort": "version", "limit": 1000}
        return (await self._call("GET", "/v1/versions", params=params))["items"]

    async def history(self, group: str, version: int) -> list[dict[str, Any]]:
        return await self._call("GET", f"/v1/groups/{_part(group)}/versions/{_part(version)}/history")


class Approver(ServiceClient):
    service = "approver"

    async def approvals(self, status: str = "pending", **filters: str | None) -> list[dict[str, Any]]:
        """filters: group, stage, model_version_id, approver (only what that approver may vote on now)."""
        params = {"status": status, **{k: v for k, v in filters.items() if v is not None}}
        return await self._every("/v1/approvals", params)

    async def approval(self, approval_id: str) -> dict[str, Any]:
        return await self._call("GET", f"/v1/approvals/{_part(approval_id)}")

    async def me(self, token: str | None = None) -> dict[str, Any]:
        """Who the token (default: this client's) belongs to: name, kind, roles, teams, groups; 401 when nobody."""
        return await self._call("GET", "/v1/me", headers={"Authorization": f"Bearer {token}"} if token else None)

    async def add_principal(self, body: dict[str, Any]) -> dict[str, Any]:
        """A new principal (admin); the answer's `token` is shown this once."""
        return await self._call("POST", "/v1/principals", json=body)

    async def principals(self) -> list[dict[str, Any]]:
        return await self._every("/v1/principals")

    async def change_principal(self, name: str, change: dict[str, Any]) -> dict[str, Any]:
        return await self._call("PATCH", f"/v1/principals/{_part(name)}", json=change)

    async def new_token(self, name: str, revoke_others: bool = False) -> dict[str, Any]:
        return await self._call("POST", f"/v1/principals/{_part(name)}/tokens", params={"revoke_others": revoke_others})

    async def revoke_token(self, name: str, credential_id: str) -> None:
        await self._call("DELETE", f"/v1/principals/{_part(name)}/tokens/{_part(credential_id)}")

    async def policy(self) -> list[dict[str, Any]]:
        """The stages in order, each with its rule and thresholds."""
        return await self._call("GET", "/v1/policy")

    async def decide(self, approval_id: str, decision: str, comment: str | None, token: str | None = None) -> dict[str, Any]:
        """decision: "approve" or "reject"; as the principal of `token` (default: this client's)."""
        return await self._call(
            "POST",
            f"/v1/approvals/{_part(approval_id)}/decision",
            json={"decision": decision, "comment": comment},
            headers={"Authorization": f"Bearer {token}"} if token else None,
        )


class Deployer(ServiceClient):
    service = "deployer"

    async def deployments(self, group: str | None = None) -> list[dict[str, Any]]:
        """Every deployment, oldest first; `live` marks what each stage serves now."""
        return await self._every("/v1/deployments", {"group": group} if group else None)

    async def deployment(self, deployment_id: str) -> dict[str, Any]:
        return await self._call("GET", f"/v1/deployments/{_part(deployment_id)}")

    async def timeline(self, group: str, stage: str, at: str | None = None, limit: int = 100,
                       offset: int = 0) -> dict[str, Any]:
        """Every period a version served the stage, newest first (one page); with `at` (ISO 8601 with its
        offset), only the period covering that time (ApiError 404 when nothing served then)."""
        params: dict[str, Any] = {"at": at} if at else {"limit": limit, "offset": offset}
        return await self._call("GET", f"/v1/groups/{_part(group)}/stages/{_part(stage)}/timeline", params=params)

    async def drift(self, group: str | None = None, stage: str | None = None) -> list[dict[str, Any]]:
        """Each stage's views (live record, pointer, target) and what disagrees, every page."""
        found: list[dict[str, Any]] = []
        offset: int | None = 0
        while offset is not None:
            params = {k: v for k, v in {"group": group, "stage": stage, "limit": 200, "offset": offset}.items() if v is not None}
            page = await self._call("GET", "/v1/drift", params=params)
            found.extend(page["stages"])
            offset = page["next_offset"]
        return found

    async def rollback(self, group: str, stage: str, body: dict[str, Any]) -> dict[str, Any]:
        """Accepted at once (the rollback deployment, status Pending); follow it with deployment()."""
        return await self._call("POST", f"/v1/groups/{_part(group)}/stages/{_part(stage)}/rollback", json=body)

    async def rollout(self, group: str, stage: str, action: str | None = None) -> dict[str, Any]:
        """The stage's newest rollout; with `action` ("pause", "resume" or "abort"), after doing it."""
        path = f"/v1/groups/{_part(group)}/stages/{_part(stage)}/rollout"
        if action is None:
            return await self._call("GET", path)
        return await self._call("POST", f"{path}/{_part(action)}")


class Notifier(ServiceClient):
    service = "notifier"

    async def add_webhook(self, body: dict[str, Any]) -> dict[str, Any]:
        """A new subscription; the answer's `secret` is shown this once."""
        return await self._call("POST", "/v1/webhooks", json=body)

    async def webhooks(self) -> list[dict[str, Any]]:
        return await self._call("GET", "/v1/webhooks")

    async def remove_webhook(self, subscription_id: str) -> None:
        await self._call("DELETE", f"/v1/webhooks/{_part(subscription_id)}")

    async def test_webhook(self, subscription_id: str) -> dict[str, Any]:
        return await self._call("POST", f"/v1/webhooks/{_part(subscription_id)}/test")

    async def rotate_webhook(self, subscription_id: str, overlap_hours: float) -> dict[str, Any]:
        return await self._call("POST", f"/v1/webhooks/{_part(subscription_id)}/rotate", params={"overlap_hours": overlap_hours})

    async def webhook_deliveries(self, subscription_id: str, limit: int = 100) -> list[dict[str, Any]]:
        return await self._call("GET", f"/v1/webhooks/{_part(subscription_id)}/deliveries", params={"limit": limit})

    async def redeliver(self, delivery_id: int) -> dict[str, Any]:
        return await self._call("POST", f"/v1/webhooks/deliveries/{delivery_id}/redeliver")


class Clients:
    """The four clients, opened and closed together."""

    def __init__(self, transport: httpx.AsyncBaseTransport | None = None, token: str | None = None, *,
                 gateway: str | None = None, timeout: float = 15.0, retries: int = 0, **urls: str | None) -> None:
        def url(service: str) -> str:
            return urls.get(service) or service_url(service, gateway)

        options: dict[str, Any] = {"transport": transport, "token": token, "timeout": timeout, "retries": retries}
        self.registrar = Registrar(url("registrar"), **options)
        self.approver = Approver(url("approver"), **options)
        self.deployer = Deployer(url("deployer"), **options)
        self.notifier = Notifier(url("notifier"), **options)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for client in (self.registrar, self.approver, self.deployer, self.notifier):
            await client.aclose()


def live_by_stage(deployments: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """What each stage serves now (one group's deployments): stage -> its live deployment."""
    return {d["stage"]: d for d in deployments if d.get("live")}
