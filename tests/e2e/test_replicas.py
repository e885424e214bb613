"""Two replicas of every service on PostgreSQL (`modelgate up --replicas 2`): they share each queue and
database, and a replica killed mid-flow loses nothing: every version ends, one Deployed, the pointer's."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid

import httpx

from modelgate import stack as stack_mod
from modelgate.stack import Stack, running_pid
from shared.topology import SERVICES
from tests.conftest import _postgres
from tests.e2e.conftest import free_port
from tests.e2e.test_stage_truth import only_deployed, register_many, settled, upload_artifact


async def test_two_replicas_of_each_service_share_the_work_and_survive_a_kill(localstack_endpoint, tmp_path):
    stack = Stack(namespace=f"rep{uuid.uuid4().hex[:8]}", endpoint=localstack_endpoint, run_dir=tmp_path, replicas=2,
                  extra_env={"MODELGATE_POLL_WAIT_SECONDS": "2"})
    stack.ports = {i: free_port() for s in SERVICES for i in (s, f"{s}-2")}
    stack_mod.up(stack, with_localstack=False, progress=lambda message: None)
    try:
        assert all(running_pid(stack, i) for i in stack.all_instances())  # eight processes
        artifact = upload_artifact(stack, "replicated/model.bin")
        headers = {"Authorization": f"Bearer {stack.admin_token()}"}
        async with httpx.AsyncClient(timeout=30, headers=headers) as client:
            await register_many(client, stack, "replicated", artifact, 10)
            os.kill(running_pid(stack, "deployer"), signal.SIGKILL)  # the other deployer carries on
            os.kill(running_pid(stack, "approver-2"), signal.SIGKILL)
            await register_many(client, stack, "replicated", artifact, 10)
            # a killed replica's messages come back after the queue's visibility timeout (60 s)
            wave = await settled(client, stack, "replicated", "dev", set(range(1, 21)), timeout=180)
        assert only_deployed(wave) in range(1, 21)
        logs = {i: stack.logfile(i).read_text() for i in ("registrar", "registrar-2", "deployer-2")}
        assert all("service_started" in text for text in logs.values())
    finally:
        stack_mod.down(stack, with_localstack=False, progress=lambda message: None)
        for service in SERVICES:
            await asyncio.to_thread(_postgres, f'DROP DATABASE IF EXISTS "{stack.namespace}_{service}" WITH (FORCE)')
