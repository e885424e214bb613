"""Signed webhooks on the real journey: a subscriber on loopback that fails its first tries of every
message still receives each event of the journey exactly once, each verified with the Standard Webhooks
library, and the CLI manages the subscription."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from shared.infra import boto_client
from shared.topology import bucket_name
from tests.helpers import wait_until


class Subscriber:
    """Answers 500 to the first two tries of each webhook-id, then verifies and keeps the event."""

    def __init__(self) -> None:
        self.secret = ""
        self.tries: dict[str, int] = {}
        self.events: list[dict] = []
        subscriber = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                msg_id = self.headers["webhook-id"]
                subscriber.tries[msg_id] = subscriber.tries.get(msg_id, 0) + 1
                if subscriber.tries[msg_id] <= 2:
                    self.send_response(500)
                else:
                    subscriber.events.append(Webhook(subscriber.secret).verify(body, dict(self.headers.items())))
                    self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/ci?token=s3cret"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def system_env() -> dict[str, str]:
    return {"MODELGATE_WEBHOOK_ALLOW_PRIVATE": "true", "MODELGATE_WEBHOOK_RETRY_SECONDS": "[0.5, 0.5, 0.5]"}


def modelgate(stack, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **{f"MODELGATE_{s.upper()}_URL": stack.url(s) for s in stack.ports},
           "MODELGATE_NAMESPACE": stack.namespace, "AWS_ENDPOINT_URL": stack.endpoint,
           "MODELGATE_TOKEN": stack.tokens["admin"], "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "modelgate.cli", *args], env=env, capture_output=True, text=True,
                          timeout=60, check=False)


def test_a_subscriber_that_fails_its_first_tries_gets_every_event_of_a_journey_once(system):
    subscriber = Subscriber()
    try:
        made = modelgate(system, "webhooks", "add", subscriber.url, "-g", "hooked", "--json")
        assert made.returncode == 0, made.stderr
        subscription = json.loads(made.stdout)
        subscriber.secret = subscription["secret"]
        assert "s3cret" not in modelgate(system, "webhooks", "list").stdout  # the URL's token is never shown

        key = "hooked/model.bin"
        boto_client("s3", system.endpoint).put_object(Bucket=bucket_name(system.namespace), Key=key, Body=b"m")
        registered = httpx.post(f"{system.url('registrar')}/v1/groups/hooked/versions", headers=system.headers("ana"),
                                json={"artifact_uri": f"s3://{bucket_name(system.namespace)}/{key}", "metrics": {"auc": 0.95}})
        assert registered.status_code == 201, registered.text
        journey = ["ModelRegistered", "ApprovalDecided", "DeploymentStarted", "Deployed", "ApprovalRequested"]
        wait_until(lambda: sorted(e["event_type"] for e in subscriber.events) == sorted(journey), timeout=60, interval=0.3)

        history = httpx.get(f"{system.url('registrar')}/v1/groups/hooked/versions/1/history", headers=system.headers("ana")).json()
        assert sorted(e["event_id"] for e in subscriber.events) == sorted(e["event_id"] for e in history)  # each once
        assert all(n == 3 for n in subscriber.tries.values())  # two refused tries, then the one that counted
        log = modelgate(system, "webhooks", "deliveries", subscription["id"], "--json")
        assert sorted(len(d["attempts"]) for d in json.loads(log.stdout)) == [3] * len(journey)
        tested = modelgate(system, "webhooks", "test", subscription["id"], "--wait", "15")
        assert tested.returncode == 1 and "HTTP 500" in tested.stdout  # our subscriber refuses a first try
    finally:
        subscriber.server.shutdown()
