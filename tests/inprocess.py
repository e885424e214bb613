"""The four services built by their own bootstraps in one process, joined by the in-memory bus.

Fast and network-free: for testing the journey's logic with the production wiring (handlers, workers, outbox
relays), AWS replaced by small fakes. The real bus is tested against LocalStack.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from importlib import import_module
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.db import UnitOfWork, create_tables, make_engine, reading
from shared.events import Envelope
from shared.memory_bus import InMemoryBus
from shared.runtime import Runtime

SETTINGS = {
    "registrar": "services.registrar.settings:RegistrarSettings",
    "approver": "services.approver.settings:ApproverSettings",
    "deployer": "services.deployer.settings:DeployerSettings",
    "notifier": "services.notifier.settings:NotifierSettings",
}


class FakeSsm:
    def __init__(self) -> None:
        self.parameters: dict[str, str] = {}
        self.writes = 0

    async def put_parameter(self, Name: str, Value: str, **_: Any) -> dict:
        self.parameters[Name] = Value
        self.writes += 1
        return {"Version": self.writes}

    async def get_parameter(self, Name: str, **_: Any) -> dict:
        from botocore.exceptions import ClientError

        if Name not in self.parameters:
            raise ClientError({"Error": {"Code": "ParameterNotFound", "Message": Name}}, "GetParameter")
        return {"Parameter": {"Name": Name, "Value": self.parameters[Name]}}

    async def get_parameters(self, Names: list[str], **_: Any) -> dict:
        assert len(Names) <= 10, "GetParameters takes at most 10 names"
        return {"Parameters": [{"Name": n, "Value": self.parameters[n]} for n in Names if n in self.parameters],
                "InvalidParameters": [n for n in Names if n not in self.parameters]}


class FakeSecretsManager:
    """Secrets Manager's three calls the approver makes, with its exception classes."""

    class exceptions:
        class ResourceNotFoundException(Exception):
            pass

        class ResourceExistsException(Exception):
            pass

    def __init__(self) -> None:
        self.secrets: dict[str, str] = {}

    async def create_secret(self, Name: str, SecretString: str, **_: Any) -> dict:
        if Name in self.secrets:
            raise self.exceptions.ResourceExistsException(Name)
        self.secrets[Name] = SecretString
        return {"Name": Name}

    async def get_secret_value(self, SecretId: str) -> dict:
        if SecretId not in self.secrets:
            raise self.exceptions.ResourceNotFoundException(SecretId)
        return {"SecretString": self.secrets[SecretId]}


@dataclass
class InProcessSystem:
    tmp_path: Any
    ssm: FakeSsm = field(default_factory=FakeSsm)
    secrets: FakeSecretsManager = field(default_factory=FakeSecretsManager)
    bus: InMemoryBus = field(default_factory=InMemoryBus)
    sessionmakers: dict[str, async_sessionmaker[AsyncSession]] = field(default_factory=dict)

    @property
    def delivered(self) -> list[Envelope]:
        return self.bus.published

    async def start(self) -> InProcessSystem:
        aws = {"ssm": self.ssm, "secretsmanager": self.secrets}
        for service, where in SETTINGS.items():
            module, name = where.split(":")
            settings = getattr(import_module(module), name)(
                database_url=f"sqlite+aiosqlite:///{self.tmp_path}/{service}.db", namespace="inprocess"
            )
            engine = make_engine(settings.database_url)
            await create_tables(engine)
            self.sessionmakers[service] = async_sessionmaker(reading(engine), expire_on_commit=False)
            runtime = Runtime(settings=settings, engine=engine, sessionmaker=self.sessionmakers[service], aws=aws,
                              publisher=self.bus)
            wiring = await import_module(f"services.{service}.bootstrap").bootstrap(runtime)
            self.bus.attach(service, runtime, wiring)
        return self

    def uow(self, service: str) -> UnitOfWork:
        return self.bus.services[service].runtime.uow()

    async def deliver(self, service: str, event: Envelope) -> str:
        """Handles one event the way the consumer loop does (idempotent on event_id)."""
        from shared.bus import dispatch

        attached = self.bus.services[service]
        return await dispatch(event, attached.wiring.handlers[event.event_type], attached.runtime.uow)

    async def pump(self, timeout: float = 10.0) -> None:
        """Moves every outbox's events to their consumers, with the workers running, until nothing moves."""
        async with self.bus.running():
            await self.bus.settle(timeout=timeout)

    async def close(self) -> None:
        for attached in self.bus.services.values():
            if attached.wiring.on_stop is not None:
                with contextlib.suppress(Exception):
                    await attached.wiring.on_stop()
            await attached.runtime.engine.dispose()
