"""Slow dependencies, on the four real processes: a webhook that hangs, S3 that does not answer. Timeouts and
retries hold, and the other journeys go on meanwhile."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import yaml

from bench.common import WebhookReceiver, new_stack, running_system, upload_artifact
from tests.e2e.conftest import add_principals
from tests.helpers import eventually


class HoldingProxy:
    """A TCP proxy in front of LocalStack that can hold what clients send (S3 that stops answering)."""

    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.held = 0

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _connection(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        upstream_r, upstream_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, hold: bool) -> None:
            try:
                while data := await reader.read(65536):
                    if hold and not self.flowing.is_set():
                        self.held += 1
                        await self.flowing.wait()
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                writer.close()

        await asyncio.gather(pipe(client_r, upstream_w, True), pipe(upstream_r, client_w, False))

    def close(self) -> None:
        self.flowing.set()
        self.server.close()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def register(client: httpx.AsyncClient, stack, group: str, artifact: str):  # type: ignore[no-untyped-def]
    return client.post(
        f"{stack.url('registrar')}/v1/groups/{group}/versions",
        json={"artifact_uri": artifact, "metrics": {"auc": 0.95}},
    )


async def deployed_to_dev(client: httpx.AsyncClient, stack, group: str) -> bool:  # type: ignore[no-untyped-def]
    record = (await client.get(f"{stack.url('registrar')}/v1/groups/{group}/versions/1")).json()
    return record.get("stages", {}).get("dev") == "Deployed"


@pytest.fixture
def webhooks():
    stuck, healthy = WebhookReceiver(hang_seconds=30), WebhookReceiver()
    yield stuck, healthy
    stuck.close()
    healthy.close()


async def test_a_hanging_webhook_times_out_and_blocks_no_other_notification(localstack_endpoint, webhooks, tmp_path):
    stuck, healthy = webhooks
    routing = tmp_path / "routing.yaml"
    routing.write_text(yaml.safe_dump({
        "audiences": {"team": {"webhook": stuck.url}, "ops": {"webhook": healthy.url}},
        "routes": {"ApprovalDecided": ["team", "ops"], "Deployed": ["team", "ops"], "ApprovalRequested": ["ops"]},
    }))
    stack = new_stack(localstack_endpoint, "slowhook", {
        "MODELGATE_ROUTING_FILE": str(routing), "MODELGATE_WEBHOOK_TIMEOUT_SECONDS": "3",  # 1 s flaked on a loaded machine
        "MODELGATE_DELIVERY_ATTEMPTS": "2", "MODELGATE_DELIVERY_RETRY_SECONDS": "0.1",
        "MODELGATE_SNS_NOTIFICATIONS": "false", "MODELGATE_POLL_WAIT_SECONDS": "2",
    })
    with running_system(stack):
        tokens = add_principals(stack)
        artifact = upload_artifact(stack, "slow/model.bin")
        async with httpx.AsyncClient(timeout=30, headers=bearer(tokens["ana"])) as client:
            groups = [f"slowhook-{i}" for i in range(6)]
            for group in groups:
                assert (await register(client, stack, group, artifact)).status_code == 201

            async def all_told() -> bool:  # 3 events per journey reach the healthy receiver
                return len(healthy.posts) >= 3 * len(groups)

            await eventually(all_told, timeout=90, interval=0.5)
            assert all([await deployed_to_dev(client, stack, g) for g in groups])

            async def stuck_ones_failed() -> list[dict]:
                rows = (await client.get(f"{stack.url('notifier')}/v1/deliveries", params={"status": "failed"},
                                         headers=bearer(tokens["admin"]))).json()
                return rows if len(rows) >= 2 * len(groups) else []

            failed = await eventually(stuck_ones_failed, timeout=90, interval=0.5)
            assert {r["event_type"] for r in failed} == {"ApprovalDecided", "Deployed"}
            assert all(r["channel"] == "webhook" and r["attempts"] == 2 for r in failed)
            assert len(healthy.posts) == 3 * len(groups)  # each told once, none lost behind the stuck one
            assert (await client.get(f"{stack.url('notifier')}/readyz")).status_code == 200


async def test_s3_that_stops_answering_holds_up_only_the_registration_waiting_for_it(localstack_endpoint):
    proxy = HoldingProxy(int(localstack_endpoint.rsplit(":", 1)[1]))
    proxied = await proxy.start()
    stack = new_stack(localstack_endpoint, "slows3", {"MODELGATE_POLL_WAIT_SECONDS": "2"})
    stack.service_extra_env = {"registrar": {"AWS_ENDPOINT_URL_S3": proxied}}  # the registrar's S3 stops (the
    # deployer reads S3 too, to check the pinned artifact: the journey already registered still needs it)
    try:
        with running_system(stack):
            tokens = add_principals(stack)
            artifact = upload_artifact(stack, "slow/model.bin")
            async with httpx.AsyncClient(timeout=60, headers=bearer(tokens["ana"])) as client:
                assert (await register(client, stack, "slows3-first", artifact)).status_code == 201
                proxy.flowing.clear()  # S3 stops answering
                waiting = asyncio.create_task(register(client, stack, "slows3-waiting", artifact))

                async def first_deployed() -> bool:
                    return await deployed_to_dev(client, stack, "slows3-first")

                await eventually(first_deployed, timeout=60, interval=0.3)  # the other journey went on
                listed = await client.get(f"{stack.url('registrar')}/v1/groups/slows3-first/versions")
                assert listed.status_code == 200  # and the registrar's API answered
                assert proxy.held >= 1 and not waiting.done()

                proxy.flowing.set()  # S3 answers again
                assert (await waiting).status_code == 201

                async def waiting_deployed() -> bool:
                    return await deployed_to_dev(client, stack, "slows3-waiting")

                await eventually(waiting_deployed, timeout=60, interval=0.3)
    finally:
        proxy.close()
