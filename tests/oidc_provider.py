"""A local OpenID Connect identity provider for tests.

It stands in for the organisation's identity provider, which tests cannot reach: a real HTTP server on
127.0.0.1 (a free port, a background thread) that publishes its public keys at `/jwks.json` and its
discovery document at `/.well-known/openid-configuration`, and signs JWTs with joserfc (`issue`).
`rotate()` replaces a signing key (new kid) the way a real provider rolls its keys; `stop()` takes the
provider down, to test what the services do when it is unreachable. `jwks_requests` counts key fetches.

    with LocalIdP() as idp:            # or: async with LocalIdP() as idp:
        token = idp.issue("alice", groups=["ml-team"])
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

from joserfc import jwt
from joserfc.jwk import ECKey, Key, RSAKey

_ALGORITHMS = {"rsa": "RS256", "ec": "ES256"}


class LocalIdP:
    """A JWKS-publishing, JWT-signing identity provider on 127.0.0.1; see the module docstring."""

    def __init__(self) -> None:
        self.keys: dict[str, Key] = {"rsa": _new_key("rsa"), "ec": _new_key("ec")}
        self.jwks_requests = 0
        self._count_lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self.issuer = f"http://127.0.0.1:{self._server.server_address[1]}"
        self.jwks_url = f"{self.issuer}/jwks.json"
        self._thread: threading.Thread | None = None

    def start(self) -> Self:
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"local-idp-{self.issuer}",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Take the provider down: its port refuses connections from now on."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        return self.start()

    async def __aexit__(self, *_exc: object) -> None:
        self.stop()

    def jwks(self) -> dict[str, Any]:
        """The public keys the provider publishes."""
        return {"keys": [key.as_dict(private=False) for key in self.keys.values()]}

    def discovery(self) -> dict[str, Any]:
        return {"issuer": self.issuer, "jwks_uri": self.jwks_url,
                "id_token_signing_alg_values_supported": sorted(_ALGORITHMS.values())}

    def rotate(self, key: str = "rsa") -> str:
        """Replace the signing key `key` ("rsa" or "ec") with a new one; the old one is no longer published.
        Returns the new kid."""
        self.keys[key] = _new_key(key)
        return str(self.keys[key].kid)

    def issue(self, sub: str, *, audience: str = "modelgate", groups: list[str] | None = None,
              expires_in: int = 600, extra: dict[str, Any] | None = None, key: str = "rsa") -> str:
        """A JWT signed by this provider. A claim in `extra` overrides the default; one set to None is left out."""
        now = int(time.time())
        claims: dict[str, Any] = {"iss": self.issuer, "sub": sub, "aud": audience, "iat": now, "nbf": now,
                                  "exp": now + expires_in, "jti": uuid.uuid4().hex}
        if groups is not None:
            claims["groups"] = groups
        claims.update(extra or {})
        claims = {name: value for name, value in claims.items() if value is not None}
        signing_key = self.keys[key]
        header = {"alg": _ALGORITHMS[key], "kid": signing_key.kid}
        return jwt.encode(header, claims, signing_key, algorithms=[_ALGORITHMS[key]])

    def _counted(self) -> None:
        with self._count_lock:
            self.jwks_requests += 1


def _new_key(kind: str) -> Key:
    parameters = {"kid": f"{kind}-{uuid.uuid4().hex[:12]}", "use": "sig", "alg": _ALGORITHMS[kind]}
    if kind == "rsa":
        return RSAKey.generate_key(2048, parameters=parameters)  # type: ignore[arg-type]
    return ECKey.generate_key("P-256", parameters=parameters)  # type: ignore[arg-type]


def _handler_for(idp: LocalIdP) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/jwks.json":
                idp._counted()
                self._answer(200, idp.jwks())
            elif self.path == "/.well-known/openid-configuration":
                self._answer(200, idp.discovery())
            else:
                self._answer(404, {"detail": f"no {self.path} here"})

        def _answer(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler
