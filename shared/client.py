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

import httpx

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


def service_url(service: str) -> str:
    """Where `service` answers: $MODELGATE_<SERVICE>_URL, else its default port on 127.0.0.1."""
    default = f"http://127.0.0.1:{DEFAULT_PORTS[service]}"
    return os.environ.get(f"MODELGATE_{service.upper()}_URL", default).rstrip("/")


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
                 timeout: float = 15.0, token: str | None = None):
        self.base_url = (base_url or service_url(self.service)).rstrip("/")
        token = token or find_token()
        headers = {"Authorization": f"Bearer {token}"} if token else None
        self._http = httpx.AsyncClient(base_url=self.base_url, transport=transport, timeout=timeout, headers=headers)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise Unreachable(
                self.service,
                f"cannot reach the {self.service} at {self.base_url} ({type(exc).__name__}); "
                f"is modelgate up? run 'make up' (or set MODELGATE_{self.service.upper()}_URL)",
            ) from None
        if response.status_code >= 400:
            raise ApiError(self.service, response.status_code, _detail(response))
        return response.json() if response.content else None


    async def set_aside(self) -> list[dict[str, Any]]:
        """The events this service's outbox set aside because the bus refused them for good."""
        return await self._call("GET", "/v1/outbox/set-aside")  # type: ignore[no-any-return]


class Registrar(ServiceClient):
    service = "registrar"

    async def register(self, group: str, body: dict[str, Any], idempotency_key: str | None = None) -> dict[str, Any]:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return await self._call("POST", f"/v1/groups/{group}/versions", json=body, headers=headers)

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
        return await self._call("POST", f"/v1/groups/{group}/versions/comet-archive", files=files, data=data)

    async def register_from_comet(self, group: str, body: dict[str, Any]) -> dict[str, Any]:
        """Registers a Comet experiment (or registry model version) the registrar reads from Comet itself."""
        return await self._call("POST", f"/v1/groups/{group}/versions/comet", json=body)

    async def versions(self, group: str) -> list[dict[str, Any]]:
        return await self._call("GET", f"/v1/groups/{group}/versions")

    async def version(self, group: str, version: int) -> dict[str, Any]:
        return await self._call("GET", f"/v1/groups/{group}/versions/{version}")

    async def latest(self, group: str) -> dict[str, Any]:
        versions = await self.versions(group)
        if not versions:
            raise ApiError(self.service, 404, f"model group '{group}' has no versions")
        return max(versions, key=lambda v: v["version"])

    async def history(self, group: str, version: int) -> list[dict[str, Any]]:
        return await self._call("GET", f"/v1/groups/{group}/versions/{version}/history")


class Approver(ServiceClient):
    service = "approver"

    async def approvals(self, status: str = "pending", **filters: str | None) -> list[dict[str, Any]]:
        """filters: group, stage, model_version_id, approver (only what that approver may vote on now)."""
        params = {"status": status, **{k: v for k, v in filters.items() if v is not None}}
        return await self._call("GET", "/v1/approvals", params=params)

    async def approval(self, approval_id: str) -> dict[str, Any]:
        return await self._call("GET", f"/v1/approvals/{approval_id}")

    async def me(self, token: str | None = None) -> dict[str, Any]:
        """Who the token (default: this client's) belongs to: name, kind, roles, teams, groups; 401 when nobody."""
        return await self._call("GET", "/v1/me", headers={"Authorization": f"Bearer {token}"} if token else None)

    async def add_principal(self, body: dict[str, Any]) -> dict[str, Any]:
        """A new principal (admin); the answer's `token` is shown this once."""
        return await self._call("POST", "/v1/principals", json=body)

    async def principals(self) -> list[dict[str, Any]]:
        return await self._call("GET", "/v1/principals", params={"limit": 500})

    async def change_principal(self, name: str, change: dict[str, Any]) -> dict[str, Any]:
        return await self._call("PATCH", f"/v1/principals/{name}", json=change)

    async def new_token(self, name: str, revoke_others: bool = False) -> dict[str, Any]:
        return await self._call("POST", f"/v1/principals/{name}/tokens", params={"revoke_others": revoke_others})

    async def revoke_token(self, name: str, credential_id: str) -> None:
        await self._call("DELETE", f"/v1/principals/{name}/tokens/{credential_id}")

    async def policy(self) -> list[dict[str, Any]]:
        """The stages in order, each with its rule and thresholds."""
        return await self._call("GET", "/v1/policy")

    async def decide(self, approval_id: str, decision: str, comment: str | None, token: str | None = None) -> dict[str, Any]:
        """decision: "approve" or "reject"; as the principal of `token` (default: this client's)."""
        return await self._call(
            "POST",
            f"/v1/approvals/{approval_id}/decision",
            json={"decision": decision, "comment": comment},
            headers={"Authorization": f"Bearer {token}"} if token else None,
        )


class Deployer(ServiceClient):
    service = "deployer"

    async def deployments(self, group: str | None = None) -> list[dict[str, Any]]:
        """Every deployment, oldest first; `live` marks what each stage serves now."""
        return await self._call("GET", "/v1/deployments", params={"group": group} if group else None)

    async def deployment(self, deployment_id: str) -> dict[str, Any]:
        return await self._call("GET", f"/v1/deployments/{deployment_id}")

    async def rollback(self, group: str, stage: str, body: dict[str, Any]) -> dict[str, Any]:
        """Accepted at once (the rollback deployment, status Pending); follow it with deployment()."""
        return await self._call("POST", f"/v1/groups/{group}/stages/{stage}/rollback", json=body)


class Notifier(ServiceClient):
    service = "notifier"


class Clients:
    """The four clients, opened and closed together."""

    def __init__(self, transport: httpx.AsyncBaseTransport | None = None, token: str | None = None, **urls: str) -> None:
        self.registrar = Registrar(urls.get("registrar"), transport=transport, token=token)
        self.approver = Approver(urls.get("approver"), transport=transport, token=token)
        self.deployer = Deployer(urls.get("deployer"), transport=transport, token=token)
        self.notifier = Notifier(urls.get("notifier"), transport=transport, token=token)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for client in (self.registrar, self.approver, self.deployer, self.notifier):
            await client.aclose()


def live_by_stage(deployments: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """What each stage serves now (one group's deployments): stage -> its live deployment."""
    return {d["stage"]: d for d in deployments if d.get("live")}
