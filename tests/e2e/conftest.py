"""The four services as real processes on a real LocalStack, each test system in its own namespace."""

from __future__ import annotations

import json
import socket
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from modelgate import stack as stack_mod
from modelgate.stack import Stack
from shared.topology import SERVICES


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class WebhookReceiver:
    """A Slack-style incoming webhook on loopback that remembers what it was sent."""

    def __init__(self) -> None:
        self.posts: list[dict] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.posts.append(json.loads(body))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/team"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def webhook():
    receiver = WebhookReceiver()
    yield receiver
    receiver.close()


#: The people of the e2e system: ana registers (team ml), lee approves test and operates, kim and raj approve
#: prod. ana is also in both approver groups, so that only "nobody approves their own model" refuses her.
PRINCIPALS = {
    "ana": {"roles": ["registrant"], "teams": ["ml"], "groups": ["ml-leads", "model-risk"]},
    "lee": {"roles": ["viewer", "operator"], "groups": ["ml-leads"]},
    "kim": {"roles": ["viewer"], "groups": ["model-risk"]},
    "raj": {"roles": ["viewer"], "groups": ["model-risk"]},
}


def add_principals(stack: Stack) -> dict[str, str]:
    """Adds PRINCIPALS with the admin token the approver wrote; name -> token (admin included)."""
    admin = stack.admin_token()
    tokens = {"admin": admin}
    for name, fields in PRINCIPALS.items():
        response = httpx.post(f"{stack.url('approver')}/v1/principals", json={"name": name, **fields},
                              headers={"Authorization": f"Bearer {admin}"}, timeout=10)
        assert response.status_code == 201, response.text
        tokens[name] = response.json()["token"]
    return tokens


@pytest.fixture
def system_env() -> dict[str, str]:
    """More environment for the services of `system`; a test module overrides it (e.g. deployment targets)."""
    return {}


@pytest.fixture
def system(localstack_endpoint, tmp_path, webhook, system_env):
    """The system, with the principals of PRINCIPALS made by its admin; `system.tokens[name]` is each one's
    token and `system.headers(name)` its Authorization header."""
    stack = Stack(
        namespace=f"e2e{uuid.uuid4().hex[:8]}",
        endpoint=localstack_endpoint,
        run_dir=tmp_path,
        ports={service: free_port() for service in SERVICES},
        database_urls={service: f"sqlite+aiosqlite:///{tmp_path}/{service}.db" for service in SERVICES},
        extra_env={
            "MODELGATE_WEBHOOK_URL": webhook.url,
            "MODELGATE_POLL_WAIT_SECONDS": "5",
            **system_env,
        },
    )
    stack_mod.up(stack, with_localstack=False, progress=lambda message: None)
    stack.tokens = add_principals(stack)  # type: ignore[attr-defined]
    stack.headers = lambda who: {"Authorization": f"Bearer {stack.tokens[who]}"}  # type: ignore[attr-defined]
    yield stack
    stack_mod.down(stack, with_localstack=False, progress=lambda message: None)
    for service in SERVICES:  # make failures readable: the tail of each service's log
        print(f"--- {service} log (tail) ---")
        print("".join(stack.logfile(service).read_text().splitlines(keepends=True)[-20:]))
