"""`modelgate up` waits for its own services, and says so when another stack's answers on the port."""

from __future__ import annotations

import json
import os
import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from modelgate.stack import Stack, StackError, wait_ready


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answering_readyz(port: int, namespace: str) -> HTTPServer:
    class Ready(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"ready": True, "checks": {}, "service": "approver", "namespace": namespace}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", port), Ready)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.mark.parametrize(("answering", "ours"), [("modelgate", True), ("someone-else", False)])
def test_a_service_is_ready_only_when_this_stacks_own_service_answers(tmp_path, answering, ours):
    port = free_port()
    stack = Stack(namespace="modelgate", run_dir=tmp_path, ports={"approver": port})
    stack.pidfile("approver").parent.mkdir(parents=True)
    stack.pidfile("approver").write_text(str(os.getpid()))  # "our" process is alive
    server = answering_readyz(port, answering)
    try:
        if ours:
            wait_ready(stack, "approver", timeout=5)
        else:
            with pytest.raises(StackError, match="namespace 'someone-else', not this stack's approver"):
                wait_ready(stack, "approver", timeout=5)
    finally:
        server.shutdown()
